"""The placement problem of docs/model.md as a mixed-integer program, written once for every solver.

:func:`formulate` states the model of ``docs/formulation.md`` (whose equation numbers the comments
carry) as plain data: variables with bounds and types, linear rows, the *stay* products
``y[l,k] = x[l-1,k] · x[l,k]`` and the loading *indicators* ``x[l,k] = 1 ⇒ row``. A back end either
keeps the products and indicators native (SCIP, :mod:`.minlp`) or asks for :meth:`Formulation.linear_rows`:
McCormick inequalities for the products and big-M rows for the indicators, with the least big-M that
is valid (HiGHS, :mod:`.highs`; SCIP with ``linearize=True``).

Scaling, so that a solver's tolerances mean the same thing on every instance:

- **times** are in a unit ``unit_s`` (a power of two, so dividing by it is exact in floating point)
  of about 1/32 of a lower bound on the TTFT: the objective is about 32 or more units, and a solver's
  feasibility tolerance (absolute below 1, relative above) acts on a fixed share of the answer;
- **memory** rows are fractions of each device's memory (``Σ_l m_l / M_k · x[l,k] <= 1``), and
  because a device's blocks are one interval (3), every *minimal interval that does not fit*
  ``[a, b]`` is also excluded exactly, by the integer row ``Σ_{l=a..b} x[l,k] <= b - a``: no tolerance
  can let a plan exceed a device's memory;
- **residency**: a block that a device already holds (``Device.resident``) costs it no loading and gates
  nothing (docs/model.md#warm-residency).

:func:`certify` is the one rule that labels an answer: ``optimal`` only when the simulator's value of the
solver's plan is within ``1e-5 · max(1 s, value)`` of the solver's dual bound.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
>>> dev = Device("a", flops=1e12, load_bandwidth=1e9, startup=0.0, memory=2.5e9, uplink=8e9, downlink=8e9)
>>> sc = Scenario(blocks, (dev,), Workload(prompt_tokens=1, prompt_bytes=0, token_bytes=0))
>>> f = formulate(sc, "layer")
>>> f.unit_s, f.n_vars   # the bound is 5 s (load 1 s + 4 s of compute): 2**-3 s ~ 5/32 s
(0.125, 22)
>>> [r.name for r in f.rows if r.name.startswith("fit")]   # three blocks never fit 2.5 GB
['fit_0_0_2', 'fit_0_1_3']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from coldpipe.core.simulator import simulate, transfer_s
from coldpipe.core.types import Overlap, Plan, Scenario, Stage
from coldpipe.errors import InputError
from coldpipe.planning.protocol import Problem, Solution

__all__ = [
    "CERTIFY_REL",
    "Certificate",
    "Formulation",
    "Indicator",
    "Product",
    "Row",
    "certify",
    "formulate",
    "plan_from_assignment",
    "schedule",
    "solver_result",
    "ttft_lower_bound_s",
]

CERTIFY_REL = 1e-5
"""An answer is ``optimal`` only if ``|simulated value - dual bound| <= CERTIFY_REL * max(1 s, value)``."""

UNITS_PER_BOUND = 32.0
"""The time unit is the power of two nearest to ``lower bound / UNITS_PER_BOUND``."""

MEMORY_SLACK = 1e-12
"""docs/model.md#a-plan: a stage fits when its bytes are at most ``memory * (1 + MEMORY_SLACK)``."""


@dataclass(frozen=True)
class Row:
    """``lo <= Σ coef · var <= hi`` (``lo`` may be ``-inf``, ``hi`` ``inf``); ``coefs``: var index -> coefficient."""

    name: str
    coefs: dict[int, float]
    lo: float
    hi: float


@dataclass(frozen=True)
class Product:
    """``var[y] = var[a] · var[b]`` for binaries ``a``, ``b`` (the stay of block ``l`` on device ``k``)."""

    name: str
    y: int
    a: int
    b: int


@dataclass(frozen=True)
class Indicator:
    """``var[z] = 1 ⇒ Σ coef · var <= hi``.

    ``big_m`` is the least ``M`` (from valid bounds) with ``Σ coef · var <= hi + M`` whenever ``var[z] = 0``.
    """

    name: str
    z: int
    coefs: dict[int, float]
    hi: float
    big_m: float


