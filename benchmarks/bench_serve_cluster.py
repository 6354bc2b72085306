"""Cold TTFT through ``coldpipe serve --cluster`` (HTTP) against ``coldpipe cluster run`` on the same plan.

    PYTHONPATH=src nice .venv/bin/python benchmarks/bench_serve_cluster.py   # out/bench_serve_cluster.json, docs

1. the checkpoint of ``bench_serve.py`` (random fp32 Llama-shaped, 8 layers, hidden 768, ~227 MB, made once in
   out/bench-serve; ``--layers N``: the same shape with N layers, in out/bench-serve-cluster-NL) and three
   ``coldpipe agent`` processes on 127.0.0.1 (``--profile auto``: each measures itself; no testbed, so each
   reads the checkpoint at this disk's speed after dropping its page cache);
2. ``coldpipe cluster plan --scenario-out``: the measured scenario (prompt ``PROMPT`` tokens, 1 new token)
   and its optimal plan; the server gets that scenario (``--scenario``), so it plans the same plan;
3. per rep, interleaved: one cold streamed ``/v1/completions`` request (the prompt as token ids, 1 token)
   through the server, timed by the client from sending to the response's start (the server sends it with
   the first token; the client is made before the clock starts); then, once the server is cold again
   (``--idle-unload 1``), ``coldpipe cluster run --scenario`` (resident blocks dropped, page cache dropped,
   its measured TTFT from ``t0``); then its blocks dropped and the checkpoint's page cache dropped (the agents
   share this host's files), so the next served request is cold. Odd reps run the two in the other order.

Target: serve's median <= 1.05 x cluster run's. Medians over ``--reps``; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _docs import write_between  # noqa: E402
from bench_serve import MODEL, NAME, PROMPT, PROMPT_VOCAB, Server, setup  # noqa: E402

from coldpipe.cluster.coordinator import Coordinator, load_cluster  # noqa: E402
from coldpipe.cluster.token import read_token  # noqa: E402
from coldpipe.cluster.transport import Keys  # noqa: E402
from coldpipe.runtime.checkpoint import arch_for, make_checkpoint, open_checkpoint  # noqa: E402
from coldpipe.runtime.emulation import drop_page_cache  # noqa: E402
from coldpipe.runtime.launch import prompt_ids  # noqa: E402
from coldpipe.runtime.tokenizer import write_tokenizer  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
COLDPIPE = [sys.executable, "-m", "coldpipe"]


def start_agents(out: Path, ckpt: Path, token: Path, n: int) -> tuple[list[subprocess.Popen[bytes]], Path]:
    procs, logs = [], []
    for i in range(n):
        log = out / f"bench-serve-cluster-agent{i}.log"
        cmd = [*COLDPIPE, "agent", "--name", f"a{i}", "--listen", "127.0.0.1:0", "--token-file", str(token)]
        procs.append(
            subprocess.Popen(
                [*cmd, "--checkpoint", str(ckpt)], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=ENV
            )
        )
        logs.append(log)
    ports = []
    deadline = time.monotonic() + 300
    for p, log in zip(procs, logs, strict=True):
        while not (m := re.search(r"ready on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text(errors="replace"))
            time.sleep(0.2)
        ports.append(int(m.group(1)))
    cluster = out / "bench-serve-cluster.yaml"
    cluster.write_text(
        "agents:\n" + "".join(f"  - {{name: a{i}, address: '127.0.0.1:{p}'}}\n" for i, p in enumerate(ports))
    )
    return procs, cluster


class ClusterServer(Server):
    """``coldpipe serve --cluster`` (bench_serve's Server with another command line)."""

    def __init__(self, ckpt: Path, cluster: Path, token: Path, scenario: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = ckpt.parent / f"bench-serve-cluster-{port}.log"
        cmd = [*COLDPIPE, "serve", "--cluster", str(cluster), "--token-file", str(token), "--scenario", str(scenario)]
        cmd += ["--checkpoint", str(ckpt), "--port", str(port), "--model-name", NAME, "--idle-unload", "1"]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=ENV)
        deadline = time.monotonic() + 300
        while "Ctrl-C stops" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(self.log.read_text(errors="replace"))
            time.sleep(0.2)

    def state(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/v1/coldpipe/plan").json())

    def first_token(self, h: httpx.Client, ids: list[int]) -> tuple[float, dict[str, str]]:
        """(seconds from sending to the response's start, headers) of a streamed 1-token request.

        ``h`` is made before the clock starts: making an ``httpx.Client`` (its SSL context) takes 35-70 ms here.
        """
        body = {"model": NAME, "prompt": ids, "max_tokens": 1, "temperature": 0, "stream": True}
        t = time.perf_counter()
        with h.stream("POST", self.url + "/v1/completions", json=body) as r:
            first = time.perf_counter() - t
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.read().decode()}")
            for _ in r.iter_lines():
                pass
            return first, dict(r.headers)


def run_json(args: list[str]) -> dict[str, Any]:
    res = subprocess.run([*COLDPIPE, *args, "--json"], capture_output=True, text=True, env=ENV, check=False)
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return dict(json.loads(res.stdout))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "out"))
    ap.add_argument("--port", type=int, default=8941)
    ap.add_argument("--layers", type=int, default=MODEL["layers"], help="decoder layers of the checkpoint")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.layers == MODEL["layers"]:
        ckpt, _ = setup(out)
    else:
        ckpt = out / f"bench-serve-cluster-{args.layers}L"
        if not (ckpt / "tokenizer.json").is_file():
            arch = arch_for("llama-3.1-8b", **{**MODEL, "layers": args.layers})
            make_checkpoint(arch, ckpt, init_std=0.3)
            write_tokenizer(ckpt, arch.vocab_size)
    ck = open_checkpoint(ckpt)
    token = out / "bench-serve-cluster.token"
    token.write_text(os.urandom(24).hex())
    token.chmod(0o600)
    res: dict[str, Any] = {
        "reps": args.reps,
        "layers": args.layers,
        "checkpoint_bytes": sum(ck.block_bytes(b) for b in range(ck.n_blocks)),
    }
    res["load_average_start"] = os.getloadavg()[0]
    agents, cluster = start_agents(out, ckpt, token, 3)
    srv = None
    try:
        measured = out / "bench-serve-cluster-scenario.json"
        common = [str(cluster), "--checkpoint", str(ckpt), "--token-file", str(token)]
        planned = run_json(
            ["cluster", "plan", *common, "--prompt-tokens", str(PROMPT), "--scenario-out", str(measured)]
        )
        srv = ClusterServer(ckpt, cluster, token, measured, args.port)
        assert srv.state()["plan"] == planned["plan_text"], (srv.state()["plan"], planned["plan_text"])
        ids = list(prompt_ids(PROMPT, PROMPT_VOCAB, seed=1))
        keys = Keys(read_token(token))
        served, header_ttft, predicted, runs, run_predicted = [], [], [], [], []
        backend_first, serve_load_end, run_load_end, serve_load_start, run_load_start = [], [], [], [], []

        def serve_rep() -> None:
            """One cold request through the server; then it unloads (idle) and prepares its cold plan again."""
            while srv.state()["state"] != "cold":
                time.sleep(0.1)
            with httpx.Client(timeout=120) as h:
                first, headers = srv.first_token(h, ids)
            assert headers["x-coldpipe-cold"] == "true"
            served.append(first)
            header_ttft.append(float(headers["x-coldpipe-ttft-measured"]))
            predicted.append(float(headers["x-coldpipe-ttft-predicted"]))
            time.sleep(0.3)  # the burst's log line (after the agents' reports)
            line = re.findall(r"first token ([0-9.]+) s after the start; loaded: (.*)", srv.log.read_text())[-1]
            backend_first.append(float(line[0]))
            serve_load_end.append(max(float(x) for x in re.findall(r"to ([0-9.]+) s", line[1])))
            serve_load_start.append(max(float(x) / 1e3 for x in re.findall(r"from ([0-9.-]+) ms", line[1])))
            time.sleep(1.5)
            while srv.state()["state"] != "cold":  # the server unloaded (and prepared its cold plan again)
                time.sleep(0.1)

        def run_rep() -> None:
            """One ``cluster run`` (it drops blocks and the page cache itself); then the agents are made cold again."""
            trace = out / "bench-serve-cluster-trace.json"
            r = run_json(
                ["cluster", "run", *common, "--scenario", str(measured), "--plan", "optimal", "--trace", str(trace)]
            )
            assert r["plan_text"] == planned["plan_text"]
            runs.append(float(r["measured_ttft"]))
            run_predicted.append(float(r["predicted_ttft"]))
            run_load_end.append(max(float(st["measured"]["load_end"]) for st in r["stages"]))
            run_load_start.append(latest_loader_start_s(trace))
            with Coordinator(keys, load_cluster(cluster)) as co:  # the server's next request must find them cold
                for ch in co.ch.values():
                    ch.request("drop", 5.0)
            drop_page_cache(ck.files)
            time.sleep(0.5)  # as cluster run's prepare is ahead of its t0, nothing just dropped is in the way

        for rep in range(args.reps):  # alternate which side goes first
            for side in (serve_rep, run_rep) if rep % 2 == 0 else (run_rep, serve_rep):
                side()
    finally:
        if srv is not None:
            srv.stop()
        for p in agents:
            p.terminate()
        for p in agents:
            p.wait(60)
    res["load_average_end"] = os.getloadavg()[0]
    res.update(
        plan=planned["plan_text"],
        serve_s=served,
        serve_header_s=header_ttft,
        serve_predicted_s=predicted,
        run_s=runs,
        run_predicted_s=run_predicted,
        serve_backend_first_s=backend_first,
        serve_load_end_s=serve_load_end,
        run_load_end_s=run_load_end,
        serve_load_start_s=serve_load_start,
        run_load_start_s=run_load_start,
        serve_median_s=statistics.median(served),
        run_median_s=statistics.median(runs),
    )
    res["overhead"] = res["serve_median_s"] / res["run_median_s"] - 1
    res["paired_overhead_median"] = statistics.median(a / b - 1 for a, b in zip(served, runs, strict=True))
    # the server's own part of each served TTFT: the client's time minus the agents' (burst start -> first token)
    res["server_part_median_s"] = statistics.median(a - b for a, b in zip(served, backend_first, strict=True))
    (out / "bench_serve_cluster.json").write_text(json.dumps(res, indent=2) + "\n")
    md = table(res)
    print(json.dumps({k: v for k, v in res.items() if k.endswith("_s")}))
    print(md)
    mark = "serve-cluster" if args.layers == MODEL["layers"] else f"serve-cluster-{args.layers}L"
    write_between(REPO / "docs" / "serve.md", f"<!-- bench:{mark}:start -->", f"<!-- bench:{mark}:end -->", md)


