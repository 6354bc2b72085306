"""The pipelined runtime on real processes: correctness against transformers, the CLI, failures."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from coldpipe.cli import main  # noqa: E402
from coldpipe.cli.run_cmd import resolve_plan  # noqa: E402
from coldpipe.core.architectures import blocks_for  # noqa: E402
from coldpipe.core.types import Device, Network, Plan, Scenario, Workload  # noqa: E402
from coldpipe.errors import InputError  # noqa: E402
from coldpipe.runtime import RunFailed  # noqa: E402
from coldpipe.runtime.checkpoint import arch_for, make_checkpoint, open_checkpoint  # noqa: E402
from coldpipe.runtime.emulation import emulation_for  # noqa: E402
from coldpipe.runtime.job import Job  # noqa: E402
from coldpipe.runtime.launch import prompt_ids, run_local  # noqa: E402
from coldpipe.runtime.reference import reference_generate  # noqa: E402

PROMPT, NEW = 10, 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 decoder layers (6 blocks), hidden 64, untied head, sharded: a tiny Llama-3.1-8B shape."""
    arch = arch_for("llama-3.1-8b", layers=4, hidden=64, heads=4, kv_heads=2, vocab=256)
    return make_checkpoint(arch, tmp_path_factory.mktemp("rt") / "tiny", shard_bytes=200_000, init_std=0.3)


def _scenario(ckpt: Path, hop_s: float = 0.0005) -> Scenario:
    arch = open_checkpoint(ckpt).architecture()
    blocks = blocks_for(arch, prompt_tokens=PROMPT, new_tokens=NEW, dtype="float32")
    devs = [
        Device(n, flops=2e9, load_bandwidth=bw, startup=st, memory=1e9, uplink=1e8, downlink=2e8)
        for n, bw, st in [("a", 40e6, 0.01), ("b", 30e6, 0.0), ("c", 60e6, 0.02), ("d", 50e6, 0.0)]
    ]
    return Scenario(blocks, devs, Workload(PROMPT, NEW), Network(hop_s))


def test_resolve_plan_forms(tiny: Path) -> None:
    sc = _scenario(tiny)
    assert resolve_plan("uniform/none", sc, None) == (Plan.parse("a[0-1] > b[2-3] > c[4-4] > d[5-5]"), "none")
    assert resolve_plan("uniform-stage", sc, None)[1] == "stage"
    assert resolve_plan("a[0-2] > b[3-5]", sc, "stage") == (Plan.parse("a[0-2] > b[3-5]"), "stage")
    plan, ov = resolve_plan("optimal", sc, None)
    assert ov == "layer" and plan.stages[0].first == 0 and plan.stages[-1].last == 5
    with pytest.raises(InputError, match="--plan"):
        resolve_plan("fastest", sc, None)


@pytest.mark.multiprocess
def test_pipeline_equals_from_pretrained_for_1_to_4_stages(tiny: Path) -> None:
    """Tokens equal and last logits allclose(1e-4) for 1-4 stages, several splits, all overlap modes, and with
    the embedding read row by row (decoded tokens outside the prompt are read when they come)."""
    sc = _scenario(tiny)
    ids = prompt_ids(PROMPT, 256, seed=3)
    ref_tokens, ref_logits = reference_generate(tiny, ids, NEW)
    assert len(set(ref_tokens)) > 1  # a degenerate model would make token equality weak
    cases = [
        ("a[0-5]", "layer"),
        ("a[0-0] > b[1-5]", "layer"),
        ("b[0-3] > a[4-5]", "stage"),
        ("a[0-1] > b[2-2] > c[3-5]", "none"),
        ("c[0-2] > a[3-4] > b[5-5]", "layer"),
        ("a[0-1] > b[2-3] > c[4-4] > d[5-5]", "layer"),
        ("d[0-0] > c[1-1] > b[2-4] > a[5-5]", "none"),
    ]
    sparse = [False] * len(cases) + [True, True]  # block 0 reads only the rows it needs
    cases += [("a[0-5]", "layer"), ("a[0-0] > b[1-5]", "stage")]
    jobs = []
    for (text, ov), sp in zip(cases, sparse, strict=True):
        plan = Plan.parse(text)
        emu = tuple(emulation_for(sc, plan, host_flops=None))
        jobs.append(Job(plan, ov, ids, NEW, emu, return_logits=True, sparse_embedding=sp))
    results = run_local(tiny, sc, jobs, timeout_s=30)
    for (text, ov), sp, res in zip(cases, sparse, results, strict=True):
        load0 = next(s for s in res["stages"][0]["spans"] if s["cat"] == "load" and s["block"] == 0)
        assert load0["bytes"] == (len(set(ids)) * 64 * 4 if sp else 256 * 64 * 4)
        assert res["token_ids"] == ref_tokens, (text, ov)
        last = torch.tensor(res["stages"][-1]["last_logits"])
        assert torch.allclose(last, torch.tensor(ref_logits), atol=1e-4), (text, ov)
        assert len(res["stages"]) == len(Plan.parse(text).stages)
        loads = [s["block"] for st in res["stages"] for s in st["spans"] if s["cat"] == "load"]
        assert loads == list(range(6))  # every block loaded once, each stage in block order
        _assert_overlap_honoured(res["stages"], ov)


