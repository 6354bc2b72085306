"""The official ``openai`` client against ``coldpipe serve --cluster`` over three ``coldpipe agent`` processes.

The agents listen on 127.0.0.1 (no testbed, no root) with a fixed profile; the server measures their links and
builds its scenario as ``cluster plan`` does. One server and one set of agents for the module; the order
matters: the first test needs the cold server, the last two kill an agent and stop the server.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from serve_server import KEY, MODEL, AgentProc, Server, launch_agents, launch_server, stop, wait_agents, wait_started

from coldpipe.core.types import Plan

pytestmark = pytest.mark.multiprocess

PROMPT = [7, 42, 99, 13, 250, 31, 8, 77]  # token ids: the same prompt for the server and transformers


@dataclass
class Cluster:
    server: Server
    agents: list[AgentProc]
    cluster_file: Path
    token: Path


@pytest.fixture(scope="module")
def cl(tiny_files: tuple[Path, Path, Path]) -> Iterator[Cluster]:
    root, ckpt, sc = tiny_files
    token = root / "join-token"
    token.write_text("a-join-token-for-the-serve-tests-0123456789")
    token.chmod(0o600)
    agents = launch_agents(root, ckpt, token, ["a0", "a1", "a2", "a3"])
    server = None
    try:
        cluster_file = root / "cluster.yaml"
        wait_agents(agents, cluster_file)
        mode = ["--cluster", str(cluster_file), "--token-file", str(token)]
        server = wait_started(launch_server(root, ckpt, sc, mode, "--idle-unload", "3"))
        yield Cluster(server, agents, cluster_file, token)
    finally:
        if server is not None:
            stop(server.proc)
        for a in agents:
            stop(a.proc)


def client(cl: Cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=cl.server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _get(cl: Cluster, route: str) -> httpx.Response:
    return httpx.get(cl.server.url + route, headers={"Authorization": f"Bearer {KEY}"})


def _loaded_bytes(cl: Cluster) -> int:
    rows = [ln for ln in _get(cl, "/metrics").text.splitlines() if ln.startswith("coldpipe_loaded_bytes_total")]
    return sum(int(ln.split()[-1]) for ln in rows)


def transformers_text(ckpt: Path, ids: list[int], n: int, temperature: float, top_p: float, seed: int) -> str:
    """transformers' ``from_pretrained`` model, each token picked by the local backend's sampler, until EOS or n."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from coldpipe.runtime.tokenizer import load_tokenizer
    from coldpipe.serve.sampling import Sampler

    tok = load_tokenizer(ckpt)
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), attn_implementation="sdpa").eval()
    sampler = Sampler(temperature, top_p, seed)
    x = torch.tensor([ids], dtype=torch.long)  # (1, s)
    cache = DynamicCache(config=model.config)
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(n):
            t = sampler(model(input_ids=x, cache=cache, use_cache=True).logits[:, -1, :].float())  # (1, V) -> id
            if t == tok.eos_token_id:
                break
            out.append(t)
            x = torch.tensor([[t]], dtype=torch.long)
    return str(tok.decode(out, skip_special_tokens=True))


def test_first_request_cold_second_warm(cl: Cluster) -> None:
    c = client(cl)
    assert _get(cl, "/v1/coldpipe/plan").json()["state"] == "cold"
    first = c.completions.with_raw_response.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    loaded_cold = _loaded_bytes(cl)
    second = c.completions.with_raw_response.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert first.headers["x-coldpipe-cold"] == "true" and second.headers["x-coldpipe-cold"] == "false"
    assert (
        float(first.headers["x-coldpipe-ttft-measured"]) > 0 and float(second.headers["x-coldpipe-ttft-measured"]) > 0
    )
    # the simulator's prediction of the cold start (loading) exceeds the warm one's
    assert float(second.headers["x-coldpipe-ttft-predicted"]) < float(first.headers["x-coldpipe-ttft-predicted"])
    # the agents kept their blocks: the warm request loaded nothing
    assert loaded_cold > 0 and _loaded_bytes(cl) == loaded_cold
    assert first.parse().choices[0].text == second.parse().choices[0].text
    info = _get(cl, "/v1/coldpipe/plan").json()
    assert info["state"] == "warm" and info["devices_up"] == ["a0", "a1", "a2", "a3"]
    metrics = _get(cl, "/metrics").text
    assert 'coldpipe_ttft_seconds_count{start="cold"} 1' in metrics
    assert 'coldpipe_ttft_seconds_count{start="warm"} 1' in metrics


