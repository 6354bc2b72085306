"""The Lagrangian bound's Pareto kernel: fronts of pairs per ``blocks placed``, every device type reusable.

:func:`reuse_pareto_dp` is :func:`~coldpipe.planning.kernels.usage_pareto_dp` with the usage vector
dropped (one row; every type may hold any number of stages, each use of type ``t`` priced ``λ_t``), for the
objectives whose state is a pair: a burst's max completion (``KIND_BURST``: the first request's arrival,
the last request's end) and E2E (``KIND_E2E``). The pair maps are :func:`~coldpipe.planning.kernels.extend_pair`'s.

A price is added to both coordinates of a burst's pair: then ``a' <= a + Π`` and ``d' <= d + Π`` by
induction (both maps are non-decreasing and ``f(x + Π) <= f(x) + Π``), so the priced last request's end
is at most the real one plus the prices paid, and only a loading gate (``max(α + C, G)`` with ``G`` the
larger) can absorb them. For ``KIND_E2E`` the price goes into the decode part (``λ_t / lam``, so
``a + lam d`` carries it in full). A state's front is pruned by plain
dominance (both maps are non-decreasing in both coordinates); a front longer than ``max_front`` is
*merged*: consecutive pairs (by arrival) are replaced by their component-wise minimum, an optimistic
pair, so the optimum can only fall and stays a lower bound (``docs/heuristic.md``, "Certified gaps").
"""

from __future__ import annotations

import numpy as np

from coldpipe.planning.kernels import KIND_E2E, Mode, extend_pair, inline, jit

__all__ = ["reuse_pareto_dp"]


@inline
def _compress(
    a: np.ndarray, d: np.ndarray, pi: np.ndarray, pk: np.ndarray, pt: np.ndarray, n: int, keep: int
) -> int:  # fmt: skip
    """Prune ``a[:n], d[:n]`` (and their back pointers) to the non-dominated pairs sorted by ``a``, then merge
    runs of them into at most ``keep`` component-wise minima; returns the new length."""
    order = np.argsort(a[:n], kind="mergesort")  # stable: compiled and interpreted break ties alike
    sa, sd = a[:n][order], d[:n][order]
    si, sk, st = pi[:n][order], pk[:n][order], pt[:n][order]
    m = 0
    best_d = np.inf
    for j in range(n):
        if sd[j] < best_d:
            best_d = sd[j]
            a[m], d[m], pi[m], pk[m], pt[m] = sa[j], sd[j], si[j], sk[j], st[j]
            m += 1
    if m <= keep:
        return m
    # merge: group g holds kept pairs lo..hi-1 (a ascending, d descending): (a[lo], d[hi - 1]) is below all
    for g in range(keep):
        lo = (g * m) // keep
        hi = ((g + 1) * m) // keep
        a[g], d[g], pi[g], pk[g], pt[g] = a[lo], d[hi - 1], pi[lo], pk[lo], pt[lo]
    return keep


@jit
def reuse_pareto_dp(
    mode: int,
    kind: int,  # KIND_BURST or KIND_E2E
    lam: float,  # burst: requests - 1; e2e: new_tokens - 1 (> 0)
    price: np.ndarray,  # (T,): the price of one use of each type
    cf: np.ndarray,
    mp: np.ndarray,
    mem: np.ndarray,
    down: np.ndarray,
    up: np.ndarray,
    ret: np.ndarray,
    grid_load: np.ndarray,  # (T, B, B): stage_grid of the prefill tables
    grid_g: np.ndarray,
    src_type: int,
    prompt_at_ap: float,
    dcf: np.ndarray,  # second tables (e2e: decode); a burst passes the prefill tables again
    ddown: np.ndarray,
    dup: np.ndarray,
    dret: np.ndarray,
    dprompt_at_ap: float,
    max_front: int,
    tau: float,  # Mode.ADDITIVE: only stages loaded by tau (a burst under "none", inside a threshold search)
) -> tuple[float, np.ndarray]:
    """The priced relaxation's optimum (``inf`` if no plan fits) and how often its plan uses each type."""
    n_types = cf.shape[0]
    n_blocks = mp.shape[0] - 1
    buf = 4 * max_front
    ca = np.empty((n_blocks, buf))
    cd = np.empty((n_blocks, buf))
    cpi = np.empty((n_blocks, buf), dtype=np.int64)  # back pointers: previous state, its pair, the type
    cpk = np.empty((n_blocks, buf), dtype=np.int64)
    cpt = np.empty((n_blocks, buf), dtype=np.int64)
    cn = np.zeros(n_blocks, dtype=np.int64)
    ca[0, 0] = prompt_at_ap
    cd[0, 0] = dprompt_at_ap if kind == KIND_E2E else prompt_at_ap
    cpi[0, 0], cpk[0, 0], cpt[0, 0] = -1, -1, -1
    cn[0] = 1
    best, best_i, best_k, best_t = np.inf, -1, -1, -1
    for i in range(n_blocks):
        n = _compress(ca[i], cd[i], cpi[i], cpk[i], cpt[i], cn[i], max_front)
        cn[i] = n  # the front of state i, final: its pairs are what later back pointers index
        for t in range(n_types):
            at_source = i == 0 and t == src_type
            for e in range(i, n_blocks):
                if mp[e + 1] - mp[i] > mem[t]:
                    break
                if mode == Mode.ADDITIVE and grid_load[t, i, e] > tau:
                    break  # the load end grows with e
                compute = cf[t, e + 1] - cf[t, i]
                dec = dcf[t, e + 1] - dcf[t, i]
                if kind == KIND_E2E:
                    dec += price[t] / lam
                last = e == n_blocks - 1
                out_a = ret[t] if last else up[t, e]
                out_d = dret[t] if last else dup[t, e]
                for k in range(n):
                    a2, d2, value = extend_pair(
                        mode, kind, lam, at_source, ca[i, k], cd[i, k], down[t, i], ddown[t, i],
                        compute, grid_load[t, i, e], grid_g[t, i, e], dec, out_a, out_d,
                    )  # fmt: skip
                    if kind != KIND_E2E:  # both coordinates carry the price: neither max can absorb it
                        a2 += price[t]
                        d2 += price[t]
                        value = d2
                    if last:
                        if value < best:
                            best, best_i, best_k, best_t = value, i, k, t
                        continue
                    s = e + 1
                    if cn[s] == buf:
                        cn[s] = _compress(ca[s], cd[s], cpi[s], cpk[s], cpt[s], cn[s], buf // 2)
                    j = cn[s]
                    ca[s, j], cd[s, j], cpi[s, j], cpk[s, j], cpt[s, j] = a2, d2, i, k, t
                    cn[s] = j + 1
    uses = np.zeros(n_types)
    if best == np.inf:
        return best, uses
    uses[best_t] += 1
    i, k = best_i, best_k
    while i > 0:
        t, i2, k2 = cpt[i, k], cpi[i, k], cpk[i, k]
        uses[t] += 1
        i, k = i2, k2
    return best, uses
