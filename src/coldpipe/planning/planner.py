"""One entry point for every planner: ``plan(problem, solver="auto")``.

``auto`` takes the first of :data:`AUTO` that does not refuse the problem: the exact DP within its
range and when its predicted time (:func:`~coldpipe.planning.predict.predicted_time_s`) is within
:data:`AUTO_TIME_BUDGET_S`, else the heuristic, and the solution's ``details["auto"]`` says why. Any
other name runs that planner or says why it cannot. Whatever ran, the
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
from coldpipe.planning.highs import HighsPlanner
from coldpipe.planning.mechanisms import solve_with_mechanisms
from coldpipe.planning.minlp import MINLPPlanner
from coldpipe.planning.predict import predicted_time_s
from coldpipe.planning.protocol import Planner, Problem, Solution

__all__ = ["AUTO", "AUTO_TIME_BUDGET_S", "PLANNERS", "SOLVERS", "auto_choice", "plan"]

PLANNERS: dict[str, Planner] = {
    p.name: p for p in (ExactPlanner(), BrutePlanner(), MINLPPlanner(), HighsPlanner(), HeuristicPlanner())
}
"""Every planner by name."""

AUTO: tuple[str, ...] = ("dp", "heuristic")
"""What ``auto`` tries, in order."""

SOLVERS: tuple[str, ...] = ("auto", *PLANNERS)

AUTO_TIME_BUDGET_S = 5.0
"""``auto`` runs the exact DP only if its predicted planning time is at most this many seconds (a re-plan
after a device fails waits for it); beyond, the heuristic (``docs/heuristic.md``)."""


def auto_choice(problem: Problem) -> tuple[Planner, str | None]:
    """The planner ``auto`` runs on ``problem`` and, when it is not the first of :data:`AUTO`, why."""
    skipped = []
    for name in AUTO:
        planner = PLANNERS[name]
        reason = planner.refuses(problem)
        if reason is None and name == "dp":
            predicted = predicted_time_s(problem)
            if predicted > AUTO_TIME_BUDGET_S:
                reason = f"predicted exact planning time {predicted:.3g} s, above auto's budget of "
                reason += f"{AUTO_TIME_BUDGET_S:g} s"
        if reason is None:
            return planner, (f"{name}, not " + "; not ".join(skipped)) if skipped else None
        skipped.append(f"{name}: {reason}")
    raise AssertionError("the last planner of AUTO refuses nothing")  # pragma: no cover


_FIX = {
    "dp": "use --solver auto or heuristic",
    "brute": "use --solver dp",
    "minlp": "use --solver dp or heuristic",
    "highs": "use --solver dp or heuristic",
}


def plan(problem: Problem, solver: str = "auto") -> Solution:
    """Solve ``problem`` with ``solver`` (``auto``: the first of :data:`AUTO` that does not refuse it).

    Raises :class:`~coldpipe.errors.InputError` for an unknown solver or one that refuses the problem
    (the refusal and what to use instead), and whatever the planner raises
    (:class:`~coldpipe.errors.Infeasible` when no plan fits).
    """
    if solver not in SOLVERS:
        raise InputError("solver", f"unknown solver {solver!r}", f"use one of {list(SOLVERS)}")
    if problem.scenario.mechanisms:  # docs/model.md#mechanisms: the paper's planners on the effective problem
        return solve_with_mechanisms(problem, lambda p: plan(p, solver))
    why = None
    if solver == "auto":
        chosen, why = auto_choice(problem)
    else:
        chosen = PLANNERS[solver]
        reason = chosen.refuses(problem)
        if reason is not None and solver != "dp":  # the exact DP's own error says more (and what to do)
            raise InputError("solver", reason, _FIX.get(solver, "use --solver auto"))
    start = time.perf_counter()
    solution = chosen.solve(problem)
    details = {**solution.details, "time_s": time.perf_counter() - start}
    if why is not None:
        details["auto"] = why
    timeline = solution.timeline or simulate(problem.scenario, solution.plan, problem.overlap)
    return dataclasses.replace(solution, timeline=timeline, details=details)
