"""Planning beyond the exact DP's range: local search over device orders, exact split per order.

The exact DP (:mod:`coldpipe.core.dp`) enumerates usage vectors, ``prod(count_t + 1)`` of them, and
refuses more than :data:`~coldpipe.core.dp.MAX_USAGE_VECTORS` (about 16 distinct devices). Once the
*order* of the devices is fixed, the rest of the problem is easy: a forward DP over
``(position in the order, blocks placed)``, where each device of the order is either skipped or
given the next contiguous run of blocks, finds the best subsequence of the order *and* the best
split for it in ``O(n * B**2)``. It is the exact DP with "device types still available" replaced by
"position in a fixed order", so it shares the DP's stage maps (``max(α + C, G)`` etc.) and tables.

The heuristic (``docs/heuristic.md``) searches over orders:

1. **Seeds**: the whole cluster sorted by several keys (start-up, time to load an even share of
   the model, FLOP/s, ...), each solved by the order DP; plus the exact DP on a reduced cluster
   (the devices of the best seed and the best-ranked others, at most ``2**seed_types`` usage
   vectors) when that is cheap and smaller than the whole cluster.
2. **Local search** from the ``beam_width`` best distinct seeds: on the sequence ``U`` of devices
   the current plan uses, try inserting all candidate devices at a gap (the order DP picks a subset),
   inserting one at each gap, replacing a used device by one, relocating and swapping used devices;
   each candidate sequence is solved by the order DP (which may also drop devices). Best
   improvement, until no move improves, ``max_rounds`` rounds, or ``max_orders`` orders in all.

Deterministic: no clock, no randomness. The result carries a lower bound and its gap to it.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
>>> dev = lambda n, s: Device(n, flops=1e12, load_bandwidth=1e9, startup=s, memory=1e12,
...                           uplink=8e9, downlink=8e9)
>>> sc = Scenario(blocks, (dev("slow", 3.0), dev("fast", 0.0)), Workload(1, prompt_bytes=0, token_bytes=0))
>>> res = plan_heuristic(sc)
>>> str(res.plan), res.ttft_s
('fast[0-3]', 5.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coldpipe.core.dp import (
    _MODE_ADDITIVE,
    _MODE_LAYER,
    _MODE_STAGE,
    MAX_USAGE_VECTORS,
    DeviceTypes,
    _Tables,
    load_end_candidates,
    numba_enabled,
    plan_dp,
    threshold_search,
)
from coldpipe.core.simulator import simulate, transfer_s
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario, Stage
from coldpipe.errors import ColdpipeError, Infeasible, InputError

__all__ = ["HeuristicResult", "plan_heuristic", "relaxed_lower_bound_s", "solve_order"]

_SKIP = -2  # pred marker: the device at this position was skipped


def _order_kernel(
    mode: int,
    tau: float,
    seq: np.ndarray,  # (n,) int64: device type at each position of the order
    arrive: np.ndarray,  # (n+1, B): A[p, i] below; rows 0..start_p filled by the caller, the rest inf
    start_p: int,  # first position to process (rows before it are taken as given)
    best0: float,  # best complete plan among stages on positions < start_p
    cf: np.ndarray,  # (T, B+1): compute seconds of blocks 0..l-1 on type t
    wpt: np.ndarray,  # (T, B+1): bytes type t loads for blocks 0..l-1 (resident blocks are free)
    nres: np.ndarray,  # (T, B+1): how many of blocks 0..l-1 type t must load
    mp: np.ndarray,  # (B+1,): memory bytes of blocks 0..l-1
    startup: np.ndarray,  # (T,)
    inv_bw: np.ndarray,  # (T,)
    mem: np.ndarray,  # (T,)
    down: np.ndarray,  # (T, B): AP -> type t, input of a stage starting at block i
    up: np.ndarray,  # (T, B): type t -> AP, after block e
    ret: np.ndarray,  # (T,): token from type t back to the source
    src_type: int,
) -> tuple[float, int, int, np.ndarray, np.ndarray]:
    """Forward DP over a fixed order.

    ``A[p, i]`` = earliest time the output of block ``i - 1`` (the prompt if ``i == 0``) is at the
    AP, with blocks ``0..i-1`` placed on a subsequence of positions ``0..p-1``. ``pred[p, i]`` is the
    first block of the stage on position ``p - 1`` that led there, or ``_SKIP``. The plan ends with
    the stage at position ``best_p`` holding blocks ``best_i..B-1``; ``best_upto[p]`` is the best
    complete plan whose last stage is on a position ``< p``.

    Starting at ``start_p > 0`` from another order's rows ``0..start_p`` (same prefix) gives this
    order's optimum, but ``pred`` (and ``best_p``/``best_i``, if the optimum lies in the prefix) only
    for positions ``>= start_p``: the search uses it to score neighbours, then re-solves the best.
    """
    n = seq.shape[0]
    n_blocks = mp.shape[0] - 1
    pred = np.full((n + 1, n_blocks), -1, dtype=np.int64)
    best_upto = np.full(n + 1, np.inf)
    best = best0
    best_p, best_i = -1, -1
    for p in range(start_p, n):
        best_upto[p] = best
        t = seq[p]
        for i in range(n_blocks):
            a = arrive[p, i]
            if a == np.inf:
                continue
            if a < arrive[p + 1, i]:  # skip position p
                arrive[p + 1, i] = a
                pred[p + 1, i] = _SKIP
            if i == 0 and t == src_type:
                alpha = 0.0
            else:
                alpha = a + down[t, i]
            base = startup[t] - wpt[t, i] * inv_bw[t]
            run = -np.inf
            for e in range(i, n_blocks):
                if mp[e + 1] - mp[i] > mem[t]:
                    break
                compute = cf[t, e + 1] - cf[t, i]
                load_end = startup[t] + (wpt[t, e + 1] - wpt[t, i]) * inv_bw[t] if nres[t, e + 1] > nres[t, i] else 0.0
                if mode == _MODE_LAYER:
                    h = wpt[t, e + 1] * inv_bw[t] - cf[t, e] if nres[t, e + 1] > nres[t, e] else -np.inf
                    if h > run:
                        run = h
                    fin = max(alpha + compute, base + cf[t, e + 1] + run)
                elif mode == _MODE_STAGE:
                    fin = max(alpha, load_end) + compute
                else:
                    if load_end > tau:
                        break
                    fin = alpha + compute
                if e == n_blocks - 1:
                    total = fin + ret[t]
                    if total < best:
                        best, best_p, best_i = total, p, i
                else:
                    v = fin + up[t, e]
                    if v < arrive[p + 1, e + 1]:
                        arrive[p + 1, e + 1] = v
                        pred[p + 1, e + 1] = i
    best_upto[n] = best
    return best, best_p, best_i, pred, best_upto


_compiled_order = None


def _get_order_kernel():  # type: ignore[no-untyped-def]
    global _compiled_order  # a cache of the compiled kernel, same function either way
    if not numba_enabled():
        return _order_kernel
    if _compiled_order is None:
        import numba

        _compiled_order = numba.njit(cache=True, nogil=True)(_order_kernel)
    return _compiled_order


@dataclass(frozen=True)
class _Problem:
    """The DP's tables plus the type of every device."""

    tables: _Tables
    names: tuple[str, ...]  # device names, scenario order
    type_of: np.ndarray  # (K,) int64: type of device k
    mode: int  # _MODE_LAYER, _MODE_STAGE or _MODE_ADDITIVE ("none")
    kernel: Any  # _order_kernel, compiled unless numba is off

    @staticmethod
    def build(scenario: Scenario, overlap: Overlap) -> _Problem:
        tables = _Tables.build(scenario)
        index = {name: t for t, names in enumerate(tables.types.members) for name in names}
        names = tuple(d.name for d in scenario.devices)
        type_of = np.array([index[n] for n in names], dtype=np.int64)
        mode = {"layer": _MODE_LAYER, "stage": _MODE_STAGE, "none": _MODE_ADDITIVE}[overlap]
        return _Problem(tables, names, type_of, mode, _get_order_kernel())

    def _call(
        self, order: tuple[int, ...], tau: float, arrive: np.ndarray, start_p: int, best0: float
    ) -> tuple[float, int, int, np.ndarray, np.ndarray]:
        tb = self.tables
        seq = self.type_of[list(order)] if order else np.zeros(0, dtype=np.int64)
        return self.kernel(  # type: ignore[no-any-return]
            self.mode,
            tau,
            seq,
            arrive,
            start_p,
            best0,
            tb.cf,
            tb.wpt,
            tb.nres,
            tb.mp,
            tb.startup,
            tb.inv_bw,
            tb.mem,
            tb.down,
            tb.up,
            tb.ret,
            tb.types.source_type,
        )

    def run_full(
        self, order: tuple[int, ...], tau: float = math.inf
    ) -> tuple[float, tuple[tuple[int, int, int], ...], np.ndarray, np.ndarray]:
        """(objective, stages as (device, first, last), the DP rows A, best_upto) for ``order``."""
        tb = self.tables
        n_blocks = tb.mp.shape[0] - 1
        arrive = np.full((len(order) + 1, n_blocks), np.inf)
        arrive[0, 0] = tb.prompt_at_ap
        best, p, i, pred, best_upto = self._call(order, tau, arrive, 0, math.inf)
        if not best < math.inf:
            return math.inf, (), arrive, best_upto
        rev = [(order[int(p)], int(i), n_blocks - 1)]
        p, i = int(p), int(i)
        while i > 0:
            q = int(pred[p, i])
            if q == _SKIP:
                p -= 1
                continue
            rev.append((order[p - 1], q, i - 1))
            p -= 1
            i = q
        return float(best), tuple(reversed(rev)), arrive, best_upto

    def run(self, order: tuple[int, ...], tau: float = math.inf) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        """Best (objective, stages as (device, first, last)) over subsequences of ``order``."""
        best, stages, _, _ = self.run_full(order, tau)
        return best, stages

    def value_from(self, order: tuple[int, ...], start_p: int, rows: np.ndarray, best0: float) -> float:
        """The optimum of ``order`` given the DP rows ``0..start_p`` of an order with the same prefix."""
        arrive = np.full((len(order) + 1, rows.shape[1]), np.inf)
        arrive[: start_p + 1] = rows[: start_p + 1]
        return float(self._call(order, math.inf, arrive, start_p, best0)[0])


