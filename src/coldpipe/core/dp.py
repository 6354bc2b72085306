"""The exact planner: a forward dynamic program over (device usage, blocks placed).

Why it is exact (SPEC.md, "Useful facts"): a stage on device type ``t`` holding blocks ``i..e``
maps its input arrival ``α`` to ``max(α + C, G)`` (``"layer"``) or ``max(α, L) + C`` (``"stage"``),
non-decreasing in ``α``, and loading does not depend on anything upstream. So the earliest arrival
per state is all the future needs.

The state is taken *at the access point*, which removes the "last device" from it: every transfer
between two devices is ``uplink part of the sender + downlink part of the receiver``, so

    A[s, i] = earliest time at which the output of block ``i - 1`` (the prompt if ``i == 0``)
              has reached the AP, with blocks ``0..i-1`` placed on the devices counted by ``s``.

``s`` is a mixed-radix *usage vector*: devices of identical profile form one type ``t`` of
``count[t]`` devices, and digit ``t`` of ``s`` (``(s // stride[t]) % (count[t] + 1)``) says how
many of them are used. Interchangeable devices are thus never permuted: 32 devices of 3 types give
``12 * 12 * 11`` usage vectors instead of ``2**32`` subsets. Going from ``A[s, i]`` through a stage
of type ``t`` holding blocks ``i..e`` (inclusive) leads to ``A[s + stride[t], e + 1]``; the stage
holding block ``B - 1`` ends the plan and adds the token's return to the source. A device that is
the source forms a type of its own (its transfers from/to the source are free).

``"none"`` (load-then-compute) is not a max-plus map: TTFT = ``max_j load_end_j + D`` where ``D``
is additive (transfers + compute). For a threshold ``τ``, let ``D(τ)`` be the least additive time
over plans whose every stage finishes loading by ``τ`` (the same DP with additive costs and a
per-stage constraint). Then ``OPT = min_τ τ + D(τ)`` over the finitely many candidate load ends,
and since ``D`` is non-increasing, branch-and-bound over the sorted candidates finds it while
evaluating few of them (an interval ``[lo, hi]`` cannot beat ``τ[lo+1] + D(τ[hi])``).
Warm planning (loading free) is the same additive DP with ``τ = ∞``.

Complexity: ``O(n_usage_vectors * B**2 * T)``; 12 distinct devices x 82 blocks is ~3e8 inner steps,
compiled with numba (set ``COLDPIPE_NO_NUMBA=1`` to run the identical pure-Python kernel, as the
differential tests do).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from coldpipe.core.simulator import block_decode_s, decode_out_bytes
from coldpipe.core.types import AP, OVERLAPS, Overlap, Plan, Scenario, Stage
from coldpipe.errors import Infeasible, InputError
from coldpipe.units import format_bytes

__all__ = ["MAX_USAGE_VECTORS", "DPResult", "DeviceTypes", "numba_enabled", "plan_dp", "plan_warm"]

MAX_USAGE_VECTORS = 1 << 16
"""Above this many usage vectors (about 16 distinct devices) the exact DP refuses to run."""

_MODE_LAYER, _MODE_STAGE, _MODE_ADDITIVE = 0, 1, 2
T = TypeVar("T")
_INF = math.inf


def _kernel(
    mode: int,
    tau: float,
    n_states: int,
    strides: np.ndarray,  # (T,) int64: weight of digit t in the usage index
    counts: np.ndarray,  # (T,) int64: devices of type t
    cf: np.ndarray,  # (T, B+1): cf[t, l] = compute seconds of blocks 0..l-1 on type t
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
    prompt_at_ap: float,  # when the prompt is at the AP (0 if the source is the AP)
) -> tuple[float, int, int, int, np.ndarray, np.ndarray]:
    n_types = strides.shape[0]
    n_blocks = wpt.shape[1] - 1
    arrive = np.full((n_states, n_blocks), np.inf)  # A[s, i], see the module docstring
    pred_i = np.full((n_states, n_blocks), -1, dtype=np.int64)  # first block of the stage that led here
    pred_t = np.full((n_states, n_blocks), -1, dtype=np.int64)  # its device type
    arrive[0, 0] = prompt_at_ap
    best = np.inf
    best_s, best_i, best_t = -1, -1, -1
    for s in range(n_states):
        for i in range(n_blocks):
            a = arrive[s, i]
            if a == np.inf:
                continue
            for t in range(n_types):
                if (s // strides[t]) % (counts[t] + 1) >= counts[t]:
                    continue  # every device of this type is already used
                if i == 0 and t == src_type:
                    alpha = 0.0  # the prompt is already on this device
                else:
                    alpha = a + down[t, i]
                base = startup[t] - wpt[t, i] * inv_bw[t]
                run = -np.inf  # max over non-resident l in i..e of (wpt[t, l+1] * inv_bw - cf[l])
                for e in range(i, n_blocks):
                    if mp[e + 1] - mp[i] > mem[t]:
                        break
                    compute = cf[t, e + 1] - cf[t, i]
                    # the stage's last block is resident at load_end (0 when all of them already are)
                    load_end = (
                        startup[t] + (wpt[t, e + 1] - wpt[t, i]) * inv_bw[t] if nres[t, e + 1] > nres[t, i] else 0.0
                    )
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
                            best, best_s, best_i, best_t = total, s, i, t
                    else:
                        ns = s + strides[t]
                        v = fin + up[t, e]
                        if v < arrive[ns, e + 1]:
                            arrive[ns, e + 1] = v
                            pred_i[ns, e + 1] = i
                            pred_t[ns, e + 1] = t
    return best, best_s, best_i, best_t, pred_i, pred_t


def numba_enabled() -> bool:
    """Whether the DP kernel runs compiled (numba importable and ``COLDPIPE_NO_NUMBA`` unset)."""
    if os.environ.get("COLDPIPE_NO_NUMBA"):
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


_compiled = None


def _get_kernel():  # type: ignore[no-untyped-def]
    global _compiled  # the compiled kernel is a cache, not state: same function either way
    if not numba_enabled():
        return _kernel
    if _compiled is None:
        import numba

        _compiled = numba.njit(cache=True, nogil=True)(_kernel)
    return _compiled


@dataclass(frozen=True)
class DeviceTypes:
    """Devices grouped into interchangeable types (equal profile, same source-ness), in file order.

    ``members[t]`` are the names of type ``t``'s devices in file order; a plan uses them first-come.
    """

    members: tuple[tuple[str, ...], ...]
    source_type: int

    @staticmethod
    def of(scenario: Scenario) -> DeviceTypes:
        keys: dict[tuple[object, ...], list[str]] = {}
        source_type = -1
        for d in scenario.devices:
            key = (d.profile(), d.name == scenario.source)
            keys.setdefault(key, []).append(d.name)
        members = tuple(tuple(v) for v in keys.values())
        for t, names in enumerate(members):
            if scenario.source in names:
                source_type = t
        return DeviceTypes(members, source_type)

    @property
    def counts(self) -> np.ndarray:
        return np.array([len(m) for m in self.members], dtype=np.int64)

    @property
    def strides(self) -> np.ndarray:
        strides = np.ones(len(self.members), dtype=np.int64)
        for t in range(1, len(self.members)):
            strides[t] = strides[t - 1] * (len(self.members[t - 1]) + 1)
        return strides

    @property
    def n_usage_vectors(self) -> int:
        return int(np.prod(self.counts + 1, dtype=np.float64))


@dataclass(frozen=True)
class _Tables:
    types: DeviceTypes
    cf: np.ndarray
    wp: np.ndarray  # (B+1,): weight bytes of blocks 0..l-1
    mp: np.ndarray
    startup: np.ndarray
    inv_bw: np.ndarray
    mem: np.ndarray
    down: np.ndarray
    up: np.ndarray
    ret: np.ndarray
    prompt_at_ap: float
    wpt: np.ndarray  # (T, B+1): bytes type t loads for blocks 0..l-1 (resident blocks are free)
    nres: np.ndarray  # (T, B+1): number of blocks among 0..l-1 that type t must load

    def load_end(self, t: int, first: int, last: int) -> float:
        """When a stage of type ``t`` holding ``first..last`` has all its blocks (0 if all are resident)."""
        if self.nres[t, last + 1] == self.nres[t, first]:
            return 0.0
        return float(self.startup[t] + (self.wpt[t, last + 1] - self.wpt[t, first]) * self.inv_bw[t])

    @staticmethod
    def build(
        scenario: Scenario, *, warm: bool = False, extra_memory_bytes: float = 0.0, phase: str = "prefill"
    ) -> _Tables:
        """Tables of ``scenario`` for the prefill (the cold start) or for one decode step.

        ``phase="decode"``: ``cf`` holds decode seconds per block (:func:`block_decode_s`), transfers carry
        one token (``token_bytes`` in, :func:`decode_out_bytes` between stages) and loading is free.
        """
        types = DeviceTypes.of(scenario)
        reps = [scenario.device(m[0]) for m in types.members]
        blocks = scenario.blocks
        n = len(blocks)
        hop = scenario.network.hop_latency
        wl = scenario.workload
        decode = phase == "decode"
        cf = np.zeros((len(reps), n + 1))
        for t, d in enumerate(reps):
            if decode:
                cf[t, 1:] = np.cumsum([block_decode_s(scenario, l, d.name) for l in range(n)])
            else:
                cf[t, 1:] = np.cumsum(np.array([b.flops for b in blocks], dtype=np.float64) / d.flops)
        wp = np.concatenate([[0.0], np.cumsum([b.weight_bytes for b in blocks])])
        mp = np.concatenate([[0.0], np.cumsum([b.memory_bytes for b in blocks])])
        free_loading = warm or decode
        startup = np.array([0.0 if free_loading else d.startup for d in reps])
        inv_bw = np.array([0.0 if free_loading else 1.0 / d.load_bandwidth for d in reps])
        mem = np.array([d.memory + extra_memory_bytes for d in reps])
        if decode:
            first_in, entry_bytes = wl.token_bytes, wl.token_bytes
            out_bytes = np.array([decode_out_bytes(scenario, l) for l in range(n)])
        else:
            first_in, entry_bytes = wl.prompt_bytes_value, wl.prompt_bytes_value
            out_bytes = np.array([b.out_bytes for b in blocks])
        in_bytes = np.concatenate([[first_in], out_bytes[:-1]])  # input of a stage starting at block i
        down = np.array([8.0 * in_bytes / d.downlink + hop for d in reps]).reshape(len(reps), n)
        up = np.array([8.0 * out_bytes / d.uplink + hop for d in reps]).reshape(len(reps), n)
        src = scenario.device(scenario.source) if scenario.source != AP else None
        ret = np.zeros(len(reps))
        for t, d in enumerate(reps):
            if t != types.source_type:
                ret[t] = 8.0 * wl.token_bytes / d.uplink + hop
                if src is not None:
                    ret[t] += 8.0 * wl.token_bytes / src.downlink + hop
        prompt_at_ap = 0.0 if src is None else 8.0 * entry_bytes / src.uplink + hop
        to_load = np.array([[0.0 if d.holds(l) else 1.0 for l in range(n)] for d in reps]).reshape(len(reps), n)
        weights = np.array([b.weight_bytes for b in blocks])
        wpt = np.zeros((len(reps), n + 1))
        wpt[:, 1:] = np.cumsum(to_load * weights, axis=1)
        nres = np.zeros((len(reps), n + 1), dtype=np.int64)
        nres[:, 1:] = np.cumsum(to_load, axis=1).astype(np.int64)
        return _Tables(types, cf, wp, mp, startup, inv_bw, mem, down, up, ret, prompt_at_ap, wpt, nres)

    def plus(self, other: _Tables, weight: float) -> _Tables:
        """Additive costs ``self + weight * other`` (same loading as ``self``): e.g. TTFT + (T - 1) * TPOT."""
        return _Tables(
            self.types,
            self.cf + weight * other.cf,
            self.wp,
            self.mp,
            self.startup,
            self.inv_bw,
            self.mem,
            self.down + weight * other.down,
            self.up + weight * other.up,
            self.ret + weight * other.ret,
            self.prompt_at_ap + weight * other.prompt_at_ap,
            self.wpt,
            self.nres,
        )

    def run(self, mode: int, tau: float = _INF) -> tuple[float, Plan | None]:
        kernel = _get_kernel()
        types = self.types
        best, s, i, t, pred_i, pred_t = kernel(
            mode,
            tau,
            types.n_usage_vectors,
            types.strides,
            types.counts,
            self.cf,
            self.wpt,
            self.nres,
            self.mp,
            self.startup,
            self.inv_bw,
            self.mem,
            self.down,
            self.up,
            self.ret,
            types.source_type,
            self.prompt_at_ap,
        )
        if not best < _INF:
            return _INF, None
        # Walk back from the stage that ends the plan: (type t, blocks i..B-1, usage before it s).
        n = self.wp.shape[0] - 1
        rev: list[tuple[int, int, int]] = [(int(t), int(i), n - 1)]
        s, i = int(s), int(i)
        while i > 0:
            pt, pi = int(pred_t[s, i]), int(pred_i[s, i])
            rev.append((pt, pi, i - 1))
            s -= int(types.strides[pt])
            i = pi
        used = [0] * len(types.members)
        stages = []
        for t_, a, b in reversed(rev):
            stages.append(Stage(types.members[t_][used[t_]], a, b))
            used[t_] += 1
        return float(best), Plan(tuple(stages))


@dataclass(frozen=True)
class DPResult:
    """The optimum found by the DP: the plan and its objective (the simulator's TTFT of that plan)."""

    plan: Plan
    ttft_s: float
    overlap: Overlap
    usage_vectors: int
    thresholds_evaluated: int = 0  # "none" only: DP runs of the branch-and-bound
    notes: tuple[str, ...] = field(default_factory=tuple)


def _check_size(types: DeviceTypes, fix: str = "use the heuristic planner or group identical devices") -> None:
    if types.n_usage_vectors > MAX_USAGE_VECTORS:
        raise InputError(
            "devices",
            f"{sum(len(m) for m in types.members)} devices in {len(types.members)} distinct profiles give "
            f"{types.n_usage_vectors} usage vectors, above the exact DP's limit of {MAX_USAGE_VECTORS}",
            fix,
        )


def _b(n_bytes: float) -> str:
    """Bytes for a message: readable and exact, e.g. ``1.28 GB (1.278e+09 bytes)``."""
    return f"{format_bytes(n_bytes)} ({n_bytes:.4g} bytes)"


def _raise_infeasible(scenario: Scenario) -> None:
    """Raise :class:`Infeasible` with how much memory is missing (aggregate and per device)."""
    need = sum(b.memory_bytes for b in scenario.blocks)
    have = sum(d.memory for d in scenario.devices)
    total_short = max(0.0, need - have)
    # Smallest extra memory on every device that makes some plan exist: bisection on feasibility.
    lo, hi = 0.0, max(need, 1.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _Tables.build(scenario, warm=True, extra_memory_bytes=mid).run(_MODE_ADDITIVE)[1] is None:
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


def plan_dp(scenario: Scenario, overlap: Overlap = "layer") -> DPResult:
    """The minimum-TTFT plan under ``overlap`` (exact), or :class:`Infeasible`.

    The returned ``ttft_s`` is the DP's own objective; the tests check that it equals
    ``simulate(scenario, result.plan, overlap).ttft_s``.
    """
    if overlap not in OVERLAPS:
        raise InputError("overlap", f"unknown overlap mode {overlap!r}", f"use one of {list(OVERLAPS)}")
    tables = _Tables.build(scenario)
    _check_size(tables.types)
    n_vec = tables.types.n_usage_vectors
    if overlap in ("layer", "stage"):
        best, plan = tables.run(_MODE_LAYER if overlap == "layer" else _MODE_STAGE)
        if plan is None:
            _raise_infeasible(scenario)
        assert plan is not None
        return DPResult(plan, best, overlap, n_vec)
    return _plan_none(scenario, tables)


def load_end_candidates(tables: _Tables, types: Iterable[int] | None = None) -> np.ndarray:
    """Every load end a stage could have (sorted, unique): startup + bytes to load(i..e) / bandwidth, or 0 for
    a stage whose blocks are all resident, over the stages that fit, for device types ``types`` (all)."""
    values = [np.zeros(0)]
    n = tables.mp.shape[0] - 1
    for t in range(len(tables.types.members)) if types is None else types:
        for i in range(n):
            fits = tables.mp[i + 1 :] - tables.mp[i] <= tables.mem[t]
            ends = tables.startup[t] + (tables.wpt[t, i + 1 :] - tables.wpt[t, i]) * tables.inv_bw[t]
            ends = np.where(tables.nres[t, i + 1 :] > tables.nres[t, i], ends, 0.0)
            values.append(ends[fits])
    return np.unique(np.concatenate(values))


def threshold_search(taus: np.ndarray, run: Callable[[float], tuple[float, T]]) -> dict[int, tuple[float, T]]:
    """Branch-and-bound for ``min over k of taus[k] + run(taus[k])[0]`` with ``run`` non-increasing in tau.

    ``taus`` is sorted. Returns every evaluated ``k -> run(taus[k])``; the minimiser is among them. An
    interval ``(lo, hi)`` is skipped when ``taus[lo + 1] + run(taus[hi])`` cannot beat the incumbent.
    """
    memo: dict[int, tuple[float, T]] = {}

    def d_of(k: int) -> float:
        if k not in memo:
            memo[k] = run(float(taus[k]))
        return memo[k][0]

    hi = len(taus) - 1
    if hi < 0 or d_of(hi) == _INF:
        return memo
    d_of(0)
    stack = [(0, hi)]
    while stack:
        lo, hi_ = stack.pop()
        if hi_ - lo <= 1:
            continue
        incumbent = min(taus[k] + v[0] for k, v in memo.items())
        if taus[lo + 1] + d_of(hi_) >= incumbent:
            continue  # nothing strictly inside (lo, hi_) can beat the incumbent
        mid = (lo + hi_) // 2
        d_of(mid)
        stack.append((lo, mid))
        stack.append((mid, hi_))
    return memo


def _plan_none(
    scenario: Scenario, tables: _Tables, run: Callable[[float], tuple[float, Plan | None]] | None = None
) -> DPResult:
    """Exact ``none`` optimum: branch-and-bound over load-end thresholds (module docstring).

    ``run(tau)`` returns the least additive part (and a plan) among plans whose stages all finish loading
    by ``tau``; by default the additive DP on ``tables``. Any ``run`` that is non-increasing in ``tau``
    works (the E2E and burst objectives pass their own).
    """
    taus = load_end_candidates(tables)
    if run is None:
        run = lambda tau: tables.run(_MODE_ADDITIVE, tau)  # noqa: E731
    memo = threshold_search(taus, run)
    feasible = [k for k, (d, plan) in memo.items() if plan is not None and d < _INF]
    if not feasible:
        _raise_infeasible(scenario)
    k_best = min(feasible, key=lambda k: (taus[k] + memo[k][0], k))
    plan = memo[k_best][1]
    assert plan is not None
    # The plan's real TTFT is (its own last load end) + D <= tau + D; by optimality they are equal.
    loads = [tables.load_end(_type_of(tables.types, st.device), st.first, st.last) for st in plan.stages]
    ttft = float(max(loads) + memo[k_best][0])
    return DPResult(plan, ttft, "none", tables.types.n_usage_vectors, thresholds_evaluated=len(memo))


def _type_of(types: DeviceTypes, name: str) -> int:
    for t, names in enumerate(types.members):
        if name in names:
            return t
    raise KeyError(name)


def plan_warm(scenario: Scenario) -> DPResult:
    """The loading-unaware optimum (EdgeShard/PipeEdge style): every weight already resident.

    Its ``ttft_s`` is the warm TTFT (a lower bound on every cold-start plan); replay its plan with
    :func:`~coldpipe.core.simulator.simulate` to see what it costs on a cold start.
    """
    tables = _Tables.build(scenario, warm=True)
    _check_size(tables.types)
    best, plan = tables.run(_MODE_ADDITIVE)
    if plan is None:
        _raise_infeasible(scenario)
    assert plan is not None
    return DPResult(plan, best, "layer", tables.types.n_usage_vectors)