def latest_loader_start_s(trace: Path) -> float:
    """The latest of the devices' first load spans in a ``cluster run`` trace, seconds after ``t0``."""
    doc = json.loads(trace.read_text())
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    first: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "load" and e.get("ph") == "X":
            d = e["args"]["device"]
            first[d] = min(first.get(d, float("inf")), float(e["ts"]) / 1e6)
    return max(first.values())


def table(res: dict[str, Any]) -> str:
    mb = res["checkpoint_bytes"] / 1e6
    ms = lambda xs: ", ".join(f"{1e3 * x:.0f}" for x in xs)  # noqa: E731
    flag = "" if res["layers"] == MODEL["layers"] else f" --layers {res['layers']}"
    return "\n".join(
        [
            f"{mb:.0f} MB fp32 checkpoint ({res['layers']} layers, hidden 768), 3 agents on 127.0.0.1 "
            f"(`--profile auto`, no testbed), plan `{res['plan']}` (overlap layer), prompt {PROMPT} tokens; "
            f"medians of {res['reps']} on a "
            f"shared {os.cpu_count()}-core host, 1-minute load average {res['load_average_start']:.1f} at the start "
            f"and {res['load_average_end']:.1f} at the end (`PYTHONPATH=src nice .venv/bin/python "
            f"benchmarks/bench_serve_cluster.py{flag}`).",
            "",
            "| measure | coldpipe serve --cluster (HTTP) | coldpipe cluster run (same plan) | overhead | target |",
            "|---|---:|---:|---:|---:|",
            f"| cold TTFT | {res['serve_median_s']:.3f} s | {res['run_median_s']:.3f} s | "
            f"{100 * res['overhead']:+.1f} % | <= 5 % |",
            f"| the same, median of the per-rep ratios | | | {100 * res['paired_overhead_median']:+.1f} % | |",
            f"| first token after the burst's start (agents only) | "
            f"{statistics.median(res['serve_backend_first_s']):.3f} s | "
            f"{res['run_median_s']:.3f} s (from `t0`) | | |",
            f"| HTTP + engine (client's time minus the agents' part, per rep) | "
            f"{1e3 * res['server_part_median_s']:.1f} ms | | | |",
            f"| latest loader start (after the start / `t0`) | "
            f"{1e3 * statistics.median(res['serve_load_start_s']):.1f} ms | "
            f"{1e3 * statistics.median(res['run_load_start_s']):.1f} ms | | |",
            f"| last block resident (after the start / `t0`) | {statistics.median(res['serve_load_end_s']):.3f} s | "
            f"{statistics.median(res['run_load_end_s']):.3f} s | | |",
            "",
            f"Reps (ms): serve {ms(res['serve_s'])}; cluster run {ms(res['run_s'])}. The server's own "
            f"`x-coldpipe-ttft-measured` median: {statistics.median(res['serve_header_s']):.3f} s; the simulator "
            f"predicted {statistics.median(res['serve_predicted_s']):.3f} s (serve's header) and "
            f"{statistics.median(res['run_predicted_s']):.3f} s (`cluster run`).",
        ]
    )


if __name__ == "__main__":
    main()
