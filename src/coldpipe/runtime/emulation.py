"""The emulated edge cluster: how one host stands in for several slower devices, knob by knob.

Every knob comes from the scenario (so the simulator predicts from the very numbers the runtime enforces):

- **start-up**: a worker process is started (and torch imported) *before* the request; ``startup`` of the
  scenario is emulated by sleeping from the request until loading starts;
- **storage**: the page cache of the checkpoint files is dropped before the request (``posix_fadvise
  DONTNEED`` after ``fdatasync``), and the loader is paced to ``load_bandwidth`` bytes/s (a token bucket
  without burst: after each chunk it sleeps until ``bytes read / rate`` has elapsed). It can only slow the
  host down: a rate above what the disk delivers is not reached (the report shows the measured load end);
- **compute**: each block's measured host time ``c`` is stretched to ``c * slowdown`` by sleeping the
  difference to its wall time; ``slowdown = host_flops / device.flops`` with ``host_flops`` measured by
  ``coldpipe profile-host`` (1 without a host profile: the device computes at host speed). By default ``c``
  is the compute thread's CPU time (torch runs 1 thread per rank): on a host whose cores other processes
  share, the wall time of a block also counts the time other processes held the CPU, which a real device
  would not lose, and stretching it would multiply that noise by ``slowdown``. ``compute_clock="wall"``
  stretches wall time;
- **memory bandwidth** (decode steps only): a block's decode step lasts at least ``(weight_bytes + kv_bytes) /
  mem_bandwidth`` of the scenario (every weight and the reserved KV cache stream through memory once per
  token), on top of the compute stretch: ``max(c * slowdown, bytes / mem_bandwidth)``, the model's
  ``block_decode_s`` with the host's measured ``c`` in place of ``decode_flops / host_flops``;
- **streamed weights**: a streaming device's loader fetches its blocks' tensors from rank 0 over a loopback
  socket (``runtime/stream.py``), each taking ``8n/downlink + hop`` (from a peer ``8n/uplink_peer + hop`` first)
  after the previous one arrived (under
  ``tdma``/``fdma`` once rank 0's arbiter grants it the channel, as every emulated hop then waits for it);
- **links**: a transfer of ``n`` bytes (the real size of the tensor) takes the model's ``transfer(src, dst, n)``
  (``8n/uplink + hop + 8n/downlink + hop``, docs/model.md#transfers) from the moment it is sent: the sender
  sends on loopback at once (with its send time) and goes on, the receiver sleeps until ``sent + transfer``.
  Transfers never delay the sender and do not queue on a link, as in the model.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coldpipe.core.mechanisms import first_token_bytes
from coldpipe.core.types import Plan, Scenario

__all__ = ["DeviceEmulation", "Pacer", "drop_page_cache", "emulation_for"]


@dataclass(frozen=True)
class DeviceEmulation:
    """What a worker enforces to play ``device`` (``read_bytes_per_s`` None = uncapped, ``slowdown`` >= 1)."""

    device: str
    startup_s: float
    read_bytes_per_s: float | None
    slowdown: float
    compute_clock: str = "cpu"  # "cpu": the host's block time is the thread's CPU time; "wall": wall-clock time
    mem_bandwidth: float | None = None  # bytes/s: a decode step of a block lasts >= (weights + KV) / this
    # streamed-weights: the device's blocks come from rank 0 (the file), each over these hops in turn, a hop of
    # n bytes taking n * s_per_byte + hop_s on its channel (tdma: "air", fdma: a device; "" with sharing none)
    stream_hops: tuple[tuple[str, float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> DeviceEmulation:
        hops = tuple((str(c), float(r), float(h)) for c, r, h in d.get("stream_hops", ()))
        return DeviceEmulation(**{**d, "stream_hops": hops})


def emulation_for(
    scenario: Scenario, plan: Plan, host_flops: float | None, *, enabled: bool = True, compute_clock: str = "cpu"
) -> list[DeviceEmulation]:
    """One :class:`DeviceEmulation` per stage of ``plan``, then per head shard (all knobs off when ``enabled`` is
    false).

    With the ``reuse`` mechanism a device may hold several stages, each run by its own process: the device's
    one loader (docs/model.md#reuse) is emulated by starting a later stage's loading when the device's loader
    would have read its earlier stages' first-token bytes at ``load_bandwidth``.
    """
    scenario = scenario.planned()  # sublayer: the plan indexes the split blocks
    out = []
    read_before: dict[str, float] = {}  # first-token bytes of the device's earlier stages
    for st in plan.stages:
        dev = scenario.device(st.device)
        if not enabled:
            out.append(DeviceEmulation(st.device, 0.0, None, 1.0))
            continue
        slowdown = 1.0 if host_flops is None else max(1.0, host_flops / dev.flops)
        rate = dev.load_bandwidth if dev.load_bandwidth != float("inf") else None
        before = read_before.get(st.device, 0.0)
        startup = dev.startup + (before / rate if rate is not None else 0.0)
        read_before[st.device] = before + sum(
            first_token_bytes(scenario, l) for l in range(st.first, st.last + 1) if not dev.holds(l)
        )
        if "streamed-weights" in scenario.mechanisms and dev.weights != "local":  # docs/model.md#streamed-weights
            hop, sharing = scenario.network.hop_latency, scenario.network.sharing
            tdma = {"none": "", "tdma": "air"}.get(sharing)

            def channel(name: str, fixed: str | None = tdma) -> str:
                return name if fixed is None else fixed

            hops = [(channel(st.device), 8.0 / dev.downlink, hop)]
            begin = dev.startup
            if dev.weights != "ap":  # a peer: its uplink, then this device's downlink (the bytes: rank 0's file)
                peer = scenario.device(dev.weights)
                hops.insert(0, (channel(peer.name), 8.0 / peer.uplink, hop))
                begin = max(begin, peer.startup)
            out.append(DeviceEmulation(st.device, begin, None, slowdown, compute_clock, dev.mem_bandwidth,
                                       tuple(hops)))  # fmt: skip
            continue
        out.append(DeviceEmulation(st.device, startup, rate, slowdown, compute_clock, dev.mem_bandwidth))
    for sh in plan.head_shards:  # sharded-head: a shard's rank loads after its device's stages
        dev = scenario.device(sh.device)
        if not enabled:
            out.append(DeviceEmulation(sh.device, 0.0, None, 1.0))
            continue
        slowdown = 1.0 if host_flops is None else max(1.0, host_flops / dev.flops)
        rate = dev.load_bandwidth if dev.load_bandwidth != float("inf") else None
        startup = dev.startup + (read_before.get(sh.device, 0.0) / rate if rate is not None else 0.0)
        out.append(DeviceEmulation(sh.device, startup, rate, slowdown, compute_clock, dev.mem_bandwidth))
    return out


class Pacer:
    """Token bucket without burst: ``pace(n)`` sleeps until ``total bytes / rate`` has elapsed since ``start``."""

    def __init__(self, rate_bytes_per_s: float | None, start: float | None = None) -> None:
        self.rate = rate_bytes_per_s
        self.start = time.perf_counter() if start is None else start
        self.total = 0

    def pace(self, n_bytes: int) -> None:
        self.total += n_bytes
        if self.rate is None:
            return
        wait = self.start + self.total / self.rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)


def drop_page_cache(paths: list[Path]) -> None:
    """Evict ``paths`` from the page cache (written back first, so DONTNEED can drop every page)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
