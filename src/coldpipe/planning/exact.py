"""The exact planner: forward dynamic programs over (device usage, blocks placed), for every objective.

Why it is exact (``docs/model.md``, "Why the DP is exact"): a stage on device type ``t`` holding blocks
``i..e`` maps its input arrival ``α`` to ``max(α + C, G)`` (``layer``) or ``max(α, L) + C`` (``stage``),
non-decreasing in ``α``, and loading does not depend on anything upstream. So the earliest arrival
per state is all the future needs.

The state is taken *at the access point*, which removes the "last device" from it: every transfer
between two devices is ``uplink part of the sender + downlink part of the receiver``, so

    A[s, i] = earliest time at which the output of block ``i - 1`` (the prompt if ``i == 0``)
              has reached the AP, with blocks ``0..i-1`` placed on the devices counted by ``s``.

``s`` is a mixed-radix *usage vector* (:class:`~coldpipe.planning.tables.DeviceTypes`): devices of
identical profile form one type, so interchangeable devices are never permuted (32 devices of 3
types give ``12 * 12 * 11`` usage vectors instead of ``2**32`` subsets). Going from ``A[s, i]`` through
a stage of type ``t`` holding blocks ``i..e`` leads to ``A[s + stride[t], e + 1]``; the stage holding
block ``B - 1`` ends the plan and adds the token's return to the source.

``none`` (load-then-compute) is not a max-plus map: TTFT = ``max_j load_end_j + D`` where ``D`` is
additive. For a threshold ``τ``, let ``D(τ)`` be the least additive time over plans whose every stage
finishes loading by ``τ``. Then ``OPT = min_τ τ + D(τ)`` over the finitely many candidate load ends,
and since ``D`` is non-increasing, branch-and-bound over the sorted candidates
(:func:`threshold_search`) finds it while evaluating few of them. Warm planning (loading free) is the
same additive DP with ``τ = ∞``.

Other objectives (``docs/model.md``, "Objectives"):

- ``tpot``: one decode step is additive over stages: the additive DP on decode tables;
- ``e2e`` = TTFT + (T - 1) x TPOT: under ``none`` the threshold search on combined tables; under
  ``layer``/``stage`` one scalar per state is not enough, and
  :func:`~coldpipe.planning.kernels.usage_pareto_dp` keeps the Pareto front of (arrival at the AP,
  decode so far) per state, pruned against the best of the TTFT- and TPOT-optimal plans;
- a burst's ``max`` first-token completion: the same Pareto DP over (first request's arrival, last
  request's end), a flow shop of identical jobs;
- a burst's ``mean`` first token and a decoding burst's answers: local search
  (:mod:`coldpipe.planning.local_search`) from exact seeds (``exact = False``).

Complexity: ``O(n_usage_vectors * B**2 * T)``; 12 distinct devices x 82 blocks is ~3e8 inner steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from coldpipe.core.simulator import objective_s, simulate
from coldpipe.core.types import Plan, Scenario
from coldpipe.errors import Infeasible
from coldpipe.planning import local_search
from coldpipe.planning.kernels import KIND_BURST, KIND_E2E, KIND_NONE, Mode, dominance_weight, usage_pareto_dp
from coldpipe.planning.protocol import Problem, Solution
from coldpipe.planning.suffix import suffix_bounds
from coldpipe.planning.tables import MAX_USAGE_VECTORS, DeviceTypes, StageTables, check_size, load_end_candidates
from coldpipe.units import format_bytes

__all__ = [
    "BEYOND_RANGE",
    "ExactPlanner",
    "pareto_plan",
    "plan_exact",
    "plan_warm",
    "raise_infeasible",
    "threshold_search",
]

T = TypeVar("T")

BEYOND_RANGE = (
    "e2e, tpot and bursts are planned exactly only within this range: use --solver auto or heuristic for a "
    "good plan (not proven optimal), or plan for ttft, use fewer distinct devices, or group identical ones"
)


def _b(n_bytes: float) -> str:
    """Bytes for a message: readable and exact, e.g. ``1.28 GB (1.278e+09 bytes)``."""
    return f"{format_bytes(n_bytes)} ({n_bytes:.4g} bytes)"


def raise_infeasible(scenario: Scenario) -> None:
    """Raise :class:`~coldpipe.errors.Infeasible` with how much memory is missing (aggregate and per device).

    Call it when a planner finds no plan: it says whether the devices lack memory in all, or only a
    contiguous split, and the least extra memory on every device that makes a plan exist (bisection).
    """
    need = sum(b.memory_bytes for b in scenario.blocks)
    have = sum(d.memory for d in scenario.devices)
    total_short = max(0.0, need - have)
    lo, hi = 0.0, max(need, 1.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if StageTables.build(scenario, warm=True, extra_memory_bytes=mid).run(Mode.ADDITIVE)[1] is None:
            lo = mid
        else:
            hi = mid
        if hi - lo <= max(1.0, 1e-9 * hi):
            break
    per_device = hi
    biggest = max(scenario.blocks, key=lambda b: b.memory_bytes)
    msg = (
        f"the model does not fit: it needs {_b(need)} of weights + KV cache and the "
        f"{len(scenario.devices)} devices have {_b(have)} in all"
    )
    if total_short > 0:
        msg += f" (short by {_b(total_short)})"
    else:
        msg += f", but no contiguous split fits (largest block {biggest.name!r}: {_b(biggest.memory_bytes)})"
    msg += f"; every device would need {_b(per_device)} more for a plan to exist"
    raise Infeasible(msg, shortfall_bytes=total_short if total_short > 0 else per_device)


def threshold_search(taus: np.ndarray, run: Callable[[float], tuple[float, T]]) -> dict[int, tuple[float, T]]:
    """Branch-and-bound for ``min over k of taus[k] + run(taus[k])[0]`` with ``run`` non-increasing in tau.

    ``taus`` is sorted. Returns every evaluated ``k -> run(taus[k])``; the minimiser is among them. An
    interval ``(lo, hi)`` is skipped when ``taus[lo + 1] + run(taus[hi])`` cannot beat the incumbent.
    """
    memo: dict[int, tuple[float, T]] = {}

    def d_of(k: int) -> float:
        if k not in memo:
            memo[k] = run(float(taus[k]))
        return memo[k][0]

    hi = len(taus) - 1
    if hi < 0 or d_of(hi) == math.inf:
        return memo
    d_of(0)
    stack = [(0, hi)]
    while stack:
        lo, hi_ = stack.pop()
        if hi_ - lo <= 1:
            continue
        incumbent = min(taus[k] + v[0] for k, v in memo.items())
        if taus[lo + 1] + d_of(hi_) >= incumbent:
            continue  # nothing strictly inside (lo, hi_) can beat the incumbent
        mid = (lo + hi_) // 2
        d_of(mid)
        stack.append((lo, mid))
        stack.append((mid, hi_))
    return memo


def _plan_none(
    scenario: Scenario, tables: StageTables, run: Callable[[float], tuple[float, Plan | None]] | None = None
) -> tuple[Plan, float, int]:
    """Exact ``none`` optimum by :func:`threshold_search`: ``(plan, objective, thresholds evaluated)``.

    ``run(tau)`` returns the least additive part (and a plan) among plans whose stages all finish loading
    by ``tau``; by default the additive DP on ``tables``. Any ``run`` non-increasing in ``tau`` works
    (the E2E and burst objectives pass their own).
    """
    taus = load_end_candidates(tables)
    if run is None:
        run = lambda tau: tables.run(Mode.ADDITIVE, tau)  # noqa: E731
    memo = threshold_search(taus, run)
    feasible = [k for k, (d, plan) in memo.items() if plan is not None and d < math.inf]
    if not feasible:
        raise_infeasible(scenario)
    k_best = min(feasible, key=lambda k: (taus[k] + memo[k][0], k))
    plan = memo[k_best][1]
    assert plan is not None
    # The plan's real TTFT is (its own last load end) + D <= tau + D; by optimality they are equal.
    types = tables.types
    loads = [tables.load_end(types.type_of(st.device), st.first, st.last) for st in plan.stages]
    return plan, float(max(loads) + memo[k_best][0]), len(memo)


def _ttft_optimum(scenario: Scenario, overlap: str) -> tuple[Plan, float, dict[str, Any]]:
    """The minimum-TTFT plan of one request (exact): ``(plan, the DP's objective, details)``."""
    tables = StageTables.build(scenario)
    check_size(tables.types)
    details: dict[str, Any] = {"usage_vectors": tables.types.n_usage_vectors}
    if overlap == "none":
        plan, best, n_taus = _plan_none(scenario, tables)
        details["thresholds_evaluated"] = n_taus
        return plan, best, details
    best, found = tables.run(Mode.of(overlap))
    if found is None:
        raise_infeasible(scenario)
    assert found is not None
    return found, best, details


def plan_warm(scenario: Scenario) -> Solution:
    """The loading-unaware optimum (EdgeShard/PipeEdge style): every weight already resident.

    Its ``value_s`` is the warm TTFT (a lower bound on every cold-start plan; the simulator's
    ``warm_ttft_s`` of the plan); replay its plan with :func:`~coldpipe.core.simulator.simulate` to see
    what it costs on a cold start.
    """
    tables = StageTables.build(scenario, warm=True)
    check_size(tables.types)
    best, found = tables.run(Mode.ADDITIVE)
    if found is None:
        raise_infeasible(scenario)
    assert found is not None
    details = {"usage_vectors": tables.types.n_usage_vectors}
    timeline = simulate(scenario, found, "layer")
    return Solution(found, best, True, "dp", "ttft", "layer", solver_value_s=best, details=details, timeline=timeline)


def block_bound(pre: StageTables, sec: StageTables, lam: float, kind: int) -> np.ndarray:
    """The plain lower bound on what blocks ``i..`` add: each block on its own cheapest type, compute only.

    (A decode step is memory- or compute-bound per block, so the type cheapest for the whole remainder
    may not be for every block.) ``(n_usage_vectors, B + 1)``, the same for every usage vector.
    """
    cost = np.diff(pre.cf, axis=1)
    if kind == KIND_E2E:
        cost = cost + lam * np.diff(sec.cf, axis=1)
    per_block = cost.min(axis=0)
    rest = np.zeros(pre.n_blocks + 1)
    rest[:-1] = np.cumsum(per_block[::-1])[::-1]
    return np.tile(rest, (pre.types.n_usage_vectors, 1))


def pareto_bounds(pre: StageTables, sec: StageTables, lam: float, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, rest_load)`` for :func:`pareto_plan`: :func:`~coldpipe.planning.suffix.suffix_bounds` of
    the additive costs the pair's objective adds up (``prefill + lam x decode`` for E2E, the prefill for a
    burst's last request, the tables themselves under ``none``)."""
    return suffix_bounds(pre.plus(sec, lam) if kind == KIND_E2E else pre)


def pareto_plan(
    pre: StageTables,
    sec: StageTables,
    mode: Mode,
    lam: float,
    incumbent: float,
    *,
    kind: int = KIND_E2E,
    tau: float = math.inf,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    tight: bool = True,
    max_front: int = 0,
) -> tuple[float, Plan | None, int]:
    """Run the Pareto DP; ``(incumbent, None, pairs)`` when nothing strictly beats the incumbent.

    ``bounds``: :func:`pareto_bounds` (computed here if not given). ``tight=False`` runs the plain
    method instead (Pareto dominance, :func:`block_bound`; the differential tests' reference); it does
    not exist for ``KIND_NONE``.
    """
    types = pre.types
    if tight:
        rest, rest_load = bounds if bounds is not None else pareto_bounds(pre, sec, lam, kind)
        w = dominance_weight(kind, lam)
    else:
        assert kind != KIND_NONE
        rest = block_bound(pre, sec, lam, kind)
        rest_load, w = np.zeros_like(rest), 0.0
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
        rest,
        rest_load,
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
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Plan | None, float, int]:
    """The Pareto DP's optimum ``(plan, objective, pairs)``; ``(None, inf, 0)`` when no plan qualifies.

    First a quick run keeping one pair per state: a real plan (every reachable state keeps a pair, so
    it finds one if any exists), usually the optimum or close to it. Then the exact run with that
    plan's objective as the incumbent; the quick plan stands if nothing strictly beats it. Exact: the
    incumbent only prunes pairs that cannot lead to a strictly better plan.
    """
    bounds = bounds if bounds is not None else pareto_bounds(pre, sec, lam, kind)
    value, quick, _ = pareto_plan(pre, sec, mode, lam, math.inf, kind=kind, tau=tau, bounds=bounds, max_front=1)
    if quick is None:
        return None, math.inf, 0
    best, found, n_pairs = pareto_plan(pre, sec, mode, lam, value * (1 + 1e-12), kind=kind, tau=tau, bounds=bounds)
    return (quick, value, n_pairs) if found is None else (found, best, n_pairs)


