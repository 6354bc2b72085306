"""Clock offsets, NTP-style: each agent stamps its spans on its own clock; the coordinator maps them onto its own.

One probe: the coordinator notes ``t1``, the agent answers its clock ``t``, the coordinator notes ``t2``;
if the two legs take equal time, ``offset = t - (t1 + t2) / 2`` (agent minus coordinator) within ``+-rtt/2``.
The probe with the smallest round trip is the least disturbed one; its offset is kept (NTP's clock filter).
TTFT is measured on the coordinator's clock only; offsets only line up the trace and schedule ``t0``.

>>> offset_from_probes([(10.0, 15.2, 10.4), (20.0, 25.05, 20.1)])
(5.0, 0.1)
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["estimate_offset", "offset_from_probes"]


def offset_from_probes(probes: list[tuple[float, float, float]]) -> tuple[float, float]:
    """(offset_s, rtt_s) of the probe ``(t1, agent_t, t2)`` with the smallest round trip."""
    t1, t, t2 = min(probes, key=lambda p: p[2] - p[0])
    return round(t - (t1 + t2) / 2, 9), round(t2 - t1, 9)


def estimate_offset(ask: Callable[[], float], probes: int = 8) -> tuple[float, float]:
    """Probe ``ask()`` (returns the agent's ``time.time()``) ``probes`` times; (offset_s, rtt_s)."""
    samples = []
    for _ in range(probes):
        t1 = time.time()
        t = ask()
        samples.append((t1, t, time.time()))
    return offset_from_probes(samples)
