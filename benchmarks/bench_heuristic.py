"""The heuristic planner: its gap to the exact DP on 10-12-device clusters, and its time on 64 devices x 82 blocks.

Rerun: ``.venv/bin/python benchmarks/bench_heuristic.py`` (``--quick`` for a short run). Prints markdown
and writes it into ``docs/heuristic.md`` between the ``bench_heuristic`` markers (TTFT) and the
``bench_heuristic_objectives`` markers (tpot, e2e, bursts; ``--only ttft|objectives`` runs one part).

Objectives: the same devices with a memory bandwidth drawn from 20-200 GB/s (a separate seeded stream, so
the TTFT instances are unchanged), 256 new tokens, bursts of 8 requests. Gap to the exact planner
(:func:`coldpipe.planning.exact.plan_exact`) on 9-10 distinct devices x 34 blocks (Llama-3.1-8B),
where it still runs in seconds; time on 32 and 64 distinct devices x 82 blocks. The heuristic is
:func:`coldpipe.planning.heuristic.plan_heuristic` with its default :class:`HeuristicOptions`.

Instances: Llama-3.1-8B (34 blocks) and Qwen2.5-14B (50 blocks) at 512 prompt tokens, bf16, on 10-12
*distinct* random edge devices (every profile different, so the DP has 2**n usage vectors), seeded.
The large case: Llama-3.1-70B (82 blocks) on 64 distinct devices, the median of ``--repeats`` runs after
one warm-up run (numba compilation excluded). Wall-clock times suffer when the machine is shared;
the CPU time of this process (``time.process_time``) much less so.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from _docs import write_between

from coldpipe.core.architectures import CATALOG, blocks_for
from coldpipe.core.types import AP, OVERLAPS, Block, Device, Network, Overlap, Scenario, Workload
from coldpipe.planning import Objective, Problem
from coldpipe.planning.bounds import objective_lower_bound
from coldpipe.planning.exact import plan_exact
from coldpipe.planning.heuristic import HeuristicOptions, plan_heuristic

DOC = Path(__file__).resolve().parents[1] / "docs" / "heuristic.md"
BEGIN, END = "<!-- bench_heuristic:begin -->", "<!-- bench_heuristic:end -->"
OBJ_BEGIN, OBJ_END = "<!-- bench_heuristic_objectives:begin -->", "<!-- bench_heuristic_objectives:end -->"
CERT_BEGIN, CERT_END = "<!-- bench_heuristic_certified:begin -->", "<!-- bench_heuristic_certified:end -->"
CERT_SEEDS = (7, 8, 9)  # large_instance seeds of the TTFT rows (the objectives' rows use seed 7)
NEW_TOKENS, REQUESTS = 256, 8
LONG = 5  # the long run's order budget, in multiples of the default
# (label, objective, requests, completion, overlap)
OBJECTIVE_ROWS: list[tuple[str, Objective, int, str, Overlap]] = [
    ("tpot", "tpot", 1, "max", "layer"),
    ("e2e, layer", "e2e", 1, "max", "layer"),
    ("e2e, stage", "e2e", 1, "max", "stage"),
    ("e2e, none", "e2e", 1, "max", "none"),
    ("burst max, layer", "ttft", REQUESTS, "max", "layer"),
    ("burst max, stage", "ttft", REQUESTS, "max", "stage"),
    ("burst max, none", "ttft", REQUESTS, "max", "none"),
    ("burst mean, layer", "ttft", REQUESTS, "mean", "layer"),
    ("decoding burst e2e max, layer", "e2e", REQUESTS, "max", "layer"),
]


def random_devices(rng: random.Random, n: int, model_bytes: float, mem_lo: float, mem_hi: float) -> list[Device]:
    """``n`` distinct edge devices: every field drawn from a continuous range."""
    return [
        Device(
            f"dev{k}",
            flops=rng.uniform(1e11, 2e13),
            load_bandwidth=rng.uniform(1e8, 3e9),
            startup=rng.uniform(0.0, 3.0),
            memory=rng.uniform(mem_lo, mem_hi) * model_bytes,
            uplink=rng.uniform(5e7, 1e9),
            downlink=rng.uniform(5e7, 1e9),
        )
        for k in range(n)
    ]


def model_blocks(name: str) -> tuple[Block, ...]:
    return tuple(blocks_for(CATALOG[name], prompt_tokens=512, new_tokens=1, dtype="bfloat16"))


def gap_instance(seed: int) -> Scenario:
    rng = random.Random(seed)
    blocks = model_blocks(rng.choice(["llama-3.1-8b", "qwen2.5-14b"]))
    model_bytes = sum(b.memory_bytes for b in blocks)
    n = rng.randint(10, 12)
    devices = random_devices(rng, n, model_bytes, 0.1, 0.6)
    source = rng.choice([AP, AP, devices[0].name])
    return Scenario(blocks, tuple(devices), Workload(512), Network(0.002), source)


def large_instance(seed: int) -> Scenario:
    rng = random.Random(seed)
    blocks = model_blocks("llama-3.1-70b")
    model_bytes = sum(b.memory_bytes for b in blocks)
    devices = random_devices(rng, 64, model_bytes, 0.02, 0.15)
    return Scenario(blocks, tuple(devices), Workload(512), Network(0.002), AP, "llama-3.1-70b")


def pct(x: float) -> str:
    return f"{100 * x:.3f} %"


def with_decode(sc: Scenario, seed: int, objective: str, requests: int, completion: str) -> Scenario:
    """``sc`` with memory bandwidths (own seeded stream), 256 new tokens, and the burst of the row."""
    rng = random.Random(10_000 + seed)
    devices = [Device(**{**d.__dict__, "mem_bandwidth": rng.uniform(2e10, 2e11)}) for d in sc.devices]
    out = sc.replace(devices=devices).replace(workload={"new_tokens": NEW_TOKENS})
    return out.replace(workload={"requests": requests, "completion": completion}) if requests > 1 else out


def objective_gap_instance(seed: int) -> Scenario:
    rng = random.Random(seed)
    blocks = model_blocks("llama-3.1-8b")
    model_bytes = sum(b.memory_bytes for b in blocks)
    devices = random_devices(rng, rng.randint(9, 10), model_bytes, 0.1, 0.6)
    source = rng.choice([AP, AP, devices[0].name])
    return Scenario(blocks, tuple(devices), Workload(512), Network(0.002), source)


def objectives_table(n_inst: int, repeats: int, sizes: list[int]) -> list[str]:
    """Gap to the exact planner (where it runs) and time on large clusters, per objective."""
    lines = [
        "Command: `.venv/bin/python benchmarks/bench_heuristic.py --only objectives"
        + (" --quick" if n_inst < 8 else "")
        + "`.",
        "",
        f"**Gap to the exact planner** (`plan_exact`), {n_inst} seeded instances per row (9-10 distinct "
        f"devices x 34 blocks, {NEW_TOKENS} new tokens, bursts of {REQUESTS}); gap = heuristic / optimum - 1. "
        "A burst's mean completion and a decoding burst's e2e have no exact planner at any size (their in-range "
        "planners are local searches): their gaps to brute force are measured by the tests instead.",
        "",
        "| objective | instances | median gap | worst gap | optimal found | heuristic time (median) "
        "| exact time (median) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, objective, requests, completion, overlap in OBJECTIVE_ROWS:
        if completion == "mean" or (objective == "e2e" and requests > 1):
            continue  # no exact planner for these at any size
        gaps, th, te = [], [], []
        for i in range(n_inst):
            sc = with_decode(objective_gap_instance(7000 + i), i, objective, requests, completion)
            t = time.perf_counter()
            h = plan_heuristic(Problem(sc, overlap, objective))
            th.append(time.perf_counter() - t)
            t = time.perf_counter()
            e = plan_exact(Problem(sc, overlap, objective))
            te.append(time.perf_counter() - t)
            gaps.append(h.value_s / e.value_s - 1.0)
            print(f"{label} #{i}: {len(sc.devices)} devices, gap {gaps[-1]:.2e}", file=sys.stderr)
        lines.append(
            f"| {label} | {n_inst} | {pct(max(0.0, statistics.median(gaps)))} | {pct(max(0.0, max(gaps)))} "
            f"| {sum(g <= 1e-9 for g in gaps)}/{n_inst} | {statistics.median(th):.2f} s "
            f"| {statistics.median(te):.2f} s |"
        )
    lines += [
        "",
        f"**Large clusters**, Llama-3.1-70B (82 blocks) on distinct devices, median of {repeats} runs after a "
        "warm-up. No exact optimum to compare with: the lower bound is the heuristic's own (loose) certificate, "
        f"and on the largest cluster one run with {LONG}x the order budget (`max_orders`) shows what the default "
        "budget leaves on the table (gain = default / long - 1).",
        "",
        "| devices | objective | wall time (median) | CPU time (median) | orders evaluated | value | lower bound "
        f"| gap to lower bound | {LONG}x budget: gain | {LONG}x budget: time |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        base = large_instance(7)
        base = base.replace(devices=base.devices[:n])
        for label, objective, requests, completion, overlap in OBJECTIVE_ROWS:
            sc = with_decode(base, 7, objective, requests, completion)
            warm = with_decode(objective_gap_instance(0), 0, objective, requests, completion)
            plan_heuristic(Problem(warm, overlap, objective))  # warm-up: load the compiled kernels
            times, cpu = [], []
            for _ in range(repeats):
                t, c = time.perf_counter(), time.process_time()
                h = plan_heuristic(Problem(sc, overlap, objective))
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            print(f"{n} devices, {label}: {statistics.median(times):.2f} s", file=sys.stderr)
            long_cols = "| | |" if n != max(sizes) or "max_orders" in h.details else "| n/a | |"
            if n == max(sizes) and "max_orders" in h.details:
                t = time.perf_counter()
                long = HeuristicOptions(max_orders=LONG * h.details["max_orders"])
                hl = plan_heuristic(Problem(sc, overlap, objective), long)
                long_cols = f"| {pct(h.value_s / hl.value_s - 1.0)} | {time.perf_counter() - t:.1f} s |"
            lines.append(
                f"| {n} | {label} | {statistics.median(times):.2f} s | {statistics.median(cpu):.2f} s "
                f"| {h.details.get('orders_evaluated', str(h.details.get('plans_evaluated')) + ' plans')} "
                f"| {h.value_s:.3f} s | {h.details['lower_bound']:.3f} s "
                f"| {pct(h.details['gap_to_lower_bound'])} {long_cols}"
            )
    return lines


def certified_table(sizes: list[int]) -> list[str]:
    """The heuristic's certified gap (value / Lagrangian lower bound - 1) on large clusters, and the bound's time."""
    lines = [
        "Command: `.venv/bin/python benchmarks/bench_heuristic.py --only certified`.",
        "",
        f"Llama-3.1-70B (82 blocks) on {' and '.join(map(str, sizes))} distinct devices (the first n of "
        f"`large_instance(seed)`), one run each: TTFT rows for seeds {', '.join(map(str, CERT_SEEDS))}, the "
        "other objectives for seed 7 (256 new tokens, bursts of 8). Certified gap = value / lower bound - 1 "
        "(`Solution.lower_bound_s`, what `coldpipe plan` reports); bound time = one call of "
        "`objective_lower_bound` (also inside the planning time).",
        "",
        "| devices | seed | objective | value | lower bound | certified gap | bound | bound time | planning time |",
        "|---:|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    rows: list[tuple[str, Objective, int, str, Overlap, int]] = [
        (f"ttft, {ov}", "ttft", 1, "max", ov, seed) for seed in CERT_SEEDS for ov in OVERLAPS
    ]
    rows += [(label, obj, req, comp, ov, 7) for label, obj, req, comp, ov in OBJECTIVE_ROWS]
    plan_heuristic(Problem(with_decode(objective_gap_instance(0), 0, "e2e", 2, "max"), "layer", "ttft"))  # compile
    gaps: list[float] = []
    for n in sizes:
        for label, objective, requests, completion, overlap, seed in rows:
            base = large_instance(seed)
            base = base.replace(devices=base.devices[:n])
            sc = with_decode(base, seed, objective, requests, completion) if label[:4] != "ttft" else base
            t = time.perf_counter()
            h = plan_heuristic(Problem(sc, overlap, objective))
            t_plan = time.perf_counter() - t
            t = time.perf_counter()
            lb, kind = objective_lower_bound(sc, objective, overlap, h.value_s)
            t_bound = time.perf_counter() - t
            assert lb == h.lower_bound_s  # the same deterministic computation
            gaps.append(h.value_s / lb - 1.0)
            print(f"{n} x {label} seed {seed}: gap {gaps[-1]:.4f}, bound {t_bound:.1f} s", file=sys.stderr)
            lines.append(
                f"| {n} | {seed} | {label} | {h.value_s:.3f} s | {lb:.3f} s | {pct(gaps[-1])} | {kind} "
                f"| {t_bound:.2f} s | {t_plan:.2f} s |"
            )
    lines += [
        "",
        f"All {len(gaps)} rows: median certified gap {pct(statistics.median(gaps))}, worst {pct(max(gaps))}; "
        f"TTFT rows: median {pct(statistics.median(_ttft(gaps, rows, sizes)))}, "
        f"worst {pct(max(_ttft(gaps, rows, sizes)))}.",
    ]
    return lines


def _ttft(
    gaps: list[float], rows: list[tuple[str, Objective, int, str, Overlap, int]], sizes: list[int]
) -> list[float]:
    """The gaps of the one-request TTFT rows."""
    labels = [r[0] for r in rows] * len(sizes)
    return [g for g, lab in zip(gaps, labels, strict=True) if lab.startswith("ttft")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 gap instances per mode, 1 timing repeat")
    ap.add_argument("--instances", type=int, default=None, help="gap instances per overlap mode (default 20)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs of the large case (default 3)")
    ap.add_argument("--no-doc", action="store_true", help="print only, do not write docs/heuristic.md")
    ap.add_argument(
        "--only", choices=["ttft", "objectives", "certified"], default=None, help="run one of the three parts"
    )
    args = ap.parse_args(argv)
    if args.only in (None, "certified"):
        cert_lines = certified_table([32] if args.quick else [32, 64])
        print("\n".join(cert_lines))
        if not args.no_doc:
            write_between(DOC, CERT_BEGIN, CERT_END, "\n".join(cert_lines))
        if args.only == "certified":
            return 0
    n_inst = args.instances or (5 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.only != "ttft":
        obj_lines = objectives_table(
            args.instances or (3 if args.quick else 8), repeats, [32] if args.quick else [32, 64]
        )
        print("\n".join(obj_lines))
        if not args.no_doc:
            write_between(DOC, OBJ_BEGIN, OBJ_END, "\n".join(obj_lines))
        if args.only == "objectives":
            return 0

    lines = [
        "Command: `.venv/bin/python benchmarks/bench_heuristic.py" + (" --quick" if args.quick else "") + "`.",
        "",
        f"**Gap to the exact DP**, {n_inst} seeded instances per overlap mode (10-12 distinct devices, "
        "34 or 50 blocks); gap = heuristic TTFT / optimal TTFT - 1.",
        "",
        "| overlap | instances | median gap | mean gap | worst gap | optimal found | heuristic time (median) "
        "| exact DP time (median) | gap to lower bound (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    plan_heuristic(Problem(gap_instance(0)))  # compile both kernels outside the timings
    plan_exact(Problem(gap_instance(0)))
    for overlap in OVERLAPS:
        gaps, th, td, lbg = [], [], [], []
        for i in range(n_inst):
            sc = gap_instance(1000 * OVERLAPS.index(overlap) + i)
            t = time.perf_counter()
            h = plan_heuristic(Problem(sc, overlap))
            th.append(time.perf_counter() - t)
            t = time.perf_counter()
            d = plan_exact(Problem(sc, overlap))
            td.append(time.perf_counter() - t)
            gaps.append(h.value_s / d.value_s - 1.0)  # one request's TTFT, both the simulator's
            lbg.append(h.details["gap_to_lower_bound"])
            print(
                f"{overlap} #{i}: {len(sc.devices)} devices x {sc.n_blocks} blocks, gap {gaps[-1]:.2e}", file=sys.stderr
            )
        n_opt = sum(g <= 1e-9 for g in gaps)
        lines.append(
            f"| {overlap} | {n_inst} | {pct(max(0.0, statistics.median(gaps)))} "
            f"| {pct(max(0.0, statistics.mean(gaps)))} "
            f"| {pct(max(0.0, max(gaps)))} | {n_opt}/{n_inst} | {statistics.median(th):.2f} s "
            f"| {statistics.median(td):.2f} s | {pct(statistics.median(lbg))} |"
        )
    lines += [
        "",
        f"**64 distinct devices x 82 blocks** (Llama-3.1-70B), median of {repeats} runs after a warm-up:",
        "",
        "| overlap | wall time (median) | CPU time (median) | orders evaluated | TTFT | lower bound "
        "| gap to lower bound |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    sc = large_instance(7)
    for overlap in OVERLAPS:
        if overlap == "layer":
            plan_heuristic(Problem(sc, overlap))  # warm-up: load the compiled kernels
        times, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            h = plan_heuristic(Problem(sc, overlap))
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        print(f"large {overlap}: {statistics.median(times):.2f} s", file=sys.stderr)
        lines.append(
            f"| {overlap} | {statistics.median(times):.2f} s | {statistics.median(cpu):.2f} s "
            f"| {h.details['orders_evaluated']} | {h.value_s:.3f} s "
            f"| {h.details['lower_bound']:.3f} s | {pct(h.details['gap_to_lower_bound'])} |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_doc:
        write_between(DOC, BEGIN, END, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
