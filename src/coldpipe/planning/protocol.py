"""What every planner takes and returns: a :class:`Problem` in, a :class:`Solution` out.

A planner is anything with a ``name``, ``refuses(problem) -> str | None`` (why it cannot solve the
problem, or None) and ``solve(problem) -> Solution``: the :class:`Planner` protocol. The problem is
validated once, when it is made; planners and their kernels trust it.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> sc = Scenario([Block("b", 1.0, 1.0, 1.0)], [Device("x", 1.0, 1.0, 0.0, 10.0, 1.0, 1.0)], Workload(1))
>>> Problem(sc, "layer", "e2e").objective
'e2e'
>>> Problem(sc, "eager")
Traceback (most recent call last):
...
coldpipe.errors.InputError: overlap: unknown overlap mode 'eager' (use one of ['layer', 'stage', 'none'])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from coldpipe.core.simulator import Timeline
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario
from coldpipe.errors import InputError

__all__ = ["OBJECTIVES", "Objective", "Planner", "Problem", "Solution"]

Objective = Literal["ttft", "e2e", "tpot"]
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)


@dataclass(frozen=True)
class Problem:
    """A planning problem: minimise ``objective`` for ``scenario`` under ``overlap``.

    ``objective`` as :func:`~coldpipe.core.simulator.objective_s` defines it: ``ttft`` (with a burst,
    ``workload.requests > 1``: the max or mean first-token completion), ``e2e`` (the last token) or
    ``tpot`` (the warm time per output token). ``time_limit_s`` bounds solvers that honour one
    (``minlp``, ``highs``).
    """

    scenario: Scenario
    overlap: Overlap = "layer"
    objective: Objective = "ttft"
    time_limit_s: float | None = None

    def __post_init__(self) -> None:
        if self.overlap not in OVERLAPS:
            raise InputError("overlap", f"unknown overlap mode {self.overlap!r}", f"use one of {list(OVERLAPS)}")
        if self.objective not in OBJECTIVES:
            raise InputError("objective", f"unknown objective {self.objective!r}", f"use one of {list(OBJECTIVES)}")
        if self.time_limit_s is not None and not (self.time_limit_s > 0 and math.isfinite(self.time_limit_s)):
            raise InputError("time_limit", f"{self.time_limit_s!r} is not a positive number of seconds", "e.g. 60")

    @property
    def is_burst(self) -> bool:
        """Several requests at once (``workload.requests > 1``)."""
        return self.scenario.workload.requests > 1

    @property
    def is_first_token(self) -> bool:
        """The cold-start problem itself: one request's TTFT."""
        return self.objective == "ttft" and not self.is_burst

    def replace(self, **changes: Any) -> Problem:
        """This problem with some fields changed (``scenario=``, ``overlap=``, ``objective=``, ...)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Solution:
    """A planner's answer: the plan, the simulator's value of the objective for it, and how sure it is.

    - ``value_s``: :func:`~coldpipe.core.simulator.objective_s` of the plan (one source of truth);
    - ``solver_value_s``: the method's own number for it (the DP's, SCIP's or HiGHS's objective), when
      it has one; tests check that the two agree;
    - ``exact``: the method proves the plan optimal; ``method``: the planner that ran it
      (``dp``, ``local-search``, ``heuristic``, ``brute``, ``minlp``, ``highs``);
    - ``lower_bound_s``: a lower bound on the optimum, when the method has one;
    - ``details``: the method's counters (usage vectors, thresholds, orders, the solvers' status, ...);
    - ``timeline``: the simulator's timeline of the plan (every method attaches it; so does
      :func:`~coldpipe.planning.plan`).
    """

    plan: Plan
    value_s: float
    exact: bool
    method: str
    objective: Objective = "ttft"
    overlap: Overlap = "layer"
    solver_value_s: float | None = None
    lower_bound_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    timeline: Timeline | None = None

    @property
    def gap(self) -> float | None:
        """``value / lower_bound - 1`` when a positive lower bound is known."""
        if self.lower_bound_s is None:
            return None
        return self.value_s / self.lower_bound_s - 1.0 if self.lower_bound_s > 0 else math.inf

    @property
    def ttft_s(self) -> float:
        """The plan's TTFT (of its first request), from the attached timeline."""
        if self.timeline is None:
            raise ValueError("this solution has no timeline: plan it with coldpipe.planning.plan")
        return self.timeline.ttft_s

    def to_dict(self) -> dict[str, Any]:
        solver: dict[str, Any] = {"name": self.method, "exact": self.exact, **self.details}
        if self.solver_value_s is not None:
            solver["objective"] = self.solver_value_s
        if self.lower_bound_s is not None:
            solver.setdefault("lower_bound", self.lower_bound_s)
            solver.setdefault("gap_to_lower_bound", self.gap)
        return {
            "ttft": self.ttft_s,
            "overlap": self.overlap,
            "objective": self.objective,
            "objective_value": self.value_s,
            **self.plan.to_dict(),  # "stages", and "head_shards" with a sharded head
            "solver": solver,
        }


class Planner(Protocol):
    """A planning method: ``refuses`` says why it cannot solve a problem (None: it can), ``solve`` solves it."""

    name: str

    def refuses(self, problem: Problem) -> str | None: ...

    def solve(self, problem: Problem) -> Solution: ...
