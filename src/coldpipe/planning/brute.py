"""Exhaustive search: every ordered device subset x every contiguous split, timed by the simulator.

Independent of the DP (it shares only the simulator, i.e. the model of ``docs/model.md``), so the tests use it
as the reference optimum; ``coldpipe plan --solver brute`` exposes it for small instances.
The number of plans is ``sum_j C(B-1, j-1) * n!/(n-j)!``: keep ``n <= 5`` and ``B <= 12``.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> sc = Scenario([Block("b", 1.0, 1.0, 1.0)] * 3,
...               [Device(n, 1.0, 1.0, 0.0, 10.0, 1.0, 1.0) for n in "xy"], Workload(1))
>>> count_plans(sc)   # x, y; x>y, y>x at 2 cut points
6
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from coldpipe.core.simulator import objective_s, simulate
from coldpipe.core.types import Plan, Scenario, Stage
from coldpipe.errors import InputError
from coldpipe.planning.exact import raise_infeasible
from coldpipe.planning.protocol import Problem, Solution

__all__ = ["MAX_BRUTE_PLANS", "BrutePlanner", "all_plans", "brute_force", "count_plans", "fits"]

MAX_BRUTE_PLANS = 2_000_000


def count_plans(scenario: Scenario) -> int:
    """How many plans :func:`all_plans` yields (memory ignored)."""
    scenario = scenario.planned()  # sublayer: plans of the split blocks
    n, d = scenario.n_blocks, len(scenario.devices)
    return sum(math.comb(n - 1, j - 1) * math.perm(d, j) for j in range(1, min(d, n) + 1))


def all_plans(scenario: Scenario) -> Iterator[Plan]:
    """Every contiguous split of the blocks over every ordered subset of the devices."""
    scenario = scenario.planned()
    n = scenario.n_blocks
    names = [d.name for d in scenario.devices]
    for j in range(1, min(len(names), n) + 1):
        for cuts in itertools.combinations(range(1, n), j - 1):
            bounds = (0, *cuts, n)
            for order in itertools.permutations(names, j):
                yield Plan(tuple(Stage(order[k], bounds[k], bounds[k + 1] - 1) for k in range(j)))


def fits(scenario: Scenario, plan: Plan) -> bool:
    """Whether every stage's weights + KV fit its device's memory (recomputed here on purpose)."""
    scenario = scenario.planned()
    for st in plan.stages:
        need = sum(b.weight_bytes + b.kv_bytes for b in scenario.blocks[st.first : st.last + 1])
        if need > scenario.device(st.device).memory:
            return False
    return True


def brute_force(problem: Problem) -> Solution:
    """The minimum of ``problem.objective`` over :func:`all_plans`, by the simulator (exact, exhaustive).

    Raises :class:`~coldpipe.errors.Infeasible` (with the shortfall) when no plan fits, and
    :class:`~coldpipe.errors.InputError` beyond :data:`MAX_BRUTE_PLANS` plans.
    """
    reason = BrutePlanner().refuses(problem)
    if reason is not None:
        raise InputError("solver", reason, "use --solver dp")
    scenario, overlap, objective = problem.scenario.planned(), problem.overlap, problem.objective
    best, best_plan = math.inf, None
    for plan in all_plans(scenario):
        if not fits(scenario, plan):
            continue
        if problem.is_first_token:
            t = simulate(scenario, plan, overlap, validate=False).ttft_s
        else:
            t = objective_s(scenario, plan, overlap, objective)
        if t < best:
            best, best_plan = t, plan
    if best_plan is None:
        raise_infeasible(scenario)
    assert best_plan is not None
    details = {"plans_enumerated": count_plans(scenario)}
    timeline = simulate(scenario, best_plan, overlap)
    return Solution(best_plan, best, True, "brute", objective, overlap, best, details=details, timeline=timeline)


class BrutePlanner:
    """``brute``: exhaustive enumeration, for small instances (at most :data:`MAX_BRUTE_PLANS` plans)."""

    name = "brute"

    def refuses(self, problem: Problem) -> str | None:
        n_plans = count_plans(problem.scenario)
        if n_plans > MAX_BRUTE_PLANS:
            return f"brute force would enumerate {n_plans} plans (limit {MAX_BRUTE_PLANS})"
        return None

    def solve(self, problem: Problem) -> Solution:
        return brute_force(problem)
