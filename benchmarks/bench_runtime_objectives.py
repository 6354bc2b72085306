"""Measured vs predicted beyond the first token: decoding (E2E, TPOT) and a burst of requests, on the real runtime.

    .venv/bin/python benchmarks/bench_runtime_objectives.py     # ~11 min; writes out/bench_runtime_objectives.json
                                                                # and the table of docs/runtime.md

The cluster of ``bench_runtime.py`` (same ~1 GB checkpoint, same 4 emulated devices, derived from a profile of
this host taken in the same run) with a memory bandwidth per device, so that decode steps are memory-bound on
some devices and compute-bound on others (the runtime enforces ``max(host time x slowdown, (weights + KV) /
mem_bandwidth)`` per block and decode step; the blocks' ``decode_flops`` are calibrated to the host's measured
decode-step times, as their prefill FLOPs are).

1. decoding: the TTFT-optimal and the E2E-optimal plan for ``--new-tokens`` tokens, each run ``--reps`` times
   (interleaved, cold page cache): measured TTFT, E2E and TPOT = (E2E - TTFT) / (new_tokens - 1) against the
   simulator's;
2. a burst: ``--requests`` requests arriving together, each decoding ``--burst-new-tokens`` tokens (their
   decode steps interleave on the stages), on the single-request TTFT optimum, the burst's first-token
   optimum and the burst's E2E plan (``completion: max``; local search): measured first and last tokens of
   every request against ``burst_schedule``.

Every plan comes from :func:`coldpipe.planning.plan` (``solver="auto"``: the exact DP, or its local search
from exact seeds where no exact method exists).

Reports medians over the reps. The host is shared: expect noise, rerun late.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _docs import write_between
from bench_runtime import DEVICES, HOP_S, ensure_checkpoint

from coldpipe.core.architectures import blocks_for
from coldpipe.core.simulator import burst_schedule, decode_step_s, objective_s, simulate
from coldpipe.core.types import Device, Network, Scenario, Workload
from coldpipe.planning import Problem, plan
from coldpipe.runtime.checkpoint import open_checkpoint
from coldpipe.runtime.emulation import emulation_for
from coldpipe.runtime.launch import Job, prompt_ids, run_local
from coldpipe.runtime.profile_host import calibrated_blocks, profile_host
from coldpipe.runtime.report import build_report

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "runtime.md"
BEGIN, END = "<!-- bench:runtime-objectives:start -->", "<!-- bench:runtime-objectives:end -->"
# memory bandwidth of each device of bench_runtime.DEVICES (bytes/s), Raspberry-Pi-class to Jetson-class: a
# 45 MB decoder layer streams in 15-90 ms. Decode steps are memory-bound on edge-a and edge-c (75-90 ms per
# layer against 20-30 ms of compute) and compute-bound on edge-b and edge-d (40-50 ms against 15-22 ms).
MEM_BANDWIDTH = {"edge-a": 0.6e9, "edge-b": 3.0e9, "edge-c": 0.5e9, "edge-d": 2.0e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="out/bench-1g")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--burst-new-tokens", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gap", type=float, default=0.25, help="profile-host --gap: idle after each timed block")
    ap.add_argument("--out", default="out/bench_runtime_objectives.json")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite the table in docs/runtime.md")
    args = ap.parse_args()

    ckpt_path = ensure_checkpoint(Path(args.checkpoint))
    ckpt = open_checkpoint(ckpt_path)
    s, n_new, n_req = args.prompt_tokens, args.new_tokens, args.requests
    started = time.time()
    prof = profile_host(ckpt_path, s, reps=args.reps, threads=1, gap_s=args.gap)
    blocks = calibrated_blocks(
        blocks_for(ckpt.architecture(), prompt_tokens=s, new_tokens=n_new, dtype=ckpt.dtype), prof
    )
    devices = [
        Device(n, prof.host_flops / slow, rate, st, mem, up, down, mem_bandwidth=MEM_BANDWIDTH[n])
        for n, slow, rate, st, mem, up, down in DEVICES
    ]
    sc = Scenario(blocks, devices, Workload(s, n_new), Network(HOP_S), model_name="bench-1g")
    burst_sc = sc.replace(workload=Workload(s, args.burst_new_tokens, requests=n_req, completion="max"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_name("bench_objectives_scenario.json").write_text(json.dumps(sc.to_dict(), indent=1) + "\n")

    ttft_opt = plan(Problem(sc, "layer", "ttft")).plan
    e2e_opt = plan(Problem(sc, "layer", "e2e")).plan
    burst_first = plan(Problem(burst_sc, "layer", "ttft")).plan  # the burst's last first token (exact)
    burst_e2e = plan(Problem(burst_sc, "layer", "e2e")).plan  # the burst's last answer (local search)
    vocab = int(ckpt.config["vocab_size"])
    ids = prompt_ids(s, vocab)
    more = tuple(prompt_ids(s, vocab, seed=r) for r in range(1, n_req))

    def emu(p: object) -> tuple:
        return tuple(emulation_for(sc, p, prof.host_flops))  # type: ignore[arg-type]

    decode_cases = [("TTFT-optimal", ttft_opt), ("E2E-optimal", e2e_opt)]
    burst_cases = [
        ("TTFT-optimal (1 request)", ttft_opt),
        ("first-token-optimal (burst)", burst_first),
        ("E2E plan (burst)", burst_e2e),
    ]
    jobs: list[tuple[str, str, Job]] = []
    for _ in range(args.reps):
        for name, p in decode_cases:
            jobs.append(("decode", name, Job(p, "layer", ids, n_new, emu(p))))
        for name, p in burst_cases:
            jobs.append(("burst", name, Job(p, "layer", ids, args.burst_new_tokens, emu(p), burst=more)))
    results = run_local(ckpt_path, sc, [j for *_, j in jobs], timeout_s=120)

    def runs(kind: str, name: str) -> list[dict]:
        return [r for (k, n, _), r in zip(jobs, results, strict=True) if k == kind and n == name]

    for i, (name, p) in enumerate(decode_cases):  # the first run of each, for `coldpipe show` / Perfetto
        trace = build_report(runs("decode", name)[0], simulate(sc, p, "layer"), sc.to_dict()).trace
        Path(args.out).with_name(f"bench_trace_decode_{i}.json").write_text(json.dumps(trace))
    decode_rows = []
    for name, p in decode_cases:
        rs = runs("decode", name)
        m_ttft = statistics.median(r["measured_ttft"] for r in rs)
        m_e2e = statistics.median(r["measured_e2e"] for r in rs)
        m_tpot = statistics.median((r["measured_e2e"] - r["measured_ttft"]) / (n_new - 1) for r in rs)
        p_ttft = simulate(sc, p, "layer").ttft_s
        p_e2e = objective_s(sc, p, "layer", "e2e")
        p_tpot = decode_step_s(sc, p)
        decode_rows.append(
            {
                "case": name,
                "plan": str(p),
                "measured_ttft": m_ttft,
                "predicted_ttft": p_ttft,
                "measured_tpot": m_tpot,
                "predicted_tpot": p_tpot,
                "measured_e2e": m_e2e,
                "predicted_e2e": p_e2e,
                "all_e2e": [r["measured_e2e"] for r in rs],
                "tokens": [r["token_ids"] for r in rs],
            }
        )
    burst_rows = []
    for name, p in burst_cases:
        rs = runs("burst", name)
        sched = burst_schedule(burst_sc, p, "layer")
        row: dict = {"case": name, "plan": str(p)}
        for key, measured, pred in (
            ("first", "completions", sched.first_token_s),
            ("last", "last_token_s", sched.last_token_s),
        ):
            row[f"measured_{key}_max"] = statistics.median(max(r[measured]) for r in rs)
            row[f"predicted_{key}_max"] = max(pred)
            row[f"measured_{key}_mean"] = statistics.median(statistics.mean(r[measured]) for r in rs)
            row[f"predicted_{key}_mean"] = statistics.mean(pred)
            row[f"measured_{key}_each"] = [statistics.median(r[measured][i] for r in rs) for i in range(n_req)]
            row[f"predicted_{key}_each"] = list(pred)
        row["tokens"] = [r["all_token_ids"] for r in rs]
        burst_rows.append(row)
    wall = time.time() - started
    out = {
        "command": "python benchmarks/bench_runtime_objectives.py",
        "prompt_tokens": s,
        "new_tokens": n_new,
        "requests": n_req,
        "burst_new_tokens": args.burst_new_tokens,
        "reps": args.reps,
        "host": prof.to_dict(),
        "mem_bandwidth": MEM_BANDWIDTH,
        "decode": decode_rows,
        "burst": burst_rows,
        "wall_s": wall,
        "when_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")

    def cell(m: float, p: float) -> str:
        return f"{m:.3f} s / {p:.3f} s (**{m / p:.3f}**)"

    lines = [
        BEGIN,
        f"`.venv/bin/python benchmarks/bench_runtime_objectives.py` ({out['when_utc']} UTC, {args.reps} reps, "
        f"medians; {wall / 60:.0f} min). Host {prof.host_flops / 1e9:.1f} GFLOP/s (1 thread); decode steps of "
        f"a decoder layer take {1e3 * statistics.median(prof.decode_block_s[1:-1]):.1f} ms of CPU on it. "
        f"Cells: measured / predicted (**ratio**).",
        "",
        f"Decoding {n_new} tokens (prompt {s}):",
        "",
        "| plan | | TTFT | TPOT | E2E |",
        "|---|---|---|---|---|",
    ]
    for row in decode_rows:
        lines.append(
            f"| {row['case']} | `{row['plan']}` | {cell(row['measured_ttft'], row['predicted_ttft'])} | "
            f"{cell(row['measured_tpot'], row['predicted_tpot'])} | {cell(row['measured_e2e'], row['predicted_e2e'])} |"
        )
    lines += [
        "",
        f"A burst of {n_req} requests arriving together, each decoding {args.burst_new_tokens} tokens:",
        "",
        "| plan | | last first token | mean first token | last answer (max E2E) | mean E2E |",
        "|---|---|---|---|---|---|",
    ]
    for row in burst_rows:
        lines.append(
            f"| {row['case']} | `{row['plan']}` | {cell(row['measured_first_max'], row['predicted_first_max'])} | "
            f"{cell(row['measured_first_mean'], row['predicted_first_mean'])} | "
            f"{cell(row['measured_last_max'], row['predicted_last_max'])} | "
            f"{cell(row['measured_last_mean'], row['predicted_last_mean'])} |"
        )
    lines.append(END)
    table = "\n".join(lines)
    print(table)
    if not args.no_doc and write_between(DOC, BEGIN, END, table):
        print(f"wrote the table into {DOC}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
