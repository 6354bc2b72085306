"""Planning a burst that decodes: minimise the max or mean time until each request's **last** token.

:func:`~coldpipe.core.simulator.burst_schedule` interleaves the requests' decode steps on the stages (each
stage serves its jobs in the order the first stage received them), so a request's completion depends on
every other request's timings: neither the scalar DP nor the Pareto DP of
:mod:`coldpipe.core.objectives` is exact for it. This module plans it by best-improvement local search
(:func:`~coldpipe.core.objectives._local_search`: shift a boundary, swap, replace, split or merge
stages), every plan timed by the simulator, from the exact optima of the neighbouring problems:

- the burst's first-token optimum (``objective ttft`` with the same ``requests``: exact for ``max``),
- one request's E2E optimum (exact), and the TPOT optimum (exact).

``tests/test_bursts.py`` measures its gap to brute force on seeded instances.
"""

from __future__ import annotations

from coldpipe.core.types import Overlap, Plan, Scenario

__all__ = ["plan_burst_e2e"]

MAX_EVALUATIONS = 20_000  # plans timed by the local search before it stops (each costs requests x new_tokens jobs)


def plan_burst_e2e(scenario: Scenario, overlap: Overlap) -> tuple[Plan, float, dict[str, float | int | str]]:
    """The local-search plan for ``objective e2e`` with a burst; returns (plan, value, details)."""
    from coldpipe.core.objectives import _local_search, plan_for_objective, replace_workload
    from coldpipe.core.simulator import objective_s

    wl = scenario.workload
    seeds: list[Plan] = []
    for sub, objective in (
        (replace_workload(scenario, completion="max"), "ttft"),  # the burst's first tokens
        (replace_workload(scenario, requests=1), "e2e"),  # one request's answer
        (replace_workload(scenario, requests=1), "tpot"),  # the steady state
    ):
        if objective == "e2e" and wl.new_tokens == 1:
            continue
        plan = plan_for_objective(sub, overlap, objective).plan
        if plan not in seeds:
            seeds.append(plan)

    best_plan, evaluated = _local_search(scenario, seeds, overlap, max_evaluations=MAX_EVALUATIONS, objective="e2e")
    best_value = objective_s(scenario, best_plan, overlap, "e2e")
    details: dict[str, float | int | str] = {
        "exact": 0,
        "method": "local search",
        "plans_evaluated": evaluated,
        "seeds": len(seeds),
    }
    return best_plan, best_value, details