@dataclass
class Formulation:
    """The model of docs/formulation.md as data. Times are in units of ``unit_s`` seconds."""

    unit_s: float
    names: list[str] = field(default_factory=list)
    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    integer: list[bool] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    products: list[Product] = field(default_factory=list)
    indicators: list[Indicator] = field(default_factory=list)
    x: list[list[int]] = field(default_factory=list)  # x[l][k]: block l on device k (binary)
    s: list[int] = field(default_factory=list)  # s[l]: compute start of block l (units)
    c: list[int] = field(default_factory=list)  # c[l]: compute end of block l (units)
    ttft: int = -1  # the objective (units), minimised

    @property
    def n_vars(self) -> int:
        return len(self.names)

    def var(self, name: str, lb: float = 0.0, ub: float = math.inf, *, integer: bool = False) -> int:
        self.names.append(name)
        self.lb.append(lb)
        self.ub.append(ub)
        self.integer.append(integer)
        return len(self.names) - 1

    def row(self, name: str, coefs: dict[int, float], lo: float = -math.inf, hi: float = math.inf) -> None:
        self.rows.append(Row(name, {i: a for i, a in coefs.items() if a != 0.0}, lo, hi))

    def linear_rows(self) -> list[Row]:
        """Every row, with the products as McCormick inequalities and the indicators as big-M rows.

        McCormick is exact for binaries: ``y <= a``, ``y <= b``, ``y >= a + b - 1``. An indicator
        ``z = 1 ⇒ Σ coef · var <= hi`` becomes ``Σ coef · var + M · z <= hi + M``.
        """
        out = list(self.rows)
        for p in self.products:
            out.append(Row(f"{p.name}_le_a", {p.y: 1.0, p.a: -1.0}, -math.inf, 0.0))
            out.append(Row(f"{p.name}_le_b", {p.y: 1.0, p.b: -1.0}, -math.inf, 0.0))
            out.append(Row(f"{p.name}_ge", {p.y: 1.0, p.a: -1.0, p.b: -1.0}, -1.0, math.inf))
        for ind in self.indicators:
            coefs = dict(ind.coefs)
            coefs[ind.z] = coefs.get(ind.z, 0.0) + ind.big_m
            out.append(Row(ind.name, coefs, -math.inf, ind.hi + ind.big_m))
        return out


def _inv(x: float) -> float:
    """1 / x with 1 / inf = 0 (infinite bandwidth or link)."""
    return 0.0 if math.isinf(x) else 1.0 / x


def _load_s(scenario: Scenario) -> list[list[float]]:
    """w[l][k]: seconds to load block l on device k; 0 if k already holds it (docs/model.md#warm-residency)."""
    return [
        [0.0 if d.holds(l) else b.weight_bytes * _inv(d.load_bandwidth) for d in scenario.devices]
        for l, b in enumerate(scenario.blocks)
    ]


def ttft_lower_bound_s(scenario: Scenario) -> float:
    """A lower bound on every plan's TTFT under every overlap mode (it sets the time unit).

    Every plan sends the prompt to some device, computes every block somewhere and returns the token
    from some device; and block ``l`` computes no earlier than some device could have loaded it.
    """
    devs = scenario.devices
    wl = scenario.workload
    comp = [min(b.flops / d.flops for d in devs) for b in scenario.blocks]
    prompt = min(transfer_s(scenario, scenario.source, d.name, wl.prompt_bytes_value) for d in devs)
    token = min(transfer_s(scenario, d.name, scenario.source, wl.token_bytes) for d in devs)
    load = _load_s(scenario)
    warm = prompt + sum(comp) + token
    by_load = max(
        min((0.0 if d.holds(l) else d.startup + load[l][k]) for k, d in enumerate(devs)) + sum(comp[l:]) + token
        for l in range(scenario.n_blocks)
    )
    return max(warm, by_load)


def _unit_s(bound_s: float) -> float:
    if not bound_s > 0 or not math.isfinite(bound_s):
        return 1.0
    return 2.0 ** round(math.log2(bound_s / UNITS_PER_BOUND))


def _fitting_intervals(scenario: Scenario, k: int) -> list[tuple[int, int]]:
    """For each first block ``a``, the last ``b`` with ``[a, b]`` fitting device ``k`` (``b = a - 1``: none fits)."""
    cap = scenario.devices[k].memory * (1 + MEMORY_SLACK)
    mem = [b.memory_bytes for b in scenario.blocks]
    out = []
    for a in range(len(mem)):
        total, b = 0.0, a - 1
        while b + 1 < len(mem) and total + mem[b + 1] <= cap:
            b += 1
            total += mem[b]
        out.append((a, b))
    return out


