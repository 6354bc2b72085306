"""The placement problem of docs/model.md as a mixed-integer non-linear program, solved by SCIP.

An exact oracle that shares nothing with the DP: the problem is stated the way an optimisation
researcher states it (binary placement, continuous timing, ``max`` terms as inequalities) by
:func:`~coldpipe.planning.formulation.formulate`, once for every solver, and solved by a general
solver. The model and the solver settings are in ``docs/formulation.md``.

By default the *stay* products ``y[l,k] = x[l-1,k] · x[l,k]`` stay a quadratic equality (SCIP's
``nonlinear`` handler) and the loading rows are indicator constraints; ``linearize=True`` hands SCIP the
McCormick and big-M rows that :mod:`.highs` solves, so the two forms can be compared.

SCIP runs with its default tolerances (``numerics/feastol`` 1e-6 on a model scaled to about 32 time
units, docs/formulation.md#solver-settings), without strong dual reductions, and its answer is labelled
``optimal`` only if the simulator's value of its plan meets its dual bound
(:func:`~coldpipe.planning.formulation.certify`). SCIP never prints: its output is hidden, and a Ctrl-C
during the solve stops SCIP and is raised again as :class:`KeyboardInterrupt`.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
>>> dev = lambda n: Device(n, flops=1e12, load_bandwidth=1e9, startup=0.0, memory=1e12,
...                        uplink=8e9, downlink=8e9)
>>> sc = Scenario(blocks, (dev("a"), dev("b")), Workload(prompt_tokens=1, prompt_bytes=0, token_bytes=0))
>>> res = plan_minlp(Problem(sc, "layer"))   # one device: loads end at 1..4 s, each computes 1 s after
>>> str(res.plan), res.exact, res.details["status"], round(res.value_s, 6)
('a[0-3]', True, 'optimal', 5.0)
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from typing import Any

from coldpipe.core.types import Overlap, Scenario
from coldpipe.errors import SolverUnavailable
from coldpipe.planning.exact import raise_infeasible
from coldpipe.planning.formulation import Formulation, formulate, refuses_unless_first_token, solver_result
from coldpipe.planning.protocol import Problem, Solution

__all__ = ["SCIP_PARAMS", "MINLPPlanner", "build_model", "plan_minlp"]

SCIP_PARAMS: dict[str, Any] = {
    "limits/gap": 0.0,
    "limits/absgap": 0.0,
    "misc/allowstrongdualreds": False,  # dual reductions may drop a solution that is optimal only exactly
    "randomization/randomseedshift": 0,  # reproducible runs
    "misc/catchctrlc": False,  # Ctrl-C goes to Python (SCIP's own handler prints on stdout): see _optimize
}
"""What :func:`plan_minlp` changes in SCIP's defaults (its tolerances stay SCIP's own)."""


def _import_scip() -> Any:
    try:
        import pyscipopt
    except ImportError as exc:  # pragma: no cover - pyscipopt is pinned in requirements.txt
        raise SolverUnavailable(
            f"the MINLP solver needs pyscipopt (SCIP), which cannot be imported ({exc}); "
            "install it with `pip install pyscipopt` or use --solver dp"
        ) from None
    return pyscipopt


@dataclass
class _Model:
    """The SCIP model, the formulation it states, and SCIP's variables in the formulation's order."""

    scip: Any
    formulation: Formulation
    vars: list[Any]
    linearized: bool


def build_model(scenario: Scenario, overlap: Overlap = "layer", *, linearize: bool = False) -> _Model:
    """The model of ``docs/formulation.md`` as a pyscipopt model (not yet solved, output hidden)."""
    scip_mod = _import_scip()
    form = formulate(scenario, overlap)
    m = scip_mod.Model("coldpipe")
    m.hideOutput()
    quicksum = scip_mod.quicksum
    vs = [
        m.addVar(name, vtype="B" if integer else "C", lb=lb, ub=None if math.isinf(ub) else ub)
        for name, lb, ub, integer in zip(form.names, form.lb, form.ub, form.integer, strict=True)
    ]

    def add(name: str, coefs: dict[int, float], lo: float, hi: float) -> None:
        expr = quicksum(a * vs[i] for i, a in coefs.items())
        if lo == hi:
            m.addCons(expr == hi, name)
        else:
            if math.isfinite(lo):
                m.addCons(expr >= lo, name)
            if math.isfinite(hi):
                m.addCons(expr <= hi, name)

    rows = form.linear_rows() if linearize else form.rows
    for r in rows:
        add(r.name, r.coefs, r.lo, r.hi)
    if not linearize:
        for p in form.products:
            m.addCons(vs[p.y] == vs[p.a] * vs[p.b], p.name)
        for ind in form.indicators:
            coefs = dict(ind.coefs)
            hi = ind.hi - coefs.pop(ind.z, 0.0)  # the row holds when z = 1: move z's own term to the right
            m.addConsIndicator(quicksum(a * vs[i] for i, a in coefs.items()) <= hi, vs[ind.z], name=ind.name)
    m.setObjective(vs[form.ttft], "minimize")
    return _Model(m, form, vs, linearize)


def _optimize(scip: Any) -> None:
    """Solve in another thread (SCIP without the GIL) so that a Ctrl-C reaches this one at once.

    On :class:`KeyboardInterrupt` (or any exception a signal handler raises here) SCIP is asked to stop
    (``interruptSolve``), its thread is awaited and the exception raised again: the caller sees a plain
    Ctrl-C and SCIP prints nothing.
    """
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            scip.optimizeNogil()
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=run, name="scip", daemon=True)
    worker.start()
    try:
        while not done.wait(0.05):
            pass
    except BaseException:  # Ctrl-C, or a signal handler's own exception: stop SCIP before unwinding
        with contextlib.suppress(Exception):  # SCIP refuses once it has finished: nothing to stop then
            scip.interruptSolve()
        worker.join()
        raise
    worker.join()
    if failure:
        raise failure[0]


def plan_minlp(problem: Problem, *, linearize: bool = False, params: dict[str, Any] | None = None) -> Solution:
    """Solve the MINLP with SCIP: the best plan found, labelled by :func:`~coldpipe.planning.formulation.certify`.

    ``exact`` is true when SCIP finished (status ``optimal``) and its dual bound meets the simulator's value
    of its plan; with a time limit (``problem.time_limit_s``) the plan may be an incumbent (``exact``
    false, ``details["gap"]`` > 0). ``params`` overrides SCIP parameters (:data:`SCIP_PARAMS`; the tests
    use it to show what the old settings did). Raises :class:`~coldpipe.errors.Infeasible` when SCIP
    proves that no plan fits, :class:`KeyboardInterrupt` when the solve was interrupted (Ctrl-C), and
    :class:`~coldpipe.errors.SolverUnavailable` without pyscipopt.
    """
    scenario, overlap, time_limit_s = problem.scenario, problem.overlap, problem.time_limit_s
    model = build_model(scenario, overlap, linearize=linearize)
    scip = model.scip
    for key, value in {**SCIP_PARAMS, **(params or {})}.items():
        scip.setParam(key, value)
    if time_limit_s is not None:
        scip.setParam("limits/time", float(time_limit_s))
    _optimize(scip)
    status = str(scip.getStatus())
    if status == "userinterrupt":  # interrupted some other way (SCIP's own Ctrl-C handler): say so
        raise KeyboardInterrupt
    if status == "infeasible":
        raise_infeasible(scenario)  # with the shortfall
    has_sol = scip.getNSols() > 0
    sol = scip.getBestSol() if has_sol else None
    values = [scip.getSolVal(sol, v) for v in model.vars] if has_sol else None
    raw = {
        "solver": "minlp",
        "solver_status": status,
        "objective": float(scip.getSolObjVal(sol)) if has_sol else math.inf,
        "dual_bound": float(scip.getDualbound()),
        "nodes": int(scip.getNNodes()),
        "n_vars": int(scip.getNVars(transformed=False)),  # of the model as written (before presolve)
        "n_conss": int(scip.getNConss(transformed=False)),
        "solve_time_s": float(scip.getSolvingTime()),
        "linearized": linearize,
    }
    return solver_result(problem, model.formulation, values, raw, status == "optimal")


class MINLPPlanner:
    """``minlp``: the MINLP solved by SCIP, an independent exact oracle for one request's TTFT."""

    name = "minlp"

    def refuses(self, problem: Problem) -> str | None:
        return refuses_unless_first_token(self.name, problem)

    def solve(self, problem: Problem) -> Solution:
        return plan_minlp(problem)
