"""``coldpipe serve`` over HTTP against ``coldpipe run`` and a single-process transformers ``generate``.

    nice .venv/bin/python benchmarks/bench_serve.py     # writes out/bench_serve.json, the tables in README + docs

1. make (once) a random fp32 Llama-shaped checkpoint of ~250 MB with its tokenizer in out/bench-serve
   (8 layers, hidden 768, vocab 4096) and a 3-device scenario (read-rate caps, start-ups, links);
2. **cold TTFT**: ``--reps`` cold requests through ``coldpipe serve --local`` (streamed ``/v1/completions`` with
   the prompt as token ids; the client's time from sending to the response's start, which the server sends with
   the first token; ``--idle-unload`` brings the server back to cold between requests) against the same plan
   run by the runtime of ``coldpipe run --local`` (:func:`coldpipe.runtime.launch.run_local`, cold page cache,
   its measured TTFT); target: overhead <= 5 %;
3. **warm TTFT and decode tokens/s**: a server started with ``--no-emulate`` (host speed, no link delays), warm,
   against ``AutoModelForCausalLM.generate`` in this process (greedy, 1 torch thread like every stage);
   TTFT = ``generate(max_new_tokens=1)``, decode = ``(n - 1) / (t_n - t_1)``; target: overhead <= 10 %;
4. **throughput**: 8 clients sending requests back to back (16 new tokens each, 48 in all) to the emulated
   server, warm: requests/s and the p50/p99 latency of a request.

Each comparison interleaves its two sides rep by rep (the host is shared with other work: both see the same
load); medians over ``--reps`` (cold) and ``--warm-reps`` (warm, default 15), with the quartiles of the warm
pairs' own overheads. The client is made once, before any timing (making one costs 30-80 ms). Figures move
between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _docs import write_between  # noqa: E402

from coldpipe.cli._common import scenario_arg  # noqa: E402
from coldpipe.planning import Problem, plan  # noqa: E402
from coldpipe.runtime.checkpoint import arch_for, make_checkpoint, open_checkpoint  # noqa: E402
from coldpipe.runtime.emulation import emulation_for  # noqa: E402
from coldpipe.runtime.launch import Job, prompt_ids, run_local  # noqa: E402
from coldpipe.runtime.tokenizer import write_tokenizer  # noqa: E402

MODEL = dict(layers=8, hidden=768, heads=12, kv_heads=4, vocab=4096, intermediate=2048)
PROMPT, DECODE = 64, 33
PROMPT_VOCAB = 1000  # prompt ids within the tokenizer (the bundled text gives ~1000 ids)
SCENARIO = """\
network: {{hop_latency: 2 ms}}
workload: {{prompt_tokens: {prompt}, new_tokens: 16}}
model: {{hf_config: {ckpt}/config.json, dtype: float32}}
devices:
  - {{name: a, flops: 10 GFLOPS, load_bandwidth: 150 MB/s, startup: 200 ms, memory: 2 GB,
     uplink: 200 Mbit/s, downlink: 400 Mbit/s, mem_bandwidth: 20 GB/s}}
  - {{name: b, flops: 10 GFLOPS, load_bandwidth: 200 MB/s, startup: 300 ms, memory: 2 GB,
     uplink: 300 Mbit/s, downlink: 500 Mbit/s, mem_bandwidth: 20 GB/s}}
  - {{name: c, flops: 10 GFLOPS, load_bandwidth: 250 MB/s, startup: 400 ms, memory: 2 GB,
     uplink: 400 Mbit/s, downlink: 600 Mbit/s, mem_bandwidth: 20 GB/s}}