def test_streamed_greedy_text_is_transformers_greedy_text(cl: Cluster) -> None:
    streamed = client(cl).completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, stream=True)
    text = "".join(ch.choices[0].text for ch in streamed)
    assert text == transformers_text(cl.server.checkpoint, PROMPT, 12, 0.0, 1.0, 0)


def test_seeded_sampling_gives_the_local_backends_tokens(cl: Cluster) -> None:
    """Seeded temperature/top-p sampling on the last agent: the same tokens as the local backend's sampler."""
    c = client(cl)
    for seed in (3, 11):
        chunks = c.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=10, temperature=1.0, top_p=0.9, seed=seed, stream=True
        )
        text = "".join(ch.choices[0].text for ch in chunks)
        assert text == transformers_text(cl.server.checkpoint, PROMPT, 10, 1.0, 0.9, seed), seed


def test_concurrent_requests_are_one_burst_with_each_requests_tokens(cl: Cluster) -> None:
    c = client(cl)
    prompts = [PROMPT[: 3 + i] for i in range(4)]  # different lengths in one burst

    def ask(i: int) -> str:
        out = c.completions.create(model=MODEL, prompt=prompts[i], max_tokens=5, temperature=1.2, seed=i)
        return str(out.choices[0].text)

    alone = [ask(i) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(ask, range(4)))
    assert together == alone


def test_idle_unload_frees_the_agents_and_returns_to_cold(cl: Cluster) -> None:
    import time

    c = client(cl)
    c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, temperature=0)
    deadline = time.monotonic() + 15
    while _get(cl, "/v1/coldpipe/plan").json()["state"] != "cold":
        assert time.monotonic() < deadline, "the server never unloaded"
        time.sleep(0.2)
    out = c.completions.with_raw_response.create(model=MODEL, prompt=PROMPT, max_tokens=2, temperature=0)
    assert out.headers["x-coldpipe-cold"] == "true"


def test_an_agent_killed_mid_request_errors_and_the_next_request_is_replanned(cl: Cluster) -> None:
    c = client(cl)
    expected = c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0).choices[0].text
    used = [st.device for st in Plan.parse(_get(cl, "/v1/coldpipe/plan").json()["plan"]).stages]
    victim = next(a for a in cl.agents if a.name == used[-1])  # the last stage's agent: it sends the tokens
    stream = c.completions.create(model=MODEL, prompt=PROMPT, max_tokens=240, temperature=0, stream=True)
    with pytest.raises(openai.APIError, match=f"agent {victim.name}"):
        for i, _chunk in enumerate(stream):
            if i == 0:
                victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    out = c.completions.with_raw_response.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert out.headers["x-coldpipe-cold"] == "true"
    assert out.parse().choices[0].text == expected  # the same tokens from the survivors
    info = _get(cl, "/v1/coldpipe/plan").json()
    assert victim.name not in info["devices_up"] and len(info["devices_up"]) == 3
    assert victim.name not in info["plan"]
    assert 'coldpipe_errors_total{kind="device_failed"} 1' in _get(cl, "/metrics").text


