"""The tables every planner reads: devices grouped into types, and per-type prefix sums over blocks.

All ranges are inclusive (a stage holds blocks ``first..last``); prefix tables have ``B + 1``
columns, column ``l`` summing blocks ``0..l-1``, so blocks ``i..e`` cost ``table[t, e + 1] - table[t, i]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from coldpipe.core.simulator import block_decode_s, decode_out_bytes
from coldpipe.core.types import AP, Plan, Scenario, Stage
from coldpipe.errors import InputError
from coldpipe.planning.additive import additive_dp
from coldpipe.planning.kernels import Mode, scalar_dp, stage_grid

__all__ = ["MAX_USAGE_VECTORS", "DeviceTypes", "StageTables", "check_size", "load_end_candidates"]

MAX_USAGE_VECTORS = 1 << 16
"""Above this many usage vectors (about 16 distinct devices) the exact DP refuses to run."""


@dataclass(frozen=True)
class DeviceTypes:
    """Devices grouped into interchangeable types (equal profile, same source-ness), in file order.

    ``members[t]`` are the names of type ``t``'s devices in file order; a plan uses them first-come.
    A *usage vector* ``s`` is a mixed-radix number whose digit ``t``
    (``(s // strides[t]) % (counts[t] + 1)``) says how many devices of type ``t`` are used.
    """

    members: tuple[tuple[str, ...], ...]
    source_type: int  # -1 when the source is the AP

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

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The usage vectors as :func:`~coldpipe.planning.kernels.scalar_dp`'s DAG: ``(edge_start, edge_type,
        edge_to, skip_to)``; from ``s``, one edge per type with a device left, to ``s + stride[t]``."""
        counts, strides = self.counts, self.strides
        s = np.arange(self.n_usage_vectors, dtype=np.int64)
        free = (s[:, None] // strides[None, :]) % (counts + 1)[None, :] < counts[None, :]  # (S, T)
        rows, edge_type = np.nonzero(free)  # row-major: by usage vector, then by type
        edge_start = np.zeros(len(s) + 1, dtype=np.int64)
        edge_start[1:] = np.cumsum(free.sum(axis=1))
        skip_to = np.full(len(s), -1, dtype=np.int64)
        return edge_start, edge_type.astype(np.int64), rows + strides[edge_type], skip_to

    def type_of(self, name: str) -> int:
        """The type of device ``name``."""
        for t, names in enumerate(self.members):
            if name in names:
                return t
        raise KeyError(name)


def check_size(types: DeviceTypes, fix: str = "use the heuristic planner or group identical devices") -> None:
    """Refuse (:class:`~coldpipe.errors.InputError`) a cluster beyond the exact DP's range."""
    if types.n_usage_vectors > MAX_USAGE_VECTORS:
        raise InputError(
            "devices",
            f"{sum(len(m) for m in types.members)} devices in {len(types.members)} distinct profiles give "
            f"{types.n_usage_vectors} usage vectors, above the exact DP's limit of {MAX_USAGE_VECTORS}",
            fix,
        )


@dataclass(frozen=True)
class StageTables:
    """Per-type prefix tables of one phase (the cold-start prefill, or one decode step); ``T`` types, ``B`` blocks.

    - ``cf[t, l]``: compute seconds of blocks ``0..l-1`` on type ``t`` (decode: one decode step each);
    - ``wp[l]``, ``mp[l]``: weight bytes, and memory bytes (weights + KV), of blocks ``0..l-1``;
    - ``wpt[t, l]``: bytes type ``t`` must load for blocks ``0..l-1`` (its resident blocks are free);
    - ``nres[t, l]``: how many of blocks ``0..l-1`` type ``t`` must load;
    - ``startup[t]`` (s), ``inv_bw[t]`` (s/byte, 0 when loading is free), ``mem[t]`` (bytes);
    - ``down[t, i]``: seconds from the AP to type ``t`` for the input of a stage starting at block ``i``;
    - ``up[t, e]``: seconds from type ``t`` to the AP for the output of block ``e``;
    - ``ret[t]``: seconds for the token from type ``t`` back to the source;
    - ``prompt_at_ap``: when the prompt is at the AP (0 when the source is the AP).
    """

    types: DeviceTypes
    cf: np.ndarray
    wp: np.ndarray
    mp: np.ndarray
    startup: np.ndarray
    inv_bw: np.ndarray
    mem: np.ndarray
    down: np.ndarray
    up: np.ndarray
    ret: np.ndarray
    prompt_at_ap: float
    wpt: np.ndarray
    nres: np.ndarray

    @property
    def n_blocks(self) -> int:
        return self.wp.shape[0] - 1

    @functools.cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`~coldpipe.planning.kernels.stage_grid`: every stage's load end and ``layer`` gate (once)."""
        return stage_grid(self.cf, self.wpt, self.nres, self.mp, self.startup, self.inv_bw, self.mem)  # type: ignore[no-any-return]

    def load_end(self, t: int, first: int, last: int) -> float:
        """When a stage of type ``t`` holding ``first..last`` has all its blocks (0 if all are resident)."""
        if self.nres[t, last + 1] == self.nres[t, first]:
            return 0.0
        return float(self.startup[t] + (self.wpt[t, last + 1] - self.wpt[t, first]) * self.inv_bw[t])

    @staticmethod
    def build(
        scenario: Scenario, *, warm: bool = False, extra_memory_bytes: float = 0.0, phase: str = "prefill"
    ) -> StageTables:
        """Tables of ``scenario`` for the prefill (the cold start) or for one decode step.

        ``warm``: loading is free (every weight resident). ``phase="decode"``: ``cf`` holds decode seconds
        per block (:func:`~coldpipe.core.simulator.block_decode_s`), transfers carry one token
        (``token_bytes`` in, :func:`~coldpipe.core.simulator.decode_out_bytes` between stages) and loading
        is free. ``extra_memory_bytes`` is added to every device's memory (the infeasibility bisection).
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
        return StageTables(types, cf, wp, mp, startup, inv_bw, mem, down, up, ret, prompt_at_ap, wpt, nres)

    def plus(self, other: StageTables, weight: float) -> StageTables:
        """Additive costs ``self + weight * other`` (same loading as ``self``): e.g. TTFT + (T - 1) * TPOT."""
        return StageTables(
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

    def plan_of(self, rev: list[tuple[int, int, int]]) -> Plan:
        """The plan of stages ``(type, first, last)`` listed last to first; each type's devices first-come."""
        used = [0] * len(self.types.members)
        stages = []
        for t, a, b in reversed(rev):
            stages.append(Stage(self.types.members[t][used[t]], a, b))
            used[t] += 1
        return Plan(tuple(stages))

    def run(self, mode: Mode, tau: float = math.inf) -> tuple[float, Plan | None]:
        """The exact scalar DP (:func:`~coldpipe.planning.kernels.scalar_dp` over usage vectors): ``(objective, plan)``.

        ``(inf, None)`` when no plan fits (or, with :attr:`Mode.ADDITIVE`, none loads by ``tau``).
        :attr:`Mode.ADDITIVE` runs :func:`~coldpipe.planning.additive.additive_dp` (the same optimum).
        """
        types = self.types
        if mode == Mode.ADDITIVE:  # the same optimum by sliding-window minima
            best, s, i, t, pred_i, pred_t = additive_dp(
                tau,
                types.n_usage_vectors,
                types.strides,
                types.counts,
                self.cf,
                self.mp,
                self.mem,
                self.grid[0],
                self.down,
                self.up,
                self.ret,
                types.source_type,
                self.prompt_at_ap,
            )
        else:
            arrive = np.full((types.n_usage_vectors, self.n_blocks), np.inf)
            arrive[0, 0] = self.prompt_at_ap
            best, s, i, t, pred_i, pred_t, _ = scalar_dp(
                int(mode),
                tau,
                *types.edges(),
                arrive,
                0,
                math.inf,
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
            )
        if not best < math.inf:
            return math.inf, None
        # Walk back from the stage that ends the plan: (type t, blocks i..B-1, usage before it s).
        n = self.n_blocks
        rev: list[tuple[int, int, int]] = [(int(t), int(i), n - 1)]
        s, i = int(s), int(i)
        while i > 0:
            pt, pi = int(pred_t[s, i]), int(pred_i[s, i])
            rev.append((pt, pi, i - 1))
            s -= int(types.strides[pt])
            i = pi
        return float(best), self.plan_of(rev)


def load_end_candidates(tables: StageTables, types: Iterable[int] | None = None) -> np.ndarray:
    """Every load end a stage could have (sorted, unique): startup + bytes to load(i..e) / bandwidth, or 0 for
    a stage whose blocks are all resident, over the stages that fit, for device types ``types`` (all)."""
    values = [np.zeros(0)]
    n = tables.n_blocks
    for t in range(len(tables.types.members)) if types is None else types:
        for i in range(n):
            fits = tables.mp[i + 1 :] - tables.mp[i] <= tables.mem[t]
            ends = tables.startup[t] + (tables.wpt[t, i + 1 :] - tables.wpt[t, i]) * tables.inv_bw[t]
            ends = np.where(tables.nres[t, i + 1 :] > tables.nres[t, i], ends, 0.0)
            values.append(ends[fits])
    return np.unique(np.concatenate(values))
