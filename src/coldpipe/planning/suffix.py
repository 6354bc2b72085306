"""Lower bounds on completing a partial plan: backward DPs over (usage vector, blocks placed).

The Pareto DPs of :mod:`.kernels` prune a pair whose partial objective plus a lower bound on what the
rest of the plan adds reaches the incumbent. The tighter the bound, the fewer pairs survive; the bounds
here are computed once per problem over the same states as the forward DP:

- ``rest[s, i, k]``: the least *additive* time of blocks ``i..B-1`` on the devices that usage ``s``
  leaves free (each stage's input down from the AP, its compute, its output up, the token back), every
  stage loaded by ``levels[k]``, on tables that may combine phases (``prefill + (T - 1) x decode``).
  Every stage map is at least its input plus its compute (``max(alpha + C, G) >= alpha + C``), so no
  completion of a state adds less. The last level is ``inf`` (no loading limit);
- ``rest_peak[s, i]``: the least, over the completions of blocks ``i..B-1`` on those devices, of their
  largest stage *peak*: a stage's load end (``PEAK_LOAD``: the completion's latest load end) or its
  compute (``PEAK_COMPUTE``: a burst's last request waits ``(requests - 1)`` times the slowest stage's
  compute behind the first).

Under ``none`` (TTFT = latest load end + additive time) a completion whose latest load end ``L``
falls in ``(levels[k - 1], levels[k]]`` adds at least ``max(a, levels[k - 1]) + rest[s, i, k]`` to a
pair whose latest load end is ``a`` (:func:`~coldpipe.planning.kernels.none_bound`): a staircase under
the true cost of the rest, exact at the levels.

Both are exact optima of their relaxations (the same free devices and memory limits), found like
:mod:`.additive`'s forward DP by sliding-window minima (a stage ``i..e`` costs a term of ``i`` plus a
term of ``e``, and its allowed ends ``e`` form a window that moves left with ``i``).
``rest[s, B] = rest_peak[s, B] = 0``; ``inf`` where nothing fits.
"""

from __future__ import annotations

import math

import numpy as np

from coldpipe.planning.jit import jit
from coldpipe.planning.tables import StageTables

__all__ = ["PEAK_COMPUTE", "PEAK_LOAD", "suffix_bounds", "suffix_dp"]

PEAK_LOAD = 0
PEAK_COMPUTE = 1


@jit
def suffix_dp(
    levels: np.ndarray,  # (K,) sorted; the last one inf
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
    peak: int,  # PEAK_LOAD or PEAK_COMPUTE
) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, rest_peak)`` of the module docstring: ``(n_states, B + 1, K)`` and ``(n_states, B + 1)``.

    States are visited in decreasing usage index (a stage only adds devices) so that every state a
    stage leads to is complete when it is read. Times count from the moment the input is at the AP, as
    the forward DPs' states do: a first stage on the source device has its prompt ``prompt_at_ap``
    earlier.
    """
    n_types = strides.shape[0]
    n_blocks = mp.shape[0] - 1
    n_levels = levels.shape[0]
    # hi[t, i, k]: the last block of the longest stage of type t from block i that fits and loads by
    # levels[k] (i - 1: none); it never decreases with i
    hi = np.empty((n_types, n_blocks, n_levels), dtype=np.int64)
    for t in range(n_types):
        for i in range(n_blocks):
            for k in range(n_levels):
                e = i
                while e < n_blocks and mp[e + 1] - mp[i] <= mem[t] and grid_load[t, i, e] <= levels[k]:
                    e += 1
                hi[t, i, k] = e - 1
    rest = np.full((n_states, n_blocks + 1, n_levels), np.inf)
    rest_peak = np.full((n_states, n_blocks + 1), np.inf)
    rest[:, n_blocks, :] = 0.0
    rest_peak[:, n_blocks] = 0.0
    g = np.empty(n_blocks)
    dq = np.empty(n_blocks, dtype=np.int64)
    for s in range(n_states - 1, -1, -1):
        for t in range(n_types):
            if (s // strides[t]) % (counts[t] + 1) >= counts[t]:
                continue  # every device of this type is in use
            ns = s + strides[t]
            for k in range(n_levels):
                # a stage i..e costs (d_in(i) - cf(i)) + g[e]: a window minimum of g over e in [i, hi]
                head, tail = 0, 0
                for i in range(n_blocks - 1, -1, -1):
                    g[i] = cf[t, i + 1] + (ret[t] if i == n_blocks - 1 else up[t, i] + rest[ns, i + 1, k])
                    while tail > head and g[dq[tail - 1]] >= g[i]:
                        tail -= 1
                    dq[tail] = i
                    tail += 1
                    while tail > head and dq[head] > hi[t, i, k]:
                        head += 1
                    if tail > head and g[dq[head]] < np.inf:
                        d_in = -prompt_at_ap if (i == 0 and t == src_type) else down[t, i]
                        rest[s, i, k] = min(rest[s, i, k], d_in - cf[t, i] + g[dq[head]])
            # the least largest peak: the stage's own grows with e while the rest's shrinks (a completion
            # from e + 1 gives one from e + 2 with its first stage a block shorter, or gone)
            for i in range(n_blocks):
                for e in range(i, hi[t, i, n_levels - 1] + 1):
                    own = grid_load[t, i, e] if peak == PEAK_LOAD else cf[t, e + 1] - cf[t, i]
                    if own >= rest_peak[ns, e + 1]:
                        rest_peak[s, i] = min(rest_peak[s, i], own)
                        break
                    rest_peak[s, i] = min(rest_peak[s, i], rest_peak[ns, e + 1])
    return rest, rest_peak


def suffix_bounds(
    tables: StageTables, levels: np.ndarray | None = None, peak: int = PEAK_LOAD
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`suffix_dp` on ``tables`` (additive costs as they stand: combine phases with ``plus``).

    ``levels`` (sorted, ending with ``inf``; default ``[inf]``) are the loading limits of ``rest``;
    returns ``(rest[:, :, 0], rest_peak)`` without levels, ``(rest, rest_peak)`` with.
    """
    types = tables.types
    lv = np.array([math.inf]) if levels is None else np.asarray(levels, dtype=np.float64)
    rest, rest_peak = suffix_dp(
        lv,
        types.n_usage_vectors,
        types.strides,
        types.counts,
        tables.cf,
        tables.mp,
        tables.mem,
        tables.grid[0],
        tables.down,
        tables.up,
        tables.ret,
        types.source_type,
        tables.prompt_at_ap,
        peak,
    )
    return (np.ascontiguousarray(rest[:, :, 0]), rest_peak) if levels is None else (rest, rest_peak)
