"""The heuristic's Pareto kernel: :func:`~coldpipe.planning.kernels.usage_pareto_dp` restricted to a fixed order.

State ``(p, i)``: blocks ``0..i-1`` placed on a subsequence of positions ``0..p-1`` of the order
(:mod:`coldpipe.planning.order`). The stage maps, pair extension and front keeping are
:mod:`.kernels`' own.
"""

from __future__ import annotations

import numpy as np

from coldpipe.planning.kernels import (
    KIND_E2E,
    extend_fronts,
    grow_pool,
    inline,
    jit,
    keep_front,
    mark_front,
    pair_value,
    reserve,
)

__all__ = ["order_pareto_dp"]


@inline
def _cap_front(
    s0: int,
    size: int,
    max_front: int,
    kind: int,
    lam: float,
    p_a: np.ndarray,
    p_d: np.ndarray,
    p_from: np.ndarray,
    p_pos: np.ndarray,
    p_i: np.ndarray,
    p_e: np.ndarray,
    keep_buf: np.ndarray,
) -> tuple[int, np.ndarray]:
    """Keep at most ``max_front`` pairs of the front ``s0..size-1``: the one of least partial objective,
    and evenly spaced others (its two ends first). Returns the new size (and the scratch buffer)."""
    cnt = size - s0
    k_best, v_best = s0, np.inf
    for k in range(s0, size):
        v = pair_value(kind, lam, p_a[k], p_d[k])
        if v < v_best:
            k_best, v_best = k, v
    if keep_buf.shape[0] < cnt:
        keep_buf = np.zeros(2 * cnt, dtype=np.bool_)
    keep = keep_buf
    keep[:cnt] = False
    keep[k_best - s0] = True
    m = max_front - 1
    for r in range(m):
        keep[(r * (cnt - 1)) // (m - 1) if m > 1 else 0] = True
    w = s0
    for k in range(cnt):  # compact in place: w <= s0 + k
        if keep[k]:
            c = s0 + k
            p_a[w], p_d[w] = p_a[c], p_d[c]
            p_from[w], p_pos[w], p_i[w], p_e[w] = p_from[c], p_pos[c], p_i[c], p_e[c]
            w += 1
    return w, keep_buf


@jit
def order_pareto_dp(
    mode: int,  # Mode: LAYER, STAGE, or ADDITIVE with every stage loaded by tau
    kind: int,  # KIND_E2E or KIND_BURST
    lam: float,  # e2e: new_tokens - 1; burst: requests - 1
    tau: float,
    incumbent: float,  # objective of a known plan: anything not strictly better is pruned
    seq: np.ndarray,  # (n,) int64: device type at each position of the order
    rest: np.ndarray,  # (n+1, B+1, 1): lower bound on what blocks i.. add, computed on positions >= p
    cf: np.ndarray,  # prefill tables, as in kernels.usage_pareto_dp
    mp: np.ndarray,
    mem: np.ndarray,
    down: np.ndarray,
    up: np.ndarray,
    ret: np.ndarray,
    grid_load: np.ndarray,
    grid_g: np.ndarray,
    src_type: int,
    prompt_at_ap: float,
    dcf: np.ndarray,  # second tables (decode for e2e; unused by the burst but for the root)
    ddown: np.ndarray,
    dup: np.ndarray,
    dret: np.ndarray,
    dprompt_at_ap: float,
    max_front: int,  # 0: exact; else keep at most this many pairs per state (a quick, never optimistic screen)
) -> tuple[float, int, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``kernels.usage_pareto_dp`` with "usage vector" replaced by "position in an order".

    State ``(p, i)``: blocks ``0..i-1`` placed on a subsequence of positions ``0..p-1``; its front holds
    every non-dominated pair. Row ``p + 1`` is built from row ``p`` only: skip position ``p`` (the same
    pairs) or give it blocks ``i..e``. Each kept pair records the pair it extends, the position and the
    block range of its last stage (a skipped position copies the record as is).

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
    nz = np.zeros((n + 1, n_blocks), dtype=np.int64)  # kernels.mark_front (the root's front at i = 0 in every row)
    p_a[0], p_from[0], p_pos[0], p_i[0], p_e[0] = prompt_at_ap, -1, -1, -1, -1
    p_d[0] = dprompt_at_ap if kind == KIND_E2E else prompt_at_ap
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
    idx_buf = np.empty(32, dtype=np.int64)
    keep_buf = np.zeros(256, dtype=np.bool_)
    no_champ = np.empty(0)  # extend_fronts' candidate filter: off (the heuristic keeps its tie-breaking)
    no_levels = np.full(1, np.inf)
    pre = (cf, mp, mem, down, up, ret, grid_load, grid_g)
    sec = (dcf, ddown, dup, dret)
    for p in range(n):
        t = seq[p]
        for i2 in range(1, n_blocks + 1):
            if size > cand_a.shape[0]:  # a state's candidates come from distinct pool pairs
                cand_a, cand_d, cand_from, cand_pos, cand_i = reserve(size, cand_a, cand_d, cand_from, cand_pos, cand_i)
            e = i2 - 1
            n_cand = 0
            bound = rest[p + 1, i2, 0]
            if i2 < n_blocks:  # skip position p: the pairs of (p, i2) carry over
                for q in range(start[p, i2], stop[p, i2]):
                    value = pair_value(kind, lam, p_a[q], p_d[q])
                    if value + bound >= best:
                        continue
                    if max_front == 1 and n_cand == 1:  # one pair per state: keep the least partial objective
                        if value < pair_value(kind, lam, cand_a[0], cand_d[0]):
                            n_cand = 0
                        else:
                            continue
                    cand_a[n_cand], cand_d[n_cand], cand_from[n_cand] = p_a[q], p_d[q], p_from[q]
                    cand_pos[n_cand], cand_i[n_cand] = p_pos[q], p_i[q]
                    n_cand += 1
            # the stage on position p holds blocks i..e
            i = nz[p, e]
            if i >= 0 and mp[e + 1] - mp[i] <= mem[t]:
                best, best_q, best_p, best_i, n_cand = extend_fronts(
                    mode, kind, lam, tau, max_front, t, e, p, p, src_type, (rest[p + 1, i2], no_levels, 0.0),
                    (best, best_q, best_p, best_i),
                    start, stop, nz, p_a, p_d, pre, sec, n_cand, (cand_a, cand_d, cand_from, cand_pos, cand_i),
                    0.0, no_champ,
                )  # fmt: skip
            if i2 == n_blocks:
                continue
            mark_front(nz, p + 1, i2, n_cand > 0)
            if n_cand == 0:
                continue
            start[p + 1, i2] = size
            if size + n_cand > p_a.shape[0]:
                p_a, p_d, p_from, p_pos, p_i, p_e = grow_pool(size + n_cand, p_a, p_d, p_from, p_pos, p_i, p_e)
            size = keep_front(
                size, n_cand, e, cand_a, cand_d, cand_from, cand_pos, cand_i, p_a, p_d, p_from, p_pos, p_i, p_e,
                idx_buf, 0.0,
            )  # fmt: skip
            if 0 < max_front < size - start[p + 1, i2]:
                size, keep_buf = _cap_front(
                    start[p + 1, i2], size, max_front, kind, lam, p_a, p_d, p_from, p_pos, p_i, p_e, keep_buf
                )
            stop[p + 1, i2] = size
    return best, best_q, best_p, best_i, p_from[:size], p_pos[:size], p_i[:size], p_e[:size]