def formulate(scenario: Scenario, overlap: Overlap = "layer") -> Formulation:
    """The model of ``docs/formulation.md`` for ``scenario`` under ``overlap``."""
    blocks, devs = scenario.blocks, scenario.devices
    wl = scenario.workload
    n_b, n_k = len(blocks), len(devs)
    unit = _unit_s(ttft_lower_bound_s(scenario))

    # Coefficients, in units of `unit` seconds.
    comp = [[b.flops / d.flops / unit for d in devs] for b in blocks]  # p[l,k]
    load = [[w / unit for w in row] for row in _load_s(scenario)]  # w[l,k], 0 where resident
    startup = [d.startup / unit for d in devs]  # S_k
    hop = scenario.network.hop_latency
    up_out = [[(8.0 * b.out_bytes * _inv(d.uplink) + hop) / unit for d in devs] for b in blocks]  # σ↑[l,k]
    down_in = [[(8.0 * b.out_bytes * _inv(d.downlink) + hop) / unit for d in devs] for b in blocks]  # σ↓[l,k]
    prompt = [transfer_s(scenario, scenario.source, d.name, wl.prompt_bytes_value) / unit for d in devs]  # π[k]
    token = [transfer_s(scenario, d.name, scenario.source, wl.token_bytes) / unit for d in devs]  # ρ[k]
    fits = [_fitting_intervals(scenario, k) for k in range(n_k)]

    # Valid lower bounds on every compute start (they tighten the big-Ms and the LP).
    s_lb = []
    for l in range(n_b):
        by_chain = min(prompt) + sum(min(comp[i]) for i in range(l))
        by_load = min((0.0 if devs[k].holds(l) else startup[k] + load[l][k]) for k in range(n_k))
        s_lb.append(max(by_chain, by_load) if overlap == "layer" else by_chain)

    f = Formulation(unit)
    x = [[f.var(f"x_{l}_{k}", 0.0, 1.0, integer=True) for k in range(n_k)] for l in range(n_b)]
    f.x = x
    for l in range(n_b):  # a block larger than a device's memory never goes there
        for k in range(n_k):
            if fits[k][l][1] < l:
                f.ub[x[l][k]] = 0.0
    # y, first-block markers and "loads something" are continuous: binary x makes them 0/1.
    y = [[-1] * n_k] + [[f.var(f"y_{l}_{k}", 0.0, 1.0) for k in range(n_k)] for l in range(1, n_b)]
    first = [[f.var(f"f_{l}_{k}", 0.0, 1.0) for k in range(n_k)] for l in range(n_b)]
    loads = [f.var(f"v_{k}", 0.0, 1.0) for k in range(n_k)]
    f.s = [f.var(f"s_{l}", s_lb[l]) for l in range(n_b)]
    f.c = [f.var(f"c_{l}", s_lb[l] + min(comp[l])) for l in range(n_b)]
    t0 = f.var("t0", 0.0, math.inf if overlap == "none" else 0.0)
    f.ttft = f.var("ttft", ttft_lower_bound_s(scenario) / unit)
    s, c = f.s, f.c

    for l in range(n_b):
        f.row(f"assign_{l}", {x[l][k]: 1.0 for k in range(n_k)}, 1.0, 1.0)  # (1)
    for k, d in enumerate(devs):
        if math.isfinite(d.memory):  # (2) memory, as a fraction of the device's
            f.row(f"mem_{k}", {x[l][k]: blocks[l].memory_bytes / d.memory for l in range(n_b)}, hi=1.0)
            for a, b in fits[k]:  # (2') the minimal intervals that do not fit, excluded exactly
                if b + 1 < n_b and b >= a:
                    f.row(f"fit_{k}_{a}_{b + 1}", {x[i][k]: 1.0 for i in range(a, b + 2)}, hi=float(b + 1 - a))
        for l in range(n_b):  # (3) contiguity: at most one first block per device
            coefs = {first[l][k]: 1.0, x[l][k]: -1.0}
            if l > 0:
                coefs[x[l - 1][k]] = 1.0
            f.row(f"first_{l}_{k}", coefs, lo=0.0)
            if not d.holds(l):  # (4) v_k >= x[l,k] for every block k would load
                f.row(f"loads_{l}_{k}", {loads[k]: 1.0, x[l][k]: -1.0}, lo=0.0)
        f.row(f"onestage_{k}", {first[l][k]: 1.0 for l in range(n_b)}, hi=1.0)
    for l in range(1, n_b):  # (5) stays
        for k in range(n_k):
            f.products.append(Product(f"stay_{l}_{k}", y[l][k], x[l - 1][k], x[l][k]))

    for l in range(n_b):  # (6) compute: c[l] - s[l] - Σ_k p[l,k] x[l,k] = 0
        coefs = {c[l]: 1.0, s[l]: -1.0} | {x[l][k]: -comp[l][k] for k in range(n_k)}
        f.row(f"compute_{l}", coefs, 0.0, 0.0)
    f.row("prompt", {s[0]: 1.0, t0: -1.0} | {x[0][k]: -prompt[k] for k in range(n_k)}, lo=0.0)  # (7)
    for l in range(1, n_b):  # (8) s[l] >= c[l-1] + Σ_k σ↑ (x[l-1,k] - y[l,k]) + σ↓ (x[l,k] - y[l,k])
        coefs: dict[int, float] = {s[l]: 1.0, c[l - 1]: -1.0}
        for k in range(n_k):
            coefs[x[l - 1][k]] = coefs.get(x[l - 1][k], 0.0) - up_out[l - 1][k]
            coefs[x[l][k]] = coefs.get(x[l][k], 0.0) - down_in[l - 1][k]
            coefs[y[l][k]] = up_out[l - 1][k] + down_in[l - 1][k]
        f.row(f"chain_{l}", coefs, lo=0.0)
    f.row("token", {f.ttft: 1.0, c[n_b - 1]: -1.0} | {x[n_b - 1][k]: -token[k] for k in range(n_k)}, lo=0.0)  # (9)

    # (10) loading; w[i,k] = 0 where k holds i, so the sums below are what k really loads.
    for k in range(n_k):
        if overlap == "none":  # (10n) t0 >= S_k v_k + Σ_i w[i,k] x[i,k]
            coefs = {t0: 1.0, loads[k]: -startup[k]} | {x[i][k]: -load[i][k] for i in range(n_b)}
            f.row(f"barrier_{k}", coefs, lo=0.0)
            continue
        for l in range(n_b):
            if overlap == "layer" and devs[k].holds(l):
                continue  # a resident block gates nothing
            if f.ub[x[l][k]] == 0.0:
                continue
            if overlap == "layer":  # (10l) x[l,k] = 1 ⇒ Σ_{i<=l} w[i,k] x[i,k] - s[l] <= -S_k
                coefs = {x[i][k]: load[i][k] for i in range(l + 1)}
                hi = -startup[k]
                # with x[l,k] = 0, k's stage lies before l (or elsewhere): its load is at most the
                # largest fitting interval within 0..l-1
                worst = max((sum(load[i][k] for i in range(a, min(b, l - 1) + 1)) for a, b in fits[k][:l]), default=0.0)
                big_m = max(0.0, worst + startup[k] - s_lb[l])
            else:  # (10s) x[l,k] = 1 ⇒ S_k v_k + Σ_i w[i,k] x[i,k] - s[l] <= 0
                coefs = {loads[k]: startup[k]} | {x[i][k]: load[i][k] for i in range(n_b)}
                hi = 0.0
                worst = max(
                    (
                        sum(load[i][k] for i in range(a, b + 1))
                        for a, b in fits[k]
                        if b < l or a > l  # an interval without l
                    ),
                    default=0.0,
                )
                big_m = max(0.0, worst + startup[k] - s_lb[l])
            coefs = {i: a for i, a in coefs.items() if a != 0.0}
            coefs[s[l]] = -1.0
            f.indicators.append(Indicator(f"load_{l}_{k}", x[l][k], coefs, hi, big_m))
    return f


