"""DP vs MINLP (SCIP) solve time on the same instances as they grow (blocks 8 -> 34, devices 2 -> 6).

The DP is :func:`coldpipe.planning.exact.plan_exact`, the MINLP :func:`coldpipe.planning.minlp.plan_minlp`
(both on a one-request TTFT :class:`~coldpipe.planning.Problem`); "DP = SCIP" compares their own
objectives (``solver_value_s``).

Rerun: ``.venv/bin/python benchmarks/bench_minlp.py`` (``--quick`` for a short run). Prints a markdown
table and writes it into ``docs/formulation.md`` between the ``bench_minlp`` markers. Growth stops at
the first instance SCIP does not solve to optimality within ``--time-limit`` seconds (default 60):
the row before it is the largest instance SCIP solves in that time. Timings are wall-clock on
whatever machine runs this; compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

from _docs import write_between

from coldpipe.core.architectures import CATALOG, blocks_for
from coldpipe.core.types import AP, Device, Network, Overlap, Scenario, Workload
from coldpipe.planning import Problem
from coldpipe.planning.exact import plan_exact
from coldpipe.planning.minlp import plan_minlp

DOC = Path(__file__).resolve().parents[1] / "docs" / "formulation.md"
BEGIN, END = "<!-- bench_minlp:begin -->", "<!-- bench_minlp:end -->"

# (devices, blocks): blocks = decoder layers + 2 (embedding, head)
GRID = [(2, 8), (3, 8), (3, 12), (4, 12), (4, 16), (5, 16), (5, 20), (6, 20), (6, 26), (6, 34)]
QUICK_GRID = [(2, 8), (3, 8), (3, 12), (4, 12)]


def instance(n_devices: int, n_blocks: int, seed: int) -> Scenario:
    """Llama-3.1-8B-shaped blocks (``n_blocks - 2`` layers), heterogeneous devices, 1.4-2.6x the model's memory."""
    arch = dataclasses.replace(CATALOG["llama-3.1-8b"], num_hidden_layers=n_blocks - 2)
    blocks = blocks_for(arch, prompt_tokens=512, new_tokens=1, dtype="bfloat16")
    model_bytes = sum(b.memory_bytes for b in blocks)
    rng = random.Random(seed)
    devices = [
        Device(
            f"dev{k}",
            flops=rng.choice([2e12, 5e12, 1e13, 3e13]),
            load_bandwidth=rng.choice([2e8, 5e8, 1e9, 2e9]),
            startup=rng.choice([0.2, 0.5, 1.0, 2.0]),
            memory=rng.uniform(0.7, 1.3) * model_bytes * 2.0 / n_devices,  # 1.4-2.6x the model in all
            uplink=rng.choice([1e8, 3e8, 1e9]),
            downlink=rng.choice([1e8, 3e8, 1e9]),
        )
        for k in range(n_devices)
    ]
    return Scenario(tuple(blocks), tuple(devices), Workload(512), Network(0.002), AP, f"llama-{n_blocks}b")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="four small instances, 10 s limit")
    ap.add_argument("--time-limit", type=float, default=None, help="SCIP seconds per instance (default 60)")
    ap.add_argument("--overlap", default="layer", choices=["layer", "stage", "none"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-doc", action="store_true", help="print only, do not write docs/formulation.md")
    args = ap.parse_args(argv)
    limit = args.time_limit if args.time_limit is not None else (10.0 if args.quick else 60.0)
    grid = QUICK_GRID if args.quick else GRID
    overlap: Overlap = args.overlap
    plan_exact(Problem(instance(3, 4, 0), overlap))  # compile the DP kernel outside the timings

    rows = []
    largest = None
    for i, (n_dev, n_blk) in enumerate(grid):
        sc = instance(n_dev, n_blk, args.seed + i)
        dp_times = []
        for _ in range(3):
            t = time.perf_counter()
            dp = plan_exact(Problem(sc, overlap))
            dp_times.append(time.perf_counter() - t)
        dp_s = statistics.median(dp_times)
        t = time.perf_counter()
        res = plan_minlp(Problem(sc, overlap, time_limit_s=limit))
        scip_s = time.perf_counter() - t
        assert dp.solver_value_s is not None and res.solver_value_s is not None
        agree = abs(res.solver_value_s - dp.solver_value_s) <= 1e-6 * dp.solver_value_s
        row = {
            "devices": n_dev,
            "blocks": n_blk,
            "dp_s": dp_s,
            "scip_s": scip_s,
            "ratio": scip_s / dp_s,
            "status": res.details["status"],
            "gap": res.details["gap"],
            "vars": res.details["n_vars"],
            "conss": res.details["n_conss"],
            "ttft": dp.value_s,
            "agree": agree if res.exact else None,
        }
        rows.append(row)
        print(
            f"{n_dev} devices x {n_blk} blocks: DP {dp_s * 1e3:.2f} ms, SCIP {scip_s:.2f} s ({res.details['status']})",
            file=sys.stderr,
        )
        if not res.exact:
            break
        largest = (n_dev, n_blk, scip_s)

    lines = [
        f"Overlap `{overlap}`, SCIP limit {limit:g} s; command: `.venv/bin/python benchmarks/bench_minlp.py"
        + (" --quick" if args.quick else "")
        + "`.",
        "",
        "| devices | blocks | DP time | SCIP time | SCIP / DP | SCIP status | gap | vars | constraints "
        "| TTFT (s) | DP = SCIP |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        agree = {True: "yes", False: "**no**", None: "-"}[r["agree"]]
        lines.append(
            f"| {r['devices']} | {r['blocks']} | {r['dp_s'] * 1e3:.2f} ms | {r['scip_s']:.2f} s | "
            f"{r['ratio']:.3g} | {r['status']} | {r['gap']:.2g} | {r['vars']} | {r['conss']} | {r['ttft']:.4f} | "
            f"{agree} |"
        )
    lines.append("")
    if largest is not None:
        lines.append(
            f"Largest instance SCIP solved to optimality within {limit:g} s: {largest[0]} devices x "
            f"{largest[1]} blocks ({largest[2]:.1f} s)."
            + ("" if rows[-1]["status"] == "optimal" else f" The next one ran into the {limit:g} s limit.")
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_doc:
        write_between(DOC, BEGIN, END, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
