"""The serving layers without processes: the tokenizer, the engine over a fake backend, the CLI's checks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coldpipe.cli import main
from coldpipe.core.architectures import blocks_for
from coldpipe.core.simulator import burst_completions_s
from coldpipe.core.types import Device, Network, Scenario, Workload
from coldpipe.errors import InputError
from coldpipe.runtime.checkpoint import arch_for
from coldpipe.runtime.tokenizer import MIN_VOCAB, load_tokenizer, write_tokenizer
from coldpipe.serve.engine import Engine, NoPlan, QueueFull, Request
from coldpipe.serve.protocol import Burst, BurstOutcome, Sampling

ARCH = arch_for("llama-3.1-8b", layers=2, hidden=64, heads=4, kv_heads=2, vocab=512, intermediate=128)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    (d / "config.json").write_text('{"vocab_size": 512}')
    write_tokenizer(d, 512)
    return d


def test_tokenizer_fits_the_vocab_round_trips_and_has_a_chat_template(tok_dir: Path) -> None:
    tok = load_tokenizer(tok_dir)
    assert len(tok) <= 512
    text = "Hello! How are you today? ünïcode ✓"
    ids = tok(text)["input_ids"]
    assert all(0 <= i < 512 for i in ids) and tok.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    with pytest.raises(InputError, match="--vocab"):
        write_tokenizer(tok_dir / "small", MIN_VOCAB - 1)
    with pytest.raises(InputError, match=r"tokenizer\.json"):
        load_tokenizer(tok_dir / "missing")


class FakeBackend:
    """A :class:`coldpipe.serve.protocol.Backend` without processes: token ``(request + step) % 7 + 300``."""

    def __init__(self, devices: tuple[str, ...]) -> None:
        self.devices = devices
        self.bursts: list[Burst] = []
        self.unloads = 0
        self.prepared: list[bool] = []
        self.gate = threading.Event()
        self.gate.set()

    def devices_up(self) -> tuple[str, ...]:
        return self.devices

    def prepare(self, plan: object, cold: bool) -> None:
        self.prepared.append(cold)

    def run_burst(self, burst: Burst, on_token: Callable[[int, int], bool]) -> BurstOutcome:
        self.gate.wait()
        self.bursts.append(burst)
        active = list(range(len(burst.prompts)))
        step = 0
        while active:
            active = [r for r in active if on_token(r, (r + step) % 7 + 300)]
            step += 1
        return BurstOutcome(time.time(), {st.device: 1000 for st in burst.plan.stages})

    def unload(self) -> dict[str, int]:
        self.unloads += 1
        return dict.fromkeys(self.devices, 1000)

    def close(self) -> None:
        pass


def _scenario(prompt_tokens: int = 16) -> Scenario:
    blocks = blocks_for(ARCH, prompt_tokens=prompt_tokens, new_tokens=8, dtype="float32")
    devs = [
        Device(n, flops=2e9, load_bandwidth=bw, startup=0.1, memory=1e9, uplink=1e8, downlink=2e8)
        for n, bw in (("a", 1e6), ("b", 2e6))
    ]
    return Scenario(blocks, devs, Workload(prompt_tokens, 8), Network(0.001))


def _request(n_prompt: int, max_tokens: int, events: list, stop: tuple[str, ...] = ()) -> Request:
    return Request(tuple(range(10, 10 + n_prompt)), max_tokens, Sampling(0.0, 1.0, 0), stop, emit=events.append)


def test_engine_cold_then_warm_bursts_in_arrival_order_with_simulator_predictions(tok_dir: Path) -> None:
    sc = _scenario()
    be = FakeBackend(("a", "b"))
    eng = Engine(be, sc, load_tokenizer(tok_dir), ARCH, idle_unload_s=0.3, gather_s=0.05)
    assert eng.plan_info()["state"] == "cold" and eng.plan_info()["predictions_rebuild_blocks"]
    cold_plan = eng.solution.plan
    be.gate.clear()  # hold the first burst until all three requests are queued
    events: list[list] = [[], [], []]
    reqs = [_request(n, 3, ev) for n, ev in zip((16, 12, 20), events, strict=True)]
    eng.start()
    for r in reqs:
        eng.submit(r)
    time.sleep(0.01)
    be.gate.set()
    deadline = time.monotonic() + 10
    while not all(ev and ev[-1][0] == "done" for ev in events):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(be.bursts) == 1 and be.bursts[0].prompts == tuple(r.prompt_ids for r in reqs)
    assert be.bursts[0].scenario == sc and all(r.cold for r in reqs)
    # predicted = the request's wait + the simulator's completion of its place in a burst of the longest prompt
    pred = burst_completions_s(eng.burst_scenario(sc, 20, 3), cold_plan, "layer")
    for r, p in zip(reqs, pred, strict=True):
        assert p <= r.ttft_predicted_s <= p + 1.0
        assert [e[0] for e in events[reqs.index(r)]][:1] == ["first"] and r.finish_reason == "length"
    assert eng.plan_info()["state"] == "warm"
    warm = []
    eng.submit(_request(16, 2, warm))
    while not warm or warm[-1][0] != "done":
        time.sleep(0.01)
    assert be.bursts[1].scenario == sc.after(cold_plan)  # residency-aware: the warm scenario
    assert be.bursts[1].emulation[0].startup_s == 0.0
    deadline = time.monotonic() + 10
    while be.unloads == 0:  # idle unload
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert eng.plan_info()["state"] == "cold"
    assert be.prepared[0] and not be.prepared[1] and be.prepared[-1]  # cold at start, warm, cold after unload
    eng.stop()


def test_engine_queue_bound_stop_strings_and_no_plan(tok_dir: Path) -> None:
    tok = load_tokenizer(tok_dir)
    be = FakeBackend(("a", "b"))
    eng = Engine(be, _scenario(), tok, ARCH, max_queue=2)
    eng.submit(_request(4, 2, []))
    eng.submit(_request(4, 2, []))
    with pytest.raises(QueueFull) as full:
        eng.submit(_request(4, 2, []))
    assert full.value.retry_after_s >= 1.0
    eng.stop()
    text = tok.decode([300, 301, 302, 303])
    stop = tok.decode([302])
    events: list = []
    eng2 = Engine(FakeBackend(("a", "b")), _scenario(), tok, ARCH)
    eng2.start()
    eng2.submit(_request(4, 10, events, stop=(stop,)))
    while not events or events[-1][0] != "done":
        time.sleep(0.01)
    assert "".join(e[1] for e in events if e[0] == "text") == text[: text.find(stop)]
    assert events[-1] == ("done", "stop")
    eng2.stop()
    tiny = _scenario().replace(devices=tuple(Device(n, 2e9, 1e6, 0.1, 1e3, 1e8, 2e8) for n in "ab"))
    eng3 = Engine(FakeBackend(("a", "b")), tiny, tok, ARCH)
    with pytest.raises(NoPlan):
        eng3.submit(_request(4, 2, []))


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["serve", "--demo", "--host", "0.0.0.0"], "--host"),
        (["serve", "--cluster", "c.yaml", "--checkpoint", "x"], "--token-file"),
        (["serve", "--cluster", "c.yaml", "--token-file", "t"], "--checkpoint"),
        (["serve", "--cluster", "c.yaml", "--token-file", "t", "--checkpoint", "x", "--no-emulate"], "--host-profile"),
        (["serve", "--local", "s.yaml", "--checkpoint", "x", "--scenario", "m.json"], "--scenario"),
        (["serve", "--local", "s.yaml", "--cluster", "c.yaml"], "--local/--cluster/--demo"),
        (["serve"], "--local/--cluster/--demo"),
        (["serve", "--local", "s.yaml"], "--checkpoint"),
        (["serve", "--demo", "--idle-unload", "0"], "--idle-unload"),
        (["serve", "--local", "s.yaml", "--checkpoint", "x", "--port", "BUSY"], "--port"),
    ],
)
def test_serve_cli_refuses_bad_flags_in_one_line(argv: list[str], field: str, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        argv = [str(busy.getsockname()[1]) if a == "BUSY" else a for a in argv]
        with pytest.raises(SystemExit) as exc:
            main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"coldpipe: error: {field}")


def test_make_checkpoint_writes_a_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ck"
    main_args = ["make-checkpoint", "--config", "llama-3.1-8b", "--out", str(out), "--layers", "1", "--hidden", "32"]
    with pytest.raises(SystemExit) as exc:
        main([*main_args, "--heads", "2", "--kv-heads", "1", "--vocab", "300", "--intermediate", "64"])
    assert exc.value.code == 0 and "tokenizer of" in capsys.readouterr().out
    assert len(load_tokenizer(out)) <= 300
