"""Lower bounds on completing a partial plan: backward DPs over (usage vector, blocks placed).

The Pareto DPs of :mod:`.kernels` prune a pair whose partial objective plus a lower bound on what the
rest of the plan adds reaches the incumbent. The tighter the bound, the fewer pairs survive; the bound
here is computed once per problem over the same states as the forward DP:

- ``rest[s, i]``: the least *additive* time of blocks ``i..B-1`` on the devices that usage ``s`` leaves
  free (each stage's input down from the AP, its compute, its output up, the token back), on tables
  that may combine phases (``prefill + (T - 1) x decode``). Every stage map is at least its input plus
  its compute (``max(alpha + C, G) >= alpha + C``), so no completion of a state adds less;
- ``rest_load[s, i]``: the least latest load end of any completion of blocks ``i..B-1`` on those
  devices (under ``none`` the TTFT is the latest load end plus the additive time).

Both are exact optima of their relaxations (the same free devices and memory limits), hence far
tighter than "every block on its own cheapest type". ``rest[s, B] = rest_load[s, B] = 0``; ``inf``
where nothing fits.
"""

from __future__ import annotations

import numpy as np

from coldpipe.planning.kernels import jit
from coldpipe.planning.tables import StageTables

__all__ = ["suffix_bounds", "suffix_dp"]


@jit
def suffix_dp(
    n_states: int,
    strides: np.ndarray,  # tables as in kernels.usage_dp
    counts: np.ndarray,
    cf: np.ndarray,
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
) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, rest_load)`` of the module docstring, both ``(n_states, B + 1)``.

    States are visited in decreasing usage index (a stage only adds devices) and, within one, in
    decreasing block, so every state a stage leads to is complete when it is read. Times count from
    the moment the input is at the AP, as the forward DPs' states do: a first stage on the source device
    has its prompt ``prompt_at_ap`` earlier.
    """
    n_types = strides.shape[0]
    n_blocks = mp.shape[0] - 1
    rest = np.full((n_states, n_blocks + 1), np.inf)
    rest_load = np.full((n_states, n_blocks + 1), np.inf)
    rest[:, n_blocks] = 0.0
    rest_load[:, n_blocks] = 0.0
    for s in range(n_states - 1, -1, -1):
        for i in range(n_blocks - 1, -1, -1):
            r_best = np.inf
            m_best = np.inf
            for t in range(n_types):
                if (s // strides[t]) % (counts[t] + 1) >= counts[t]:
                    continue  # every device of this type is in use
                ns = s + strides[t]
                d_in = -prompt_at_ap if (i == 0 and t == src_type) else down[t, i]
                for e in range(i, n_blocks):
                    if mp[e + 1] - mp[i] > mem[t]:
                        break
                    load_end = 0.0
                    if nres[t, e + 1] > nres[t, i]:
                        load_end = startup[t] + (wpt[t, e + 1] - wpt[t, i]) * inv_bw[t]
                    c = d_in + cf[t, e + 1] - cf[t, i]
                    if e == n_blocks - 1:
                        r, m = c + ret[t], load_end
                    else:
                        r, m = c + up[t, e] + rest[ns, e + 1], max(load_end, rest_load[ns, e + 1])
                    r_best = min(r_best, r)
                    m_best = min(m_best, m)
            rest[s, i] = r_best
            rest_load[s, i] = m_best
    return rest, rest_load


def suffix_bounds(tables: StageTables) -> tuple[np.ndarray, np.ndarray]:
    """:func:`suffix_dp` on ``tables`` (additive costs as they stand: combine phases with ``plus``)."""
    types = tables.types
    rest, rest_load = suffix_dp(
        types.n_usage_vectors,
        types.strides,
        types.counts,
        tables.cf,
        tables.wpt,
        tables.nres,
        tables.mp,
        tables.startup,
        tables.inv_bw,
        tables.mem,
        tables.down,
        tables.up,
        tables.ret,
        types.source_type,
        tables.prompt_at_ap,
    )
    return rest, rest_load