def _burst_first_tokens(problem: Problem) -> Solution:
    """A burst's first tokens: exact for the ``max`` completion, local search from exact seeds for the ``mean``."""
    scenario, overlap = problem.scenario, problem.overlap
    wl = scenario.workload
    lam = float(wl.requests - 1)
    pre = StageTables.build(scenario)
    check_size(pre.types, BEYOND_RANGE)
    details: dict[str, Any]
    if overlap == "none":
        # loading gates only the start (t0 = last load end): Pareto DP on the additive timings, every stage
        # restricted to load ends <= tau, inside the threshold branch-and-bound of the "none" DP
        bounds = pareto_bounds(pre, pre, lam, KIND_BURST)  # without tau: a bound for every threshold

        def run(tau: float) -> tuple[float, Plan | None]:
            found, value, _ = pareto_optimum(pre, pre, Mode.ADDITIVE, lam, KIND_BURST, tau, bounds)
            return value, found

        max_plan, _, n_taus = _plan_none(scenario, pre, run)
        details = {"thresholds_evaluated": n_taus}
    else:
        found, _, n_pairs = pareto_optimum(pre, pre, Mode.of(overlap), lam, KIND_BURST)
        if found is None:
            raise_infeasible(scenario)
        assert found is not None
        max_plan = found
        details = {"pareto_pairs": n_pairs}
    if wl.completion == "max":
        return _solution(problem, max_plan, True, "dp", details)
    seeds = [max_plan, _ttft_optimum(scenario, overlap)[0]]
    found, evaluated = local_search.local_search(scenario, seeds, overlap)
    details = {"method": "local search", "plans_evaluated": evaluated}
    return _solution(problem, found, False, "local-search", details)


