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

Every objective (``docs/heuristic.md``, "Other objectives"): the same search, with the order-restricted
version of the exact method of :mod:`coldpipe.core.objectives` for each order — the additive order DP on
decode tables (``tpot``), the ``none`` threshold search on combined tables (``e2e`` under ``none``), a
Pareto order DP (:func:`_order_pareto_kernel`) over (arrival, decode so far) for ``e2e`` and over (first
request's arrival, last request's end) for a burst's ``max`` completion; a burst's ``mean`` is searched
for its ``max`` and for one request's TTFT, then both plans are polished by a plan-level local search.
Neighbours of a Pareto objective are screened with one pair per state (a real plan's value, never
optimistic); accepted moves are re-solved exactly. Reported values are the simulator's
(:func:`~coldpipe.core.simulator.objective_s`).

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
from coldpipe.core.objectives import _extend_pair, _grow, _stage_terms
from coldpipe.core.simulator import OBJECTIVES, objective_s, simulate, transfer_s
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


def _order_pareto_kernel(
    mode: int,  # 0 layer, 1 stage, 2 additive with every stage loaded by tau (the "none" thresholds)
    kind: int,  # second coordinate: 0 decode time so far (e2e), 1 end of the burst's last request
    lam: float,  # e2e: new_tokens - 1; burst: requests - 1
    tau: float,
    incumbent: float,  # objective of a known plan: anything not strictly better is pruned
    seq: np.ndarray,  # (n,) int64: device type at each position of the order
    rest: np.ndarray,  # (n+1, B+1): lower bound on what blocks i.. add, computed on positions >= p
    cf: np.ndarray,  # prefill tables, as in _order_kernel
    wpt: np.ndarray,
    nres: np.ndarray,
    mp: np.ndarray,
    startup: np.ndarray,
    inv_bw: np.ndarray,
    mem: np.ndarray,
    down: np.ndarray,
    up: np.ndarray,
    ret: np.ndarray,
    src_type: int,
    prompt_at_ap: float,
    dcf: np.ndarray,  # second tables (decode for e2e; unused by the burst but for the root)
    ddown: np.ndarray,
    dup: np.ndarray,
    dret: np.ndarray,
    dprompt_at_ap: float,
    max_front: int,  # 0: exact; else keep at most this many pairs per state (a quick, never optimistic screen)
) -> tuple[float, int, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`coldpipe.core.objectives._pareto_kernel` with "usage vector" replaced by "position in an order".

    State ``(p, i)``: blocks ``0..i-1`` placed on a subsequence of positions ``0..p-1``; its front holds
    every non-dominated pair (arrival of block ``i - 1``'s output at the AP, second coordinate). Row
    ``p + 1`` is built from row ``p`` only: skip position ``p`` (the same pairs) or give it blocks
    ``i..e``. Both coordinates grow through non-decreasing maps and the objective is non-decreasing in
    both, so the fronts are exact for the order. Each kept pair records the pair it extends, the
    position and the block range of its last stage (a skipped position copies the record as is).

    With ``max_front > 0`` a front longer than that keeps the pair of least partial objective and
    evenly spaced others: every kept pair is still a real partial plan, so the result is the value of
    a real plan of the order (never below its optimum), found at a fraction of the cost.
    """
    n = seq.shape[0]
    n_blocks = mp.shape[0] - 1
    cap = 1024
    p_a = np.empty(cap)
    p_d = np.empty(cap)
    p_from = np.empty(cap, dtype=np.int64)
    p_pos = np.empty(cap, dtype=np.int64)
    p_i = np.empty(cap, dtype=np.int64)
    p_e = np.empty(cap, dtype=np.int64)
    start = np.zeros((n + 1, n_blocks), dtype=np.int64)  # pairs of (p, i): start[p, i]..stop[p, i]-1
    stop = np.zeros((n + 1, n_blocks), dtype=np.int64)
    p_a[0], p_from[0], p_pos[0], p_i[0], p_e[0] = prompt_at_ap, -1, -1, -1, -1
    p_d[0] = dprompt_at_ap if kind == 0 else prompt_at_ap
    size = 1
    for p in range(n + 1):
        stop[p, 0] = 1  # the root (nothing placed) is in every row
    best = incumbent
    best_q, best_p, best_i = -2, -1, -1
    cand_a = np.empty(256)
    cand_d = np.empty(256)
    cand_from = np.empty(256, dtype=np.int64)
    cand_pos = np.empty(256, dtype=np.int64)
    cand_i = np.empty(256, dtype=np.int64)
    idx_buf = np.empty(33, dtype=np.int64)
    keep_buf = np.zeros(256, dtype=np.bool_)
    for p in range(n):
        t = seq[p]
        for i2 in range(1, n_blocks + 1):
            e = i2 - 1
            n_cand = 0
            bound = rest[p + 1, i2]
            if i2 < n_blocks:  # skip position p: the pairs of (p, i2) carry over
                for q in range(start[p, i2], stop[p, i2]):
                    value = p_a[q] + lam * p_d[q] if kind == 0 else p_d[q]
                    if value + bound >= best:
                        continue
                    if max_front == 1 and n_cand == 1:  # one pair per state: keep the least partial objective
                        v1 = cand_a[0] + lam * cand_d[0] if kind == 0 else cand_d[0]
                        if value < v1:
                            n_cand = 0
                        else:
                            continue
                    if n_cand == cand_a.shape[0]:
                        cand_a = _grow(cand_a, n_cand + 1)
                        cand_d = _grow(cand_d, n_cand + 1)
                        cand_from = _grow(cand_from, n_cand + 1)
                        cand_pos = _grow(cand_pos, n_cand + 1)
                        cand_i = _grow(cand_i, n_cand + 1)
                    cand_a[n_cand], cand_d[n_cand] = p_a[q], p_d[q]
                    cand_from[n_cand], cand_pos[n_cand], cand_i[n_cand] = p_from[q], p_pos[q], p_i[q]
                    n_cand += 1
            run = -np.inf
            for i in range(e, -1, -1):  # the stage on position p holds blocks i..e
                if mp[e + 1] - mp[i] > mem[t]:
                    break
                load_end, run, g = _stage_terms(t, i, e, run, cf, wpt, nres, startup, inv_bw)
                if mode == 2 and load_end > tau:
                    break
                if stop[p, i] == start[p, i]:
                    continue
                compute = cf[t, e + 1] - cf[t, i]
                dec = dcf[t, e + 1] - dcf[t, i]
                if i2 < n_blocks:
                    out_a, out_d = up[t, e], dup[t, e]
                else:
                    out_a, out_d = ret[t], dret[t]
                at_source = i == 0 and t == src_type
                for q in range(start[p, i], stop[p, i]):
                    a2, d2, value = _extend_pair(
                        mode, kind, lam, at_source, p_a[q], p_d[q], down[t, i], ddown[t, i],
                        compute, load_end, g, dec, out_a, out_d,
                    )  # fmt: skip
                    if i2 == n_blocks:
                        if value < best:
                            best, best_q, best_p, best_i = value, q, p, i
                        continue
                    if value + bound >= best:
                        continue
                    if max_front == 1 and n_cand == 1:  # one pair per state: keep the least partial objective
                        v1 = cand_a[0] + lam * cand_d[0] if kind == 0 else cand_d[0]
                        if value < v1:
                            n_cand = 0
                        else:
                            continue
                    if n_cand == cand_a.shape[0]:
                        cand_a = _grow(cand_a, n_cand + 1)
                        cand_d = _grow(cand_d, n_cand + 1)
                        cand_from = _grow(cand_from, n_cand + 1)
                        cand_pos = _grow(cand_pos, n_cand + 1)
                        cand_i = _grow(cand_i, n_cand + 1)
                    cand_a[n_cand], cand_d[n_cand] = a2, d2
                    cand_from[n_cand], cand_pos[n_cand], cand_i[n_cand] = q, p, i
                    n_cand += 1
            if i2 == n_blocks or n_cand == 0:
                continue
            # Keep the Pareto front: sorted by arrival, each kept pair strictly better in the second coordinate.
            if n_cand > 32:
                order = np.argsort(cand_a[:n_cand], kind="mergesort")
            else:  # a stable insertion sort: no allocation for the usual short lists
                order = idx_buf
                for k in range(n_cand):
                    c = k
                    j = k
                    while j > 0 and cand_a[order[j - 1]] > cand_a[c]:
                        order[j] = order[j - 1]
                        j -= 1
                    order[j] = c
            start[p + 1, i2] = size
            best_d = np.inf
            last_a = -np.inf
            for k in range(n_cand):
                c = order[k]
                if cand_d[c] < best_d:
                    if cand_a[c] == last_a and size > start[p + 1, i2]:
                        size -= 1  # same arrival, better second coordinate: replaces the previous pair
                    if size == p_a.shape[0]:
                        p_a = _grow(p_a, size + 1)
                        p_d = _grow(p_d, size + 1)
                        p_from = _grow(p_from, size + 1)
                        p_pos = _grow(p_pos, size + 1)
                        p_i = _grow(p_i, size + 1)
                        p_e = _grow(p_e, size + 1)
                    p_a[size], p_d[size] = cand_a[c], cand_d[c]
                    p_from[size], p_pos[size], p_i[size], p_e[size] = cand_from[c], cand_pos[c], cand_i[c], e
                    size += 1
                    best_d = cand_d[c]
                    last_a = cand_a[c]
            s0 = start[p + 1, i2]
            cnt = size - s0
            if 0 < max_front < cnt:
                k_best, v_best = s0, np.inf  # the pair of least partial objective is always kept
                for k in range(s0, size):
                    v = p_a[k] + lam * p_d[k] if kind == 0 else p_d[k]
                    if v < v_best:
                        k_best, v_best = k, v
                if keep_buf.shape[0] < cnt:
                    keep_buf = np.zeros(2 * cnt, dtype=np.bool_)
                keep = keep_buf
                keep[:cnt] = False
                keep[k_best - s0] = True
                m = max_front - 1  # and this many evenly spaced along the front (its two ends first)
                for r in range(m):
                    keep[(r * (cnt - 1)) // (m - 1) if m > 1 else 0] = True
                w = s0
                for k in range(cnt):  # compact in place: w <= s0 + k
                    if keep[k]:
                        c = s0 + k
                        p_a[w], p_d[w] = p_a[c], p_d[c]
                        p_from[w], p_pos[w], p_i[w], p_e[w] = p_from[c], p_pos[c], p_i[c], p_e[c]
                        w += 1
                size = w
            stop[p + 1, i2] = size
    return best, best_q, best_p, best_i, p_from[:size], p_pos[:size], p_i[:size], p_e[:size]


_compiled_pareto = None


def _get_order_pareto_kernel():  # type: ignore[no-untyped-def]
    global _compiled_pareto  # a cache of the compiled kernel, same function either way
    if not numba_enabled():
        return _order_pareto_kernel
    if _compiled_pareto is None:
        import numba

        _compiled_pareto = numba.njit(cache=True, nogil=True)(_order_pareto_kernel)
    return _compiled_pareto


_KIND_SCALAR, _KIND_E2E, _KIND_BURST = -1, 0, 1


@dataclass(frozen=True)
class _Problem:
    """What the order DP optimises: the DP's tables, the type of every device, the objective's form.

    ``kind`` is ``_KIND_SCALAR`` for one number per state (TTFT; TPOT on decode tables; E2E under
    ``none`` on prefill + (T - 1) x decode tables), else the second coordinate of the Pareto order DP:
    ``_KIND_E2E`` (decode time so far, weight ``lam = new_tokens - 1``) or ``_KIND_BURST`` (end of the
    burst's last request, ``lam = requests - 1``) with ``second`` its tables.
    """

    tables: _Tables
    names: tuple[str, ...]  # device names, scenario order
    type_of: np.ndarray  # (K,) int64: type of device k
    mode: int  # _MODE_LAYER, _MODE_STAGE or _MODE_ADDITIVE ("none")
    kernel: Any  # _order_kernel, compiled unless numba is off
    kind: int = _KIND_SCALAR
    second: _Tables | None = None
    lam: float = 0.0
    block_cost: np.ndarray | None = None  # (T, B): per-block lower bound on what the objective adds

    @staticmethod
    def build(scenario: Scenario, overlap: Overlap, objective: str = "ttft") -> _Problem:
        """The order DP's problem for ``objective`` (``ttft`` with a burst: its max completion)."""
        pre = _Tables.build(scenario)
        index = {name: t for t, names in enumerate(pre.types.members) for name in names}
        names = tuple(d.name for d in scenario.devices)
        type_of = np.array([index[n] for n in names], dtype=np.int64)
        mode = {"layer": _MODE_LAYER, "stage": _MODE_STAGE, "none": _MODE_ADDITIVE}[overlap]
        wl = scenario.workload
        steps = wl.new_tokens - 1
        if objective == "tpot":
            # One decode step: additive, nothing to load (startup 0, free loading), so the "stage" map
            # max(α, load_end = 0) + C is the additive one, and the order DP's fast path applies.
            dec = _Tables.build(scenario, phase="decode")
            return _Problem(dec, names, type_of, _MODE_STAGE, _get_order_kernel())
        if objective == "e2e" and steps > 0:
            dec = _Tables.build(scenario, phase="decode")
            if mode == _MODE_ADDITIVE:  # max load end + (prefill + (T - 1) x decode): the "none" search
                return _Problem(pre.plus(dec, float(steps)), names, type_of, mode, _get_order_kernel())
            cost = np.diff(pre.cf, axis=1) + steps * np.diff(dec.cf, axis=1)
            return _Problem(pre, names, type_of, mode, _get_order_pareto_kernel(), _KIND_E2E, dec, float(steps), cost)
        if objective == "ttft" and wl.requests > 1:
            cost = np.diff(pre.cf, axis=1)
            lam = float(wl.requests - 1)
            return _Problem(pre, names, type_of, mode, _get_order_pareto_kernel(), _KIND_BURST, pre, lam, cost)
        return _Problem(pre, names, type_of, mode, _get_order_kernel())

    def load_ends(self, t: int) -> np.ndarray:
        """:func:`~coldpipe.core.dp.load_end_candidates` of type ``t`` (computed once per type)."""
        cache: dict[int, np.ndarray] = self.__dict__.setdefault("_load_ends", {})
        if t not in cache:
            cache[t] = load_end_candidates(self.tables, [t])
        return cache[t]

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

    def run_pareto(
        self, order: tuple[int, ...], tau: float = math.inf, incumbent: float = math.inf, max_front: int = 0
    ) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        """The Pareto order DP: (objective, stages), or ``(inf, ())`` if nothing strictly beats ``incumbent``.

        ``max_front > 0``: fronts capped to that many pairs, a real plan of the order (maybe not its best).
        """
        tb, sec = self.tables, self.second
        assert sec is not None and self.block_cost is not None
        n_blocks = tb.mp.shape[0] - 1
        seq = self.type_of[list(order)] if order else np.zeros(0, dtype=np.int64)
        # rest[p, i]: blocks i.. each computed by the cheapest type on positions >= p (inf: no position left)
        mins = np.full((len(order) + 1, n_blocks), np.inf)
        if order:
            mins[:-1] = np.minimum.accumulate(self.block_cost[seq][::-1], axis=0)[::-1]
        rest = np.zeros((len(order) + 1, n_blocks + 1))
        rest[:, :n_blocks] = np.cumsum(mins[:, ::-1], axis=1)[:, ::-1]
        best, q, p, i, p_from, p_pos, p_i, p_e = self.kernel(
            {_MODE_LAYER: 0, _MODE_STAGE: 1, _MODE_ADDITIVE: 2}[self.mode],
            self.kind,
            self.lam,
            tau,
            incumbent,
            seq,
            rest,
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
            tb.prompt_at_ap,
            sec.cf,
            sec.down,
            sec.up,
            sec.ret,
            sec.prompt_at_ap,
            max_front,
        )
        if q == -2:
            return math.inf, ()
        rev = [(order[int(p)], int(i), n_blocks - 1)]
        q = int(q)
        while p_pos[q] >= 0:  # the root pair (nothing placed) has no stage
            rev.append((order[int(p_pos[q])], int(p_i[q]), int(p_e[q])))
            q = int(p_from[q])
        return float(best), tuple(reversed(rev))

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
        if self.kind != _KIND_SCALAR:
            return self.run_pareto(order, tau)
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
    problem: _Problem,
    order: tuple[int, ...],
    taus: tuple[float, ...] | None = None,
    incumbent: float = math.inf,
    max_front: int = 0,
) -> tuple[float, tuple[tuple[int, int, int], ...], int]:
    """The best plan over subsequences of ``order``: (the DP's objective, stages, DP runs).

    ``"layer"``/``"stage"``: one DP run (for a Pareto problem, ``(inf, ())`` if nothing strictly beats
    ``incumbent``). ``"none"``: objective = ``max load end + D``; the same branch-and-bound over
    candidate load-end thresholds as the exact DP, restricted to ``order``; or, if ``taus`` is given,
    only those thresholds (a plan of the order, maybe not its best). ``max_front``: see
    :meth:`_Problem.run_pareto` (a real plan of the order, maybe not its best).
    """
    if problem.mode != _MODE_ADDITIVE:
        if problem.kind != _KIND_SCALAR:
            best, stages = problem.run_pareto(order, math.inf, incumbent, max_front)
        else:
            best, stages = problem.run(order)
        return best, stages, 1
    if taus is not None:
        best, best_stages = math.inf, ()
        for tau in taus:
            if problem.kind != _KIND_SCALAR:
                d, stages = problem.run_pareto(order, tau, math.inf, max_front)
            else:
                d, stages = problem.run(order, tau)
            if stages:
                ttft = max(_load_end(problem, k, a, b) for k, a, b in stages) + d
                if ttft < best:
                    best, best_stages = ttft, stages
        return best, best_stages, len(taus)
    types = sorted({int(problem.type_of[k]) for k in order})
    taus_all = np.unique(np.concatenate([problem.load_ends(t) for t in types])) if types else np.zeros(0)
    memo = threshold_search(taus_all, lambda tau: problem.run(order, tau))
    best, best_stages = math.inf, ()
    for d, stages in memo.values():
        if stages:
            ttft = max(_load_end(problem, k, a, b) for k, a, b in stages) + d
            if ttft < best:
                best, best_stages = ttft, stages
    return best, best_stages, len(memo)


def solve_order(
    scenario: Scenario, order: list[str] | tuple[str, ...], overlap: Overlap = "layer", objective: str = "ttft"
) -> Plan | None:
    """The best plan for ``objective`` whose devices form a subsequence of ``order`` (exact for that order).

    None if no subsequence of ``order`` holds the model. ``objective`` as in :func:`plan_heuristic`;
    a burst's ``mean`` completion is not planned per order (its ``max`` is).

    >>> from coldpipe.core.types import Block, Device, Scenario, Workload
    >>> sc = Scenario([Block(f"b{i}", 1.0, 1.0, 1.0) for i in range(4)],
    ...               [Device(n, 1.0, 1.0, 0.0, 2.0, 1e9, 1e9) for n in "xyz"], Workload(1))
    >>> str(solve_order(sc, ["z", "x"]))   # memory 2 blocks each: z then x, both needed
    'z[0-1] > x[2-3]'
    """
    _check_objective(scenario, overlap, objective)
    if objective == "ttft" and scenario.workload.completion == "mean" and scenario.workload.requests > 1:
        raise InputError("workload.completion", "a burst's mean completion is not planned per order", "use 'max'")
    if objective == "e2e" and scenario.workload.requests > 1:
        raise InputError("objective", "a decoding burst's e2e is not planned per order", "use ttft or one request")
    problem = _Problem.build(scenario, overlap, objective)
    index = {n: k for k, n in enumerate(problem.names)}
    unknown = [n for n in order if n not in index]
    if unknown or len(set(order)) != len(order):
        raise InputError("order", f"unknown or repeated devices in {list(order)}", "name each device once")
    _, stages, _ = _solve(problem, tuple(index[n] for n in order))
    if not stages:
        return None
    return Plan(tuple(Stage(problem.names[k], a, b) for k, a, b in stages))


@dataclass(frozen=True)
class HeuristicResult:
    """The heuristic's plan, its TTFT and its objective value (both the simulator's), and a lower bound.

    ``value_s`` is :func:`~coldpipe.core.simulator.objective_s` of the plan for ``objective`` (the TTFT
    for ``ttft`` with one request). ``details``: ``method``, ``lower_bound`` (s, on the objective),
    ``lower_bound_kind``, ``gap_to_lower_bound`` (``value / lower_bound - 1``), ``orders_evaluated``,
    ``dp_runs``, ``rounds``, ``best_seed``.
    """

    plan: Plan
    ttft_s: float
    details: dict[str, Any] = field(default_factory=dict)
    objective: str = "ttft"
    value_s: float = math.nan


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
    n_last = scenario.n_blocks - 1
    by_last = min(
        (
            (0.0 if d.holds(n_last) else d.startup + last.weight_bytes / d.load_bandwidth) + last.flops / d.flops + r
            for d, r in zip(scenario.devices, ret, strict=True)
            if last.memory_bytes <= d.memory
        ),
        default=math.inf,
    )
    return max(relaxed_lower_bound_s(scenario), by_volume, by_last), "relaxed warm / parallel loading"


def _objective_lower_bound(scenario: Scenario, objective: str) -> tuple[float, str]:
    """A lower bound on ``objective``: the TTFT bound plus what decoding or the burst adds at least.

    TPOT >= the cheapest token delivery + sum over blocks of the cheapest decode of the block + the
    cheapest token return; E2E >= TTFT bound + (T - 1) x that; a burst's request ``r`` ends at least
    ``(r - 1)`` times the last block's cheapest compute after the first (the last stage serves them in
    turn), so max completion >= TTFT bound + (R - 1) x that, mean >= TTFT bound + (R - 1) / 2 x that.
    """
    from coldpipe.core.simulator import block_decode_s

    wl = scenario.workload
    if objective == "tpot" or (objective == "e2e" and wl.new_tokens > 1):
        src, devs = scenario.source, scenario.devices
        tpot = (
            min(transfer_s(scenario, src, d.name, wl.token_bytes) for d in devs)
            + sum(
                min(block_decode_s(scenario, l, d.name) for d in devs if b.memory_bytes <= d.memory)
                for l, b in enumerate(scenario.blocks)
            )
            + min(transfer_s(scenario, d.name, src, wl.token_bytes) for d in devs)
        )
        if objective == "tpot":
            return tpot, "cheapest decode per block"
        ttft, kind = _lower_bound(scenario)
        return ttft + (wl.new_tokens - 1) * tpot, kind + " + (T-1) x cheapest decode"
    ttft, kind = _lower_bound(scenario)
    if wl.requests == 1:
        return ttft, kind
    last = scenario.blocks[-1].flops / max(d.flops for d in scenario.devices)
    share = (wl.requests - 1) * (1.0 if wl.completion == "max" else 0.5)
    return ttft + share * last, kind + " + burst queue"


def _seed_orders(scenario: Scenario, objective: str = "ttft") -> list[tuple[str, tuple[int, ...]]]:
    """Whole-cluster orders by simple keys; the order DP picks a subsequence of each.

    Decoding objectives add keys by memory bandwidth (a decode step reads every weight once), bursts
    a key by the time to compute an even share ``requests`` times.
    """
    devs = scenario.devices
    wl = scenario.workload
    model_bytes = sum(b.weight_bytes for b in scenario.blocks)
    model_flops = sum(b.flops for b in scenario.blocks)
    n = len(devs)
    share = model_bytes / min(n, scenario.n_blocks)
    flops_share = model_flops / min(n, scenario.n_blocks)
    keys: dict[str, Any] = {
        "startup": lambda d: (d.startup, -d.load_bandwidth),
        "load-share": lambda d: d.startup + min(share, d.memory) / d.load_bandwidth,
        "flops": lambda d: -d.flops,
        "memory": lambda d: -d.memory,
        "load-then-compute": lambda d: d.startup + min(share, d.memory) / d.load_bandwidth + flops_share / d.flops,
        "file": None,
    }
    if objective in ("tpot", "e2e") and all(d.mem_bandwidth for d in devs):
        steps = wl.new_tokens - 1
        keys["mem-bandwidth"] = lambda d: -d.mem_bandwidth
        if objective == "e2e":
            keys["e2e-share"] = (
                lambda d: d.startup
                + min(share, d.memory) / d.load_bandwidth
                + flops_share / d.flops
                + steps * min(share, d.memory) / d.mem_bandwidth
            )
    if objective == "ttft" and wl.requests > 1:
        keys["burst-share"] = (
            lambda d: d.startup + min(share, d.memory) / d.load_bandwidth + wl.requests * flops_share / d.flops
        )
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


def _check_objective(scenario: Scenario, overlap: str, objective: str) -> None:
    if overlap not in OVERLAPS:
        raise InputError("overlap", f"unknown overlap mode {overlap!r}", f"use one of {list(OVERLAPS)}")
    if objective not in OBJECTIVES:
        raise InputError("objective", f"unknown objective {objective!r}", f"use one of {list(OBJECTIVES)}")


def plan_heuristic(
    scenario: Scenario,
    overlap: Overlap = "layer",
    *,
    objective: str = "ttft",
    beam_width: int = 7,
    max_rounds: int = 30,
    seed_types: int = 8,
    candidates_per_key: int = 3,
    max_orders: int | None = None,
    first_improvement: bool = False,
    screen_front: int = 1,
) -> HeuristicResult:
    """A good plan for any cluster size (not proven optimal); see the module docstring.

    ``objective``: ``ttft`` (with a burst, ``workload.requests > 1``: its max or mean first-token
    completion), ``e2e`` or ``tpot``, as :func:`~coldpipe.core.simulator.objective_s` defines them. The
    order search optimises the objective itself (a burst's mean: its max and one request's TTFT, then a
    plan-level local search for the mean from both plans). ``max_orders`` defaults to 50 000 (10 000 for
    the Pareto objectives: e2e under ``layer``/``stage`` and bursts, whose order DP costs more; 5 000 for a
    burst under ``none``). ``screen_front``: pairs per state when a neighbour is screened (0: exact).

    Raises :class:`~coldpipe.errors.Infeasible` if no order admits a plan (for clusters within the
    exact DP's range, with the DP's shortfall message), :class:`~coldpipe.errors.InputError` for an
    unknown objective or overlap, a burst with ``e2e``, or a decoding objective on a device without
    ``mem_bandwidth``.
    """
    _check_objective(scenario, overlap, objective)
    wl = scenario.workload
    if objective == "e2e" and wl.requests > 1:
        return _plan_burst_e2e(
            scenario,
            overlap,
            beam_width=beam_width,
            max_rounds=max_rounds,
            seed_types=seed_types,
            candidates_per_key=candidates_per_key,
            max_orders=max_orders,
            first_improvement=first_improvement,
            screen_front=screen_front,
        )
    mean_burst = objective == "ttft" and wl.requests > 1 and wl.completion == "mean"
    if mean_burst:
        from coldpipe.core.objectives import replace_workload

        search_sc = replace_workload(scenario, completion="max")
    else:
        search_sc = scenario
    problem = _Problem.build(search_sc, overlap, objective)
    if max_orders is None:
        if problem.kind == _KIND_SCALAR:
            max_orders = 50_000
        else:  # a burst under "none" runs the Pareto order DP once per load-end threshold
            max_orders = 5_000 if problem.mode == _MODE_ADDITIVE else 10_000
    stages, details = _search(
        problem,
        search_sc,
        overlap,
        objective,
        beam_width=beam_width,
        max_rounds=max_rounds,
        seed_types=seed_types,
        candidates_per_key=candidates_per_key,
        max_orders=max_orders,
        first_improvement=first_improvement,
        screen_front=screen_front,
    )
    names = problem.names
    plan = Plan(tuple(Stage(names[k], a, b) for k, a, b in stages))
    if mean_burst:
        from coldpipe.core.objectives import _local_search

        # plan-level local search for the mean, from the max plan; unused devices: the best-ranked few
        rankings = [order for _, order in _seed_orders(scenario, objective)]
        shortlist: list[str] = []
        for order in rankings:
            taken = [names[k] for k in order if names[k] not in plan.devices][:candidates_per_key]
            shortlist.extend(nm for nm in taken if nm not in shortlist)
        # second seed: the single request's TTFT plan (the mean lies between the first and the last request)
        from coldpipe.core.objectives import replace_workload

        one = replace_workload(scenario, requests=1)
        ttft_stages, _ = _search(
            _Problem.build(one, overlap),
            one,
            overlap,
            "ttft",
            beam_width=beam_width,
            max_rounds=max_rounds,
            seed_types=seed_types,
            candidates_per_key=candidates_per_key,
            max_orders=max_orders,
            first_improvement=first_improvement,
            screen_front=screen_front,
        )
        ttft_plan = Plan(tuple(Stage(names[k], a, b) for k, a, b in ttft_stages))
        for order in rankings:
            taken = [names[k] for k in order if names[k] not in ttft_plan.devices][:candidates_per_key]
            shortlist.extend(nm for nm in taken if nm not in shortlist)
        seeds = [plan] if ttft_plan == plan else [plan, ttft_plan]
        plan, n_eval = _local_search(scenario, seeds, overlap, unused=shortlist, max_evaluations=20_000)
        details["method"] += "; then local search on plans for the mean completion from it and the TTFT plan"
        details["plans_evaluated"] = n_eval
    value = objective_s(scenario, plan, overlap, objective)
    ttft = value if objective == "ttft" and wl.requests == 1 else simulate(scenario, plan, overlap).ttft_s
    lb, lb_kind = _objective_lower_bound(scenario, objective)
    details.update(
        {
            "lower_bound": lb,
            "lower_bound_kind": lb_kind,
            "gap_to_lower_bound": value / lb - 1.0 if lb > 0 else math.inf,
        }
    )
    return HeuristicResult(plan, ttft, details, objective, value)


BURST_E2E_EVALUATIONS = 1_500
"""Plans the local search for a decoding burst times (each costs requests x new_tokens jobs in the simulator)."""


def _plan_burst_e2e(scenario: Scenario, overlap: Overlap, **options: Any) -> HeuristicResult:
    """``e2e`` with a burst (each request's last token; max or mean): a plan-level local search.

    The requests' decode steps interleave on the stages (:func:`~coldpipe.core.simulator.burst_schedule`),
    so no order DP is exact for it. As :mod:`coldpipe.core.burst_plan` does within the exact range, from
    the neighbouring problems' plans — here the heuristic's: the burst's max first-token completion, one
    request's e2e, the tpot — best-improvement local search over :func:`~coldpipe.core.objectives._neighbours`
    (the best-ranked unused devices only), every plan timed by the simulator, at most
    :data:`BURST_E2E_EVALUATIONS` plans.
    """
    from coldpipe.core.objectives import _local_search, replace_workload

    wl = scenario.workload
    one = replace_workload(scenario, requests=1)
    if wl.new_tokens == 1:  # the last token is the first one
        res = plan_heuristic(scenario, overlap, objective="ttft", **options)
        return HeuristicResult(
            res.plan, res.ttft_s, res.details, "e2e", objective_s(scenario, res.plan, overlap, "e2e")
        )
    seeds: list[Plan] = []
    for sub, objective in ((replace_workload(scenario, completion="max"), "ttft"), (one, "e2e"), (one, "tpot")):
        plan = plan_heuristic(sub, overlap, objective=objective, **options).plan
        if plan not in seeds:
            seeds.append(plan)
    seeds.sort(key=lambda p: objective_s(scenario, p, overlap, "e2e"))  # the budget goes to the best first
    names = [d.name for d in scenario.devices]
    used = {name for p in seeds for name in p.devices}
    shortlist: list[str] = []
    for _, order in _seed_orders(scenario, "e2e"):
        taken = [names[k] for k in order if names[k] not in used][: options["candidates_per_key"]]
        shortlist.extend(nm for nm in taken if nm not in shortlist)
    plan, n_eval = _local_search(
        scenario, seeds, overlap, unused=shortlist, max_evaluations=BURST_E2E_EVALUATIONS, objective="e2e"
    )
    value = objective_s(scenario, plan, overlap, "e2e")
    lb, lb_kind = _objective_lower_bound(one, "e2e")  # every request's last token: at least one request's e2e
    details: dict[str, Any] = {
        "method": "local search on plans from the heuristic's burst-max, e2e and tpot plans",
        "plans_evaluated": n_eval,
        "lower_bound": lb,
        "lower_bound_kind": lb_kind,
        "gap_to_lower_bound": value / lb - 1.0 if lb > 0 else math.inf,
    }
    return HeuristicResult(plan, simulate(scenario, plan, overlap).ttft_s, details, "e2e", value)


def _search(
    problem: _Problem,
    scenario: Scenario,
    overlap: Overlap,
    objective: str,
    *,
    beam_width: int,
    max_rounds: int,
    seed_types: int,
    candidates_per_key: int,
    max_orders: int,
    first_improvement: bool,
    screen_front: int,
) -> tuple[tuple[tuple[int, int, int], ...], dict[str, Any]]:
    """Seeds, then best-improvement local search over device orders; returns the best stages found."""
    names = problem.names
    n_dev = len(names)
    pareto = problem.kind != _KIND_SCALAR
    evaluated: dict[tuple[int, ...], tuple[float, tuple[tuple[int, int, int], ...]]] = {}
    dp_runs = 0

    def evaluate(order: tuple[int, ...]) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        nonlocal dp_runs
        if order not in evaluated:
            if pareto and problem.mode != _MODE_ADDITIVE:
                # the screen's plan is the incumbent of the exact run: far fewer pairs survive
                best, stages = problem.run_pareto(order, math.inf, math.inf, 1)
                if stages:
                    exact = problem.run_pareto(order, math.inf, best * (1 + 1e-12))
                    best, stages = exact if exact[1] else (best, stages)
                dp_runs += 2
            else:
                best, stages, runs = _solve(problem, order)
                dp_runs += runs
            evaluated[order] = (best, stages)
        return evaluated[order]

    # "none": a move is judged with two load-end thresholds only (the current plan's last load end
    # and the next candidate below it), then an accepted move is re-solved with the full search.
    all_taus = load_end_candidates(problem.tables) if problem.mode == _MODE_ADDITIVE else np.zeros(0)
    quick_cache: dict[tuple[tuple[int, ...], tuple[float, ...]], tuple[float, tuple[tuple[int, int, int], ...]]] = {}
    values: dict[tuple[int, ...], float] = {}  # scalar "layer"/"stage": neighbours scored from the current rows
    bounded: dict[tuple[int, ...], float] = {}  # Pareto "layer"/"stage": orders whose screen did not beat this
    screened: dict[tuple[int, ...], tuple[float, tuple[tuple[int, int, int], ...]]] = {}  # and those whose did
    cur_now: list[Any] = [(), None, None]  # the current sequence, its DP rows and best_upto

    def n_orders() -> int:
        return len(evaluated) + len(quick_cache) + len(values) + len(bounded) + len(screened)

    def evaluate_move(
        order: tuple[int, ...], stages_now: tuple[tuple[int, int, int], ...], bound: float
    ) -> tuple[float, tuple[tuple[int, int, int], ...]]:
        """A value that is the order's optimum or a real plan's value (never optimistic); the stages,
        or () when only the value is known. Pareto: the optimum if it is below ``bound``, else inf."""
        nonlocal dp_runs
        if problem.mode != _MODE_ADDITIVE:
            if order in evaluated:
                return evaluated[order]
            if pareto:  # screened with capped fronts: a real plan's value if it beats the bound
                if order in screened:
                    return screened[order]
                if bounded.get(order, -math.inf) >= bound:
                    return math.inf, ()
                best, stages = problem.run_pareto(order, math.inf, bound, screen_front)
                dp_runs += 1
                if stages:
                    bounded.pop(order, None)
                    screened[order] = (best, stages)
                    return best, stages
                bounded[order] = bound
                return math.inf, ()
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
            best, stages, runs = _solve(problem, order, taus, max_front=screen_front)
            dp_runs += runs
            quick_cache[key] = (best, stages)
        return quick_cache[key]

    # 1. Seeds.
    seed_orders = _seed_orders(scenario, objective)
    seeds: list[tuple[float, str, tuple[int, ...]]] = []
    for name, order in seed_orders:
        val, stages = evaluate(order)
        if stages:
            seeds.append((val, name, tuple(k for k, _, _ in stages)))
    if seeds:
        # Exact optimum of a reduced cluster: the best seed's devices, then the others by the load-share key.
        best_used = min(seeds)[2]
        ranked = list(best_used) + [k for k in seed_orders[1][1] if k not in best_used]
        # the source device stays in the reduced cluster (a scenario's source must be one of its devices)
        subset: list[int] = [names.index(scenario.source)] if scenario.source in names else []
        # the Pareto objectives' exact DP costs more per usage vector: a smaller reduced cluster
        limit = 1 << (seed_types if not pareto else max(1, seed_types - 2))
        for k in ranked:
            if k in subset:
                continue
            trial = scenario.with_devices([scenario.devices[i] for i in sorted([*subset, k])])
            if DeviceTypes.of(trial).n_usage_vectors > limit:
                break
            subset.append(k)
        if len(subset) < n_dev or n_dev <= 1:
            sub = scenario.with_devices([scenario.devices[i] for i in sorted(subset)])
            try:
                if objective == "ttft" and scenario.workload.requests == 1:
                    sub_plan = plan_dp(sub, overlap).plan
                else:
                    from coldpipe.core.objectives import plan_for_objective

                    sub_plan = plan_for_objective(sub, overlap, objective).plan
                index = {nm: k for k, nm in enumerate(names)}
                order = tuple(index[st.device] for st in sub_plan.stages)
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
    rankings = [order for _, order in seed_orders]
    for val0, seed_name, used0 in starts:
        cur_val, cur = val0, used0
        for _ in range(max_rounds):
            rounds_total += 1
            cands: list[int] = []
            seen_types: set[int] = set()  # identical candidates once (a type in use may still add a device)
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
            if problem.mode != _MODE_ADDITIVE and not pareto:
                _, _, rows, best_upto = problem.run_full(cur)
                cur_now[:] = [cur, rows, best_upto]
            for mv in _moves(cur, cands):
                if n_orders() >= max_orders:
                    break
                val, stages = evaluate_move(mv, cur_stages, step_val * (1 - 1e-12))
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

    details: dict[str, Any] = {
        "method": f"local search over device orders (beam {len(starts)}), exact split per order",
        "orders_evaluated": n_orders(),
        "max_orders": max_orders,
        "dp_runs": dp_runs,
        "rounds": rounds_total,
        "best_seed": best_seed,
    }
    return best_stages, details
