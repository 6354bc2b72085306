"""The placement problem of docs/model.md as a mixed-integer non-linear program, solved by SCIP.

An exact oracle that shares nothing with the DP: the problem is stated the way an optimisation
researcher states it (binary placement, continuous timing, ``max`` terms as inequalities) and solved
by a general solver. The model is written in mathematical notation in ``docs/formulation.md``; the
comments below carry the equation numbers used there, so the two can be checked line by line.

Indices: blocks ``l = 0..B-1``, devices ``k = 0..K-1`` (scenario order). Every coefficient is in
seconds (bytes / bandwidth, FLOP / FLOP/s), so SCIP's tolerances act on seconds.

The non-linear part is the *stay* product ``y[l,k] = x[l-1,k] * x[l,k]`` (blocks ``l-1`` and ``l`` on
the same device, i.e. no stage boundary at ``l``), which prices the transfer between consecutive
stages, and the per-block load completion, which is active only for the device that holds the block
(an indicator constraint). By default both stay in SCIP's native form (a quadratic equality and
indicator constraints); ``linearize=True`` replaces them by the McCormick inequalities (exact for
binaries) and big-M constraints, so the two can be compared.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
>>> dev = lambda n: Device(n, flops=1e12, load_bandwidth=1e9, startup=0.0, memory=1e12,
...                        uplink=8e9, downlink=8e9)
>>> sc = Scenario(blocks, (dev("a"), dev("b")), Workload(prompt_tokens=1, prompt_bytes=0, token_bytes=0))
>>> res = plan_minlp(Problem(sc, "layer"))   # one device: loads end at 1..4 s, each computes 1 s after
>>> str(res.plan), res.exact, round(res.solver_value_s, 6)
('a[0-3]', True, 5.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from coldpipe.core.simulator import simulate
from coldpipe.core.types import AP, Overlap, Plan, Scenario, Stage
from coldpipe.errors import InputError, SolverUnavailable
from coldpipe.planning.exact import raise_infeasible
from coldpipe.planning.protocol import Problem, Solution

__all__ = ["MINLPPlanner", "build_model", "plan_minlp"]


def _inv(x: float) -> float:
    """1 / x with 1 / inf = 0 (infinite bandwidth or link)."""
    return 0.0 if math.isinf(x) else 1.0 / x


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
    """The SCIP model and handles on its variables (see ``docs/formulation.md`` for the symbols)."""

    scip: Any
    x: list[list[Any]]  # x[l][k]: block l on device k (binary)
    y: list[list[Any]]  # y[l][k], l >= 1: blocks l-1 and l both on device k (binary, = x[l-1,k] x[l,k])
    u: list[Any]  # u[k]: device k is used (binary)
    s: list[Any]  # s[l]: compute start of block l
    c: list[Any]  # c[l]: compute end of block l
    t0: Any  # when inference may start (0 unless overlap == "none")
    ttft: Any


def build_model(scenario: Scenario, overlap: Overlap = "layer", *, linearize: bool = False) -> _Model:
    """The MINLP of ``docs/formulation.md`` as a pyscipopt model (not yet solved)."""
    scip_mod = _import_scip()
    m = scip_mod.Model("coldpipe")
    m.hideOutput()
    blocks = scenario.blocks
    devs = scenario.devices
    wl = scenario.workload
    hop = scenario.network.hop_latency
    n_b, n_k = len(blocks), len(devs)
    src = scenario.source
    quicksum = scip_mod.quicksum

    # Coefficients, all in seconds.
    comp = [[b.flops / d.flops for d in devs] for b in blocks]  # p[l,k]
    load = [[b.weight_bytes * _inv(d.load_bandwidth) for d in devs] for b in blocks]  # w[l,k]
    up_out = [[8.0 * b.out_bytes * _inv(d.uplink) + hop for d in devs] for b in blocks]  # σ↑[l,k]: after block l
    down_in = [[8.0 * b.out_bytes * _inv(d.downlink) + hop for d in devs] for b in blocks]  # σ↓[l,k]: after block l

    def xfer(
        a: str, b: str, n_bytes: float
    ) -> float:  # the model's transfer() (docs/model.md#transfers), for the prompt and the token
        if a == b:
            return 0.0
        t = 0.0
        if a != AP:
            t += 8.0 * n_bytes * _inv(scenario.device(a).uplink) + hop
        if b != AP:
            t += 8.0 * n_bytes * _inv(scenario.device(b).downlink) + hop
        return t

    prompt = [xfer(src, d.name, wl.prompt_bytes_value) for d in devs]  # π[k]
    token = [xfer(d.name, src, wl.token_bytes) for d in devs]  # ρ[k]

    # Variables.
    x = [[m.addVar(f"x_{l}_{k}", vtype="B") for k in range(n_k)] for l in range(n_b)]
    y: list[list[Any]] = [[]] + [[m.addVar(f"y_{l}_{k}", vtype="B") for k in range(n_k)] for l in range(1, n_b)]
    f = [[m.addVar(f"f_{l}_{k}", vtype="B") for k in range(n_k)] for l in range(n_b)]  # first block of k's stage
    u = [m.addVar(f"u_{k}", vtype="B") for k in range(n_k)]
    s = [m.addVar(f"s_{l}", lb=0.0) for l in range(n_b)]
    c = [m.addVar(f"c_{l}", lb=0.0) for l in range(n_b)]
    t0 = m.addVar("t0", lb=0.0)
    ttft = m.addVar("ttft", lb=0.0)

    for l in range(n_b):
        m.addCons(quicksum(x[l]) == 1, f"assign_{l}")  # (1)
    for k, d in enumerate(devs):
        # (2) memory
        if math.isfinite(d.memory):
            m.addCons(quicksum(blocks[l].memory_bytes * x[l][k] for l in range(n_b)) <= d.memory, f"mem_{k}")
        # (3) contiguity: a device's blocks form one interval (at most one first block)
        for l in range(n_b):
            prev = x[l - 1][k] if l > 0 else 0.0
            m.addCons(f[l][k] >= x[l][k] - prev, f"first_{l}_{k}")
            m.addCons(u[k] >= x[l][k], f"used_{l}_{k}")  # (4)
        m.addCons(quicksum(f[l][k] for l in range(n_b)) <= 1, f"onestage_{k}")
        m.addCons(u[k] <= quicksum(x[l][k] for l in range(n_b)), f"usedonly_{k}")
    # (5) stays: y[l,k] = x[l-1,k] * x[l,k]
    for l in range(1, n_b):
        for k in range(n_k):
            if linearize:
                m.addCons(y[l][k] <= x[l - 1][k], f"mc1_{l}_{k}")
                m.addCons(y[l][k] <= x[l][k], f"mc2_{l}_{k}")
                m.addCons(y[l][k] >= x[l - 1][k] + x[l][k] - 1, f"mc3_{l}_{k}")
            else:
                m.addCons(y[l][k] == x[l - 1][k] * x[l][k], f"stay_{l}_{k}")

    # (6) compute: c[l] = s[l] + sum_k p[l,k] x[l,k]
    for l in range(n_b):
        m.addCons(c[l] == s[l] + quicksum(comp[l][k] * x[l][k] for k in range(n_k)), f"compute_{l}")

    # (7) the prompt reaches the first stage
    m.addCons(s[0] >= t0 + quicksum(prompt[k] * x[0][k] for k in range(n_k)), "prompt")
    # (8) the output of block l-1 reaches block l: free on the same device, two hops otherwise.
    #     (x[l-1,k] - y[l,k]) = 1 iff k sends after block l-1; (x[l,k] - y[l,k]) = 1 iff k receives.
    for l in range(1, n_b):
        tr = quicksum(
            up_out[l - 1][k] * (x[l - 1][k] - y[l][k]) + down_in[l - 1][k] * (x[l][k] - y[l][k]) for k in range(n_k)
        )
        m.addCons(s[l] >= c[l - 1] + tr, f"chain_{l}")
    # (9) the token returns to the source
    m.addCons(ttft >= c[n_b - 1] + quicksum(token[k] * x[n_b - 1][k] for k in range(n_k)), "token")

    # (10) loading. L[k] = startup_k u_k + sum_l w[l,k] x[l,k]: the end of k's loading.
    #      λ[l,k] = startup_k + sum_{m<=l} w[m,k] x[m,k]: when block l is resident if it is on k.
    def loaded_through(l: int, k: int) -> Any:
        return devs[k].startup + quicksum(load[i][k] * x[i][k] for i in range(l + 1))

    def loaded_all(k: int) -> Any:
        return devs[k].startup * u[k] + quicksum(load[i][k] * x[i][k] for i in range(n_b))

    if overlap == "none":
        for k in range(n_k):
            m.addCons(t0 >= loaded_all(k), f"barrier_{k}")  # (10n)
    else:
        m.addCons(t0 == 0.0, "t0")
        for l in range(n_b):
            for k in range(n_k):
                # (10l) layer: block l waits for itself; (10s) stage: every block waits for its whole stage
                rhs = (
                    loaded_through(l, k)
                    if overlap == "layer"
                    else devs[k].startup + quicksum(load[i][k] * x[i][k] for i in range(n_b))
                )
                if linearize:
                    big_m = devs[k].startup + sum(load[i][k] for i in range(n_b))
                    m.addCons(s[l] >= rhs - big_m * (1 - x[l][k]), f"load_{l}_{k}")
                else:
                    m.addConsIndicator(rhs - s[l] <= 0.0, x[l][k], name=f"load_{l}_{k}")

    m.setObjective(ttft, "minimize")
    return _Model(m, x, y, u, s, c, t0, ttft)


def _plan_from(scenario: Scenario, model: _Model, sol: Any) -> Plan:
    scip = model.scip
    owner = [
        max(range(len(scenario.devices)), key=lambda k: scip.getSolVal(sol, model.x[l][k])) for l in range(len(model.x))
    ]
    stages: list[Stage] = []
    first = 0
    for l in range(1, len(owner) + 1):
        if l == len(owner) or owner[l] != owner[first]:
            stages.append(Stage(scenario.devices[owner[first]].name, first, l - 1))
            first = l
    return Plan(tuple(stages))


def plan_minlp(problem: Problem, *, linearize: bool = False) -> Solution:
    """Solve the MINLP with SCIP: the best plan found, SCIP's objective (``solver_value_s``) and status.

    ``exact`` is true when SCIP proved optimality (status ``optimal``); with a time limit
    (``problem.time_limit_s``) the plan may be a feasible incumbent (``exact`` false, ``details["gap"]`` > 0).
    ``details`` holds ``status`` (SCIP's status string), ``gap`` (relative primal-dual gap),
    ``solve_time_s``, ``n_vars``, ``n_conss``, ``nodes``, ``linearized``, ``dual_bound`` and ``stages``: the
    MINLP's own schedule per stage (``compute_start``, ``compute_end``, ``load_end``). The schedule is *a*
    feasible one of optimal TTFT: off the critical path SCIP may start a block later than the
    simulator would, never earlier. Raises :class:`~coldpipe.errors.Infeasible` when SCIP proves that
    no plan fits, :class:`~coldpipe.errors.SolverUnavailable` without pyscipopt.
    """
    scenario, overlap, time_limit_s = problem.scenario, problem.overlap, problem.time_limit_s
    model = build_model(scenario, overlap, linearize=linearize)
    scip = model.scip
    if time_limit_s is not None:
        scip.setParam("limits/time", float(time_limit_s))
    # Tolerances: coefficients are seconds, and the agreement tests want 1e-6 relative.
    scip.setParam("numerics/feastol", 1e-7)  # below 1e-7 SoPlex (no GMP) prints warnings on stdout
    scip.setParam("limits/gap", 0.0)
    scip.setParam("limits/absgap", 0.0)
    scip.setParam("randomization/randomseedshift", 0)  # reproducible runs
    scip.optimize()
    status = str(scip.getStatus())
    if status == "infeasible":
        raise_infeasible(scenario)  # with the shortfall
    if scip.getNSols() == 0:
        raise InputError(
            "time_limit",
            f"SCIP found no plan within {time_limit_s} s (status {status})",
            "raise --time-limit or use --solver dp",
        )
    sol = scip.getBestSol()
    plan = _plan_from(scenario, model, sol)
    per_stage = []
    for st in plan.stages:
        k = next(i for i, d in enumerate(scenario.devices) if d.name == st.device)
        d = scenario.devices[k]
        load_end = d.startup + sum(b.weight_bytes for b in scenario.blocks[st.first : st.last + 1]) * _inv(
            d.load_bandwidth
        )
        per_stage.append(
            {
                "device": st.device,
                "first": st.first,
                "last": st.last,
                "compute_start": scip.getSolVal(sol, model.s[st.first]),
                "compute_end": scip.getSolVal(sol, model.c[st.last]),
                "load_end": load_end,
            }
        )
    details: dict[str, Any] = {
        "status": status,
        "gap": float(scip.getGap()),
        "solve_time_s": float(scip.getSolvingTime()),
        "n_vars": int(scip.getNVars(transformed=False)),  # of the model as written (before presolve)
        "n_conss": int(scip.getNConss(transformed=False)),
        "nodes": int(scip.getNNodes()),
        "linearized": linearize,
        "dual_bound": float(scip.getDualbound()),
        "stages": per_stage,
    }
    timeline = simulate(scenario, plan, overlap)
    dual = details["dual_bound"]
    return Solution(
        plan,
        timeline.ttft_s,
        status == "optimal",
        "minlp",
        "ttft",
        overlap,
        solver_value_s=float(scip.getSolObjVal(sol)),
        lower_bound_s=dual if math.isfinite(dual) else None,
        details=details,
        timeline=timeline,
    )


class MINLPPlanner:
    """``minlp``: the MINLP solved by SCIP, an independent exact oracle for one request's TTFT."""

    name = "minlp"

    def refuses(self, problem: Problem) -> str | None:
        if not problem.is_first_token:
            what = f"objective {problem.objective!r}" if problem.objective != "ttft" else "a burst of requests"
            return f"'minlp' plans the TTFT of one request, not {what}"
        return None

    def solve(self, problem: Problem) -> Solution:
        return plan_minlp(problem)
