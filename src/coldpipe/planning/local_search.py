"""Plan-level local search: best-improvement descent over plans one move away, timed by the simulator.

Used where no DP is exact: a burst's mean first-token completion, and a burst that decodes
(:func:`~coldpipe.core.simulator.burst_schedule` interleaves the requests' decode steps on the stages,
so a request's completion depends on every other request's timings). The seeds come from the exact
optima of neighbouring problems, planned by whichever planner the caller passes in (the exact DP
within its range, the heuristic beyond it); ``tests/planning/test_bursts.py`` measures the gap to brute force.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from coldpipe.core.simulator import objective_s
from coldpipe.core.types import Overlap, Plan, Scenario, Stage
from coldpipe.errors import InvalidPlan
from coldpipe.planning.protocol import Objective, Problem

__all__ = ["MAX_EVALUATIONS", "local_search", "neighbours", "plan_burst_e2e"]

MAX_EVALUATIONS = 20_000
"""Plans a decoding burst's search times by default (each costs requests x new_tokens jobs)."""


def neighbours(scenario: Scenario, plan: Plan, candidates: list[str] | None = None) -> list[Plan]:
    """Plans one move away: shift a boundary, swap two devices, replace, split or merge stages.

    Devices brought in by replace/split: every unused one, or only the unused among ``candidates``.
    The plans are not validated (a move may break a memory limit).
    """
    st = list(plan.stages)
    used = {s.device for s in st}
    pool = [d.name for d in scenario.devices] if candidates is None else candidates
    unused = [name for name in pool if name not in used]
    out: list[Plan] = []

    def add(stages: list[Stage]) -> None:
        out.append(Plan(tuple(stages)))

    for j in range(len(st) - 1):  # shift the boundary after stage j
        for delta in (-8, -4, -2, -1, 1, 2, 4, 8):
            cut = st[j].last + delta
            if st[j].first <= cut < st[j + 1].last:
                add(
                    [
                        *st[:j],
                        Stage(st[j].device, st[j].first, cut),
                        Stage(st[j + 1].device, cut + 1, st[j + 1].last),
                        *st[j + 2 :],
                    ]
                )
        merged = Stage(st[j].device, st[j].first, st[j + 1].last)  # merge j and j + 1 on either device
        add([*st[:j], merged, *st[j + 2 :]])
        add([*st[:j], Stage(st[j + 1].device, st[j].first, st[j + 1].last), *st[j + 2 :]])
    for j in range(len(st)):
        for k in range(j + 1, len(st)):  # swap the devices of two stages
            swapped = list(st)
            swapped[j] = Stage(st[k].device, st[j].first, st[j].last)
            swapped[k] = Stage(st[j].device, st[k].first, st[k].last)
            add(swapped)
        for name in unused:
            add([*st[:j], Stage(name, st[j].first, st[j].last), *st[j + 1 :]])  # replace
            if st[j].last > st[j].first:  # split in the middle, the new device after or before
                mid = (st[j].first + st[j].last) // 2
                a, b = Stage(st[j].device, st[j].first, mid), Stage(name, mid + 1, st[j].last)
                add([*st[:j], a, b, *st[j + 1 :]])
                add([*st[:j], Stage(name, st[j].first, mid), Stage(st[j].device, mid + 1, st[j].last), *st[j + 1 :]])
    return out


def local_search(
    scenario: Scenario,
    seeds: list[Plan],
    overlap: Overlap,
    *,
    unused: list[str] | None = None,
    max_evaluations: int | None = None,
    objective: Objective = "ttft",
) -> tuple[Plan, int]:
    """Best-improvement descent from each seed over :func:`neighbours`; ``(best plan, plans timed)``.

    ``unused``: the only devices a move may bring in (default: all); ``max_evaluations``: stop the
    descent once that many plans have been timed (default: no limit); ``objective``: what is minimised
    (default ``ttft``: with a burst, its first-token completion), as
    :func:`~coldpipe.core.simulator.objective_s` times it.
    """
    best_plan, best_value, evaluated = seeds[0], math.inf, 0
    for seed in seeds:
        cur, cur_value = seed, objective_s(scenario, seed, overlap, objective)
        while max_evaluations is None or evaluated < max_evaluations:
            step, step_value = cur, cur_value
            for cand in neighbours(scenario, cur, unused):
                if max_evaluations is not None and evaluated >= max_evaluations:
                    break
                try:
                    cand.validate(scenario)
                except InvalidPlan:
                    continue
                evaluated += 1
                value = objective_s(scenario, cand, overlap, objective)
                if value < step_value * (1 - 1e-12):
                    step, step_value = cand, value
            if step is cur:
                break
            cur, cur_value = step, step_value
        if cur_value < best_value:
            best_plan, best_value = cur, cur_value
    return best_plan, evaluated


def plan_burst_e2e(
    problem: Problem,
    seed_planner: Callable[[Problem], Plan],
    *,
    unused: Callable[[list[Plan]], list[str]] | None = None,
    max_evaluations: int = MAX_EVALUATIONS,
) -> tuple[Plan, dict[str, Any]]:
    """A decoding burst (``e2e`` with ``requests > 1``): local search from the neighbouring problems' plans.

    Seeds, each planned by ``seed_planner``: the burst's max first-token completion, one request's
    e2e (when it decodes), one request's tpot; searched best first, so a budget goes to the best.
    ``unused(seeds)``: the devices a move may bring in (default: all). Returns ``(plan, details)``.
    """
    scenario = problem.scenario
    one = scenario.replace(workload={"requests": 1})
    subproblems = [problem.replace(scenario=scenario.replace(workload={"completion": "max"}), objective="ttft")]
    if scenario.workload.new_tokens > 1:
        subproblems.append(problem.replace(scenario=one, objective="e2e"))
    subproblems.append(problem.replace(scenario=one, objective="tpot"))
    seeds: list[Plan] = []
    for sub in subproblems:
        plan = seed_planner(sub)
        if plan not in seeds:
            seeds.append(plan)
    seeds.sort(key=lambda p: objective_s(scenario, p, problem.overlap, "e2e"))  # the budget goes to the best first
    best, evaluated = local_search(
        scenario,
        seeds,
        problem.overlap,
        unused=None if unused is None else unused(seeds),
        max_evaluations=max_evaluations,
        objective="e2e",
    )
    details: dict[str, Any] = {"method": "local search", "plans_evaluated": evaluated, "seeds": len(seeds)}
    return best, details