def _load_end(problem: _Problem, k: int, first: int, last: int) -> float:
    tb = problem.tables
    t = int(problem.type_of[k])
    return tb.load_end(t, first, last)


def _solve(
    problem: _Problem, order: tuple[int, ...], taus: tuple[float, ...] | None = None
) -> tuple[float, tuple[tuple[int, int, int], ...], int]:
    """The best plan over subsequences of ``order``: (TTFT, stages, DP runs).

    ``"layer"``/``"stage"``: one DP run. ``"none"``: TTFT = ``max load end + D``; the same
    branch-and-bound over candidate load-end thresholds as the exact DP, restricted to ``order``;
    or, if ``taus`` is given, only those thresholds (a plan of the order, maybe not its best).
    """
    if problem.mode != _MODE_ADDITIVE:
        best, stages = problem.run(order)
        return best, stages, 1
    if taus is not None:
        best, best_stages = math.inf, ()
        for tau in taus:
            d, stages = problem.run(order, tau)
            if stages:
                ttft = max(_load_end(problem, k, a, b) for k, a, b in stages) + d
                if ttft < best:
                    best, best_stages = ttft, stages
        return best, best_stages, len(taus)
    taus_all = load_end_candidates(problem.tables, sorted({int(problem.type_of[k]) for k in order}))
    memo = threshold_search(taus_all, lambda tau: problem.run(order, tau))
    best, best_stages = math.inf, ()
    for d, stages in memo.values():
        if stages:
            ttft = max(_load_end(problem, k, a, b) for k, a, b in stages) + d
            if ttft < best:
                best, best_stages = ttft, stages
    return best, best_stages, len(memo)


