"""The planners' numba kernels: four forward DPs over the same stage maps, and the one jit helper.

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

- :func:`usage_dp`: one scalar per ``(usage vector s, blocks placed i)``: the exact TTFT DP;
- :func:`usage_pareto_dp`: a Pareto front of pairs per ``(s, i)``: exact E2E and bursts;
- :func:`~coldpipe.planning.order_kernels.order_dp`: one scalar per ``(position p in a fixed device
  order, i)``: the heuristic;
- :func:`~coldpipe.planning.order_kernels.order_pareto_dp`: a Pareto front per ``(p, i)``: the
  heuristic's E2E and bursts.

Each is a plain Python function over numpy arrays; :func:`jit` compiles it with numba on first use
unless ``COLDPIPE_NO_NUMBA`` is set, in which case the identical code runs interpreted (the
differential tests compare both).
"""

from __future__ import annotations

import enum
import os
import types
from collections.abc import Callable
from typing import Any

import numpy as np


def inline(fn: Callable[..., Any]) -> Any:
    """A helper of the kernels' inner loops, inlined into them in numba's IR.

    A call that passes arrays in costs a reference-count update per array, which in a loop over every
    state costs more than the state's work; inlined, it costs nothing. Returns a numba dispatcher (its
    ``py_func`` is ``fn``); :class:`Kernel` runs the kernels interpreted with ``fn`` itself.
    """
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        return fn
    return numba.njit(inline="always")(fn)


