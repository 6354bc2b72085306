"""The planners' numba kernels: four forward DPs over the same stage maps, and their shared helpers.

Every kernel walks states and grows a stage of device type ``t`` holding blocks ``i..e``
(inclusive) from them. What a stage does to its input arrival ``alpha`` is written once,
in :func:`stage_terms` and :func:`stage_finish` (``docs/model.md``, "Why the DP is exact"):

- ``layer``:  ``fin = max(alpha + C, G)``, with ``G = startup - W(i)/bw + cf(e + 1) + run`` and
  ``run = max over the stage's non-resident blocks l of (W(l + 1)/bw - cf(l))`` (:func:`block_gate`);
- ``stage``:  ``fin = max(alpha, load_end) + C``;
- ``additive`` (the ``none`` thresholds, warm planning, decode steps): ``fin = alpha + C``, the
  stage allowed only if ``load_end <= tau``.

The tables they read (``cf``, ``wpt``, ``nres``, ``mp``, ``down``, ``up``, ``ret``) are documented
index by index on :class:`coldpipe.planning.tables.StageTables`.

Kernels (state, and who calls them):

- :func:`scalar_dp`: one scalar per ``(row, blocks placed i)`` over a DAG of rows: the usage vectors of
  the exact TTFT DP, or the positions in a fixed device order of the heuristic;
- :func:`usage_pareto_dp`: a front of pairs per ``(s, i)``: exact E2E, bursts and ``none``, pruned by
  the lower bounds of :mod:`coldpipe.planning.suffix`;
- :func:`~coldpipe.planning.order_kernels.order_pareto_dp`: a Pareto front per ``(p, i)``: the
  heuristic's E2E and bursts.

Each is a plain Python function over numpy arrays; :func:`~coldpipe.planning.jit.jit` compiles it
with numba on first use unless ``COLDPIPE_NO_NUMBA`` is set, in which case the identical code runs
interpreted (the differential tests compare both).
"""

from __future__ import annotations

import enum

import numpy as np

from coldpipe.planning.jit import Kernel, inline, jit, numba_enabled

__all__ = [
    "KIND_BURST",
    "KIND_E2E",
    "KIND_NONE",
    "SKIP",
    "Kernel",
    "Mode",
    "block_gate",
    "dominance_weight",
    "extend_fronts",
    "extend_pair",
    "grow",
    "grow_pool",
    "inline",
    "jit",
    "keep_front",
    "mark_front",
    "none_bound",
    "numba_enabled",
    "pair_value",
    "reserve",
    "scalar_dp",
    "stage_finish",
    "stage_grid",
    "stage_terms",
    "usage_pareto_dp",
]


class Mode(enum.IntEnum):
    """How a stage's finish depends on its input arrival and its loading (pass ``int(mode)`` to kernels)."""

    LAYER = 0  # per-block overlap: fin = max(alpha + C, G)
    STAGE = 1  # stage overlap: fin = max(alpha, load_end) + C
    ADDITIVE = 2  # fin = alpha + C, every stage loaded by tau ("none" thresholds, warm, decode)

    @staticmethod
    def of(overlap: str) -> Mode:
        """The mode of a cold-start overlap: ``none`` is the additive DP inside a threshold search."""
        return {"layer": Mode.LAYER, "stage": Mode.STAGE, "none": Mode.ADDITIVE}[overlap]


# What a Pareto pair (a, d) holds (pass as ``kind``).
KIND_E2E = 0  # a: arrival at the AP; d: decode time so far, weighted by lam = new_tokens - 1
KIND_BURST = 1  # a: the first request's arrival at the AP; d: the burst's last request's, lam = requests - 1
KIND_NONE = 2  # a: the latest load end so far; d: additive time at the AP ("none": TTFT = max load end + D)


