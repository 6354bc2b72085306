"""Planning time of the exact planner on the problems a re-plan must solve while a user waits.

Three problems, each on the clusters of ``bench_planner.py``, planned exactly by
:func:`coldpipe.planning.exact.plan_exact`, timed in-process after a warm-up (numba's compile or cache
load is not counted, nor is the process start), median of ``--repeats`` runs:

- TTFT under overlap ``none``, 12 distinct devices x 82 blocks (llama-3.1-70b): target <= 1 s;
- ``--objective e2e`` with 128 new tokens, 12 distinct devices x 82 blocks: target <= 5 s;
- a burst's max first-token completion, 8 distinct devices x 82 blocks x 8 requests: target <= 5 s.

The targets are the ``layer`` overlap of the last two (the default) and ``none`` for the first; the
other overlaps are timed too. Writes the table into docs/model.md and README.md between the
``bench:targets`` markers.

    .venv/bin/python benchmarks/bench_targets.py             # updates docs/model.md and README.md
    .venv/bin/python benchmarks/bench_targets.py --no-write  # print only
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _docs import write_between
from bench_objectives import with_decode
from bench_planner import cluster, fmt

from coldpipe.core.types import OVERLAPS, Overlap, Scenario
from coldpipe.planning import Objective, Problem
from coldpipe.planning.exact import plan_exact
from coldpipe.planning.kernels import numba_enabled

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:targets:start -->", "<!-- bench:targets:end -->"
MODEL = "llama-3.1-70b"


def problems() -> list[tuple[str, Scenario, Objective, Overlap, float]]:
    """``(label, scenario, objective, target overlap, target seconds)`` of the three targets."""
    ttft = cluster(12, MODEL)
    e2e = with_decode(cluster(12, MODEL), MODEL, 128)
    burst = cluster(8, MODEL).replace(workload={"requests": 8, "completion": "max"})
    return [
        ("ttft, 12 distinct x 82 blocks", ttft, "ttft", "none", 1.0),
        ("e2e, 128 new tokens, 12 distinct x 82 blocks", e2e, "e2e", "layer", 5.0),
        ("burst max, 8 requests, 8 distinct x 82 blocks", burst, "ttft", "layer", 5.0),
    ]


def median_time(problem: Problem, repeats: int) -> tuple[float, float, dict]:
    """Median wall and CPU seconds of ``plan_exact(problem)`` (the CPU's shows what a busy machine adds)."""
    plan_exact(problem)  # warm-up: numba's compile or cache load
    walls, cpus, details = [], [], {}
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        details = plan_exact(problem).details
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), details


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print the table, touch no file")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target-only", action="store_true", help="time only each target's own overlap")
    args = ap.parse_args()
    rows = []
    for label, sc, objective, target_overlap, target in problems():
        cells = []
        for overlap in OVERLAPS:
            if args.target_only and overlap != target_overlap:
                cells.append("")
                continue
            med, cpu, details = median_time(Problem(sc, overlap, objective), args.repeats)
            cell = f"{fmt(med)} (CPU {fmt(cpu)})"
            if overlap == target_overlap:
                cell = f"**{fmt(med)}** (CPU {fmt(cpu)}; {'meets' if med <= target else 'MISSES'} ≤ {fmt(target)})"
            cells.append(cell)
            print(label, overlap, fmt(med), fmt(cpu), details, flush=True)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    load = os.getloadavg()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    table = "\n".join(
        [
            START,
            f"Exact planning time, median of {args.repeats} runs after a warm-up, in-process (no process start, "
            f"no numba compile) (`.venv/bin/python benchmarks/bench_targets.py`; {platform.machine()}, "
            f"{os.cpu_count()} cores, load average {load:.1f} at the end, numba {'on' if numba_enabled() else 'off'}, "
            f"commit {commit.stdout.strip() or '?'}). Wall time, and the process's CPU time (what the planner itself "
            "took, whatever else ran). The target applies to the bold cell.",
            "",
            "| problem | layer | stage | none |",
            "|---|---:|---:|---:|",
            *rows,
            END,
        ]
    )
    print(table)
    if args.no_write:
        return
    for doc in (ROOT / "docs" / "model.md", ROOT / "README.md"):
        if not write_between(doc, START, END, table):
            print(f"{doc.name} has no bench:targets markers; nothing written", file=sys.stderr)


if __name__ == "__main__":
    main()
