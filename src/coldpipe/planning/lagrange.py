"""A Lagrangian lower bound for any cluster size: the exact DP with "each device once" priced, not enforced.

The exact DP (:mod:`coldpipe.planning.exact`) is exact because its rows, the usage vectors, say which
devices a partial plan has used; there are ``prod(count_t + 1)`` of them. Here only a few *tracked*
types keep that digit; every other type may be used any number of times (an edge from a row back to
itself), and each use of an untracked type ``t`` costs a price ``λ_t >= 0`` added to the time the
stage's output reaches the AP (``up[t, :]`` and ``ret[t]``). The priced DP is
:func:`~coldpipe.planning.kernels.scalar_dp` on that DAG (``2**tracked`` rows instead of ``2**n``).

**Why it is a lower bound.** Let ``P`` be any real plan (each device at most once, so it uses type
``t`` at most ``count_t`` times). Run ``P``'s stages through the priced recurrence: the arrival
``α'`` there and ``α`` in the real timing satisfy ``α' <= α + Π``, where ``Π`` is the sum of the
prices of the stages before, by induction, because each stage map ``f`` (``max(α + C, G)`` for
``layer``, ``max(α, L) + C`` for ``stage``, ``α + C`` for the additive ones) is non-decreasing and
``f(α + Π) <= f(α) + Π`` for ``Π >= 0``. So ``P``'s priced value is at most ``TTFT(P) + Σ_t λ_t
uses_t(P) <= TTFT(P) + Σ_t λ_t count_t``. ``P`` is a path of the relaxed DAG (tracked types are
counted exactly, untracked ones are only allowed more), so the priced DP's optimum ``V(λ)`` is at most
that, and

    L(λ) = V(λ) - Σ_{t untracked} λ_t count_t <= TTFT(P)   for every plan P, so L(λ) <= OPT.

Any ``λ >= 0`` gives a valid bound (``λ = 0``: devices reusable for free); a projected subgradient
ascent (``g_t = uses_t - count_t`` of the priced optimum, Polyak steps towards the heuristic's value)
makes it tight. The bound is loose only where the relaxed optimum reuses a device *and* a later
loading gate absorbs its price (``max(α' + C, G)`` with ``G`` the larger); tracking the types with the
highest prices removes that. :func:`lagrangian_bound` runs the ascent untracked, then again with as many
tracked types as :data:`BOUND_TIME_BUDGET_S` of predicted DP time allows
(:data:`~coldpipe.planning.predict.SECONDS_PER_UNIT`), and returns the best bound seen.

``none`` (load-then-compute): ``TTFT = max load end + D``; for each load-end threshold ``τ`` the
priced additive DP over stages loaded by ``τ`` gives ``V_τ(λ)``, and ``min_τ τ + V_τ(λ) - Σ λ count``
is a bound by the same argument (it is non-increasing in ``τ``, so
:func:`~coldpipe.planning.exact.threshold_search` finds the minimum). Other objectives use other
tables with the same maps (:func:`objective_tables`): ``tpot`` the decode tables (additive), ``e2e``
``prefill + (T - 1) x decode`` (:meth:`~coldpipe.planning.tables.StageTables.plus`), a lower bound on
``TTFT + (T - 1) x TPOT`` of every plan: with ``x = a + (T - 1) d`` the combined map is
``max(x + C + (T - 1) c, G') <= max(a + C, G) + (T - 1)(d + c)`` because the combined gate ``G'`` is at
most ``G + (T - 1) c`` (exact for ``none``).

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
>>> devs = [Device(f"d{k}", 1e12, 1e9, 0.0, 2.5e9, 8e9, 8e9) for k in range(3)]
>>> sc = Scenario(blocks, devs, Workload(1, prompt_bytes=0, token_bytes=0))
>>> free = lagrangian_bound(StageTables.build(sc), Mode.LAYER, math.inf, tracked=0).value_s  # reuse for free
>>> exact = lagrangian_bound(StageTables.build(sc), Mode.LAYER, math.inf, tracked=1).value_s  # the exact DP
>>> from coldpipe.planning.exact import plan_exact
>>> from coldpipe.planning.protocol import Problem
>>> bool(free <= exact), round(exact, 3), round(plan_exact(Problem(sc)).value_s, 3)
(True, 5.002, 5.002)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from coldpipe.planning.exact import threshold_search
from coldpipe.planning.kernels import KIND_BURST, Mode, scalar_dp
from coldpipe.planning.predict import SECONDS_PER_UNIT
from coldpipe.planning.reuse_kernels import reuse_pareto_dp
from coldpipe.planning.tables import DeviceTypes, StageTables, load_end_candidates

__all__ = [
    "BOUND_TIME_BUDGET_S",
    "DualBound",
    "PricedDag",
    "burst_none_bound",
    "lagrangian_bound",
    "pareto_bound",
    "priced_value",
    "stages_that_fit",
]

BOUND_TIME_BUDGET_S = 1.0
"""Predicted seconds of priced DPs the tracked ascent may take (the untracked one is far cheaper)."""

ITERATIONS = 150
"""Subgradient steps per ascent."""

PARETO_ITERATIONS = 40
"""Subgradient steps of a pair objective's ascent (each a Pareto DP)."""