def dominance_weight(kind: int, lam: float) -> float:
    """The ``w`` of :func:`keep_front`: a pair ``(a, d)`` is dominated by ``(a', d')`` with ``d' <= d`` and
    ``a' + w * d' <= a + w * d``.

    Sound whenever the objective of every completion is ``F(a) + w * (d + rest)`` with ``F`` non-decreasing
    and 1-Lipschitz (``F(a') - F(a) <= a' - a`` for ``a' >= a``): then ``(a', d')`` is never worse. E2E:
    ``F`` is the composed stage maps ``max(alpha + C, G)``, ``max(alpha, L) + C``, ``alpha + X`` of the
    remaining stages and ``w = lam``. ``none``: ``F(a) = max(a, later load ends)``, ``w = 1``. A burst's
    last request is no such sum (its end is ``max(d + K, H(a))``): ``w = 0``, plain Pareto dominance.
    """
    if kind == KIND_E2E:
        return lam
    if kind == KIND_NONE:
        return 1.0
    return 0.0


# --- the stage maps, written once -----------------------------------------------------------------


@inline
def block_gate(t: int, l: int, cf: np.ndarray, wpt: np.ndarray, nres: np.ndarray, inv_bw: np.ndarray) -> float:
    """Block ``l``'s term of the ``layer`` gate on type ``t``: ``W(l + 1)/bw - cf(l)``, -inf if resident."""
    if nres[t, l + 1] > nres[t, l]:
        return wpt[t, l + 1] * inv_bw[t] - cf[t, l]
    return -np.inf


@inline
def stage_terms(
    t: int,
    i: int,
    e: int,
    run: float,
    cf: np.ndarray,
    wpt: np.ndarray,
    nres: np.ndarray,
    startup: np.ndarray,
    inv_bw: np.ndarray,
) -> tuple[float, float]:
    """``(load_end, G)`` of a stage of type ``t`` holding ``i..e`` whose block gates have maximum ``run``.

    ``load_end``: its last block is resident (0 when every block already is).
    """
    load_end = 0.0
    if nres[t, e + 1] > nres[t, i]:
        load_end = startup[t] + (wpt[t, e + 1] - wpt[t, i]) * inv_bw[t]
    g = startup[t] - wpt[t, i] * inv_bw[t] + cf[t, e + 1] + run
    return load_end, g


@inline
def stage_finish(mode: int, alpha: float, compute: float, load_end: float, g: float) -> float:
    """When the stage's last block is computed, its input having arrived at ``alpha``."""
    if mode == Mode.LAYER:
        return max(alpha + compute, g)
    if mode == Mode.STAGE:
        return max(alpha, load_end) + compute
    return alpha + compute


@inline
def extend_pair(
    mode: int,
    kind: int,
    lam: float,
    at_source: bool,
    pa: float,
    pd: float,
    down_in: float,
    ddown_in: float,
    compute: float,
    load_end: float,
    g: float,
    dec: float,
    out_a: float,
    out_d: float,
) -> tuple[float, float, float]:
    """A pair ``(pa, pd)`` through one stage: the new pair and its partial objective ``(a2, d2, value)``.

    ``at_source``: the stage's input is already on its device (the prompt, and each new token); else it
    comes down the AP link (``down_in``; ``ddown_in`` for a decode step's token).
    """
    if kind == KIND_NONE:  # additive time through the stage; the latest load end so far
        q = 0.0 if at_source else pd + down_in
        d2 = q + compute + out_a
        a2 = max(pa, load_end)
        return a2, d2, a2 + d2
    if at_source:
        alpha, d_in, q_in = 0.0, 0.0, 0.0
    else:
        alpha, d_in, q_in = pa + down_in, pd + ddown_in, pd + down_in
    fin = stage_finish(mode, alpha, compute, load_end, g)
    a2 = fin + out_a
    if kind == KIND_E2E:
        d2 = d_in + dec + out_d
        return a2, d2, a2 + lam * d2
    # the burst's last request: behind its predecessor on this stage, or behind request 1 by
    # (requests - 1) stage times (a flow shop of identical jobs)
    d2 = max(q_in + compute, fin + lam * compute) + out_a
    return a2, d2, d2


