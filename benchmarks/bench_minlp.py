"""The exact solvers against each other: DP, SCIP (``minlp``), HiGHS (``highs``) and brute force.

Two tables, both written into ``docs/formulation.md``:

1. **Agreement** on the CI agreement suite (``tests/planning/test_agreement.py``: ``hard_scenario`` seeds
   0-39, up to 4 devices x 7 blocks, three overlap modes): per solver, how many answers equal brute
   force (1e-6 relative), how many are labelled optimal, how many are labelled optimal *and* wrong, the
   worst relative error and the median / max solve time. The MINLP of commit ``fef3b57`` (before issue 12,
   ``scripts/old_minlp_plugin.py``) runs beside today's, to show what the suite catches.
2. **Growth**: DP vs SCIP vs HiGHS on Llama-3.1-8B-shaped instances as they grow (2 -> 8 devices,
   8 -> 34 blocks), each solver with ``--time-limit`` seconds (default 60); a solver leaves the table after
   its first instance not solved to optimality in time.

Rerun: ``nice .venv/bin/python benchmarks/bench_minlp.py`` (``--quick``: 10 instances, a short grid;
``--part suite|growth``: one table).
Times are CPU seconds of the process (every thread: HiGHS and SCIP solve in a worker thread), which a
shared machine inflates less than wall-clock; the solvers' time limits are wall-clock. Compare ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _docs import write_between

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the suite's instance generator
sys.path.insert(0, str(ROOT / "scripts"))  # the pre-fix MINLP

from old_minlp_plugin import OLD_COMMIT, old_module  # noqa: E402

from coldpipe.core.architectures import CATALOG, blocks_for  # noqa: E402
from coldpipe.core.types import AP, OVERLAPS, Device, Network, Scenario, Workload  # noqa: E402
from coldpipe.errors import Infeasible  # noqa: E402
from coldpipe.planning import Problem  # noqa: E402
from coldpipe.planning.exact import plan_exact  # noqa: E402
from coldpipe.planning.highs import plan_highs  # noqa: E402
from coldpipe.planning.minlp import plan_minlp  # noqa: E402
from random_instances import brute_value, hard_scenario  # noqa: E402

DOC = ROOT / "docs" / "formulation.md"
SUITE_BEGIN, SUITE_END = "<!-- bench_minlp:suite:begin -->", "<!-- bench_minlp:suite:end -->"
BEGIN, END = "<!-- bench_minlp:begin -->", "<!-- bench_minlp:end -->"
REL = 1e-6

# (devices, blocks): blocks = decoder layers + 2 (embedding, head)
GRID = [(2, 8), (3, 8), (3, 12), (4, 12), (4, 16), (5, 16), (5, 20), (6, 20), (6, 26), (8, 26), (8, 34)]
QUICK_GRID = [(2, 8), (3, 8), (3, 12)]


def _fmt_s(t: float) -> str:
    return f"{t * 1e3:.2f} ms" if t < 0.1 else f"{t:.2f} s"


def _timed(solve: Callable[[Problem], Any], problem: Problem) -> tuple[Any, float]:
    """The answer (None: infeasible) and the CPU time of the whole process (the solvers' threads included)."""
    start = time.process_time()
    try:
        res = solve(problem)
    except Infeasible:
        res = None
    return res, time.process_time() - start


def agreement_table(n_seeds: int) -> str:
    old = old_module().plan_minlp
    solvers: dict[str, Callable[[Problem], Any]] = {
        "DP (`dp`)": plan_exact,
        "SCIP (`minlp`)": plan_minlp,
        "SCIP, linearised model": lambda p: plan_minlp(p, linearize=True),
        "HiGHS (`highs`)": plan_highs,
        f"SCIP, model and settings of `{OLD_COMMIT}`": old,
    }
    stats: dict[str, dict[str, Any]] = {
        name: {"agree": 0, "optimal": 0, "wrong": 0, "worst": 0.0, "times": []} for name in solvers
    }
    brute_times = []
    n_problems = n_infeasible = 0
    for seed in range(n_seeds):
        sc = hard_scenario(seed, max_blocks=7, max_devices=4)
        for overlap in OVERLAPS:
            start = time.process_time()
            expected, _ = brute_value(sc, overlap)
            brute_times.append(time.process_time() - start)
            if math.isinf(expected):
                n_infeasible += 1
                continue
            n_problems += 1
            for name, solve in solvers.items():
                res, dt = _timed(solve, Problem(sc, overlap))
                st = stats[name]
                st["times"].append(dt)
                err = math.inf if res is None else abs(res.value_s - expected) / expected
                st["worst"] = max(st["worst"], err)
                st["agree"] += err <= REL
                labelled = res is not None and res.exact
                st["optimal"] += labelled
                st["wrong"] += labelled and err > REL
        print(f"suite: seed {seed} done", file=sys.stderr)
    lines = [
        f"{n_seeds} instances of `hard_scenario` (seeds 0-{n_seeds - 1}, 2-4 devices, 4-7 blocks) x 3 overlap "
        f"modes: {n_problems} feasible problems ({n_infeasible} infeasible ones, where every solver says so); "
        f"brute force {_fmt_s(statistics.median(brute_times))} median per problem. Command: "
        "`nice .venv/bin/python benchmarks/bench_minlp.py`.",
        "",
        "| solver | = brute force (1e-6) | labelled optimal | labelled optimal but wrong | worst error "
        "| median CPU | max CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, st in stats.items():
        lines.append(
            f"| {name} | {st['agree']} / {n_problems} | {st['optimal']} | {st['wrong']} | {st['worst']:.2g} | "
            f"{_fmt_s(statistics.median(st['times']))} | {_fmt_s(max(st['times']))} |"
        )
    return "\n".join(lines)


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


def growth_table(grid: list[tuple[int, int]], limit: float, seed: int) -> str:
    solvers = {"SCIP": plan_minlp, "HiGHS": plan_highs}
    active = set(solvers)
    largest: dict[str, tuple[int, int, float]] = {}
    load = os.getloadavg()[0]
    lines = [
        f"Overlap `layer`, {limit:g} s (wall-clock) limit per solver; load average {load:.1f} on "
        f"{os.cpu_count()} CPUs when the run started; command: `nice .venv/bin/python benchmarks/bench_minlp.py"
        + (f" --time-limit {limit:g}" if limit != 60.0 else "")
        + "`.",
        "",
        "| devices | blocks | DP CPU | SCIP CPU | SCIP status | HiGHS CPU | HiGHS status | TTFT (s) | all equal |",
        "|---:|---:|---:|---:|---|---:|---|---:|---|",
    ]
    for i, (n_dev, n_blk) in enumerate(grid):
        if not active:
            break
        sc = instance(n_dev, n_blk, seed + i)
        problem = Problem(sc, "layer", time_limit_s=limit)
        dp_times = []
        for _ in range(3):
            dp, dt = _timed(plan_exact, problem)
            dp_times.append(dt)
        cells, equal = [], True
        for name, solve in solvers.items():
            if name not in active:
                cells += ["-", "(left the table)"]
                continue
            res, dt = _timed(solve, problem)
            status = res.details["status"] if res is not None else "infeasible"
            cells += [_fmt_s(dt), status]
            if res is not None and res.exact:
                largest[name] = (n_dev, n_blk, dt)
                equal = equal and abs(res.value_s - dp.value_s) <= REL * dp.value_s
            else:
                active.discard(name)
                equal = False
            print(f"growth: {n_dev} x {n_blk} {name} {_fmt_s(dt)} {status}", file=sys.stderr)
        lines.append(
            f"| {n_dev} | {n_blk} | {_fmt_s(statistics.median(dp_times))} | {' | '.join(cells)} | "
            f"{dp.value_s:.4f} | {'yes' if equal else '-'} |"
        )
    lines.append("")
    for name, (n_dev, n_blk, dt) in largest.items():
        lines.append(f"Largest instance {name} solved to optimality: {n_dev} devices x {n_blk} blocks ({_fmt_s(dt)}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 suite instances, a short grid, 10 s limit")
    ap.add_argument("--time-limit", type=float, default=None, help="seconds per solver and instance (default 60)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-doc", action="store_true", help="print only, do not write docs/formulation.md")
    ap.add_argument("--part", choices=["both", "suite", "growth"], default="both", help="which table to make")
    args = ap.parse_args(argv)
    limit = args.time_limit if args.time_limit is not None else (10.0 if args.quick else 60.0)
    for overlap in OVERLAPS:  # compile the DP kernels outside the timings
        plan_exact(Problem(instance(3, 4, 0), overlap))
    write = not args.no_doc and not args.quick
    if args.part in ("both", "suite"):
        suite = agreement_table(10 if args.quick else 40)
        print(suite)
        if write:
            write_between(DOC, SUITE_BEGIN, SUITE_END, suite)
    if args.part in ("both", "growth"):
        growth = growth_table(QUICK_GRID if args.quick else GRID, limit, args.seed)
        print(growth)
        if write:
            write_between(DOC, BEGIN, END, growth)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