def solve_order(scenario: Scenario, order: list[str] | tuple[str, ...], overlap: Overlap = "layer") -> Plan | None:
    """The best plan whose devices form a subsequence of ``order`` (exact for that order), or None.

    >>> from coldpipe.core.types import Block, Device, Scenario, Workload
    >>> sc = Scenario([Block(f"b{i}", 1.0, 1.0, 1.0) for i in range(4)],
    ...               [Device(n, 1.0, 1.0, 0.0, 2.0, 1e9, 1e9) for n in "xyz"], Workload(1))
    >>> str(solve_order(sc, ["z", "x"]))   # memory 2 blocks each: z then x, both needed
    'z[0-1] > x[2-3]'
    """
    problem = _Problem.build(scenario, overlap)
    index = {n: k for k, n in enumerate(problem.names)}
    _, stages, _ = _solve(problem, tuple(index[n] for n in order))
    if not stages:
        return None
    return Plan(tuple(Stage(problem.names[k], a, b) for k, a, b in stages))


@dataclass(frozen=True)
class HeuristicResult:
    """The heuristic's plan and its TTFT (the simulator's), with how good it provably is.

    ``details``: ``method``, ``lower_bound`` (s), ``lower_bound_kind``, ``gap_to_lower_bound``
    (``ttft / lower_bound - 1``), ``orders_evaluated``, ``dp_runs``, ``rounds``, ``seeds``.
    """

    plan: Plan
    ttft_s: float
    details: dict[str, Any] = field(default_factory=dict)


