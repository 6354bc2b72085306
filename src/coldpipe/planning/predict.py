"""How long the exact planner will take on a problem: the estimate behind ``auto``'s choice.

The exact DPs visit every usage vector and, from it, every stage that fits a device type's memory, so
their work is close to ``usage vectors x stages that fit`` (a stage: a device type and a block range
``first..last`` whose blocks fit its memory), times a constant per method: the seconds per unit below,
the largest measured per method on the clusters of ``benchmarks/bench_targets.py`` and
``bench_objectives.py`` (numba on; ``docs/model.md``, "Planning time"). The Pareto DPs' work also
grows with their fronts, which the estimate does not see: it is a prediction, not a bound.

A burst's ``mean`` first token and a decoding burst are planned by local search from exact seeds
(:func:`~coldpipe.planning.exact.plan_exact`): their seeds' estimates, plus the search, whose plans
each cost the simulator time in proportion to ``requests x new_tokens x stages``.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> from coldpipe.planning.protocol import Problem
>>> sc = Scenario([Block(f"b{i}", 1.0, 1.0, 0.0) for i in range(4)],
...               [Device(f"x{k}", 1.0, 1.0, 0.0, 10.0, 1e9, 1e9) for k in range(3)], Workload(1))
>>> predicted_time_s(Problem(sc)) < 0.01
True
"""

from __future__ import annotations

import numpy as np

from coldpipe.planning.protocol import Problem
from coldpipe.planning.tables import DeviceTypes, StageTables

__all__ = ["SECONDS_PER_UNIT", "predicted_time_s", "work_units"]

SECONDS_PER_UNIT = {
    "ttft": 6.5e-9,  # scalar_dp, layer and stage
    "none": 9e-9,  # ttft and e2e under none: suffix bounds at nine levels, then the front DP
    "tpot": 1e-9,  # the additive DP by sliding windows (its work is rather usage vectors x types x blocks)
    "e2e": 12e-9,  # bounds, the quick run and the exact Pareto DP
    "burst": 13e-9,  # a burst's max, layer and stage: plain Pareto dominance, larger fronts
    "burst-none": 140e-9,  # a burst's max under none: a Pareto DP per load-end threshold
}
"""Seconds per unit of :func:`work_units`, per method."""

FIXED_S = 0.005
"""Tables, Python and the simulator's replay of the plan."""

SEARCH_PLANS = 1000
"""Plans a local search from exact seeds typically times (it stops at a local optimum)."""


def work_units(problem: Problem) -> float:
    """``usage vectors x stages that fit``: the exact DPs' work, up to a constant per method."""
    sc = problem.scenario
    types = DeviceTypes.of(sc)
    tables = StageTables.build(sc, warm=True)
    mp, mem = tables.mp, tables.mem
    fits = 0
    for t in range(len(types.members)):
        # for each first block i, the last blocks e with mp[e + 1] - mp[i] <= mem[t]
        last = np.searchsorted(mp, mp[:-1] + mem[t] * (1 + 1e-12), side="right") - 1
        fits += int(np.maximum(0, last - np.arange(tables.n_blocks)).sum())
    return float(types.n_usage_vectors) * fits


def _search_s(problem: Problem, new_tokens: int) -> float:
    """A local search from exact seeds: its plans, each replayed by the simulator."""
    sc = problem.scenario
    stages = min(len(sc.devices), sc.n_blocks, 6)
    return SEARCH_PLANS * (3e-4 + 5e-7 * sc.workload.requests * new_tokens * stages)


def predicted_time_s(problem: Problem) -> float:
    """The exact planner's predicted time on ``problem`` (seconds, on the benchmark machine)."""
    sc = problem.scenario
    wl = sc.workload
    units = work_units(problem)
    none = problem.overlap == "none"
    c = SECONDS_PER_UNIT
    single = c["none"] if none else c["ttft"]  # one request's TTFT
    if problem.objective == "tpot":
        return FIXED_S + c["tpot"] * units
    if problem.is_burst:
        first = c["burst-none"] if none else c["burst"]
        if problem.objective == "e2e" and wl.new_tokens > 1:  # seeds: the first tokens' max, e2e, tpot
            seeds = first + (c["none"] if none else c["e2e"]) + c["tpot"]
            return FIXED_S + seeds * units + _search_s(problem, wl.new_tokens)
        if wl.completion == "mean":  # seeds: the max, one request's TTFT
            return FIXED_S + (first + single) * units + _search_s(problem, 1)
        return FIXED_S + first * units
    if problem.objective == "e2e" and wl.new_tokens > 1:
        return FIXED_S + (c["none"] if none else c["e2e"]) * units
    return FIXED_S + single * units
