"""The official ``openai`` client against a running ``coldpipe serve --local`` (one server for the module).

The order matters for the first test only: the server starts cold, so its first request must be the cold one.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import openai
import psutil
import pytest
from serve_server import IDLE_UNLOAD_S, KEY, MAX_QUEUE, MODEL, Server

pytestmark = pytest.mark.multiprocess


def client(server: Server, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _plan_state(server: Server) -> str:
    r = httpx.get(server.url + "/v1/coldpipe/plan", headers={"Authorization": f"Bearer {KEY}"})
    return str(r.json()["state"])


def test_first_request_cold_second_warm_and_faster_then_idle_unload(server: Server) -> None:
    c = client(server)
    assert _plan_state(server) == "cold"
    first = c.completions.with_raw_response.create(model=MODEL, prompt="Hello there", max_tokens=4, temperature=0)
    second = c.completions.with_raw_response.create(model=MODEL, prompt="Hello there", max_tokens=4, temperature=0)
    assert first.headers["x-coldpipe-cold"] == "true"
    assert second.headers["x-coldpipe-cold"] == "false"
    cold_s = float(first.headers["x-coldpipe-ttft-measured"])
    warm_s = float(second.headers["x-coldpipe-ttft-measured"])
    assert warm_s < cold_s
    # the prediction comes from the simulator: the cold start is predicted slower too
    assert float(second.headers["x-coldpipe-ttft-predicted"]) < float(first.headers["x-coldpipe-ttft-predicted"])
    assert first.parse().choices[0].text == second.parse().choices[0].text  # greedy: same tokens, cold or warm
    assert _plan_state(server) == "warm"
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'coldpipe_ttft_seconds_count{start="cold"} 1' in metrics
    assert 'coldpipe_ttft_seconds_count{start="warm"} 1' in metrics
    loaded = [ln for ln in metrics.splitlines() if ln.startswith("coldpipe_loaded_bytes_total")]
    assert len(loaded) == 3 and all(int(ln.split()[-1]) > 0 for ln in loaded)
    deadline = time.monotonic() + IDLE_UNLOAD_S + 10
    while _plan_state(server) != "cold":
        assert time.monotonic() < deadline, "the server never unloaded"
        time.sleep(0.2)
    third = c.completions.with_raw_response.create(model=MODEL, prompt="Hello there", max_tokens=4, temperature=0)
    assert third.headers["x-coldpipe-cold"] == "true"
    assert third.parse().choices[0].text == first.parse().choices[0].text


def test_models_and_wrong_key(server: Server) -> None:
    assert [m.id for m in client(server).models.list().data] == [MODEL]
    with pytest.raises(openai.AuthenticationError) as err:
        client(server, "wrong").completions.create(model=MODEL, prompt="hi", max_tokens=1)
    assert err.value.status_code == 401
    assert httpx.get(server.url + "/metrics").status_code == 401  # no key at all


def test_chat_stream_equals_non_stream_and_usage(server: Server) -> None:
    c = client(server)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}]
    full = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0)
    assert full.choices[0].message.role == "assistant" and full.choices[0].finish_reason in ("length", "stop")
    assert full.usage is not None and full.usage.prompt_tokens > 8
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens
    chunks = list(
        c.chat.completions.create(
            model=MODEL,
            messages=msgs,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    streamed = list(c.completions.create(model=MODEL, prompt="Once upon", max_tokens=6, temperature=0, stream=True))
    plain = c.completions.create(model=MODEL, prompt="Once upon", max_tokens=6, temperature=0)
    assert "".join(ch.choices[0].text for ch in streamed) == plain.choices[0].text
    assert streamed[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_seed_top_p_and_stop(server: Server) -> None:
    c = client(server)
    a = c.completions.create(model=MODEL, prompt="The river", max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    b = c.completions.create(model=MODEL, prompt="The river", max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    assert a.choices[0].text == b.choices[0].text  # same seed, same tokens
    others = {
        c.completions.create(model=MODEL, prompt="The river", max_tokens=10, temperature=1.5, seed=s).choices[0].text
        for s in range(4)
    }
    assert len(others) > 1  # sampling does sample
    text = c.completions.create(model=MODEL, prompt="The river", max_tokens=12, temperature=0).choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = c.completions.create(model=MODEL, prompt="The river", max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.find(stop)]


def test_bad_requests(server: Server) -> None:
    c = client(server)
    with pytest.raises(openai.BadRequestError) as err:
        c.completions.create(model=MODEL, prompt="word " * 400, max_tokens=4)
    assert err.value.code == "context_length_exceeded" and err.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as err:
        c.completions.create(model=MODEL, prompt="hi", max_tokens=4, temperature=5)
    assert err.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
    assert err.value.param == "messages"
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="gpt-4", prompt="hi", max_tokens=1)
    r = httpx.post(server.url + "/v1/completions", content=b"{", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"


def test_concurrent_requests_are_a_burst_with_the_same_tokens(server: Server) -> None:
    c = client(server)
    prompts = [f"Question {i}: what is the weather like?" for i in range(8)]
    alone = [c.completions.create(model=MODEL, prompt=p, max_tokens=5, temperature=0).choices[0].text for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        together = list(
            pool.map(
                lambda p: c.completions.create(model=MODEL, prompt=p, max_tokens=5, temperature=0).choices[0].text,
                prompts,
            )
        )
    assert together == alone
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert "coldpipe_queue_length 0" in metrics


def test_full_queue_gives_429_with_retry_after(server: Server) -> None:
    body = {"model": MODEL, "prompt": "Count", "max_tokens": 20, "temperature": 0}
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as h, ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: h.post(server.url + "/v1/completions", json=body), range(4 * MAX_QUEUE)))
    statuses = [r.status_code for r in codes]
    assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
    full = next(r for r in codes if r.status_code == 429)
    assert int(full.headers["Retry-After"]) >= 1 and full.json()["error"]["code"] == "queue_full"


def test_a_client_that_disconnects_frees_its_place(server: Server) -> None:
    c = client(server)
    stream = c.completions.create(model=MODEL, prompt="Tell", max_tokens=200, temperature=0, stream=True)
    next(iter(stream))
    stream.close()  # mid-stream
    t = time.monotonic()
    out = c.completions.create(model=MODEL, prompt="Tell", max_tokens=2, temperature=0)
    assert out.choices[0].finish_reason == "length"
    assert time.monotonic() - t < 10  # not stuck behind the 198 tokens the first client no longer wants
    deadline = time.monotonic() + 10
    while (
        'coldpipe_errors_total{kind="client_disconnected"}'
        not in httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _resources(pid: int) -> tuple[int, int, int]:
    p = psutil.Process(pid)
    return p.num_threads(), p.num_fds(), p.memory_info().rss


def _load(server: Server, n_requests: int, n_clients: int) -> None:
    c = client(server)
    done = []
    lock = threading.Lock()

    def one(i: int) -> None:
        out = c.completions.create(model=MODEL, prompt=f"Load {i}", max_tokens=4, temperature=0.7, seed=i)
        with lock:
            done.append(out.choices[0].finish_reason)

    with ThreadPoolExecutor(n_clients) as pool:
        list(pool.map(one, range(n_requests)))
    assert len(done) == n_requests


THREADS_BOUND, FDS_BOUND, RSS_BOUND = 4, 16, 64 << 20


def _bounded_load(server: Server, n_requests: int) -> None:
    _load(server, 16, 8)  # steady state first (allocator, connection pools)
    before = _resources(server.proc.pid)
    _load(server, n_requests, 8)
    time.sleep(1.0)
    after = _resources(server.proc.pid)
    assert after[0] - before[0] <= THREADS_BOUND, (before, after)
    assert after[1] - before[1] <= FDS_BOUND, (before, after)
    assert after[2] - before[2] <= RSS_BOUND, (before, after)
    workers = psutil.Process(server.proc.pid).children(recursive=True)
    assert sum(w.memory_info().rss for w in workers) < 2 << 30


def test_bounded_load_48_requests_8_clients(server: Server) -> None:
    _bounded_load(server, 48)


@pytest.mark.slow
def test_bounded_load_200_requests_8_clients(server: Server) -> None:
    _bounded_load(server, 200)


def _device_processes(server: Server) -> list[psutil.Process]:
    """The device workers: the forkserver's children."""
    procs = psutil.Process(server.proc.pid).children(recursive=True)
    return [p for p in procs if p.ppid() != server.proc.pid]