PARETO_FRONT = 32
"""Pairs per state in the pair objectives' priced DP (longer fronts are merged into optimistic pairs)."""

TRACKED_STEPS = 20
"""Fewest subgradient steps the tracked ascent is sized for (it starts from the untracked prices)."""

NONE_TRACKED_STEPS = 3
"""The same under ``none``, whose every step is a threshold search."""

NONE_ITERATIONS = 80
"""Subgradient steps of the untracked ascent under ``none`` (each a threshold search of priced DPs)."""

NONE_THRESHOLDS = 40
"""Threshold DPs a ``none`` evaluation is assumed to cost when sizing the tracked set (a prediction)."""


@dataclass(frozen=True)
class PricedDag:
    """The relaxed DAG: rows are usage vectors of the tracked types only; untracked types loop back.

    ``stride[t]`` is the row step of a tracked type, 0 for an untracked one.
    """

    n_rows: int
    stride: np.ndarray
    edge_start: np.ndarray
    edge_type: np.ndarray
    edge_to: np.ndarray
    skip_to: np.ndarray

    @staticmethod
    def build(types: DeviceTypes, tracked: np.ndarray) -> PricedDag:
        """``tracked``: a boolean per type."""
        counts = types.counts
        stride = np.zeros(len(counts), dtype=np.int64)
        n_rows = 1
        for t in np.flatnonzero(tracked):
            stride[t] = n_rows
            n_rows *= int(counts[t]) + 1
        rows = np.arange(n_rows, dtype=np.int64)
        safe = np.maximum(stride, 1)
        free = np.where(
            tracked[None, :], (rows[:, None] // safe[None, :]) % (counts + 1)[None, :] < counts[None, :], True
        )  # (rows, T): the types a stage from this row may use
        r, edge_type = np.nonzero(free)
        edge_start = np.zeros(n_rows + 1, dtype=np.int64)
        edge_start[1:] = np.cumsum(free.sum(axis=1))
        return PricedDag(
            n_rows, stride, edge_start, edge_type.astype(np.int64), r + stride[edge_type], np.full(n_rows, -1)
        )


def priced_value(
    tables: StageTables, dag: PricedDag, mode: Mode, price: np.ndarray, tau: float = math.inf
) -> tuple[float, np.ndarray, float]:
    """The priced DP's optimum ``V(λ)`` (``inf`` if no relaxed plan fits), how often it uses each type,
    and its latest load end."""
    n = tables.n_blocks
    arrive = np.full((dag.n_rows, n), np.inf)
    arrive[0, 0] = tables.prompt_at_ap
    best, r, i, t, pred_i, pred_t, _ = scalar_dp(
        int(mode),
        tau,
        dag.edge_start,
        dag.edge_type,
        dag.edge_to,
        dag.skip_to,
        arrive,
        0,
        math.inf,
        tables.cf,
        tables.wpt,
        tables.nres,
        tables.mp,
        tables.startup,
        tables.inv_bw,
        tables.mem,
        tables.down,
        tables.up + price[:, None],
        tables.ret + price,
        tables.types.source_type,
    )
    uses = np.zeros(len(price))
    if not best < math.inf:
        return math.inf, uses, math.inf
    uses[int(t)] += 1
    row, i = int(r), int(i)
    load = tables.load_end(int(t), i, n - 1)
    while i > 0:
        pt, pi = int(pred_t[row, i]), int(pred_i[row, i])
        uses[pt] += 1
        load = max(load, tables.load_end(pt, pi, i - 1))
        row -= int(dag.stride[pt])
        i = pi
    return float(best), uses, load


def _none_value(tables: StageTables, dag: PricedDag, price: np.ndarray, taus: np.ndarray) -> tuple[float, np.ndarray]:
    """``min_τ τ + V_τ(λ)`` over the load-end thresholds (``none``), and the minimiser's uses."""

    def run(tau: float, _cutoff: float) -> tuple[float, tuple[np.ndarray, float] | None]:
        value, uses, load = priced_value(tables, dag, Mode.ADDITIVE, price, tau)
        return (value, (uses, load)) if value < math.inf else (math.inf, None)

    memo = threshold_search(taus, run, lambda w: w[1])
    found = [(float(taus[k]) + v, k) for k, (v, w) in memo.items() if w is not None and v < math.inf]
    if not found:
        return math.inf, np.zeros(len(price))
    value, k = min(found)
    witness = memo[k][1]
    assert witness is not None
    return value, witness[0]


@dataclass(frozen=True)
class DualBound:
    """A Lagrangian bound: its value, the prices that gave it, and what it cost."""

    value_s: float
    price: np.ndarray
    tracked: int  # tracked types in the last ascent
    rows: int  # rows of its DAG
    dp_runs: int
    untracked_price: np.ndarray | None = None  # the best prices of the untracked ascent (every type priced)


def stages_that_fit(tables: StageTables) -> int:
    """Stages ``(type, first..last)`` that fit their type's memory: a priced DP row's work."""
    fits = 0
    for t in range(len(tables.types.members)):
        last = np.searchsorted(tables.mp, tables.mp[:-1] + tables.mem[t] * (1 + 1e-12), side="right") - 1
        fits += int(np.maximum(0, last - np.arange(tables.n_blocks) + 1).sum())
    return fits


def _ascent(
    evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]],
    counts: np.ndarray,
    upper: float,
    free: np.ndarray,
    price: np.ndarray,
    iterations: int,
) -> tuple[float, np.ndarray, int]:
    """Projected subgradient ascent on ``L(λ) = V(λ) - Σ_free λ_t count_t``, ``evaluate(λ) = (V(λ), uses)``;
    returns the best bound, its prices and the evaluations."""
    counts = counts.astype(np.float64)
    price = np.where(free, price, 0.0)
    best, best_price, runs = -math.inf, price.copy(), 0
    theta, stale = 1.0, 0
    for _ in range(iterations):
        value, uses = evaluate(price)
        runs += 1
        if not value < math.inf:
            return math.inf, price, runs  # no relaxed plan fits, so no plan does
        bound = value - float(price[free] @ counts[free])
        if bound > best:
            best, best_price, stale = bound, price.copy(), 0
        else:
            stale += 1
            if stale >= 5:
                theta, stale = theta / 2, 0
        if best >= upper * (1 - 1e-12) or theta < 1e-4:
            break
        g = np.where(free, uses - counts, 0.0)
        g = np.where((price <= 0) & (g < 0), 0.0, g)
        norm = float(g @ g)
        if norm == 0:
            break  # the priced optimum uses every untracked type fully and leaves no price on an unused one
        gap = upper - bound if math.isfinite(upper) else max(abs(bound), 1.0) * 0.1
        price = np.maximum(0.0, price + theta * max(gap, 1e-12 * abs(bound)) / norm * g)
    return best, best_price, runs


