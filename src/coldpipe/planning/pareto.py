"""The exact planner's Pareto DPs: E2E and a burst's max (``layer``/``stage``), and ``none``.

:func:`~coldpipe.planning.kernels.usage_pareto_dp` keeps a front of pairs ``(a, d)`` per state
``(usage vector, blocks placed)``; ``kind`` says what they hold (``docs/model.md``, "Planning other
objectives"):

- E2E: the arrival at the AP and the decode time so far (objective ``a + (T - 1) x d``);
- a burst's max completion: the first and the last request's arrival at the AP (objective ``d``);
- ``none``: the latest load end so far and the additive time at the AP (objective ``a + d``: TTFT is
  the latest load end plus the additive time, exactly). One pass replaces the search over load-end
  thresholds, each of which was a whole additive DP.

Why it stays exact with few pairs:

- **dominance**: a pair no later and no worse in ``d`` than another is never worse; with E2E and
  ``none`` also one that is no worse in ``d`` and in ``a + w x d``
  (:func:`~coldpipe.planning.kernels.dominance_weight`);
- **bounds**: a pair whose partial objective plus a lower bound on what the rest adds
  (:mod:`coldpipe.planning.suffix`, exact optima of relaxations) reaches the incumbent cannot lead to
  a strictly better plan;
- **incumbent**: a quick run with one pair per state gives a real plan, usually the optimum, before
  the exact run; under ``none`` the bounds' own thresholds give one too.
"""

from __future__ import annotations

import math

import numpy as np

from coldpipe.core.types import Plan
from coldpipe.planning.kernels import KIND_BURST, KIND_E2E, KIND_NONE, Mode, dominance_weight, usage_pareto_dp
from coldpipe.planning.suffix import PEAK_COMPUTE, PEAK_LOAD, suffix_bounds
from coldpipe.planning.tables import StageTables, load_end_candidates

__all__ = [
    "MAX_BOUND_ENTRIES",
    "NONE_LEVELS",
    "Bounds",
    "block_bound",
    "none_optimum",
    "pareto_bounds",
    "pareto_optimum",
    "pareto_plan",
]

Bounds = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(levels, rest, rest_peak)``: :func:`~coldpipe.planning.suffix.suffix_dp`'s bounds and their levels."""

NONE_LEVELS = 9
"""Loading limits of the ``none`` bound (the last one ``inf``); fewer when the states are many."""

MAX_BOUND_ENTRIES = 8_000_000
"""At most this many floats (64 MB) for the ``none`` bound's levels: one level is states x (B + 1)."""


def block_bound(pre: StageTables, sec: StageTables, lam: float, kind: int) -> Bounds:
    """The plain bound on what blocks ``i..`` add: each block on its own cheapest type, compute only.

    (A decode step is memory- or compute-bound per block, so the type cheapest for the whole remainder
    may not be for every block.) The same for every usage vector; no ``none`` part.
    """
    cost = np.diff(pre.cf, axis=1)
    if kind == KIND_E2E:
        cost = cost + lam * np.diff(sec.cf, axis=1)
    per_block = cost.min(axis=0)
    rest = np.zeros(pre.n_blocks + 1)
    rest[:-1] = np.cumsum(per_block[::-1])[::-1]
    rest3 = np.ascontiguousarray(np.tile(rest, (pre.types.n_usage_vectors, 1))[:, :, None])
    return np.array([math.inf]), rest3, np.zeros(rest3.shape[:2])


def pareto_bounds(
    pre: StageTables, sec: StageTables, lam: float, kind: int, levels: np.ndarray | None = None
) -> Bounds:
    """:func:`~coldpipe.planning.suffix.suffix_bounds` of the additive costs the pair's objective adds up:
    ``prefill + lam x decode`` for E2E, the prefill for a burst's last request, the tables themselves
    under ``none`` (``levels``: loading limits, ending with ``inf``); ``rest_peak`` of the latest load
    end, or of the slowest stage's compute for a burst."""
    lv = np.array([math.inf]) if levels is None else levels
    peak = PEAK_COMPUTE if kind == KIND_BURST else PEAK_LOAD
    rest, rest_peak = suffix_bounds(pre.plus(sec, lam) if kind == KIND_E2E else pre, lv, peak)
    return lv, rest, rest_peak


def pareto_plan(
    pre: StageTables,
    sec: StageTables,
    mode: Mode,
    lam: float,
    incumbent: float,
    *,
    kind: int = KIND_E2E,
    tau: float = math.inf,
    bounds: Bounds | None = None,
    tight: bool = True,
    max_front: int = 0,
) -> tuple[float, Plan | None, int]:
    """Run the Pareto DP; ``(incumbent, None, pairs)`` when nothing strictly beats the incumbent.

    ``bounds``: :func:`pareto_bounds` (computed here if not given). ``tight=False`` runs the plain
    method instead (Pareto dominance, :func:`block_bound`; the differential tests' reference); it does
    not exist for ``KIND_NONE``. ``max_front=1``: one pair per state (a real plan, quickly).
    """
    types = pre.types
    if tight:
        levels, rest, rest_peak = bounds if bounds is not None else pareto_bounds(pre, sec, lam, kind)
        w = dominance_weight(kind, lam)
    else:
        assert kind != KIND_NONE
        (levels, rest, rest_peak), w = block_bound(pre, sec, lam, kind), 0.0
    best, q, t, i, p_from, p_t, p_i, p_e = usage_pareto_dp(
        int(mode),
        kind,
        lam,
        tau,
        incumbent,
        types.n_usage_vectors,
        types.strides,
        types.counts,
        pre.cf,
        pre.mp,
        pre.mem,
        pre.down,
        pre.up,
        pre.ret,
        *pre.grid,
        types.source_type,
        pre.prompt_at_ap,
        sec.cf,
        sec.down,
        sec.up,
        sec.ret,
        sec.prompt_at_ap,
        w,
        levels,
        rest,
        rest_peak,
        max_front,
    )
    if q == -2:  # nothing beat the incumbent
        return incumbent, None, int(p_from.shape[0])
    rev = [(int(t), int(i), pre.n_blocks - 1)]
    q = int(q)
    while p_from[q] >= 0:  # the root pair (the prompt at the AP) has no predecessor
        rev.append((int(p_t[q]), int(p_i[q]), int(p_e[q])))
        q = int(p_from[q])
    return float(best), pre.plan_of(rev), int(p_from.shape[0])


