"""One entry point for every planner: ``plan(problem, solver="auto")``.

``auto`` takes the first of :data:`AUTO` that does not refuse the problem (the exact DP within its
range, else the heuristic); any other name runs that planner or says why it cannot. Whatever ran, the
solution's ``value_s`` is the simulator's value of the objective for the plan and its ``timeline``
the simulator's timeline (one source of truth); the method's own number is ``solver_value_s``.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> sc = Scenario([Block(f"b{i}", 1.0, 1.0, 0.0) for i in range(4)],
...               [Device("x", 1.0, 1.0, 0.0, 10.0, 1e9, 1e9)], Workload(1, prompt_bytes=0, token_bytes=0))
>>> sol = plan(Problem(sc))
>>> str(sol.plan), sol.method, sol.exact, sol.ttft_s
('x[0-3]', 'dp', True, 5.0)
"""

from __future__ import annotations

import dataclasses
import time

from coldpipe.core.simulator import simulate
from coldpipe.errors import InputError
from coldpipe.planning.brute import BrutePlanner
from coldpipe.planning.exact import ExactPlanner
from coldpipe.planning.heuristic import HeuristicPlanner
from coldpipe.planning.minlp import MINLPPlanner
from coldpipe.planning.protocol import Planner, Problem, Solution

__all__ = ["AUTO", "PLANNERS", "SOLVERS", "plan"]

PLANNERS: dict[str, Planner] = {p.name: p for p in (ExactPlanner(), BrutePlanner(), MINLPPlanner(), HeuristicPlanner())}
"""Every planner by name."""

AUTO: tuple[str, ...] = ("dp", "heuristic")
"""What ``auto`` tries, in order."""

SOLVERS: tuple[str, ...] = ("auto", *PLANNERS)

_FIX = {"dp": "use --solver auto or heuristic", "brute": "use --solver dp", "minlp": "use --solver dp or heuristic"}


def plan(problem: Problem, solver: str = "auto") -> Solution:
    """Solve ``problem`` with ``solver`` (``auto``: the first of :data:`AUTO` that does not refuse it).

    Raises :class:`~coldpipe.errors.InputError` for an unknown solver or one that refuses the problem
    (the refusal and what to use instead), and whatever the planner raises
    (:class:`~coldpipe.errors.Infeasible` when no plan fits).
    """
    if solver not in SOLVERS:
        raise InputError("solver", f"unknown solver {solver!r}", f"use one of {list(SOLVERS)}")
    if solver == "auto":
        chosen = next(PLANNERS[n] for n in AUTO if PLANNERS[n].refuses(problem) is None)
    else:
        chosen = PLANNERS[solver]
        reason = chosen.refuses(problem)
        if reason is not None and solver != "dp":  # the exact DP's own error says more (and what to do)
            raise InputError("solver", reason, _FIX.get(solver, "use --solver auto"))
    start = time.perf_counter()
    solution = chosen.solve(problem)
    details = {**solution.details, "time_s": time.perf_counter() - start}
    timeline = solution.timeline or simulate(problem.scenario, solution.plan, problem.overlap)
    return dataclasses.replace(solution, timeline=timeline, details=details)
