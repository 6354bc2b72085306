"""Planning time of the exact DP: 4, 8 and 12 distinct devices on a 34-block and an 82-block model,
and 32 devices of 3 profiles. Prints a markdown table and writes it into README.md between the
``bench:planner`` markers. The planner timed is :func:`coldpipe.planning.exact.plan_exact` on a
one-request TTFT :class:`~coldpipe.planning.Problem`.

    .venv/bin/python benchmarks/bench_planner.py            # full run, updates README.md
    .venv/bin/python benchmarks/bench_planner.py --no-write # print only

Medians over repeated runs (after one warm-up run that also triggers numba's compilation, whose
one-off cost is reported separately). Targets on a 2-core machine:
4 x 34 <= 20 ms, 8 x 82 <= 1 s, 12 x 82 <= 10 s, 32 devices of 3 types <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _docs import write_between

from coldpipe.core.architectures import CATALOG, blocks_for
from coldpipe.core.types import OVERLAPS, Device, Network, Overlap, Scenario, Workload
from coldpipe.planning import Problem
from coldpipe.planning.exact import plan_exact
from coldpipe.planning.kernels import numba_enabled
from coldpipe.planning.tables import DeviceTypes

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:planner:start -->", "<!-- bench:planner:end -->"


def cluster(n_devices: int, model: str, n_profiles: int | None = None, seed: int = 0) -> Scenario:
    """``n_devices`` heterogeneous edge devices (``n_profiles`` distinct ones if given) that must share ``model``."""
    blocks = blocks_for(CATALOG[model], prompt_tokens=512, dtype="bfloat16")
    model_bytes = sum(b.memory_bytes for b in blocks)
    devices = []
    for k in range(n_devices):
        rng = random.Random(seed * 1000 + (k % n_profiles if n_profiles else k))
        devices.append(
            Device(
                f"dev{k}",
                flops=rng.uniform(1e12, 2e13),
                load_bandwidth=rng.uniform(3e8, 3e9),
                startup=rng.uniform(0.2, 2.0),
                # a device holds 1/8 to 3/8 of the model (1/n to 3/n of it when n < 8): several must take part
                memory=rng.uniform(1.0, 3.0) * model_bytes / min(max(n_devices, 2), 8),
                uplink=rng.uniform(1e8, 8e8),
                downlink=rng.uniform(1e8, 8e8),
            )
        )
    return Scenario(blocks, devices, Workload(prompt_tokens=512), Network(0.003), model_name=model)


def time_it(sc: Scenario, overlap: Overlap, repeats: int) -> tuple[float, float]:
    times = []
    ttft = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        ttft = plan_exact(Problem(sc, overlap)).value_s
        times.append(time.perf_counter() - t0)
    return statistics.median(times), ttft


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print the table, do not touch README.md")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    t0 = time.perf_counter()
    plan_exact(Problem(cluster(3, "llama-3.2-1b")))  # compiles (or loads the cache of) the numba kernel
    first_call = time.perf_counter() - t0

    cases = [
        ("4 distinct", 4, "llama-3.1-8b", None, 20e-3),
        ("4 distinct", 4, "llama-3.1-70b", None, None),
        ("8 distinct", 8, "llama-3.1-8b", None, None),
        ("8 distinct", 8, "llama-3.1-70b", None, 1.0),
        ("12 distinct", 12, "llama-3.1-8b", None, None),
        ("12 distinct", 12, "llama-3.1-70b", None, 10.0),
        ("32 of 3 profiles", 32, "llama-3.1-8b", 3, None),
        ("32 of 3 profiles", 32, "llama-3.1-70b", 3, 2.0),
    ]
    rows = []
    for label, n, model, profiles, target in cases:
        sc = cluster(n, model, profiles)
        n_vec = DeviceTypes.of(sc).n_usage_vectors
        cells = []
        for overlap in OVERLAPS:
            repeats = args.repeats if (overlap != "none" or n <= 8) else max(1, args.repeats // 2)
            plan_exact(Problem(sc, overlap))  # warm-up
            med, _ = time_it(sc, overlap, repeats)
            cells.append(med)
        verdict = "" if target is None else ("meets" if cells[0] <= target else "MISSES") + f" ≤ {fmt(target)}"
        rows.append(
            f"| {label} | {model} ({sc.n_blocks} blocks) | {n_vec} | {fmt(cells[0])} | {fmt(cells[1])} | "
            f"{fmt(cells[2])} | {verdict} |"
        )
        print(rows[-1], flush=True)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    table = "\n".join(
        [
            START,
            f"Exact DP planning time, median of {args.repeats} runs (`.venv/bin/python benchmarks/bench_planner.py`; "
            f"{platform.machine()}, {os.cpu_count()} cores, numba {'on' if numba_enabled() else 'off'}, "
            f"commit {commit.stdout.strip() or '?'}). First call in a fresh process (numba compile or cache load): "
            f"{fmt(first_call)}.",
            "",
            "| devices | model | usage vectors | layer | stage | none | target (layer) |",
            "|---|---|---:|---:|---:|---:|---|",
            *rows,
            END,
        ]
    )
    print(table)
    if not args.no_write:
        if write_between(ROOT / "README.md", START, END, table):
            print("README.md updated", file=sys.stderr)
        else:
            print("README.md has no bench:planner markers; nothing written", file=sys.stderr)


if __name__ == "__main__":
    main()
