"""One entry point for every solver: ``plan(scenario, overlap, solver)``.

Whatever the solver, the reported ``ttft_s`` is the simulator's TTFT of the returned plan
(one source of truth); the solver's own objective is kept in ``details["objective"]`` so tests and
users can check that they agree.

Solvers:

- ``dp``: the exact dynamic program (:mod:`coldpipe.core.dp`);
- ``brute``: exhaustive enumeration (:mod:`coldpipe.core.brute`), for small instances;
- ``minlp``: the MINLP solved by SCIP (:mod:`coldpipe.core.formulation`), an independent oracle;
- ``heuristic``: for clusters beyond the exact DP's range (:mod:`coldpipe.core.heuristic`);
- ``auto``: ``dp`` when the cluster is within its range, else ``heuristic``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from coldpipe.core.dp import MAX_USAGE_VECTORS, DeviceTypes, plan_dp
from coldpipe.core.simulator import OBJECTIVES, Timeline, objective_s, simulate
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario
from coldpipe.errors import Infeasible, InputError

__all__ = ["SOLVERS", "PlanResult", "Solver", "plan"]

Solver = Literal["auto", "dp", "brute", "minlp", "heuristic"]
SOLVERS: tuple[Solver, ...] = ("auto", "dp", "brute", "minlp", "heuristic")


@dataclass(frozen=True)
class PlanResult:
    """A plan, its simulated timeline, and what the solver said about it."""

    plan: Plan
    timeline: Timeline
    solver: str  # the solver that actually ran ("dp", "heuristic", ...)
    exact: bool  # whether the solver proves optimality
    details: dict[str, Any] = field(default_factory=dict)  # objective, time_s, status, gap, ...
    objective: str = "ttft"  # what was minimised: "ttft", "e2e" or "tpot" (with a burst: its completion)
    value_s: float | None = None  # the simulator's value of that objective for the plan (None: the TTFT)

    @property
    def ttft_s(self) -> float:
        return self.timeline.ttft_s

    @property
    def overlap(self) -> Overlap:
        return self.timeline.overlap

    @property
    def objective_value_s(self) -> float:
        return self.ttft_s if self.value_s is None else self.value_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "ttft": self.ttft_s,
            "overlap": self.overlap,
            "objective": self.objective,
            "objective_value": self.objective_value_s,
            "stages": self.plan.to_dict()["stages"],
            "solver": {"name": self.solver, "exact": self.exact, **self.details},
        }


def plan(
    scenario: Scenario,
    overlap: Overlap = "layer",
    solver: Solver = "auto",
    *,
    time_limit_s: float | None = None,
    objective: str = "ttft",
) -> PlanResult:
    """Plan ``scenario`` with ``solver`` for ``objective`` and time the result with the simulator.

    ``objective`` other than ``ttft``, or a burst (``workload.requests > 1``), is planned by
    :func:`coldpipe.core.objectives.plan_for_objective` (``dp``, and ``auto`` within the exact DP's
    range), by :func:`coldpipe.core.heuristic.plan_heuristic` (``heuristic``, and ``auto`` beyond it)
    or by ``brute``.
    """
    if overlap not in OVERLAPS:
        raise InputError("overlap", f"unknown overlap mode {overlap!r}", f"use one of {list(OVERLAPS)}")
    if solver not in SOLVERS:
        raise InputError("solver", f"unknown solver {solver!r}", f"use one of {list(SOLVERS)}")
    if objective not in OBJECTIVES:
        raise InputError("objective", f"unknown objective {objective!r}", f"use one of {list(OBJECTIVES)}")
    if objective != "ttft" or scenario.workload.requests > 1:
        return _plan_objective(scenario, overlap, solver, objective)
    if solver == "auto":
        solver = "dp" if DeviceTypes.of(scenario).n_usage_vectors <= MAX_USAGE_VECTORS else "heuristic"
    start = time.perf_counter()
    details: dict[str, Any] = {}
    if solver == "dp":
        res = plan_dp(scenario, overlap)
        chosen, objective, exact = res.plan, res.ttft_s, True
        details["usage_vectors"] = res.usage_vectors
        if overlap == "none":
            details["thresholds_evaluated"] = res.thresholds_evaluated
    elif solver == "brute":
        from coldpipe.core.brute import MAX_BRUTE_PLANS, brute_force, count_plans

        n_plans = count_plans(scenario)
        if n_plans > MAX_BRUTE_PLANS:
            raise InputError(
                "solver", f"brute force would enumerate {n_plans} plans (limit {MAX_BRUTE_PLANS})", "use --solver dp"
            )
        objective, found = brute_force(scenario, overlap)
        if found is None:
            plan_dp(scenario, overlap)  # raises Infeasible with the shortfall
            raise Infeasible("no plan fits in memory", shortfall_bytes=math.nan)  # pragma: no cover
        chosen, exact = found, True
        details["plans_enumerated"] = n_plans
    elif solver == "minlp":
        from coldpipe.core.formulation import plan_minlp

        mres = plan_minlp(scenario, overlap, time_limit_s=time_limit_s)
        chosen, objective, exact = mres.plan, mres.objective_s, mres.optimal
        details.update(mres.details)
    else:
        from coldpipe.core.heuristic import plan_heuristic

        hres = plan_heuristic(scenario, overlap)
        chosen, objective, exact = hres.plan, hres.ttft_s, False
        details.update(hres.details)
    details["objective"] = objective
    details["time_s"] = time.perf_counter() - start
    return PlanResult(chosen, simulate(scenario, chosen, overlap), solver, exact, details)


def _plan_objective(scenario: Scenario, overlap: Overlap, solver: str, objective: str) -> PlanResult:
    start = time.perf_counter()
    details: dict[str, Any] = {}
    if solver == "auto" and DeviceTypes.of(scenario).n_usage_vectors > MAX_USAGE_VECTORS:
        solver = "heuristic"  # beyond the exact DP's range: every objective is planned by the heuristic
    if solver == "heuristic":
        from coldpipe.core.heuristic import plan_heuristic

        hres = plan_heuristic(scenario, overlap, objective=objective)
        chosen, value, exact, name = hres.plan, hres.value_s, False, "heuristic"
        details.update(hres.details)
    elif solver in ("auto", "dp"):
        from coldpipe.core.objectives import plan_for_objective

        res = plan_for_objective(scenario, overlap, objective)
        chosen, value, exact = res.plan, res.value_s, bool(res.details.get("exact", 1))
        details.update(res.details)
        name = "dp" if exact else "local-search"
    elif solver == "brute":
        from coldpipe.core.brute import brute_force

        value, found = brute_force(scenario, overlap, objective)
        if found is None:
            plan_dp(scenario, overlap)  # raises Infeasible with the shortfall
            raise Infeasible("no plan fits in memory", shortfall_bytes=math.nan)  # pragma: no cover
        chosen, exact, name = found, True, "brute"
    else:
        what = f"objective {objective!r}" if objective != "ttft" else "a burst of requests"
        raise InputError(
            "solver", f"{solver!r} plans the TTFT of one request, not {what}", "use --solver dp or heuristic"
        )
    details["objective"] = value
    details["time_s"] = time.perf_counter() - start
    timeline = simulate(scenario, chosen, overlap)
    return PlanResult(
        chosen, timeline, name, exact, details, objective, objective_s(scenario, chosen, overlap, objective)
    )