def plan_from_assignment(scenario: Scenario, f: Formulation, values: list[float]) -> Plan:
    """The plan of a solver's solution: block ``l`` goes to the device with the largest ``x[l,k]``."""
    owner = [max(range(len(scenario.devices)), key=lambda k: values[f.x[l][k]]) for l in range(len(f.x))]
    stages: list[Stage] = []
    start = 0
    for l in range(1, len(owner) + 1):
        if l == len(owner) or owner[l] != owner[start]:
            stages.append(Stage(scenario.devices[owner[start]].name, start, l - 1))
            start = l
    return Plan(tuple(stages))


def schedule(scenario: Scenario, f: Formulation, plan: Plan, values: list[float]) -> list[dict[str, float | int | str]]:
    """The solver's own schedule per stage, in seconds: compute start and end (its ``s``, ``c``) and the load end."""
    out: list[dict[str, float | int | str]] = []
    load = _load_s(scenario)
    for st in plan.stages:
        k = next(i for i, d in enumerate(scenario.devices) if d.name == st.device)
        dev = scenario.devices[k]
        loaded = [load[l][k] for l in range(st.first, st.last + 1) if not dev.holds(l)]
        out.append(
            {
                "device": st.device,
                "first": st.first,
                "last": st.last,
                "compute_start": values[f.s[st.first]] * f.unit_s,
                "compute_end": values[f.c[st.last]] * f.unit_s,
                "load_end": dev.startup + sum(loaded) if loaded else 0.0,
            }
        )
    return out