def relaxed_lower_bound_s(scenario: Scenario) -> float:
    """A warm lower bound that scales to any cluster (no DP): used instead of the warm optimum.

    Every plan computes every block on some device that can hold it, one block after another, so
    TTFT >= sum_l min_{k: mem_l <= M_k} flops_l / F_k, plus the cheapest prompt delivery, plus the
    cheapest token return, plus, when no single device holds the whole model, the cheapest stage
    boundary (some block's output crosses the AP).
    """
    blocks, devs, wl = scenario.blocks, scenario.devices, scenario.workload
    compute = 0.0
    for b in blocks:
        rates = [d.flops for d in devs if b.memory_bytes <= d.memory]
        if not rates:
            return math.inf
        compute += b.flops / max(rates)
    src = scenario.source
    prompt = min(transfer_s(scenario, src, d.name, wl.prompt_bytes_value) for d in devs)
    token = min(transfer_s(scenario, d.name, src, wl.token_bytes) for d in devs)
    need = sum(b.memory_bytes for b in blocks)
    boundary = 0.0
    if not any(need <= d.memory for d in devs) and len(blocks) > 1:
        hop = scenario.network.hop_latency
        boundary = (
            min(
                min(8.0 * b.out_bytes / d.uplink for d in devs) + min(8.0 * b.out_bytes / d.downlink for d in devs)
                for b in blocks[:-1]
            )
            + 2 * hop
        )
    return compute + prompt + token + boundary


def _lower_bound(scenario: Scenario) -> tuple[float, str]:
    """The best lower bound available at this size: ``lower_bounds`` (warm DP) or the relaxed one."""
    from coldpipe.core import baselines

    if DeviceTypes.of(scenario).n_usage_vectors <= MAX_USAGE_VECTORS:
        return baselines.lower_bounds(scenario).best_s, "warm optimum / parallel loading"
    # Same parallel-loading bound as baselines.lower_bounds, without the warm DP it cannot afford.
    f_max = max(d.flops for d in scenario.devices)
    wl = scenario.workload
    ret = [transfer_s(scenario, d.name, scenario.source, wl.token_bytes) for d in scenario.devices]
    tau = baselines._earliest_all_loaded_s(scenario)
    by_volume = tau + min(b.flops for b in scenario.blocks) / f_max + min(ret)
    last = scenario.blocks[-1]
    by_last = min(
        (
            d.startup + last.weight_bytes / d.load_bandwidth + last.flops / d.flops + r
            for d, r in zip(scenario.devices, ret, strict=True)
            if last.memory_bytes <= d.memory
        ),
        default=math.inf,
    )
    return max(relaxed_lower_bound_s(scenario), by_volume, by_last), "relaxed warm / parallel loading"


def _seed_orders(scenario: Scenario) -> list[tuple[str, tuple[int, ...]]]:
    """Whole-cluster orders by simple keys; the order DP picks a subsequence of each."""
    devs = scenario.devices
    model_bytes = sum(b.weight_bytes for b in scenario.blocks)
    model_flops = sum(b.flops for b in scenario.blocks)
    n = len(devs)
    share = model_bytes / min(n, scenario.n_blocks)
    keys: dict[str, Any] = {
        "startup": lambda d: (d.startup, -d.load_bandwidth),
        "load-share": lambda d: d.startup + min(share, d.memory) / d.load_bandwidth,
        "flops": lambda d: -d.flops,
        "memory": lambda d: -d.memory,
        "load-then-compute": lambda d: d.startup
        + min(share, d.memory) / d.load_bandwidth
        + model_flops / min(n, scenario.n_blocks) / d.flops,
        "file": None,
    }
    out = []
    for name, key in keys.items():
        idx = list(range(n))
        if key is not None:
            idx.sort(key=lambda k, key=key: (key(devs[k]), k))
        out.append((name, tuple(idx)))
    return out