@inline
def pair_value(kind: int, lam: float, a: float, d: float) -> float:
    """The partial objective of a pair: ``a + lam * d`` (E2E), ``d`` (a burst's last request), ``a + d`` (none)."""
    if kind == KIND_E2E:
        return a + lam * d
    if kind == KIND_NONE:
        return a + d
    return d


@inline
def none_bound(a: float, levels: np.ndarray, rest_row: np.ndarray) -> float:
    """What completing a state adds at least under ``none`` to a pair whose latest load end is ``a``.

    ``min over k of max(a, levels[k - 1]) + rest_row[k]`` (``levels[-1]`` read as ``-inf``): a
    completion whose latest load end lies in ``(levels[k - 1], levels[k]]`` takes at least
    ``rest_row[k]`` of additive time (:mod:`coldpipe.planning.suffix`) and moves the TTFT's load term to
    at least ``max(a, levels[k - 1])``.
    """
    out = a + rest_row[0]
    for k in range(1, levels.shape[0]):
        out = min(out, max(a, levels[k - 1]) + rest_row[k])
    return out


# --- Pareto pools: growing arrays, pushing a candidate, keeping the front --------------------------


@inline
def grow(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` itself if it holds ``size`` items, else a copy with (at least) twice the room."""
    if size <= a.shape[0]:
        return a
    out = np.empty(max(size, 2 * a.shape[0]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@inline
def reserve(
    n: int, cand_a: np.ndarray, cand_d: np.ndarray, cand_from: np.ndarray, cand_k: np.ndarray, cand_i: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The candidate arrays with room for ``n`` candidates, grown once per state, never in the hot loop.

    A candidate ``c`` is the pair ``(cand_a[c], cand_d[c])`` reached from pool pair ``cand_from[c]`` by a
    stage ``(cand_k[c], cand_i[c]..)``. A state's candidates come from distinct pool pairs (each pair is
    in one state, and that state is one stage away from the new one in one way only), so room for the
    pool's size is room enough; the helpers that write candidates then return no arrays, which would
    cost more than their work.
    """
    return grow(cand_a, n), grow(cand_d, n), grow(cand_from, n), grow(cand_k, n), grow(cand_i, n)


@inline
def grow_pool(
    n: int,
    p_a: np.ndarray,
    p_d: np.ndarray,
    p_from: np.ndarray,
    p_k: np.ndarray,
    p_i: np.ndarray,
    p_e: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pool's arrays with room for ``n`` pairs (called only when they lack it)."""
    return grow(p_a, n), grow(p_d, n), grow(p_from, n), grow(p_k, n), grow(p_i, n), grow(p_e, n)


@inline
def keep_front(
    size: int,
    n_cand: int,
    e: int,
    cand_a: np.ndarray,
    cand_d: np.ndarray,
    cand_from: np.ndarray,
    cand_k: np.ndarray,
    cand_i: np.ndarray,
    p_a: np.ndarray,
    p_d: np.ndarray,
    p_from: np.ndarray,
    p_k: np.ndarray,
    p_i: np.ndarray,
    p_e: np.ndarray,
    idx_buf: np.ndarray,
    w: float,
) -> int:
    """Append the front of the candidates to the pool from index ``size``; returns the new size.

    The pool has room for ``size + n_cand`` pairs (:func:`grow_pool`). A pair ``(a, d)`` is dropped when
    another has ``d' <= d`` and ``a' + w * d' <= a + w * d`` (:func:`dominance_weight`; ``w = 0``:
    plain Pareto dominance). Sorted by arrival (stably), each kept pair is strictly better in the second
    coordinate than every earlier one, and it removes the earlier pairs whose ``a + w * d`` is no less
    than its own: those form the tail of the kept list, whose ``a + w * d`` strictly increases.
    """
    if n_cand > idx_buf.shape[0]:
        order = np.argsort(cand_a[:n_cand], kind="mergesort")
    else:  # a stable insertion sort: no allocation for the usual short lists
        order = idx_buf
        for k in range(n_cand):
            j = k
            while j > 0 and cand_a[order[j - 1]] > cand_a[k]:
                order[j] = order[j - 1]
                j -= 1
            order[j] = k
    first = size
    best_d = np.inf
    for k in range(n_cand):
        c = order[k]
        if cand_d[c] < best_d:
            v = cand_a[c] + w * cand_d[c]
            while size > first and p_a[size - 1] + w * p_d[size - 1] >= v:
                size -= 1  # no later and no worse in d, no worse in a + w * d: dominated (w = 0: same arrival)
            p_a[size], p_d[size] = cand_a[c], cand_d[c]
            p_from[size], p_k[size], p_i[size], p_e[size] = cand_from[c], cand_k[c], cand_i[c], e
            size += 1
            best_d = cand_d[c]
    return size


# --- growing one stage from a state, written once for the usage and the order DPs -----------------


@jit
def stage_grid(
    cf: np.ndarray, wpt: np.ndarray, nres: np.ndarray, mp: np.ndarray, startup: np.ndarray, inv_bw: np.ndarray,
    mem: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(load_end, g)``, both ``(T, B, B)``: :func:`stage_terms` of every stage ``(t, i..e)`` that fits.

    The Pareto DPs read a stage's terms from here instead of growing its gate block by block, so that
    they can visit only the states whose fronts hold pairs. Entries of stages that do not fit are
    undefined.
    """
    n_types = cf.shape[0]
    n_blocks = mp.shape[0] - 1
    load_end = np.empty((n_types, n_blocks, n_blocks))
    g = np.empty((n_types, n_blocks, n_blocks))
    for t in range(n_types):
        for e in range(n_blocks):
            run = -np.inf
            for i in range(e, -1, -1):
                if mp[e + 1] - mp[i] > mem[t]:
                    break
                run = max(run, block_gate(t, i, cf, wpt, nres, inv_bw))
                load_end[t, i, e], g[t, i, e] = stage_terms(t, i, e, run, cf, wpt, nres, startup, inv_bw)
    return load_end, g


@inline
def mark_front(nz: np.ndarray, row: int, i: int, filled: bool) -> None:
    """Record in ``nz[row, i]`` the largest ``i' <= i`` whose front in ``row`` holds pairs (-1: none)."""
    if filled:
        nz[row, i] = i
    elif i == 0:
        nz[row, i] = -1
    else:
        nz[row, i] = nz[row, i - 1]


@inline
def extend_fronts(
    mode: int,
    kind: int,
    lam: float,
    tau: float,
    max_front: int,
    t: int,
    e: int,
    row: int,
    k_rec: int,
    src_type: int,
    bound: tuple[np.ndarray, np.ndarray, float],  # on the rest: (rest[s, i, :], levels, rest_peak[s, i])
    incumbent: tuple[float, int, int, int],  # (best, best_q, best_k, best_i) so far
    start: np.ndarray,
    stop: np.ndarray,
    nz: np.ndarray,
    p_a: np.ndarray,
    p_d: np.ndarray,
    pre: tuple[np.ndarray, ...],  # (cf, mp, mem, down, up, ret, load_end, g): stage_grid's two last
    sec: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],  # (dcf, ddown, dup, dret)
    n_cand: int,
    cands: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],  # (a, d, from, k, i)
    w: float,
    champ: np.ndarray,  # (4,): the candidates of least d and least a + w * d so far (see below), or (0,)
) -> tuple[float, int, int, int, int]:
    """Every stage of type ``t`` ending at block ``e`` (``i`` downwards from ``e``) from every pair of the
    fronts ``start[row, i]..stop[row, i]``: candidates for the state after block ``e``, or closed plans.

    With a ``champ`` of 4 entries (``d`` and ``a + w * d`` of the candidate of least ``d``, then those of
    the candidate of least ``a + w * d``, so far; reset to inf for each new state), a candidate that
    either of them dominates (:func:`keep_front`) is not written: most are, and :func:`keep_front` would
    sort them only to drop them. Each front is then read from its last pair (latest arrival, least ``d``)
    back, since a stage maps early arrivals to one output (its gate) and the last such pair dominates.

    Only the fronts that hold pairs are visited (``nz``, :func:`mark_front`). A pair whose partial
    objective plus a lower bound on what the rest adds (``bound``, of :mod:`coldpipe.planning.suffix`)
    reaches ``best`` is pruned: ``rest[0]``; under ``KIND_NONE`` :func:`none_bound`, the pair's latest
    load end raised to the rest's least (``rest_peak``); for a burst also the first request's arrival plus
    ``rest[0]`` plus ``lam`` times the rest's least slowest stage compute (``rest_peak``: the last request
    leaves that stage ``lam`` of its computes after the first). With ``e = B - 1`` a pair closes the plan.
    ``max_front == 1`` keeps one candidate (the least partial objective). The candidate arrays have
    room (:func:`reserve`). Returns ``(best, best_q, best_k, best_i, n_cand)``. (Fewer than 31
    arguments: numba inlines no call with more.)
    """
    cf, mp, mem, down, up, ret, grid_load, grid_g = pre
    dcf, ddown, dup, dret = sec
    cand_a, cand_d, cand_from, cand_k, cand_i = cands
    best, best_q, best_k, best_i = incumbent
    rest_row, levels, rest_peak = bound
    n_blocks = mp.shape[0] - 1
    last = e == n_blocks - 1
    filt = champ.shape[0] > 0 and max_front != 1
    i = nz[row, e]
    while i >= 0:
        if mp[e + 1] - mp[i] > mem[t]:
            break
        load_end, g = grid_load[t, i, e], grid_g[t, i, e]
        if mode == Mode.ADDITIVE and load_end > tau:
            break
        compute = cf[t, e + 1] - cf[t, i]
        dec = dcf[t, e + 1] - dcf[t, i]
        if last:
            out_a, out_d = ret[t], dret[t]
        else:
            out_a, out_d = up[t, e], dup[t, e]
        at_source = i == 0 and t == src_type
        n_q = stop[row, i] - start[row, i]
        for k in range(n_q):
            q = stop[row, i] - 1 - k if filt else start[row, i] + k
            a2, d2, value = extend_pair(
                mode, kind, lam, at_source, p_a[q], p_d[q], down[t, i], ddown[t, i],
                compute, load_end, g, dec, out_a, out_d,
            )  # fmt: skip
            if kind == KIND_NONE:
                if rest_peak > a2:  # every completion loads until then: an earlier load end is worth no more
                    a2 = rest_peak
                    value = a2 + d2
                lb = d2 + none_bound(a2, levels, rest_row)
            else:
                lb = value + rest_row[0]
                if kind == KIND_BURST:
                    lb = max(lb, a2 + rest_row[0] + lam * rest_peak)
            if lb >= best:
                continue
            if last:
                best, best_q, best_k, best_i = value, q, k_rec, i
                continue
            if filt:
                v = a2 + w * d2
                if (champ[0] <= d2 and champ[1] <= v) or (champ[3] <= d2 and champ[2] <= v):
                    continue  # dominated by an earlier candidate
                if d2 < champ[0] or (d2 == champ[0] and v < champ[1]):
                    champ[0], champ[1] = d2, v
                if v < champ[2] or (v == champ[2] and d2 < champ[3]):
                    champ[2], champ[3] = v, d2
            if max_front == 1 and n_cand == 1:  # one pair per state: keep the least partial objective
                if value < pair_value(kind, lam, cand_a[0], cand_d[0]):
                    n_cand = 0
                else:
                    continue
            cand_a[n_cand], cand_d[n_cand], cand_from[n_cand], cand_k[n_cand], cand_i[n_cand] = a2, d2, q, k_rec, i
            n_cand += 1
        i = nz[row, i - 1] if i > 0 else -1
    return best, best_q, best_k, best_i, n_cand


# --- the exact DPs over usage vectors ---------------------------------------------------------------


SKIP = -2  # scalar_dp's pred marker: the entry was reached by a skip edge (no stage)


@jit
def scalar_dp(
    mode: int,
    tau: float,
    edge_start: np.ndarray,  # (rows + 1,) int64: row r's out-edges are edge_start[r]..edge_start[r + 1] - 1
    edge_type: np.ndarray,  # (edges,) int64: the device type a stage on that edge uses
    edge_to: np.ndarray,  # (edges,) int64: the row the edge leads to (> r: rows are in topological order)
    skip_to: np.ndarray,  # (rows,) int64: the row a skip edge leads to (no stage), -1 for none
    arrive: np.ndarray,  # (rows, B): A[r, i] below; rows < start_row (and the start) filled by the caller
    start_row: int,  # first row to extend (rows before it are taken as given)
    best0: float,  # best complete plan among stages from rows < start_row
    cf: np.ndarray,  # (T, B+1): compute seconds of blocks 0..l-1 on type t
    wpt: np.ndarray,  # (T, B+1): bytes type t must load for blocks 0..l-1 (its resident blocks count 0)
    nres: np.ndarray,  # (T, B+1): how many of blocks 0..l-1 are not resident on type t
    mp: np.ndarray,  # (B+1,): memory bytes (weights + KV) of blocks 0..l-1
    startup: np.ndarray,  # (T,) s
    inv_bw: np.ndarray,  # (T,) s/byte (0 for infinite load bandwidth)
    mem: np.ndarray,  # (T,) bytes
    down: np.ndarray,  # (T, B): seconds from the AP to type t for the input of a stage starting at block i
    up: np.ndarray,  # (T, B): seconds from type t to the AP after block e
    ret: np.ndarray,  # (T,): seconds for the token from type t back to the source
    src_type: int,  # type of the source device, -1 if the source is the AP
) -> tuple[float, int, int, int, np.ndarray, np.ndarray, np.ndarray]:
    """The scalar DP over a DAG of rows: ``A[r, i]`` = earliest time the output of block ``i - 1`` (the
    prompt if ``i == 0``) is at the AP, with blocks ``0..i-1`` placed on the devices the path to ``r`` used.

    The exact planner's rows are usage vectors (an edge adds one device of a type: :mod:`.tables`); the
    heuristic's are positions in a fixed device order (an edge gives the next position a stage, a skip
    edge passes it by: :mod:`coldpipe.planning.order`). A stage on edge ``(t, r2)`` from ``(r, i)``
    holding ``i..e`` relaxes ``A[r2, e + 1]``, or closes the plan when ``e = B - 1``.

    Returns ``(best, r, i, t, pred_i, pred_t, best_upto)``: the plan ends with a stage of type ``t``
    holding ``i..B-1`` from row ``r``; ``pred_i[r, i]`` / ``pred_t[r, i]`` are the first block and type of
    the stage that led to ``(r, i)`` (``pred_i == SKIP``: a skip edge); ``best_upto[r]``: the best
    complete plan from rows ``< r``. Started at ``start_row > 0`` from another DAG's rows with the same
    prefix, ``best`` is this DAG's optimum but ``pred`` is filled only from ``start_row`` on.
    """
    n_rows = arrive.shape[0]
    n_blocks = mp.shape[0] - 1
    pred_i = np.full((n_rows, n_blocks), -1, dtype=np.int64)
    pred_t = np.full((n_rows, n_blocks), -1, dtype=np.int64)
    best_upto = np.full(n_rows, np.inf)
    best = best0
    best_r, best_i, best_t = -1, -1, -1
    for r in range(start_row, n_rows):
        best_upto[r] = best
        sk = skip_to[r]
        for i in range(n_blocks):
            a = arrive[r, i]
            if a == np.inf:
                continue
            if sk >= 0 and a < arrive[sk, i]:
                arrive[sk, i] = a
                pred_i[sk, i] = SKIP
            for k in range(edge_start[r], edge_start[r + 1]):
                t = edge_type[k]
                r2 = edge_to[k]
                alpha = 0.0 if (i == 0 and t == src_type) else a + down[t, i]  # the prompt may be on it
                run = -np.inf
                for e in range(i, n_blocks):
                    if mp[e + 1] - mp[i] > mem[t]:
                        break
                    run = max(run, block_gate(t, e, cf, wpt, nres, inv_bw))
                    load_end, g = stage_terms(t, i, e, run, cf, wpt, nres, startup, inv_bw)
                    if mode == Mode.ADDITIVE and load_end > tau:
                        break
                    fin = stage_finish(mode, alpha, cf[t, e + 1] - cf[t, i], load_end, g)
                    if e == n_blocks - 1:
                        total = fin + ret[t]
                        if total < best:
                            best, best_r, best_i, best_t = total, r, i, t
                    else:
                        v = fin + up[t, e]
                        if v < arrive[r2, e + 1]:
                            arrive[r2, e + 1] = v
                            pred_i[r2, e + 1] = i
                            pred_t[r2, e + 1] = t
    return best, best_r, best_i, best_t, pred_i, pred_t, best_upto


@jit
def usage_pareto_dp(
    mode: int,  # Mode: LAYER, STAGE, or ADDITIVE with every stage loaded by tau (the "none" thresholds)
    kind: int,  # what a pair holds: KIND_E2E, KIND_BURST or KIND_NONE
    lam: float,  # e2e: new_tokens - 1 (weight of the decode time); burst: requests - 1
    tau: float,
    incumbent: float,  # objective of a known plan: anything not strictly better is pruned
    n_states: int,
    strides: np.ndarray,
    counts: np.ndarray,
    cf: np.ndarray,  # prefill tables, as in scalar_dp
    mp: np.ndarray,
    mem: np.ndarray,
    down: np.ndarray,
    up: np.ndarray,
    ret: np.ndarray,
    grid_load: np.ndarray,  # (T, B, B): stage_grid of the prefill tables
    grid_g: np.ndarray,
    src_type: int,
    prompt_at_ap: float,
    dcf: np.ndarray,  # second tables (decode for e2e: per-block decode seconds prefix, token transfers)
    ddown: np.ndarray,
    dup: np.ndarray,
    dret: np.ndarray,
    dprompt_at_ap: float,
    w: float,  # dominance weight (dominance_weight; 0: plain Pareto dominance)
    levels: np.ndarray,  # (K,): the loading limits of rest (suffix.suffix_dp); [inf] but for KIND_NONE
    rest: np.ndarray,  # (n_states, B+1, K): lower bound on what blocks i.. add to the objective after usage s
    rest_peak: np.ndarray,  # (n_states, B+1): suffix.suffix_dp's (load ends for KIND_NONE, compute for a burst)
    max_front: int,  # 0: exact; 1: one pair per state (a real plan, quickly: an incumbent)
) -> tuple[float, int, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pareto DP over pairs ``(a, d)`` per ``(s, i)`` (``kind``; :mod:`.exact`, "E2E").

    A pair that is later *and* worse in the second coordinate than another can never lead to a better
    objective: both coordinates grow through non-decreasing maps and the objective is non-decreasing in
    both; with ``w > 0`` the dominance is tighter (:func:`dominance_weight`). States are completed in
    "pull" order (every predecessor has a smaller usage index), so each front is complete when it is
    extended. Pairs whose partial objective plus a lower bound on the rest (:func:`extend_fronts`)
    reaches the incumbent are pruned. Returns
    ``(best, q, t, i, p_from, p_t, p_i, p_e)``:
    the last stage (type ``t``, blocks ``i..B-1``) extends pool pair ``q`` (``q == -2``: nothing beat
    the incumbent); pool pair ``k`` was reached from ``p_from[k]`` by a stage ``(p_t[k], p_i[k]..p_e[k])``.
    """
    n_types = strides.shape[0]
    n_blocks = mp.shape[0] - 1
    cap = 1024
    p_a = np.empty(cap)
    p_d = np.empty(cap)
    p_from = np.empty(cap, dtype=np.int64)
    p_t = np.empty(cap, dtype=np.int64)
    p_i = np.empty(cap, dtype=np.int64)
    p_e = np.empty(cap, dtype=np.int64)
    start = np.zeros((n_states, n_blocks + 1), dtype=np.int64)  # pairs of state (s, i): start[s, i]..stop[s, i]-1
    stop = np.zeros((n_states, n_blocks + 1), dtype=np.int64)
    nz = np.full((n_states, n_blocks), -1, dtype=np.int64)  # mark_front: the fronts of s that hold pairs
    p_a[0], p_d[0], p_from[0], p_t[0], p_i[0], p_e[0] = prompt_at_ap, prompt_at_ap, -1, -1, -1, -1
    if kind == KIND_E2E:
        p_d[0] = dprompt_at_ap
    elif kind == KIND_NONE:
        p_a[0] = 0.0  # nothing loaded yet
    size = 1
    stop[0, 0] = 1
    nz[0, 0] = 0
    best = incumbent
    best_q, best_t, best_i = -2, -1, -1
    cand_a = np.empty(256)
    cand_d = np.empty(256)
    cand_from = np.empty(256, dtype=np.int64)
    cand_t = np.empty(256, dtype=np.int64)
    cand_i = np.empty(256, dtype=np.int64)
    idx_buf = np.empty(32, dtype=np.int64)
    champ = np.empty(4)
    pre = (cf, mp, mem, down, up, ret, grid_load, grid_g)
    sec = (dcf, ddown, dup, dret)
    for s in range(n_states):
        # Complete the fronts of (s, i2) for i2 = 1..B-1 from their predecessors, and close the plan
        # (i2 == B) from every front of s with a last stage holding blocks i..B-1.
        if size > cand_a.shape[0]:  # a state's candidates come from distinct pool pairs
            cand_a, cand_d, cand_from, cand_t, cand_i = reserve(size, cand_a, cand_d, cand_from, cand_t, cand_i)
        for i2 in range(1, n_blocks + 1):
            e = i2 - 1
            n_cand = 0
            champ[:] = np.inf
            for t in range(n_types):
                digit = (s // strides[t]) % (counts[t] + 1)
                if i2 < n_blocks:
                    if digit == 0:
                        continue
                    sp = s - strides[t]  # the usage before this stage
                else:
                    if digit >= counts[t]:
                        continue
                    sp = s  # closing stage: its device is not counted in any state
                i = nz[sp, e]
                if i < 0 or mp[e + 1] - mp[i] > mem[t]:
                    continue  # no front to extend (checked here: the call costs more than nothing)
                best, best_q, best_t, best_i, n_cand = extend_fronts(
                    mode, kind, lam, tau, max_front, t, e, sp, t, src_type, (rest[s, i2], levels, rest_peak[s, i2]),
                    (best, best_q, best_t, best_i), start, stop, nz, p_a, p_d, pre, sec, n_cand,
                    (cand_a, cand_d, cand_from, cand_t, cand_i), w, champ,
                )  # fmt: skip
            if i2 == n_blocks:
                continue
            if n_cand > 0:
                start[s, i2] = size
                if size + n_cand > p_a.shape[0]:
                    p_a, p_d, p_from, p_t, p_i, p_e = grow_pool(size + n_cand, p_a, p_d, p_from, p_t, p_i, p_e)
                size = keep_front(
                    size, n_cand, e, cand_a, cand_d, cand_from, cand_t, cand_i, p_a, p_d, p_from, p_t, p_i, p_e,
                    idx_buf, w,
                )  # fmt: skip
                stop[s, i2] = size
            mark_front(nz, s, i2, n_cand > 0)
    return best, best_q, best_t, best_i, p_from[:size], p_t[:size], p_i[:size], p_e[:size]