def test_an_agent_lost_while_idle_is_planned_around_before_the_next_request(cl: Cluster) -> None:
    import time

    before = _get(cl, "/v1/coldpipe/plan").json()
    used = [st.device for st in Plan.parse(before["plan"]).stages]
    victim = next(a for a in cl.agents if a.name == used[0])
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(10)
    deadline = time.monotonic() + 10
    while victim.name in (info := _get(cl, "/v1/coldpipe/plan").json())["devices_up"]:
        assert time.monotonic() < deadline, "the server never noticed"
        time.sleep(0.1)
    assert victim.name not in str(info["plan"]) and info["bursts"] == before["bursts"]  # re-planned, no request
    out = client(cl).completions.with_raw_response.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0)
    assert out.parse().choices[0].finish_reason == "length"


def test_an_agent_killed_during_a_plain_request_gives_503_with_openais_body(cl: Cluster) -> None:
    import threading
    import time

    used = [st.device for st in Plan.parse(_get(cl, "/v1/coldpipe/plan").json()["plan"]).stages]
    victim = next(a for a in cl.agents if a.name == used[-1])
    bursts = cl.server.log_text().count("burst of 1 request")
    got: list[httpx.Response] = []
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 240, "temperature": 0}
    th = threading.Thread(
        target=lambda: got.append(
            httpx.post(
                cl.server.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
            )
        )
    )
    th.start()
    deadline = time.monotonic() + 20
    while cl.server.log_text().count("burst of 1 request") == bursts:  # its burst started
        assert time.monotonic() < deadline
        time.sleep(0.005)
    victim.proc.send_signal(signal.SIGKILL)
    th.join(30)
    assert got[0].status_code == 503
    err = got[0].json()["error"]
    assert (
        err["type"] == "server_error"
        and f"agent {victim.name}" in err["message"]
        and set(err)
        == {
            "message",
            "type",
            "param",
            "code",
        }
    )
    out = client(cl).completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert out.choices[0].finish_reason == "length"  # the last agent serves the whole model alone
    assert len(_get(cl, "/v1/coldpipe/plan").json()["devices_up"]) == 1


def test_sigterm_frees_the_agents_which_keep_running(cl: Cluster) -> None:
    from coldpipe.cluster.coordinator import Coordinator, load_cluster
    from coldpipe.cluster.token import read_token
    from coldpipe.cluster.transport import Keys

    cl.server.proc.send_signal(signal.SIGTERM)
    try:
        code = cl.server.proc.wait(30)
    except subprocess.TimeoutExpired:
        cl.server.proc.kill()
        raise
    assert code == 0, cl.server.log_text()[-2000:]
    assert "freed every agent" in cl.server.log_text() and "Traceback" not in cl.server.log_text()
    alive = [a for a in cl.agents if a.proc.poll() is None]
    assert len(alive) == 1
    refs = [r for r in load_cluster(cl.cluster_file) if r.name in {a.name for a in alive}]
    with Coordinator(Keys(read_token(cl.token)), refs) as co:
        assert [(r["reachable"], r["resident"]) for r in co.status()] == [(True, [])]


def test_cluster_start_errors_are_one_line(tiny_files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture) -> None:
    """Agents that do not answer, or a scenario naming devices the cluster file has not: exit 2, one line."""
    from serve_server import free_port

    from coldpipe.cli import main

    root, ckpt, _ = tiny_files
    token = root / "errors-token"
    token.write_text("a-join-token-for-the-error-tests-0123456789")
    token.chmod(0o600)
    cluster = root / "nobody.yaml"
    cluster.write_text(f"agents:\n  - {{name: gone, address: '127.0.0.1:{free_port()}'}}\n")
    measured = root / "other.yaml"
    measured.write_text((root / "scenario.yaml").read_text())  # devices a, b, c: none is an agent of the file
    base = ["serve", "--cluster", str(cluster), "--token-file", str(token), "--checkpoint", str(ckpt)]
    for extra, field in (([], "--cluster"), (["--scenario", str(measured)], "--scenario")):
        with pytest.raises(SystemExit) as exc:
            main([*base, "--port", str(free_port()), *extra])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"coldpipe: error: {field}"), err
