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
finishes loading by ``τ``; then ``OPT = min_τ τ + D(τ)`` over the finitely many candidate load ends.
:func:`~coldpipe.planning.pareto.none_optimum` finds it in one pass over fronts of (latest load end,
additive time) pairs; :func:`plan_none_thresholds`, branch-and-bound over the sorted candidates
(:func:`threshold_search`, ``D`` non-increasing), is the tests' reference and plans a burst's max
under ``none``. Warm planning (loading free) is the additive DP with ``τ = ∞``
(:mod:`coldpipe.planning.additive`).

Other objectives (``docs/model.md``, "Objectives"):

- ``tpot``: one decode step is additive over stages: the additive DP on decode tables;
- ``e2e`` = TTFT + (T - 1) x TPOT: under ``none`` the ``none`` front on combined tables; under
  ``layer``/``stage`` one scalar per state is not enough, and
  :func:`~coldpipe.planning.pareto.pareto_optimum` keeps a front of (arrival at the AP, decode so far)
  per state, pruned by a backward DP's bound (:mod:`coldpipe.planning.suffix`) against a quick plan;
- a burst's ``max`` first-token completion: the same Pareto DP over (first request's arrival, last
  request's end), a flow shop of identical jobs;
- a burst's ``mean`` first token and a decoding burst's answers: local search
  (:mod:`coldpipe.planning.local_search`) from exact seeds (``exact = False``).

Complexity: ``O(n_usage_vectors * B**2 * T)`` for the scalar DP (12 distinct devices x 82 blocks is
~3e8 inner steps), ``O(n_usage_vectors * B * T)`` for the additive one; the Pareto DPs' grows with their
fronts (:mod:`coldpipe.planning.predict` estimates each).
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
from coldpipe.planning.kernels import KIND_BURST, KIND_E2E, Mode
from coldpipe.planning.pareto import none_optimum, pareto_bounds, pareto_optimum, pareto_plan
from coldpipe.planning.protocol import Problem, Solution
from coldpipe.planning.suffix import suffix_bounds
from coldpipe.planning.tables import MAX_USAGE_VECTORS, DeviceTypes, StageTables, check_size, load_end_candidates
from coldpipe.units import format_bytes