@dataclass(frozen=True)
class Certificate:
    """What a solver's answer is worth: the simulator's value of its plan against its dual bound."""

    value_s: float  # the simulator's TTFT of the plan
    dual_bound_s: float  # the solver's lower bound on the optimum
    optimal: bool  # |value - dual bound| <= CERTIFY_REL * max(1 s, value), and the solver finished
    gap: float  # (value - dual bound) / value (0 if value is 0)
    status: str  # "optimal" or "feasible, gap X %"


def certify(scenario: Scenario, plan: Plan, overlap: Overlap, dual_bound_s: float, finished: bool) -> Certificate:
    """Label a solver's plan: ``optimal`` only if the solver finished and its dual bound meets the plan's true value.

    The dual bound is a bound on a problem whose rows hold up to the solver's tolerances, i.e. on a
    relaxation of the exact problem; so ``value - dual bound`` bounds how far the plan is from the exact
    optimum, and the plan is labelled optimal only if that is at most ``CERTIFY_REL · max(1 s, value)``.
    """
    value = simulate(scenario, plan, overlap).ttft_s
    diff = value - dual_bound_s if math.isfinite(dual_bound_s) else math.inf
    gap = diff / value if value > 0 else (0.0 if diff <= 0 else math.inf)
    optimal = finished and abs(diff) <= CERTIFY_REL * max(1.0, value)
    if optimal:
        status = "optimal"
    elif diff < 0:  # the solver's bound is above a plan's real value: its model of this plan is wrong
        status = f"feasible, dual bound {-diff:.3g} s above the plan's value"
    else:
        status = f"feasible, gap {100 * gap:.3g} %"
    return Certificate(value, dual_bound_s, optimal, gap, status)


def refuses_unless_first_token(solver: str, problem: Problem) -> str | None:
    """Why ``solver`` (a mixed-integer oracle: one request's TTFT only) refuses ``problem``, or None."""
    if problem.is_first_token:
        return None
    what = f"objective {problem.objective!r}" if problem.objective != "ttft" else "a burst of requests"
    return f"{solver!r} plans the TTFT of one request, not {what}"


def solver_result(
    problem: Problem, form: Formulation, values: list[float] | None, raw: dict[str, Any], finished: bool
) -> Solution:
    """The :class:`Solution` every solver of the formulation returns (``minlp``, ``highs``).

    ``raw`` holds the solver's own figures in the formulation's units: ``solver_status``, ``objective``,
    ``dual_bound``, ``nodes``, ``n_vars``, ``n_conss``, ``solve_time_s``, ``linearized``, ``solver``.
    ``value_s`` is the simulator's value of the plan; ``details`` carries ``status`` (``optimal`` or
    ``feasible, gap X %``, :func:`certify`), ``gap`` (relative, against the
    simulated value), ``dual_bound`` (seconds) and ``stages``: the solver's own schedule per stage.
    """
    scenario, overlap = problem.scenario, problem.overlap
    if values is None:
        raise InputError(
            "time_limit",
            f"{raw['solver']} found no plan within {problem.time_limit_s} s (status {raw['solver_status']})",
            "raise --time-limit or use --solver dp",
        )
    plan = plan_from_assignment(scenario, form, values)
    plan.validate(scenario)
    unit = form.unit_s
    dual_s = raw["dual_bound"] * unit
    cert = certify(scenario, plan, overlap, dual_s, finished)
    details: dict[str, Any] = {
        "status": cert.status,
        "solver_status": raw["solver_status"],
        "gap": cert.gap,
        "dual_bound": dual_s,
        "solve_time_s": raw["solve_time_s"],
        "n_vars": raw["n_vars"],
        "n_conss": raw["n_conss"],
        "nodes": raw["nodes"],
        "linearized": raw["linearized"],
        "unit_s": unit,
        "stages": schedule(scenario, form, plan, values),
    }
    timeline = simulate(scenario, plan, overlap)
    return Solution(
        plan,
        cert.value_s,
        cert.optimal,
        raw["solver"],
        "ttft",
        overlap,
        solver_value_s=raw["objective"] * unit,
        lower_bound_s=dual_s if math.isfinite(dual_s) else None,
        details=details,
        timeline=timeline,
    )