def _assert_overlap_honoured(stages: list[dict], overlap: str) -> None:
    """Causal orderings of the spans (same clock, recorded before/after the events): no timing threshold."""
    load_end = {s["block"]: s["end"] for st in stages for s in st["spans"] if s["cat"] == "load"}
    compute_start = {s["block"]: s["start"] for st in stages for s in st["spans"] if s["cat"] == "compute"}
    for st in stages:
        mine = sorted(s["block"] for s in st["spans"] if s["cat"] == "compute")
        for b in mine:
            if overlap == "layer":
                assert compute_start[b] >= load_end[b]  # a block runs once it is resident
            elif overlap == "stage":
                assert compute_start[b] >= max(load_end[k] for k in mine)  # once the whole stage is
    if overlap == "none":
        assert min(compute_start.values()) >= max(load_end.values())  # once every stage is


@pytest.mark.multiprocess
def test_cli_runs_three_stages_end_to_end(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "s.yaml"  # the user's way: the model comes from the checkpoint's config.json
    devices = "\n".join(
        f"  - {{name: {n}, flops: 2 GFLOPS, load_bandwidth: 40 MB/s, startup: 10 ms, memory: 1 GB, "
        "uplink: 100 Mbit/s, downlink: 200 Mbit/s, mem_bandwidth: 1 GB/s}"
        for n in "abc"
    )
    scenario.write_text(
        f"network: {{hop_latency: 1 ms}}\nworkload: {{prompt_tokens: {PROMPT}}}\n"
        f"model: {{hf_config: {tiny}/config.json, dtype: float32}}\ndevices:\n{devices}\n"
    )
    trace = tmp_path / "trace.json"
    argv = ["run", str(scenario), "--local", "--checkpoint", str(tiny), "--plan",
            "a[0-1] > b[2-3] > c[4-5]", "--new-tokens", "2", "-o", str(trace), "--json"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measured_ttft"] > 0 and out["predicted_ttft"] > 0 and len(out["token_ids"]) == 2
    # decode is predicted too (E2E = TTFT + 1 x TPOT for 2 tokens), in the same output as the TTFT
    from coldpipe.core.simulator import objective_s
    from coldpipe.scenario_file import load_scenario

    sc2 = load_scenario(scenario).replace(workload={"new_tokens": 2})
    expected_e2e = objective_s(sc2, Plan.parse("a[0-1] > b[2-3] > c[4-5]"), "layer", "e2e")
    assert out["predicted_e2e"] == pytest.approx(expected_e2e) and out["predicted_e2e"] > out["predicted_ttft"]
    assert out["measured_e2e"] >= out["measured_ttft"]
    rows = {row["what"]: row for row in out["summary"]}  # TTFT, TPOT and E2E in one table
    assert (
        rows["E2E (2 tokens)"]["predicted"] == out["predicted_e2e"] and rows["TTFT"]["measured"] == out["measured_ttft"]
    )
    assert rows["TPOT (mean of 1 step)"]["predicted"] == pytest.approx(out["predicted_e2e"] - out["predicted_ttft"])
    tr = json.loads(trace.read_text())
    assert tr["coldpipe"]["token_ids"] == out["token_ids"] and tr["coldpipe"]["overlap"] == "layer"
    names = {e["args"]["name"] for e in tr["traceEvents"] if e["ph"] == "M"}
    assert names == {"a", "b", "c"}
    spans = [e for e in tr["traceEvents"] if e["ph"] == "X"]
    assert {e["cat"] for e in spans} >= {"load", "compute", "send", "recv"}
    assert all(e["tid"] == (1 if e["cat"] == "load" else 0) for e in spans)
    assert all(e["ts"] >= 0 and e["dur"] >= 0 and set(e["args"]) >= {"device", "block", "bytes"} for e in spans)
    # `coldpipe show` reports the trace exactly as `run` did: the same rows, measured, predicted, ratio
    with pytest.raises(SystemExit) as exc:
        main(["show", str(trace), "--out", str(tmp_path / "chart.png"), "--json"])
    assert exc.value.code == 0
    shown = json.loads(capsys.readouterr().out)["report"]
    assert shown["summary"] == out["summary"]
    assert shown["stages"] == out["stages"]


@pytest.mark.multiprocess
def test_decode_steps_last_at_least_their_memory_time(tiny: Path) -> None:
    """A device's mem_bandwidth is enforced on decode steps: each block's step lasts >= (weights + KV) / bandwidth,
    and the tokens are still transformers' own."""
    sc0 = _scenario(tiny)
    mem_bw = sum(b.weight_bytes + b.kv_bytes for b in sc0.blocks) / 0.2  # all blocks stream in 0.2 s per token
    sc = sc0.replace(devices=[replace(d, mem_bandwidth=mem_bw) for d in sc0.devices])
    plan = Plan.parse("a[0-2] > b[3-5]")
    ids = prompt_ids(PROMPT, 256, seed=5)
    (res,) = run_local(tiny, sc, [Job(plan, "layer", ids, NEW, tuple(emulation_for(sc, plan, None)))], timeout_s=30)
    assert res["token_ids"] == reference_generate(tiny, ids, NEW)[0]
    steps = [sp for st in res["stages"] for sp in st["spans"] if sp["cat"] == "decode"]
    assert len(steps) == (NEW - 1) * 6
    for sp in steps:
        b = sc.blocks[sp["block"]]
        assert sp["end"] - sp["start"] >= (b.weight_bytes + b.kv_bytes) / mem_bw - 1e-4, sp
    assert res["measured_e2e"] - res["measured_ttft"] >= (NEW - 1) * 0.2


def _burst_scenario_file(tiny: Path, tmp_path: Path, hop_ms: float, requests: int = 3, new_tokens: int = 1) -> Path:
    scenario = tmp_path / "burst.yaml"
    devices = "\n".join(
        f"  - {{name: {n}, flops: 2 GFLOPS, load_bandwidth: 40 MB/s, memory: 1 GB, uplink: 100 Mbit/s, "
        "downlink: 200 Mbit/s, mem_bandwidth: 1 GB/s}"
        for n in "abc"
    )
    scenario.write_text(
        f"network: {{hop_latency: {hop_ms} ms}}\n"
        f"workload: {{prompt_tokens: {PROMPT}, requests: {requests}, new_tokens: {new_tokens}}}\n"
        f"model: {{hf_config: {tiny}/config.json, dtype: float32}}\ndevices:\n{devices}\n"
    )
    return scenario


@pytest.mark.multiprocess
def test_a_burst_decodes_as_the_simulator_predicts(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3 requests of 3 tokens at once through 3 stages behind slow hops (100 ms): every request's tokens are
    the ones transformers gives for its prompt (a KV cache per request), every stage serves the jobs in the
    first stage's order, every transfer takes its modelled time from its send, transfers overlap the next
    job's compute instead of queueing behind it, and first and last tokens come when the simulator says."""
    from coldpipe.core.simulator import burst_schedule
    from coldpipe.scenario_file import load_scenario

    scenario = _burst_scenario_file(tiny, tmp_path, 100.0, new_tokens=NEW)
    text = "a[0-1] > b[2-3] > c[4-5]"
    trace = tmp_path / "trace.json"
    argv = ["run", str(scenario), "--local", "--checkpoint", str(tiny), "--plan", text,
            "--trace", str(trace), "--json"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = json.loads(capsys.readouterr().out)
    burst = out["burst"]
    sc = load_scenario(scenario)
    predicted = burst_schedule(sc, Plan.parse(text), "layer")
    assert burst["requests"] == 3 and burst["predicted"] == pytest.approx(list(predicted.first_token_s))
    assert burst["predicted_answers"] == pytest.approx(list(predicted.last_token_s))
    assert out["measured_ttft"] == burst["measured"][0] and burst["measured"] == sorted(burst["measured"])
    refs = [reference_generate(tiny, prompt_ids(PROMPT, 256, seed=r), NEW)[0] for r in range(3)]
    assert burst["first_token_ids"] == [t[0] for t in refs] and out["token_ids"] == refs[0]
    assert json.loads(trace.read_text())["coldpipe"]["token_ids"] == refs[0]
    # the emulated links and memory are exact lower bounds (sleeps), so only process overheads come on top; a
    # sender that slept its transfers one after another would make the third request ~0.8 s (2 hops x 2 x 100
    # ms) late, a queue at the first stage in any other order would change the last tokens by >= 0.4 s
    assert 0.95 <= burst["ratio_max"] <= 1.25, burst
    for m, p in zip(burst["measured_answers"], burst["predicted_answers"], strict=True):
        assert 0.95 <= m / p <= 1.25, burst
    first_one = sc.replace(workload={"new_tokens": 1})
    assert burst_schedule(first_one, Plan.parse(text), "layer").first_token_s == pytest.approx(burst["predicted"])
    tr = json.loads(trace.read_text())
    assert tr["coldpipe"]["predicted_completions"] == pytest.approx(list(predicted.first_token_s))
    spans: dict[int, list[dict]] = {}
    for e in tr["traceEvents"]:
        if e["ph"] == "X":
            spans.setdefault(e["pid"], []).append(e)
    orders = []
    for j in range(3):
        first_block = 2 * j  # each stage's first block: one span per job
        jobs = sorted(
            (e for e in spans[j] if e["cat"] in ("compute", "decode") and e["args"]["block"] == first_block),
            key=lambda e: e["ts"],
        )
        orders.append([e["name"].split()[2:] for e in jobs])
        assert len(jobs) == 3 * NEW
        if j > 0:  # a job's input is received (its modelled arrival) after the previous stage sent it
            sends = [e for e in spans[j - 1] if e["cat"] == "send"]
            recvs = [e for e in spans[j] if e["cat"] == "recv"]
            assert len(sends) == len(recvs) == 3 * NEW
            for snd, rcv in zip(sends, recvs, strict=True):
                assert rcv["ts"] + rcv["dur"] >= snd["ts"] + snd["dur"] - 1.0  # us
                assert snd["dur"] >= 2 * 100e3  # 2 hops of 100 ms each way, at least
    assert orders[0] == orders[1] == orders[2]  # the pipeline keeps the first stage's order
    # and that order is the model's: (request, step) in the order the first stage received them
    expected = [[f"r{r}" if r else "", f"t{k + 1}" if k else ""] for r, k in predicted.order]
    assert [[t for t in o if t] for o in orders[0]] == [[t for t in e if t] for e in expected]


@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "fault", [{"rank": 2, "at": "compute"}, {"rank": 1, "at": "connect"}, {"rank": 1, "at": "hang"}], ids=str
)
def test_failure_ends_the_run_with_one_line_per_rank(
    tiny: Path, fault: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    """A rank that dies mid-run, never connects, or stops answering: every rank reports one line, no hang."""
    sc = _scenario(tiny)
    plan = Plan.parse("a[0-2] > b[3-5]")
    job = Job(plan, "layer", prompt_ids(PROMPT, 256), 1, tuple(emulation_for(sc, plan, None)))
    start = time.monotonic()
    with pytest.raises(RunFailed, match=r"the pipelined run failed: rank \d"):
        run_local(tiny, sc, [job], timeout_s=4, fault=fault)
    assert time.monotonic() - start < 60  # a hang detector, not a speed target
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("coldpipe: error: rank ") for line in err)
    assert "Traceback" not in "\n".join(err)


@pytest.mark.multiprocess
@pytest.mark.parametrize("overlap", ["layer", "none"])
def test_a_loader_io_error_is_named_first_with_its_cause(
    tiny: Path, overlap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (issue 15): a loader I/O failure was reported as "Tensor on device meta" (wait_resident did not
    check the loader's failure), and the run's summary blamed a bystander rank."""
    sc = _scenario(tiny)
    plan = Plan.parse("a[0-2] > b[3-5]")
    job = Job(plan, overlap, prompt_ids(PROMPT, 256), 1, tuple(emulation_for(sc, plan, None)))
    cause = r"rank 2 \(stage 1\): the loader failed reading block 3: OSError: .*Input/output error"
    with pytest.raises(RunFailed, match=f"the pipelined run failed: {cause}"):
        run_local(tiny, sc, [job], timeout_s=4, fault={"rank": 2, "at": "load-error"})
    err = capsys.readouterr().err.strip().splitlines()
    assert re.match(f"coldpipe: error: {cause}", err[0]), err
    assert not any("meta" in line for line in err)
