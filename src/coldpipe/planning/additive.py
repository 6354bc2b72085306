"""The additive DP over usage vectors by sliding-window minima: ``D(tau)``, warm planning, decode steps.

Under an additive stage map (``fin = alpha + C``) a stage of type ``t`` holding blocks ``i..e`` takes
the state ``A[s, i]`` to

    A[s + stride_t, e + 1] = (A[s, i] + down[t, i] - cf[t, i]) + cf[t, e + 1] + up[t, e],

a term of ``i`` plus a term of ``e``. The stages that may end at ``e`` are those that start at
``i >= lo[t, e]`` (they fit the device's memory and, under a threshold ``tau``, finish loading by it),
and ``lo[t, e]`` never decreases with ``e``: a stage that is allowed stays allowed when it loses its
last block. So the best predecessor of every ``(s + stride_t, e + 1)`` is a sliding-window minimum over
``i``, ``O(B)`` per ``(usage vector, type)`` instead of ``O(B**2)``: the same optimum as
:func:`~coldpipe.planning.kernels.scalar_dp` in :attr:`~coldpipe.planning.kernels.Mode.ADDITIVE` mode,
found in a fraction of its time (ties may be broken differently; sums are rounded differently, to the
last bits).
"""

from __future__ import annotations

import numpy as np

from coldpipe.planning.jit import jit

__all__ = ["additive_dp"]


@jit
def additive_dp(
    tau: float,
    n_states: int,
    strides: np.ndarray,  # tables as in kernels.scalar_dp
    counts: np.ndarray,
    cf: np.ndarray,
    mp: np.ndarray,
    mem: np.ndarray,
    grid_load: np.ndarray,  # (T, B, B): kernels.stage_grid's load ends
    down: np.ndarray,
    up: np.ndarray,
    ret: np.ndarray,
    src_type: int,
    prompt_at_ap: float,
) -> tuple[float, int, int, int, np.ndarray, np.ndarray]:
    """:func:`~coldpipe.planning.kernels.scalar_dp` in additive mode, every stage loaded by ``tau``.

    Returns ``(best, s, i, t, pred_i, pred_t)`` as ``scalar_dp`` does (less best_upto). States are completed in "pull"
    order: ``A[ns, .]`` from every ``A[ns - stride_t, .]`` (smaller usage indices), then the plans that
    close from ``ns``.
    """
    n_types = strides.shape[0]
    n_blocks = mp.shape[0] - 1
    # lo[t, e]: the first block of the longest allowed stage of type t ending at e (e + 1: none)
    lo = np.empty((n_types, n_blocks), dtype=np.int64)
    for t in range(n_types):
        for e in range(n_blocks):
            i = e
            while i >= 0 and mp[e + 1] - mp[i] <= mem[t] and grid_load[t, i, e] <= tau:
                i -= 1
            lo[t, e] = i + 1
    arrive = np.full((n_states, n_blocks), np.inf)
    pred_i = np.full((n_states, n_blocks), -1, dtype=np.int64)
    pred_t = np.full((n_states, n_blocks), -1, dtype=np.int64)
    arrive[0, 0] = prompt_at_ap
    best = np.inf
    best_s, best_i, best_t = -1, -1, -1
    val = np.empty(n_blocks)
    dq = np.empty(n_blocks, dtype=np.int64)  # the window's candidates i, values increasing from head
    for ns in range(n_states):
        for t in range(n_types):
            digit = (ns // strides[t]) % (counts[t] + 1)
            if digit == 0:
                continue
            s = ns - strides[t]
            head, tail = 0, 0
            for e in range(n_blocks - 1):  # a stage ending at e < B - 1 leads to (ns, e + 1)
                a = arrive[s, e]
                if a < np.inf:
                    val[e] = (0.0 if (e == 0 and t == src_type) else a + down[t, e]) - cf[t, e]
                    while tail > head and val[dq[tail - 1]] > val[e]:
                        tail -= 1
                    dq[tail] = e
                    tail += 1
                while tail > head and dq[head] < lo[t, e]:
                    head += 1
                if tail > head:
                    v = val[dq[head]] + cf[t, e + 1] + up[t, e]
                    if v < arrive[ns, e + 1]:
                        arrive[ns, e + 1] = v
                        pred_i[ns, e + 1] = dq[head]
                        pred_t[ns, e + 1] = t
        # plans whose last stage (a device not counted in ns) holds blocks i..B-1
        e = n_blocks - 1
        for t in range(n_types):
            if (ns // strides[t]) % (counts[t] + 1) >= counts[t]:
                continue
            for i in range(lo[t, e], n_blocks):
                a = arrive[ns, i]
                if a == np.inf:
                    continue
                alpha = 0.0 if (i == 0 and t == src_type) else a + down[t, i]
                total = alpha + (cf[t, e + 1] - cf[t, i]) + ret[t]
                if total < best:
                    best, best_s, best_i, best_t = total, ns, i, t
    return best, best_s, best_i, best_t, pred_i, pred_t