def pareto_optimum(
    pre: StageTables,
    sec: StageTables,
    mode: Mode,
    lam: float,
    kind: int,
    tau: float = math.inf,
    bounds: Bounds | None = None,
    incumbent: float = math.inf,
) -> tuple[Plan | None, float, int]:
    """The Pareto DP's optimum ``(plan, objective, pairs)``; ``(None, inf, pairs)`` when no plan beats
    ``incumbent``.

    First a quick run keeping one pair per state: a real plan (every reachable state keeps a pair, so
    without an incumbent it finds one if any exists), usually the optimum or close to it. Then the
    exact run with that plan's objective as the incumbent; the quick plan stands if nothing strictly
    beats it. Exact: an incumbent only prunes pairs that cannot lead to a strictly better plan.
    """
    bounds = bounds if bounds is not None else pareto_bounds(pre, sec, lam, kind)
    value, quick, _ = pareto_plan(pre, sec, mode, lam, incumbent, kind=kind, tau=tau, bounds=bounds, max_front=1)
    if quick is not None:
        incumbent = value * (1 + 1e-12)
    best, found, n_pairs = pareto_plan(pre, sec, mode, lam, incumbent, kind=kind, tau=tau, bounds=bounds)
    if found is not None:
        return found, best, n_pairs
    return (quick, value, n_pairs) if quick is not None else (None, math.inf, n_pairs)


def _levels(tables: StageTables, low: float, high: float, n: int) -> np.ndarray:
    """``n - 1`` load-end candidates spread evenly (by rank) over ``[low, high]``, then ``inf``."""
    taus = load_end_candidates(tables)
    taus = taus[(taus >= low) & (taus <= high)]
    if n < 2 or len(taus) == 0:
        return np.array([math.inf])
    picks = np.unique(np.linspace(0, len(taus) - 1, min(n - 1, len(taus))).round().astype(np.int64))
    return np.concatenate([taus[picks], [math.inf]])


def none_optimum(tables: StageTables) -> tuple[Plan | None, float, dict[str, int]]:
    """The ``none`` optimum ``(plan, TTFT, details)`` on additive ``tables`` (None: no plan fits).

    TTFT = latest load end + additive time, over the pairs (latest load end so far, additive time) of
    :func:`pareto_plan` with ``KIND_NONE``, bounded by :func:`~coldpipe.planning.suffix.suffix_bounds`
    at loading limits ``levels``. They are chosen where the optimum's latest load end ``L*`` can lie:
    no plan loads by less than ``rest_peak[0, 0]``, and ``L* + D_min <= OPT <= f0``, with ``D_min`` the
    additive time with loading free and ``f0`` the TTFT of the plan of least additive time among
    those that load by ``rest_peak[0, 0]``. The bounds at each level ``x`` are also the least additive
    time ``D(x)`` of a plan that loads by ``x``, and ``x + D(x)`` the TTFT bound of a real plan: the
    least is the incumbent.
    """
    types = tables.types
    _, rest, rest_peak = pareto_bounds(tables, tables, 0.0, KIND_NONE)
    m0 = float(rest_peak[0, 0])
    if not m0 < math.inf:
        return None, math.inf, {}
    d0, plan0 = tables.run(Mode.ADDITIVE, m0)
    assert plan0 is not None  # a plan loads by m0, the least latest load end
    f0 = max(tables.load_end(types.type_of(st.device), st.first, st.last) for st in plan0.stages) + d0
    d_min = tables.prompt_at_ap + float(rest[0, 0, 0])
    n_levels = min(NONE_LEVELS, max(1, MAX_BOUND_ENTRIES // rest.size))  # rest.size: states x (B + 1)
    levels = _levels(tables, m0, f0 - d_min, n_levels)
    bounds = pareto_bounds(tables, tables, 0.0, KIND_NONE, levels)
    at_root = levels[:-1] + tables.prompt_at_ap + bounds[1][0, 0, :-1]  # x + D(x), each a real plan's bound
    incumbent = min(f0, float(at_root.min(initial=math.inf)))
    details = {"load_levels": len(levels) - 1}
    for value in (incumbent, f0):  # only rounding can leave the first unbeaten; plan0 itself is under f0
        best, found, details["pareto_pairs"] = pareto_plan(
            tables, tables, Mode.ADDITIVE, 0.0, value * (1 + 1e-12), kind=KIND_NONE, bounds=bounds
        )
        if found is not None:
            return found, best, details
    return plan0, f0, details
