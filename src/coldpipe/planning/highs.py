"""``highs``: the linearised model of :mod:`.formulation` solved by HiGHS, a second independent exact oracle.

HiGHS (via ``highspy``) is a MIP solver with no code in common with SCIP: it gets the McCormick and
big-M rows of :meth:`~coldpipe.planning.formulation.Formulation.linear_rows`, its default tolerances,
relative and absolute gap limits 0 and no output (``output_flag`` off before the model is passed, so
not even its banner is printed). Its answer is labelled as SCIP's is
(:func:`~coldpipe.planning.formulation.certify`), with the same result fields
(:func:`~coldpipe.planning.formulation.solver_result`).

The solve runs in HiGHS's own thread while this one waits, so a Ctrl-C reaches Python at once: the
solve is cancelled and :class:`KeyboardInterrupt` raised.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
>>> dev = lambda n: Device(n, flops=1e12, load_bandwidth=1e9, startup=0.0, memory=1e12,
...                        uplink=8e9, downlink=8e9)
>>> sc = Scenario(blocks, (dev("a"), dev("b")), Workload(prompt_tokens=1, prompt_bytes=0, token_bytes=0))
>>> res = plan_highs(Problem(sc, "layer"))
>>> str(res.plan), res.exact, res.details["status"], round(res.value_s, 6)
('a[0-3]', True, 'optimal', 5.0)
"""

from __future__ import annotations

import math
from typing import Any

from coldpipe.errors import SolverUnavailable
from coldpipe.planning.exact import raise_infeasible
from coldpipe.planning.formulation import formulate, refuses_unless_first_token, solver_result
from coldpipe.planning.protocol import Problem, Solution

__all__ = ["HIGHS_OPTIONS", "HighsPlanner", "plan_highs"]

HIGHS_OPTIONS: dict[str, Any] = {
    "mip_rel_gap": 0.0,
    "mip_abs_gap": 0.0,
    "random_seed": 0,
}
"""What :func:`plan_highs` changes in HiGHS's defaults besides silencing it (its tolerances stay its own)."""


def _import_highs() -> Any:
    try:
        import highspy
    except ImportError as exc:  # pragma: no cover - highspy is pinned in requirements.txt
        raise SolverUnavailable(
            f"the 'highs' solver needs highspy, which cannot be imported ({exc}); "
            "install it with `pip install highspy` or use --solver dp"
        ) from None
    return highspy


def _quiet_highs(highspy: Any) -> Any:
    """A ``highspy.Highs`` that prints nothing, not even its banner.

    ``Highs()`` logs the banner when its constructor installs highspy's callbacks
    (``enableCallbacks``), before any option can be set; this subclass turns ``output_flag`` off just
    before that, through the public option API.
    """

    class QuietHighs(highspy.Highs):  # type: ignore[misc,name-defined]
        def enableCallbacks(self) -> None:  # noqa: N802 - highspy's name
            self.setOptionValue("output_flag", False)
            self.setOptionValue("log_to_console", False)
            super().enableCallbacks()

    return QuietHighs()


def _solve(h: Any) -> None:
    """Run the solve in HiGHS's thread; on Ctrl-C (any exception raised while waiting) cancel it, wait, re-raise."""
    h.HandleUserInterrupt = True  # cancelSolve() then stops the solve at HiGHS's next callback
    h.startSolve()
    try:
        while not h.wait(0.05)[0]:
            pass
    except BaseException:  # Ctrl-C, or a signal handler's own exception: stop HiGHS before unwinding
        h.cancelSolve()
        while not h.wait(0.05)[0]:
            pass
        raise


def plan_highs(problem: Problem) -> Solution:
    """Solve the linearised model with HiGHS; the result as :func:`~coldpipe.planning.minlp.plan_minlp`'s.

    Raises :class:`~coldpipe.errors.Infeasible` when HiGHS proves that no plan fits,
    :class:`KeyboardInterrupt` when the solve was interrupted, and
    :class:`~coldpipe.errors.SolverUnavailable` without highspy.
    """
    highspy = _import_highs()
    scenario, overlap = problem.scenario, problem.overlap
    form = formulate(scenario, overlap)
    rows = form.linear_rows()
    inf = highspy.kHighsInf

    def clip(v: float) -> float:
        return inf if v == math.inf else (-inf if v == -math.inf else v)

    h = _quiet_highs(highspy)
    for key, value in HIGHS_OPTIONS.items():
        h.setOptionValue(key, value)
    if problem.time_limit_s is not None:
        h.setOptionValue("time_limit", float(problem.time_limit_s))

    lp = highspy.HighsLp()
    lp.num_col_ = form.n_vars
    lp.num_row_ = len(rows)
    lp.col_cost_ = [1.0 if j == form.ttft else 0.0 for j in range(form.n_vars)]
    lp.col_lower_ = [clip(v) for v in form.lb]
    lp.col_upper_ = [clip(v) for v in form.ub]
    lp.row_lower_ = [clip(r.lo) for r in rows]
    lp.row_upper_ = [clip(r.hi) for r in rows]
    starts, index, value = [0], [], []
    for r in rows:
        for j, a in sorted(r.coefs.items()):
            index.append(j)
            value.append(a)
        starts.append(len(index))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = starts
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in form.integer]
    h.passModel(lp)
    _solve(h)

    status = h.modelStatusToString(h.getModelStatus())
    model_status = h.getModelStatus()
    if model_status == highspy.HighsModelStatus.kInterrupt:
        raise KeyboardInterrupt
    if model_status == highspy.HighsModelStatus.kInfeasible:
        raise_infeasible(scenario)
    info = h.getInfo()
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    values = list(h.getSolution().col_value) if has_sol else None
    raw = {
        "solver": "highs",
        "solver_status": status,
        "objective": float(info.objective_function_value) if has_sol else math.inf,
        "dual_bound": float(info.mip_dual_bound),
        "nodes": int(info.mip_node_count),
        "n_vars": form.n_vars,
        "n_conss": len(rows),
        "solve_time_s": float(h.getRunTime()),
        "linearized": True,
    }
    return solver_result(problem, form, values, raw, model_status == highspy.HighsModelStatus.kOptimal)


class HighsPlanner:
    """``highs``: the linearised model solved by HiGHS, a second exact oracle for one request's TTFT."""

    name = "highs"

    def refuses(self, problem: Problem) -> str | None:
        return refuses_unless_first_token(self.name, problem)

    def solve(self, problem: Problem) -> Solution:
        return plan_highs(problem)
