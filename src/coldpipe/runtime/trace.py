"""Spans recorded by the workers, and the Chrome/Perfetto trace JSON that ``run`` writes.

The format is a contract with ``coldpipe show`` (see ``docs/runtime.md``): ``traceEvents`` of ``"ph": "X"``
spans with ``ts``/``dur`` in microseconds since the request arrived (t = 0), ``pid`` = stage index (0-based),
``tid`` 0 for compute/send/recv/wait and 1 for load, ``args`` = ``{"device", "block", "bytes"}``; ``"ph": "M"``
``process_name`` events name each pid after its device; the top-level ``"coldpipe"`` object carries the
scenario, plan, overlap, measured and predicted TTFT, token ids and the end-to-end time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Recorder", "Span", "chrome_trace"]

TID = {"load": 1, "compute": 0, "decode": 0, "send": 0, "recv": 0, "wait": 0}


@dataclass(frozen=True)
class Span:
    """``cat`` work named ``name`` during [start_s, end_s] (seconds since the request), on one stage."""

    name: str
    cat: str  # load | compute (prefill) | decode (a decode step of a block) | send | recv | wait
    start_s: float
    end_s: float
    block: int | None = None
    n_bytes: int | None = None
    cpu_s: float | None = None  # compute spans: CPU time of the compute thread (before any slowdown sleep)
    request: int = 0  # which request of a burst (0: the first, or the only one)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cat": self.cat,
            "start": self.start_s,
            "end": self.end_s,
            "block": self.block,
            "bytes": self.n_bytes,
            "cpu": self.cpu_s,
            "request": self.request,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Span:
        return Span(
            d["name"], d["cat"], d["start"], d["end"], d.get("block"), d.get("bytes"), d.get("cpu"), d.get("request", 0)
        )


@dataclass
class Recorder:
    """Thread-safe list of spans, timed by the wall clock relative to ``t0`` (the request's arrival)."""

    t0: float = 0.0
    spans: list[Span] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.time() - self.t0

    def add(
        self,
        name: str,
        cat: str,
        start_s: float,
        end_s: float,
        block: int | None = None,
        n_bytes: int | None = None,
        cpu_s: float | None = None,
        request: int = 0,
    ) -> None:
        with self._lock:
            self.spans.append(Span(name, cat, start_s, end_s, block, n_bytes, cpu_s, request))


def chrome_trace(stages: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The trace JSON: ``stages[j]`` = ``{"device": name, "spans": [Span, ...]}``; ``meta`` goes to ``"coldpipe"``."""
    events: list[dict[str, Any]] = []
    for j, st in enumerate(stages):
        events.append({"name": "process_name", "ph": "M", "pid": j, "tid": 0, "args": {"name": st["device"]}})
        for sp in st["spans"]:
            events.append(
                {
                    "name": sp.name,
                    "cat": sp.cat,
                    "ph": "X",
                    "ts": sp.start_s * 1e6,
                    "dur": max(0.0, sp.end_s - sp.start_s) * 1e6,
                    "pid": j,
                    "tid": TID[sp.cat],
                    "args": {"device": st["device"], "block": sp.block, "bytes": sp.n_bytes}
                    | ({"cpu_s": sp.cpu_s} if sp.cpu_s is not None else {})
                    | ({"request": sp.request} if sp.request else {}),
                }
            )
    return {"traceEvents": events, "displayTimeUnit": "ms", "coldpipe": meta}