def _interpreted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every inlined helper it names (and they name) replaced by its plain Python function."""
    names = fn.__code__.co_names
    swapped = {n: _interpreted(fn.__globals__[n].py_func) for n in names if hasattr(fn.__globals__.get(n), "py_func")}
    if not swapped:
        return fn
    out = types.FunctionType(fn.__code__, {**fn.__globals__, **swapped}, fn.__name__, fn.__defaults__)
    out.__doc__ = fn.__doc__
    return out


__all__ = [
    "KIND_BURST",
    "KIND_E2E",
    "SKIP",
    "Kernel",
    "Mode",
    "block_gate",
    "extend_fronts",
    "extend_pair",
    "grow",
    "grow_pool",
    "jit",
    "keep_front",
    "numba_enabled",
    "pair_value",
    "reserve",
    "scalar_dp",
    "stage_finish",
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


# Second coordinate of a Pareto pair (pass as ``kind``).
KIND_E2E = 0  # decode time so far, weighted by lam = new_tokens - 1
KIND_BURST = 1  # end of the burst's last request, lam = requests - 1


def numba_enabled() -> bool:
    """Whether the kernels run compiled (numba importable and ``COLDPIPE_NO_NUMBA`` unset)."""
    if os.environ.get("COLDPIPE_NO_NUMBA"):
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class Kernel:
    """A kernel that runs compiled when :func:`numba_enabled`, else as the plain function ``py``.

    The compiled function is cached on the object (and on disk by numba): it is the same function.
    """

    def __init__(self, py: Callable[..., Any]) -> None:
        self.py = _interpreted(py)  # the same code, every helper interpreted too
        self._source = py
        self._compiled: Callable[..., Any] | None = None
        self.__doc__ = py.__doc__
        self.__name__ = py.__name__

    def current(self) -> Callable[..., Any]:
        """The function a call runs now: compiled, or ``py`` itself when numba is off."""
        if not numba_enabled():
            return self.py
        if self._compiled is None:
            import numba

            self._compiled = numba.njit(cache=True, nogil=True)(self._source)
        return self._compiled

    def __call__(self, *args: Any) -> Any:
        return self.current()(*args)


def jit(fn: Callable[..., Any]) -> Kernel:
    """Decorator: ``fn`` compiled by numba on first call (cached), or interpreted with ``COLDPIPE_NO_NUMBA``."""
    return Kernel(fn)


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
    """The partial objective of a pair: ``a + lam * d`` (E2E) or ``d`` (a burst's last request)."""
    return a + lam * d if kind == KIND_E2E else d


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
) -> int:
    """Append the Pareto front of the candidates to the pool from index ``size``; returns the new size.

    The pool has room for ``size + n_cand`` pairs (:func:`grow_pool`). Sorted by arrival (stably), each
    kept pair is strictly better in the second coordinate than the previous one; a pair with the same
    arrival and a better second coordinate replaces it.
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
    last_a = -np.inf
    for k in range(n_cand):
        c = order[k]
        if cand_d[c] < best_d:
            if cand_a[c] == last_a and size > first:
                size -= 1  # same arrival, better second coordinate: replaces the previous pair
            p_a[size], p_d[size] = cand_a[c], cand_d[c]
            p_from[size], p_k[size], p_i[size], p_e[size] = cand_from[c], cand_k[c], cand_i[c], e
            size += 1
            best_d = cand_d[c]
            last_a = cand_a[c]
    return size


# --- growing one stage from a state, written once for the usage and the order DPs -----------------


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
    bound: float,
    incumbent: tuple[float, int, int, int],  # (best, best_q, best_k, best_i) so far
    start: np.ndarray,
    stop: np.ndarray,
    p_a: np.ndarray,
    p_d: np.ndarray,
    pre: tuple[np.ndarray, ...],  # (cf, wpt, nres, mp, startup, inv_bw, mem, down, up, ret)
    sec: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],  # (dcf, ddown, dup, dret)
    n_cand: int,
    cands: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],  # (a, d, from, k, i)
) -> tuple[float, int, int, int, int]:
    """Every stage of type ``t`` ending at block ``e`` (grown downwards, ``i = e..0``) from every pair of
    the fronts ``start[row, i]..stop[row, i]``: candidates for the state after block ``e``, or closed plans.

    A pair whose partial objective plus ``bound`` (a lower bound on the rest) reaches ``best`` is pruned;
    with ``e = B - 1`` a pair closes the plan. ``max_front == 1`` keeps one candidate (the least partial
    objective). The candidate arrays have room (:func:`reserve`). Returns ``(best, best_q, best_k, best_i, n_cand)``.
    (Fewer than 31 arguments: numba inlines no call with more.)
    """
    cf, wpt, nres, mp, startup, inv_bw, mem, down, up, ret = pre
    dcf, ddown, dup, dret = sec
    cand_a, cand_d, cand_from, cand_k, cand_i = cands
    best, best_q, best_k, best_i = incumbent
    n_blocks = mp.shape[0] - 1
    last = e == n_blocks - 1
    run = -np.inf
    for i in range(e, -1, -1):
        if mp[e + 1] - mp[i] > mem[t]:
            break
        run = max(run, block_gate(t, i, cf, wpt, nres, inv_bw))
        load_end, g = stage_terms(t, i, e, run, cf, wpt, nres, startup, inv_bw)
        if mode == Mode.ADDITIVE and load_end > tau:
            break
        if stop[row, i] == start[row, i]:
            continue
        compute = cf[t, e + 1] - cf[t, i]
        dec = dcf[t, e + 1] - dcf[t, i]
        if last:
            out_a, out_d = ret[t], dret[t]
        else:
            out_a, out_d = up[t, e], dup[t, e]
        at_source = i == 0 and t == src_type
        for q in range(start[row, i], stop[row, i]):
            a2, d2, value = extend_pair(
                mode, kind, lam, at_source, p_a[q], p_d[q], down[t, i], ddown[t, i],
                compute, load_end, g, dec, out_a, out_d,
            )  # fmt: skip
            if value + bound >= best:
                continue
            if last:
                best, best_q, best_k, best_i = value, q, k_rec, i
                continue
            if max_front == 1 and n_cand == 1:  # one pair per state: keep the least partial objective
                if value < pair_value(kind, lam, cand_a[0], cand_d[0]):
                    n_cand = 0
                else:
                    continue
            cand_a[n_cand], cand_d[n_cand], cand_from[n_cand], cand_k[n_cand], cand_i[n_cand] = a2, d2, q, k_rec, i
            n_cand += 1
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
    kind: int,  # second coordinate: KIND_E2E decode time so far, KIND_BURST end of the burst's last request
    lam: float,  # e2e: new_tokens - 1 (weight of the decode time); burst: requests - 1
    tau: float,
    incumbent: float,  # objective of a known plan: anything not strictly better is pruned
    n_states: int,
    strides: np.ndarray,
    counts: np.ndarray,
    cf: np.ndarray,  # prefill tables, as in scalar_dp
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
    dcf: np.ndarray,  # second tables (decode for e2e: per-block decode seconds prefix, token transfers)
    ddown: np.ndarray,
    dup: np.ndarray,
    dret: np.ndarray,
    dprompt_at_ap: float,
) -> tuple[float, int, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pareto DP over (arrival at the AP, second coordinate) per ``(s, i)`` (:mod:`.exact`, "E2E").

    A pair that is later *and* worse in the second coordinate than another can never lead to a better
    objective: both coordinates grow through non-decreasing maps and the objective is non-decreasing in
    both. States are completed in "pull" order (every predecessor has a smaller usage index), so each
    front is complete when it is extended. Pairs whose partial objective plus a per-block lower bound
    on the rest reaches the incumbent are pruned. Returns ``(best, q, t, i, p_from, p_t, p_i, p_e)``:
    the last stage (type ``t``, blocks ``i..B-1``) extends pool pair ``q`` (``q == -2``: nothing beat
    the incumbent); pool pair ``k`` was reached from ``p_from[k]`` by a stage ``(p_t[k], p_i[k]..p_e[k])``.
    """
    n_types = strides.shape[0]
    n_blocks = wpt.shape[1] - 1
    cap = 1024
    p_a = np.empty(cap)
    p_d = np.empty(cap)
    p_from = np.empty(cap, dtype=np.int64)
    p_t = np.empty(cap, dtype=np.int64)
    p_i = np.empty(cap, dtype=np.int64)
    p_e = np.empty(cap, dtype=np.int64)
    start = np.zeros((n_states, n_blocks + 1), dtype=np.int64)  # pairs of state (s, i): start[s, i]..stop[s, i]-1
    stop = np.zeros((n_states, n_blocks + 1), dtype=np.int64)
    p_a[0], p_from[0], p_t[0], p_i[0], p_e[0] = prompt_at_ap, -1, -1, -1, -1
    p_d[0] = dprompt_at_ap if kind == KIND_E2E else prompt_at_ap
    size = 1
    stop[0, 0] = 1
    best = incumbent
    best_q, best_t, best_i = -2, -1, -1
    cand_a = np.empty(256)
    cand_d = np.empty(256)
    cand_from = np.empty(256, dtype=np.int64)
    cand_t = np.empty(256, dtype=np.int64)
    cand_i = np.empty(256, dtype=np.int64)
    idx_buf = np.empty(32, dtype=np.int64)
    pre = (cf, wpt, nres, mp, startup, inv_bw, mem, down, up, ret)
    sec = (dcf, ddown, dup, dret)
    # rest[i]: a lower bound on what blocks i..B-1 still add to the objective, whoever computes them: each
    # block on its own cheapest type (a decode step is memory- or compute-bound per block, so the type that
    # is cheapest for the whole remainder may not be for every block, and a split can beat it)
    rest = np.zeros(n_blocks + 1)
    for i in range(n_blocks - 1, -1, -1):
        cheapest = np.inf
        for t in range(n_types):
            c = cf[t, i + 1] - cf[t, i]
            if kind == KIND_E2E:
                c += lam * (dcf[t, i + 1] - dcf[t, i])
            cheapest = min(cheapest, c)
        rest[i] = rest[i + 1] + cheapest
    for s in range(n_states):
        # Complete the fronts of (s, i2) for i2 = 1..B-1 from their predecessors, and close the plan
        # (i2 == B) from every front of s with a last stage holding blocks i..B-1.
        if size > cand_a.shape[0]:  # a state's candidates come from distinct pool pairs
            cand_a, cand_d, cand_from, cand_t, cand_i = reserve(size, cand_a, cand_d, cand_from, cand_t, cand_i)
        for i2 in range(1, n_blocks + 1):
            e = i2 - 1
            n_cand = 0
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
                best, best_q, best_t, best_i, n_cand = extend_fronts(
                    mode, kind, lam, tau, 0, t, e, sp, t, src_type, rest[i2], (best, best_q, best_t, best_i),
                    start, stop, p_a, p_d, pre, sec, n_cand, (cand_a, cand_d, cand_from, cand_t, cand_i),
                )  # fmt: skip
            if i2 == n_blocks or n_cand == 0:
                continue
            start[s, i2] = size
            if size + n_cand > p_a.shape[0]:
                p_a, p_d, p_from, p_t, p_i, p_e = grow_pool(size + n_cand, p_a, p_d, p_from, p_t, p_i, p_e)
            size = keep_front(
                size, n_cand, e, cand_a, cand_d, cand_from, cand_t, cand_i, p_a, p_d, p_from, p_t, p_i, p_e, idx_buf
            )
            stop[s, i2] = size
    return best, best_q, best_t, best_i, p_from[:size], p_t[:size], p_i[:size], p_e[:size]
