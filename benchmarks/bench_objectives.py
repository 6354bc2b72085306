"""Planning time for the objectives beyond TTFT (exact E2E and TPOT, exact burst max-completion) on the
clusters of bench_planner.py with 256 new tokens / 8 requests. Writes a table into docs/model.md between
the ``bench:objectives`` markers. The planner timed is :func:`coldpipe.planning.exact.plan_exact` on a
:class:`~coldpipe.planning.Problem` of each objective.

    .venv/bin/python benchmarks/bench_objectives.py           # 4 and 8 distinct devices
    .venv/bin/python benchmarks/bench_objectives.py --full    # also 12 distinct devices
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from _docs import write_between
from bench_planner import cluster, fmt

from coldpipe.core.architectures import CATALOG, blocks_for
from coldpipe.core.types import Overlap, Scenario, Workload
from coldpipe.planning import Objective, Problem
from coldpipe.planning.exact import plan_exact

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:objectives:start -->", "<!-- bench:objectives:end -->"


def with_decode(sc: Scenario, model: str, new_tokens: int) -> Scenario:
    devices = [dataclasses.replace(d, mem_bandwidth=50e9 + 10e9 * k) for k, d in enumerate(sc.devices)]
    blocks = blocks_for(CATALOG[model], prompt_tokens=512, new_tokens=new_tokens)
    return Scenario(blocks, devices, Workload(512, new_tokens=new_tokens), sc.network, model_name=model)


def timed(sc: Scenario, overlap: Overlap, objective: Objective, repeats: int) -> tuple[float, dict]:
    problem = Problem(sc, overlap, objective)
    plan_exact(problem)  # warm-up (numba compile or cache load)
    times, details = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        details = plan_exact(problem).details
        times.append(time.perf_counter() - t0)
    return statistics.median(times), details


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="include 12 distinct devices x 82 blocks")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cases = [(4, "llama-3.1-8b"), (8, "llama-3.1-8b"), (8, "llama-3.1-70b")]
    if args.full:
        cases.append((12, "llama-3.1-70b"))
    rows = []
    for n, model in cases:
        sc = with_decode(cluster(n, model), model, 256)
        burst = sc.replace(workload={"requests": 8, "new_tokens": 1})
        cells = []
        runs: list[tuple[Objective, Scenario, Overlap]] = [
            ("tpot", sc, "layer"),
            ("e2e", sc, "layer"),
            ("e2e", sc, "none"),
            ("ttft", burst, "layer"),
        ]
        for objective, s, ov in runs:
            med, details = timed(s, ov, objective, args.repeats)
            extra = f" ({details['pareto_pairs']} pairs)" if "pareto_pairs" in details else ""
            cells.append(fmt(med) + extra)
        rows.append(f"| {n} distinct | {model} ({sc.n_blocks} blocks) | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            START,
            f"Median of {args.repeats} runs after a warm-up (`.venv/bin/python benchmarks/bench_objectives.py"
            f"{' --full' if args.full else ''}`). 256 new tokens; bursts of 8 requests; in parentheses the pairs the "
            "Pareto DP kept.",
            "",
            "| devices | model | tpot | e2e (layer) | e2e (none) | burst max (layer) |",
            "|---|---|---:|---:|---:|---:|",
            *rows,
            END,
        ]
    )
    print(table)
    if not args.no_write:
        doc = ROOT / "docs" / "model.md"
        if not write_between(doc, START, END, table):
            doc.write_text(doc.read_text().rstrip("\n") + "\n\n### Planning time\n\n" + table + "\n")


if __name__ == "__main__":
    main()