__all__ = [
    "BEYOND_RANGE",
    "ExactPlanner",
    "pareto_plan",
    "plan_exact",
    "plan_none_thresholds",
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


def threshold_search(
    taus: np.ndarray,
    run: Callable[[float, float], tuple[float, T | None]],
    load_of: Callable[[T], float] | None = None,
) -> dict[int, tuple[float, T | None]]:
    """Branch-and-bound for ``min over k of taus[k] + D(taus[k])`` with ``D`` non-increasing in tau.

    ``taus`` is sorted. ``run(tau, cutoff)`` returns ``(D(tau), a witness)``; when ``D(tau) >= cutoff``
    it may return ``(a lower bound on D(tau) no less than cutoff, None)`` instead, which is cheaper to
    prove. Returns every evaluated ``k -> run(taus[k], .)``; the minimiser is among the entries with a
    witness. An interval ``(lo, hi)`` is skipped when ``taus[lo + 1] + D(taus[hi])`` cannot beat the
    incumbent, so ``taus[hi]`` is evaluated with the cutoff ``incumbent - taus[lo + 1]``: a bound that
    reaches it skips the interval as well as ``D`` itself would.

    ``load_of(witness)``: the witness's own latest load end ``L <= tau``. Then ``D`` is constant on
    ``[L, tau]`` (the witness qualifies there, and ``D`` cannot fall as tau does), so no threshold in
    it beats the first candidate ``>= L``, which takes the witness's entry; the search goes on below it.
    """
    memo: dict[int, tuple[float, T | None]] = {}
    bound_only: set[int] = set()  # entries that are lower bounds, not values

    def d_of(k: int, cutoff: float = math.inf) -> int:
        """Evaluate ``taus[k]``; returns the lowest index whose entry is now known to be the same."""
        if k not in memo or (k in bound_only and memo[k][0] < cutoff):
            value, witness = run(float(taus[k]), cutoff)
            memo[k] = (value, witness)
            if witness is None and value < math.inf:
                bound_only.add(k)
            else:
                bound_only.discard(k)
        witness = memo[k][1]
        if load_of is None or witness is None or k in bound_only or memo[k][0] == math.inf:
            return k
        low = min(k, int(np.searchsorted(taus, load_of(witness), side="left")))
        if low not in memo or low in bound_only:
            memo[low] = memo[k]
            bound_only.discard(low)
        return low

    def incumbent() -> float:
        return min((float(taus[k]) + v[0] for k, v in memo.items() if k not in bound_only), default=math.inf)

    if len(taus) == 0:
        return memo
    hi = d_of(len(taus) - 1)
    if memo[hi][0] == math.inf:
        return memo
    d_of(0)
    stack = [(0, hi)]
    while stack:
        lo, hi_ = stack.pop()
        if hi_ - lo <= 1:
            continue
        cutoff = incumbent() - float(taus[lo + 1])
        d_of(hi_, cutoff)
        if taus[lo + 1] + memo[hi_][0] >= incumbent():
            continue  # nothing strictly inside (lo, hi_) can beat the incumbent
        mid = (lo + hi_) // 2
        low = d_of(mid, cutoff)
        stack.append((lo, max(lo, low)))
        stack.append((mid, hi_))
    return memo


def plan_none_thresholds(
    scenario: Scenario,
    tables: StageTables,
    run: Callable[[float, float], tuple[float, Plan | None]] | None = None,
    least_load: float | None = None,
) -> tuple[Plan, float, int]:
    """Exact ``none`` optimum by :func:`threshold_search`: ``(plan, objective, thresholds evaluated)``.

    ``run(tau, cutoff)`` returns the least additive part (and a plan) among plans whose stages all
    finish loading by ``tau``, or a lower bound no less than ``cutoff`` (and None); by default the
    additive DP on ``tables`` (one whole DP per threshold: :func:`~coldpipe.planning.pareto.none_optimum`
    is faster; this is the tests' reference). Any ``run`` non-increasing in ``tau`` works (a burst's
    max passes its own). The thresholds start at ``least_load``, the least latest load end of any plan
    (:mod:`~coldpipe.planning.suffix`; computed here if not given): no plan loads by an earlier one.
    """
    if least_load is None:
        least_load = float(suffix_bounds(tables)[1][0, 0])
    taus = load_end_candidates(tables)
    taus = taus[taus >= least_load]
    if run is None:
        run = lambda tau, _cutoff: tables.run(Mode.ADDITIVE, tau)  # noqa: E731

    types = tables.types

    def load_of(plan: Plan) -> float:
        return max(tables.load_end(types.type_of(st.device), st.first, st.last) for st in plan.stages)

    memo = threshold_search(taus, run, load_of)
    feasible = [k for k, (d, plan) in memo.items() if plan is not None and d < math.inf]
    if not feasible:
        raise_infeasible(scenario)
    k_best = min(feasible, key=lambda k: (taus[k] + memo[k][0], k))
    plan = memo[k_best][1]
    assert plan is not None
    # The plan's real TTFT is (its own last load end) + D <= tau + D; by optimality they are equal.
    return plan, float(load_of(plan) + memo[k_best][0]), len(memo)


def _ttft_optimum(scenario: Scenario, overlap: str) -> tuple[Plan, float, dict[str, Any]]:
    """The minimum-TTFT plan of one request (exact): ``(plan, the DP's objective, details)``."""
    tables = StageTables.build(scenario)
    check_size(tables.types)
    details: dict[str, Any] = {"usage_vectors": tables.types.n_usage_vectors}
    if overlap == "none":
        found, best, more = none_optimum(tables)
        if found is None:
            raise_infeasible(scenario)
        assert found is not None
        return found, best, {**details, **more}
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
        def run(tau: float, cutoff: float) -> tuple[float, Plan | None]:
            # the rest's bound with its stages loaded by tau too: tighter than without, valid for this run
            at_tau = pareto_bounds(pre, pre, lam, KIND_BURST, np.array([tau, math.inf]))
            found, value, _ = pareto_optimum(pre, pre, Mode.ADDITIVE, lam, KIND_BURST, tau, at_tau, cutoff)
            return (value, found) if found is not None else (cutoff, None)

        max_plan, _, n_taus = plan_none_thresholds(scenario, pre, run, float(suffix_bounds(pre)[1][0, 0]))
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
        found, best, details = none_optimum(pre.plus(dec, float(steps)))
        if found is None:
            raise_infeasible(scenario)
        assert found is not None
        return _solution(problem, found, True, "dp", details, best)
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