def _moves(cur: tuple[int, ...], cands: list[int]) -> list[tuple[int, ...]]:
    """Neighbours of the used sequence ``cur``: relocate, swap, insert a candidate, replace by one.

    First, for every gap, *all* candidates inserted there (in rank order and reversed): the order DP
    then picks any subset of them, so one move can add several devices at once.
    """
    m = len(cur)
    moves: list[tuple[int, ...]] = []
    if len(cands) > 1:
        for group in (tuple(cands), tuple(reversed(cands))):
            moves.extend((*cur[:g], *group, *cur[g:]) for g in range(m + 1))
    for i in range(m):
        rest = cur[:i] + cur[i + 1 :]
        moves.extend((*rest[:g], cur[i], *rest[g:]) for g in range(m) if g != i)  # relocate
        moves.extend((*cur[:i], cur[j], *cur[i + 1 : j], cur[i], *cur[j + 1 :]) for j in range(i + 2, m))  # swap
    for r in cands:
        moves.extend((*cur[:g], r, *cur[g:]) for g in range(m + 1))  # insert
        moves.extend((*cur[:i], r, *cur[i + 1 :]) for i in range(m))  # replace
    return moves


def plan_heuristic(
    scenario: Scenario,
    overlap: Overlap = "layer",
    *,
    beam_width: int = 7,
    max_rounds: int = 30,
    seed_types: int = 8,
    candidates_per_key: int = 3,
    max_orders: int = 50_000,
    first_improvement: bool = False,
) -> HeuristicResult:
    """A good plan for any cluster size (not proven optimal); see the module docstring.

    Raises :class:`~coldpipe.errors.Infeasible` if no order admits a plan (for clusters within the
    exact DP's range, with the DP's shortfall message).
    """
    if overlap not in OVERLAPS:
        raise InputError("overlap", f"unknown overlap mode {overlap!r}", f"use one of {list(OVERLAPS)}")
    problem = _Problem.build(scenario, overlap)
    names = problem.names
    n_dev = len(names)
    evaluated: dict[tuple[int, ...], tuple[float, tuple[tuple[int, int, int], ...]]] = {}
    dp_runs = 0

    def evaluate(order: tuple[int, ...]) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        nonlocal dp_runs
        if order not in evaluated:
            best, stages, runs = _solve(problem, order)
            dp_runs += runs
            evaluated[order] = (best, stages)
        return evaluated[order]

    # "none": a move is judged with two load-end thresholds only (the current plan's last load end
    # and the next candidate below it), then an accepted move is re-solved with the full search.
    all_taus = load_end_candidates(problem.tables) if problem.mode == _MODE_ADDITIVE else np.zeros(0)
    quick_cache: dict[tuple[tuple[int, ...], tuple[float, ...]], tuple[float, tuple[tuple[int, int, int], ...]]] = {}
    values: dict[tuple[int, ...], float] = {}  # "layer"/"stage": neighbours scored from the current rows
    cur_now: list[Any] = [(), None, None]  # the current sequence, its DP rows and best_upto

    def evaluate_move(
        order: tuple[int, ...], stages_now: tuple[tuple[int, int, int], ...]
    ) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        nonlocal dp_runs
        if problem.mode != _MODE_ADDITIVE:
            if order in evaluated:
                return evaluated[order]
            if order not in values:
                g = 0  # first position where the neighbour differs from the current sequence
                while g < len(order) and g < len(cur_now[0]) and order[g] == cur_now[0][g]:
                    g += 1
                values[order] = problem.value_from(order, g, cur_now[1], float(cur_now[2][g]))
                dp_runs += 1
            return values[order], ()
        tau = max(_load_end(problem, k, a, b) for k, a, b in stages_now)
        below = all_taus[all_taus < tau * (1 - 1e-12)]
        taus = (tau, float(below[-1])) if below.size else (tau,)
        key = (order, taus)
        if key not in quick_cache:
            best, stages, runs = _solve(problem, order, taus)
            dp_runs += runs
            quick_cache[key] = (best, stages)
        return quick_cache[key]

    # 1. Seeds.
    seeds: list[tuple[float, str, tuple[int, ...]]] = []
    for name, order in _seed_orders(scenario):
        val, stages = evaluate(order)
        if stages:
            seeds.append((val, name, tuple(k for k, _, _ in stages)))
    if seeds:
        # Exact DP on a reduced cluster: the best seed's devices, then the others by the best key.
        best_used = min(seeds)[2]
        ranked = list(best_used) + [k for k in _seed_orders(scenario)[1][1] if k not in best_used]
        # the source device stays in the reduced cluster (a scenario's source must be one of its devices)
        subset: list[int] = [names.index(scenario.source)] if scenario.source in names else []
        for k in ranked:
            if k in subset:
                continue
            trial = scenario.with_devices([scenario.devices[i] for i in sorted([*subset, k])])
            if DeviceTypes.of(trial).n_usage_vectors > (1 << seed_types):
                break
            subset.append(k)
        if len(subset) < n_dev or n_dev <= 1:
            sub = scenario.with_devices([scenario.devices[i] for i in sorted(subset)])
            try:
                res = plan_dp(sub, overlap)
                index = {nm: k for k, nm in enumerate(names)}
                order = tuple(index[st.device] for st in res.plan.stages)
                val, stages = evaluate(order)
                if stages:
                    seeds.append((val, "exact-on-subset", tuple(k for k, _, _ in stages)))
            except ColdpipeError:
                pass  # the reduced cluster may not hold the model
    if not seeds:
        if DeviceTypes.of(scenario).n_usage_vectors <= MAX_USAGE_VECTORS:
            plan_dp(scenario, overlap)  # raises Infeasible with the shortfall
        raise Infeasible(
            f"no plan found: no order of the {n_dev} devices holds the model's "
            f"{sum(b.memory_bytes for b in scenario.blocks):.4g} bytes in contiguous stages",
            shortfall_bytes=math.nan,
        )

    # 2. Local search from the best distinct seeds.
    seeds.sort()
    starts: list[tuple[float, str, tuple[int, ...]]] = []
    for s in seeds:
        if all(s[2] != t[2] for t in starts):
            starts.append(s)
    starts = starts[:beam_width]
    best_val, best_stages, best_seed = math.inf, (), ""
    rounds_total = 0
    # Unused devices worth trying: the best-ranked few of every seed key (identical devices once).
    rankings = [order for _, order in _seed_orders(scenario)]
    for val0, seed_name, used0 in starts:
        cur_val, cur = val0, used0
        for _ in range(max_rounds):
            rounds_total += 1
            cands: list[int] = []
            seen_types = {int(problem.type_of[k]) for k in cur}
            for order in rankings:
                taken = 0
                for k in order:
                    t = int(problem.type_of[k])
                    if taken == candidates_per_key:
                        break
                    if k in cur or k in cands:
                        continue
                    taken += 1
                    if t not in seen_types:
                        seen_types.add(t)
                        cands.append(k)
            step_val, step = cur_val, cur
            cur_stages = evaluate(cur)[1]
            if problem.mode != _MODE_ADDITIVE:
                _, _, rows, best_upto = problem.run_full(cur)
                cur_now[:] = [cur, rows, best_upto]
            for mv in _moves(cur, cands):
                if len(evaluated) + len(quick_cache) + len(values) >= max_orders:
                    break
                val, stages = evaluate_move(mv, cur_stages)
                if val < step_val * (1 - 1e-12):
                    if not stages:  # scored from the prefix: solve it for its plan
                        val, stages = evaluate(mv)
                    step_val, step = val, tuple(k for k, _, _ in stages)
                    if first_improvement:
                        break
            if step == cur:
                break
            cur, cur_val = step, min(step_val, evaluate(step)[0])
        if cur_val < best_val:
            best_val, best_stages, best_seed = cur_val, evaluate(cur)[1], seed_name

    plan = Plan(tuple(Stage(names[k], a, b) for k, a, b in best_stages))
    ttft = simulate(scenario, plan, overlap).ttft_s
    lb, lb_kind = _lower_bound(scenario)
    details: dict[str, Any] = {
        "method": f"local search over device orders (beam {len(starts)}), exact split per order",
        "lower_bound": lb,
        "lower_bound_kind": lb_kind,
        "gap_to_lower_bound": ttft / lb - 1.0 if lb > 0 else math.inf,
        "orders_evaluated": len(evaluated) + len(quick_cache) + len(values),
        "dp_runs": dp_runs,
        "rounds": rounds_total,
        "best_seed": best_seed,
    }
    return HeuristicResult(plan, ttft, details)