def test_a_device_that_dies_fails_its_request_and_the_next_one_runs_cold(server: Server) -> None:
    c = client(server)
    workers = _device_processes(server)
    assert len(workers) == 3
    stream = c.completions.create(model=MODEL, prompt="Tell", max_tokens=240, temperature=0, stream=True)
    with pytest.raises(openai.APIError, match="device"):
        for i, _chunk in enumerate(stream):
            if i == 0:
                workers[1].kill()
    out = c.completions.with_raw_response.create(model=MODEL, prompt="Tell", max_tokens=3, temperature=0)
    assert out.headers["x-coldpipe-cold"] == "true" and out.parse().choices[0].finish_reason == "length"
    assert len(_device_processes(server)) == 3
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert 'coldpipe_errors_total{kind="device_failed"} 1' in metrics


def test_sigterm_stops_the_server_and_every_device(server: Server) -> None:
    """Last in the module: the server and its device processes stop cleanly."""
    children = psutil.Process(server.proc.pid).children(recursive=True)
    assert len(children) >= 3
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        raise
    assert code == 0, server.log_text()[-2000:]
    assert "stopped every device" in server.log_text()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    assert "Traceback" not in server.log_text()


@pytest.mark.slow
def test_ctrl_c_stops_a_server_mid_request(tiny_files: tuple) -> None:
    """SIGINT (what Ctrl-C sends) while a request streams: exit code 130, every device process gone."""
    from serve_server import start_server

    root, ckpt, sc = tiny_files
    srv = start_server(root, ckpt, sc)
    try:
        children = psutil.Process(srv.proc.pid).children(recursive=True)
        stream = client(srv).completions.create(model=MODEL, prompt="Tell", max_tokens=240, temperature=0, stream=True)
        next(iter(stream))
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(30) == 130
        assert "stopped every device" in srv.log_text() and "Traceback" not in srv.log_text()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