"""
NAME = "bench"


def setup(out: Path) -> tuple[Path, Path]:
    ckpt = out / "bench-serve"
    if not (ckpt / "tokenizer.json").is_file():
        arch = arch_for("llama-3.1-8b", **MODEL)
        make_checkpoint(arch, ckpt, init_std=0.3)
        write_tokenizer(ckpt, arch.vocab_size)
    sc = out / "bench-serve.yaml"
    sc.write_text(SCENARIO.format(prompt=PROMPT, ckpt=ckpt.resolve()))
    return ckpt, sc


class Server:
    def __init__(self, ckpt: Path, sc: Path, port: int, *extra: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = ckpt.parent / f"bench-serve-{port}.log"
        cmd = [
            sys.executable,
            "-m",
            "coldpipe",
            "serve",
            "--local",
            str(sc),
            "--checkpoint",
            str(ckpt),
            "--port",
            str(port),
            "--model-name",
            NAME,
            *extra,
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env)
        # one client, made before any timing: making an httpx client costs 30-80 ms (its TLS context), which
        # timed into each TTFT was most of the warm "overhead" and moved with the host's load
        t = time.perf_counter()
        self.http = httpx.Client(timeout=120)
        self.client_setup_s = time.perf_counter() - t  # what the old per-request clients added to each TTFT
        deadline = time.monotonic() + 300
        while "Ctrl-C stops" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(self.log.read_text(errors="replace"))
            time.sleep(0.2)
        while True:  # the server says "Ctrl-C stops" once uvicorn has bound its port; one request to be sure
            try:
                self.http.get(self.url + "/v1/models")
                break
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(self.log.read_text(errors="replace")) from None
                time.sleep(0.05)

    def state(self) -> dict[str, Any]:
        return dict(self.http.get(self.url + "/v1/coldpipe/plan").json())

    def stream(
        self, ids: list[int], max_tokens: int, http: httpx.Client | None = None
    ) -> tuple[float, float, int, dict[str, str]]:
        """(time to the response's start, time to its end, completion tokens, headers) of one streamed request
        over ``http`` (default the server's client; its connection is kept alive between requests)."""
        body = {
            "model": NAME,
            "prompt": ids,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        h = self.http if http is None else http
        t = time.perf_counter()
        with h.stream("POST", self.url + "/v1/completions", json=body) as r:
            first = time.perf_counter() - t
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.read().decode()}")
            usage = 0
            for line in r.iter_lines():
                if line.startswith("data: {") and '"usage": {' in line:
                    usage = int(json.loads(line[6:])["usage"]["completion_tokens"])
            return first, time.perf_counter() - t, usage, dict(r.headers)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(60)


def cold(ckpt: Path, sc_path: Path, reps: int, port: int) -> dict[str, Any]:
    """Interleaved: each rep runs the plan with the runtime, then one cold request through the server."""
    sc = scenario_arg(str(sc_path))
    the_plan = plan(Problem(sc, "layer")).plan
    ids = list(prompt_ids(PROMPT, PROMPT_VOCAB, seed=1))
    job = Job(the_plan, "layer", tuple(ids), 1, tuple(emulation_for(sc, the_plan, None)))
    srv = Server(ckpt, sc_path, port, "--idle-unload", "1")
    runs, served, predicted = [], [], []
    try:
        assert srv.state()["plan"] == str(the_plan), (srv.state()["plan"], str(the_plan))
        for _ in range(reps):
            runs.append(run_local(ckpt, sc, [job], timeout_s=120)[0]["measured_ttft"])
            while srv.state()["state"] != "cold":
                time.sleep(0.1)
            first, _, _, headers = srv.stream(ids, 1)
            assert headers["x-coldpipe-cold"] == "true"
            served.append(first)
            predicted.append(float(headers["x-coldpipe-ttft-predicted"]))
        tput = throughput(srv, 8, 6)
    finally:
        srv.stop()
    run_s, serve_s = statistics.median(runs), statistics.median(served)
    return {
        "plan": str(the_plan),
        "run_s": runs,
        "serve_s": served,
        "predicted_s": predicted,
        "run_median_s": run_s,
        "serve_median_s": serve_s,
        "overhead": serve_s / run_s - 1,
        "throughput": tput,
    }


def steady(srv: Server, ids: list[int]) -> None:
    """Requests until one finds every block resident (a warm plan may first move blocks: those load)."""
    for _ in range(6):
        if srv.stream(ids, 2)[3]["x-coldpipe-cold"] == "false":
            return
    raise RuntimeError("the server never became warm")


def throughput(srv: Server, clients: int, per_client: int) -> dict[str, Any]:
    steady(srv, list(prompt_ids(PROMPT, PROMPT_VOCAB, seed=2)))
    lat: list[float] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(timeout=120) as http:  # one per client thread, made before its requests
            for i in range(per_client):
                ids = list(prompt_ids(PROMPT, PROMPT_VOCAB, seed=100 + c * per_client + i))
                _, total, _, _ = srv.stream(ids, 16, http)
                with lock:
                    lat.append(total)

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    lat.sort()
    return {
        "clients": clients,
        "requests": len(lat),
        "req_per_s": len(lat) / wall,
        "p50_s": lat[len(lat) // 2],
        "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }


def warm(ckpt: Path, sc_path: Path, reps: int, port: int) -> dict[str, Any]:
    """Interleaved: each rep sends one warm request to the server, then runs ``generate`` in this process."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = list(prompt_ids(PROMPT, PROMPT_VOCAB, seed=3))
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    srv = Server(ckpt, sc_path, port, "--no-emulate")
    ttft, rate, ref_ttft, ref_rate, load, server_ttft = [], [], [], [], [], []
    try:
        steady(srv, ids)
        with torch.inference_mode():
            model.generate(x, max_new_tokens=2, do_sample=False)
            for _ in range(reps):
                first, total, n, headers = srv.stream(ids, DECODE)
                assert headers["x-coldpipe-cold"] == "false"
                ttft.append(first)
                server_ttft.append(float(headers["x-coldpipe-ttft-measured"]))  # arrival to first token, no HTTP
                rate.append((n - 1) / (total - first))
                t = time.perf_counter()
                model.generate(x, max_new_tokens=1, do_sample=False)
                t1 = time.perf_counter() - t
                t = time.perf_counter()
                model.generate(x, max_new_tokens=DECODE, min_new_tokens=DECODE, do_sample=False)
                tn = time.perf_counter() - t
                ref_ttft.append(t1)
                ref_rate.append((DECODE - 1) / (tn - t1))
                load.append(os.getloadavg()[0])
    finally:
        srv.stop()
    out_setup = srv.client_setup_s
    workers = [line for line in srv.log.read_text(errors="replace").splitlines() if "torch thread" in line]
    out: dict[str, Any] = {
        "serve_ttft_s": statistics.median(ttft),
        "generate_ttft_s": statistics.median(ref_ttft),
        "serve_tok_per_s": statistics.median(rate),
        "generate_tok_per_s": statistics.median(ref_rate),
        "serve_ttft_all_s": ttft,
        "serve_ttft_server_all_s": server_ttft,
        "generate_ttft_all_s": ref_ttft,
        "serve_tok_per_s_all": rate,
        "generate_tok_per_s_all": ref_rate,
        "load_average_per_rep": load,
        "client_setup_s": out_setup,
        "generate_torch_threads": torch.get_num_threads(),
        "worker_torch_threads": workers,
    }
    out["ttft_overhead"] = out["serve_ttft_s"] / out["generate_ttft_s"] - 1
    out["decode_overhead"] = out["generate_tok_per_s"] / out["serve_tok_per_s"] - 1
    # each interleaved pair's own overhead: their spread shows how much of a median is the host's load
    out["ttft_pairs"] = _quartiles([a / b - 1 for a, b in zip(ttft, ref_ttft, strict=True)])
    out["decode_pairs"] = _quartiles([b / a - 1 for a, b in zip(rate, ref_rate, strict=True)])
    return out


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    """The first quartile, the median and the third quartile of ``xs``."""
    q1, q2, q3 = statistics.quantiles(xs, n=4)
    return q1, q2, q3


def _spread(q: tuple[float, float, float]) -> str:
    return f"; pairs {100 * q[1]:+.1f} % ({100 * q[0]:+.1f} .. {100 * q[2]:+.1f})"


def table(res: dict[str, Any]) -> str:
    c, w, t = res["cold"], res["warm"], res["cold"]["throughput"]
    load = w["load_average_per_rep"]
    mb = res["checkpoint_bytes"] / 1e6
    return "\n".join(
        [
            f"{mb:.0f} MB fp32 checkpoint (8 layers, hidden 768), 3 emulated devices, plan `{c['plan']}`, "
            f"prompt {PROMPT} tokens; medians of {res['reps']} cold and {res['warm_reps']} warm reps (warm: "
            f"`--no-emulate`, {DECODE} tokens, one torch thread in `generate` and in each device process) "
            f"on a shared {os.cpu_count()}-core host, 1-minute "
            f"load average {res['load_average_start']:.1f} at the start and {res['load_average_end']:.1f} at the end "
            f"({min(load):.1f}-{max(load):.1f} during the warm reps; "
            "`nice .venv/bin/python benchmarks/bench_serve.py`).",
            "",
            "| measure | coldpipe serve (HTTP) | reference | overhead | target |",
            "|---|---:|---:|---:|---:|",
            f"| cold TTFT | {c['serve_median_s']:.3f} s | {c['run_median_s']:.3f} s (`coldpipe run`, same plan) | "
            f"{100 * c['overhead']:+.1f} % | <= 5 % |",
            f"| warm TTFT (host speed) | {w['serve_ttft_s'] * 1e3:.1f} ms | {w['generate_ttft_s'] * 1e3:.1f} ms "
            f"(transformers `generate`) | {100 * w['ttft_overhead']:+.1f} %{_spread(w['ttft_pairs'])} "
            "| <= 10 % |",
            f"| decode (host speed) | {w['serve_tok_per_s']:.1f} tokens/s | {w['generate_tok_per_s']:.1f} tokens/s "
            f"(transformers `generate`) | {100 * w['decode_overhead']:+.1f} %{_spread(w['decode_pairs'])} "
            "| <= 10 % |",
            f"| {t['clients']} clients, 16 tokens each (emulated, warm) | {t['req_per_s']:.2f} requests/s, "
            f"p50 {t['p50_s']:.3f} s, p99 {t['p99_s']:.3f} s | | | |",
            "",
            f"The simulator predicted the cold TTFT at {statistics.median(c['predicted_s']):.3f} s (median of the "
            '`x-coldpipe-ttft-predicted` headers). Warm overheads: the medians\' ratio; then "pairs": the median '
            "of each interleaved pair's own overhead, with its quartiles (the spread the host's load adds).",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="cold reps")
    ap.add_argument("--warm-reps", type=int, default=15)
    ap.add_argument("--out", default=str(REPO / "out"))
    ap.add_argument("--port", type=int, default=8931)
    ap.add_argument("--from-json", help="write the tables of a saved run (its out/bench_serve.json) and exit")
    ap.add_argument("--warm-only", action="store_true", help="the warm part only: out/bench_serve_warm.json, no tables")
    args = ap.parse_args()
    if args.from_json:
        write_tables(json.loads(Path(args.from_json).read_text()))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, sc = setup(out)
    ck = open_checkpoint(ckpt)
    res: dict[str, Any] = {
        "reps": args.reps,
        "warm_reps": args.warm_reps,
        "checkpoint_bytes": sum(ck.block_bytes(b) for b in range(ck.n_blocks)),
    }
    res["load_average_start"] = os.getloadavg()[0]  # the shared host's load (other work), as `uptime` shows it
    if args.warm_only:
        res["warm"] = warm(ckpt, sc, args.warm_reps, args.port + 1)
        res["load_average_end"] = os.getloadavg()[0]
        (out / "bench_serve_warm.json").write_text(json.dumps(res, indent=2) + "\n")
        w = res["warm"]
        print(
            f"warm TTFT {1e3 * w['serve_ttft_s']:.1f} ms vs {1e3 * w['generate_ttft_s']:.1f} ms "
            f"({100 * w['ttft_overhead']:+.1f} %{_spread(w['ttft_pairs'])}); decode {w['serve_tok_per_s']:.1f} vs "
            f"{w['generate_tok_per_s']:.1f} tokens/s ({100 * w['decode_overhead']:+.1f} %"
            f"{_spread(w['decode_pairs'])}); "
            f"load {min(w['load_average_per_rep']):.1f}-{max(w['load_average_per_rep']):.1f} during the reps"
        )
        return
    res["cold"] = cold(ckpt, sc, args.reps, args.port)
    print(json.dumps(res["cold"]), flush=True)
    res["warm"] = warm(ckpt, sc, args.warm_reps, args.port + 1)
    res["load_average_end"] = os.getloadavg()[0]
    (out / "bench_serve.json").write_text(json.dumps(res, indent=2) + "\n")
    write_tables(res)


def write_tables(res: dict[str, Any]) -> None:
    md = table(res)
    print(md)
    for doc in (REPO / "README.md", REPO / "docs" / "serve.md"):
        write_between(doc, "<!-- bench:serve:start -->", "<!-- bench:serve:end -->", md)


if __name__ == "__main__":
    main()