def _scalar_evaluate(
    tables: StageTables, dag: PricedDag, mode: Mode, taus: np.ndarray
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    if mode == Mode.ADDITIVE and len(taus):
        return lambda price: _none_value(tables, dag, price, taus)

    def evaluate(price: np.ndarray) -> tuple[float, np.ndarray]:
        value, uses, _ = priced_value(tables, dag, mode, price)
        return value, uses

    return evaluate


def pareto_bound(
    pre: StageTables,
    second: StageTables,
    mode: Mode,
    kind: int,
    lam: float,
    upper: float,
    *,
    iterations: int = PARETO_ITERATIONS,
    max_front: int = PARETO_FRONT,
) -> DualBound:
    """The Lagrangian bound for a pair objective (a burst's max completion: ``KIND_BURST``, ``lam`` =
    requests - 1; E2E: ``KIND_E2E``, ``second`` the decode tables, ``lam`` = new tokens - 1), every type
    reusable at a price (:func:`~coldpipe.planning.reuse_kernels.reuse_pareto_dp`; ``layer``/``stage``)."""
    grid_load, grid_g = pre.grid

    def evaluate(price: np.ndarray) -> tuple[float, np.ndarray]:
        value, uses = reuse_pareto_dp(
            int(mode), kind, lam, price, pre.cf, pre.mp, pre.mem, pre.down, pre.up, pre.ret, grid_load, grid_g,
            pre.types.source_type, pre.prompt_at_ap, second.cf, second.down, second.up, second.ret,
            second.prompt_at_ap, max_front, math.inf,
        )  # fmt: skip
        return float(value), uses

    n_types = len(pre.types.members)
    free = np.ones(n_types, dtype=bool)
    best, price, runs = _ascent(evaluate, pre.types.counts, upper, free, np.zeros(n_types), iterations)
    return DualBound(best, price, 0, 1, runs)


def burst_none_bound(pre: StageTables, lam: float, price: np.ndarray, *, max_front: int = PARETO_FRONT) -> float:
    """A burst under ``none`` at fixed prices: ``min_τ τ + V_τ(λ) - Σ λ count``, ``V_τ`` the priced pair DP
    (additive maps) over stages loaded by ``τ``.

    A plan whose latest load end is ``τ_P`` (a candidate) is a path of the DAG at ``τ_P``, and its last
    request ends at ``τ_P`` plus its additive flow-shop time, so the minimum is a lower bound; ``V_τ`` is
    non-increasing in ``τ`` (:func:`~coldpipe.planning.exact.threshold_search`).
    """
    grid_load, grid_g = pre.grid
    taus = load_end_candidates(pre)
    free_cost = float(price @ pre.types.counts)

    def run(tau: float, _cutoff: float) -> tuple[float, bool | None]:
        value, _ = reuse_pareto_dp(
            int(Mode.ADDITIVE), KIND_BURST, lam, price, pre.cf, pre.mp, pre.mem, pre.down, pre.up, pre.ret,
            grid_load, grid_g, pre.types.source_type, pre.prompt_at_ap, pre.cf, pre.down, pre.up, pre.ret,
            pre.prompt_at_ap, max_front, tau,
        )  # fmt: skip
        return (float(value), True) if value < math.inf else (math.inf, None)

    memo = threshold_search(taus, run)
    found = [float(taus[k]) + v for k, (v, w) in memo.items() if w is not None and v < math.inf]
    return min(found) - free_cost if found else math.inf


def lagrangian_bound(
    tables: StageTables,
    mode: Mode,
    upper: float,
    *,
    none: bool = False,
    tracked: int | None = None,
    iterations: int | None = None,
    budget_s: float = BOUND_TIME_BUDGET_S,
) -> DualBound:
    """The best Lagrangian bound found on the objective ``tables`` and ``mode`` describe (module docstring).

    ``upper``: a plan's value (the ascent's target; ``inf`` if none). ``none``: the ``none`` threshold
    form (``mode`` must be additive). ``tracked``: how many types to track in the second ascent (by
    default as many, highest prices first, as ``budget_s`` of predicted DP time allows for
    :data:`TRACKED_STEPS` steps; then as many steps as the budget allows, up to ``iterations``).
    """
    iterations = iterations or (NONE_ITERATIONS if none else ITERATIONS)
    types = tables.types
    n_types = len(types.members)
    taus = load_end_candidates(tables) if none else np.zeros(0)
    nothing = np.zeros(n_types, dtype=bool)
    dag0 = PricedDag.build(types, nothing)
    evaluate = _scalar_evaluate(tables, dag0, mode, taus)
    best, price, runs = _ascent(evaluate, types.counts, upper, ~nothing, np.zeros(n_types), iterations)
    if best >= upper * (1 - 1e-12) or not math.isfinite(best):
        return DualBound(best, price, 0, 1, runs, price)
    untracked_price = price
    # track the types with the highest prices (the ones the relaxation reuses) while the budget allows at
    # least a few steps: with the same prices a tracked DAG's bound is no lower, so even one step helps
    per_row_s = SECONDS_PER_UNIT["ttft"] * stages_that_fit(tables) * (NONE_THRESHOLDS if none else 1)
    min_steps = NONE_TRACKED_STEPS if none else TRACKED_STEPS
    max_rows = budget_s / (min_steps * per_row_s) if tracked is None else math.inf
    order = sorted(range(n_types), key=lambda t: (-price[t], t))
    chosen = np.zeros(n_types, dtype=bool)
    rows = 1
    for t in order:
        if tracked is not None and int(chosen.sum()) >= tracked:
            break
        if tracked is None and price[t] <= 0:
            break
        grown = rows * (int(types.counts[t]) + 1)
        if grown > max_rows:
            break
        chosen[t], rows = True, grown
    if not chosen.any():
        return DualBound(best, price, 0, 1, runs, untracked_price)
    steps = iterations if tracked is not None else min(iterations, max(min_steps, int(budget_s / (rows * per_row_s))))
    dag = PricedDag.build(types, chosen)
    evaluate = _scalar_evaluate(tables, dag, mode, taus)
    second, price2, runs2 = _ascent(evaluate, types.counts, upper, ~chosen, price, steps)
    if second > best:
        best, price = second, price2
    return DualBound(best, price, int(chosen.sum()), rows, runs + runs2, untracked_price)