def _solution(
    problem: Problem,
    plan: Plan,
    exact: bool,
    method: str,
    details: dict[str, Any],
    solver_value_s: float | None = None,
) -> Solution:
    timeline = simulate(problem.scenario, plan, problem.overlap)
    value = (
        timeline.ttft_s
        if problem.is_first_token
        else objective_s(problem.scenario, plan, problem.overlap, problem.objective)
    )
    return Solution(
        plan,
        value,
        exact,
        method,
        problem.objective,
        problem.overlap,
        solver_value_s,
        details=details,
        timeline=timeline,
    )


def plan_exact(problem: Problem) -> Solution:
    """The optimum of ``problem`` (exact), or a local-search plan where no exact method exists.

    Exact for one request's ``ttft``, ``e2e`` and ``tpot`` and for a burst's ``max`` first-token
    completion; a burst's ``mean`` first token and a decoding burst's ``e2e`` are planned by local
    search from exact seeds (``exact = False``, ``method = "local-search"``). Raises
    :class:`~coldpipe.errors.InputError` beyond the exact range and
    :class:`~coldpipe.errors.Infeasible` when no plan fits.
    """
    scenario, overlap, objective = problem.scenario, problem.overlap, problem.objective
    wl = scenario.workload
    if problem.is_burst and objective != "tpot":
        if objective == "e2e" and wl.new_tokens > 1:  # a burst that decodes: local search from exact seeds
            check_size(DeviceTypes.of(scenario), BEYOND_RANGE)
            found, details = local_search.plan_burst_e2e(problem, lambda p: plan_exact(p).plan)
            return _solution(problem, found, False, "local-search", details)
        first = _burst_first_tokens(problem.replace(objective="ttft"))
        return (
            first if objective == "ttft" else _solution(problem, first.plan, first.exact, first.method, first.details)
        )
    steps = wl.new_tokens - 1
    if objective == "ttft" or (objective == "e2e" and steps == 0):
        found, best, details = _ttft_optimum(scenario, overlap)
        return _solution(problem, found, True, "dp", details, best)
    dec = StageTables.build(scenario, phase="decode")
    check_size(dec.types, BEYOND_RANGE)
    if objective == "tpot":
        best, found = dec.run(Mode.ADDITIVE)
        if found is None:
            raise_infeasible(scenario)
        assert found is not None
        return _solution(problem, found, True, "dp", {"usage_vectors": dec.types.n_usage_vectors}, best)
    pre = StageTables.build(scenario)
    if overlap == "none":
        found, best, n_taus = _plan_none(scenario, pre.plus(dec, float(steps)))
        return _solution(problem, found, True, "dp", {"thresholds_evaluated": n_taus}, best)
    found, best, n_pairs = pareto_optimum(pre, dec, Mode.of(overlap), float(steps), KIND_E2E)
    if found is None:
        raise_infeasible(scenario)
    assert found is not None
    return _solution(problem, found, True, "dp", {"pareto_pairs": n_pairs}, best)


class ExactPlanner:
    """``dp``: the exact DPs of this module, within :data:`~coldpipe.planning.tables.MAX_USAGE_VECTORS`."""

    name = "dp"

    def refuses(self, problem: Problem) -> str | None:
        n = DeviceTypes.of(problem.scenario).n_usage_vectors
        if n > MAX_USAGE_VECTORS:
            return f"{n} usage vectors, above the exact DP's limit of {MAX_USAGE_VECTORS}"
        return None

    def solve(self, problem: Problem) -> Solution:
        return plan_exact(problem)
