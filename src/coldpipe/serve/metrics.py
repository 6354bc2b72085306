"""``GET /metrics``: the server's counters as Prometheus text (exposition format 0.0.4, written by hand).

- ``coldpipe_ttft_seconds{start="cold|warm"}``: measured TTFT (request arrival -> first token), histogram;
- ``coldpipe_ttft_predicted_seconds{start=...}``: the simulator's TTFT for the same requests, histogram;
- ``coldpipe_loaded_bytes_total{device=...}``: bytes each device read from storage;
- ``coldpipe_queue_length``, ``coldpipe_requests_completed_total``, ``coldpipe_completion_tokens_total``,
  ``coldpipe_unloads_total`` and ``coldpipe_errors_total{kind=...}``.
"""

from __future__ import annotations

import bisect
import threading

__all__ = ["BUCKETS_S", "Histogram", "Metrics"]

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """Cumulative buckets, sum and count.

    >>> h = Histogram(); h.observe(0.2); h.observe(3.0); h.counts[BUCKETS_S.index(0.25)], h.count
    (1, 2)
    """

    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS_S)
        self.total = 0.0
        self.count = 0

    def observe(self, value_s: float) -> None:
        for i in range(bisect.bisect_left(BUCKETS_S, value_s), len(BUCKETS_S)):
            self.counts[i] += 1
        self.total += value_s
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out = [f'{name}_bucket{{{labels},le="{b:g}"}} {c}' for b, c in zip(BUCKETS_S, self.counts, strict=True)]
        out += [f'{name}_bucket{{{labels},le="+Inf"}} {self.count}', f"{name}_sum{{{labels}}} {self.total:.6f}"]
        return [*out, f"{name}_count{{{labels}}} {self.count}"]


class Metrics:
    """Everything ``/metrics`` shows; updated by the engine thread and the request handlers."""

    def __init__(self, devices: list[str]) -> None:
        self.lock = threading.Lock()
        self.ttft = {k: Histogram() for k in ("cold", "warm")}
        self.ttft_predicted = {k: Histogram() for k in ("cold", "warm")}
        self.loaded_bytes = dict.fromkeys(devices, 0)
        self.errors: dict[str, int] = {}
        self.queue_length = 0
        self.completed = 0
        self.completion_tokens = 0
        self.unloads = 0

    def observe_ttft(self, cold: bool, measured_s: float, predicted_s: float | None) -> None:
        key = "cold" if cold else "warm"
        with self.lock:
            self.ttft[key].observe(measured_s)
            if predicted_s is not None:
                self.ttft_predicted[key].observe(predicted_s)

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def text(self) -> str:
        with self.lock:
            lines = [
                "# HELP coldpipe_ttft_seconds Measured time to first token (arrival to first token).",
                "# TYPE coldpipe_ttft_seconds histogram",
            ]
            for k, h in self.ttft.items():
                lines += h.lines("coldpipe_ttft_seconds", f'start="{k}"')
            lines += [
                "# HELP coldpipe_ttft_predicted_seconds The simulator's time to first token, same requests.",
                "# TYPE coldpipe_ttft_predicted_seconds histogram",
            ]
            for k, h in self.ttft_predicted.items():
                lines += h.lines("coldpipe_ttft_predicted_seconds", f'start="{k}"')
            lines += [
                "# HELP coldpipe_loaded_bytes_total Bytes read from storage per device.",
                "# TYPE coldpipe_loaded_bytes_total counter",
            ]
            lines += [f'coldpipe_loaded_bytes_total{{device="{d}"}} {n}' for d, n in sorted(self.loaded_bytes.items())]
            lines += ["# HELP coldpipe_errors_total Errors by kind.", "# TYPE coldpipe_errors_total counter"]
            lines += [f'coldpipe_errors_total{{kind="{k}"}} {n}' for k, n in sorted(self.errors.items())]
            for name, kind, value in (
                ("coldpipe_queue_length", "gauge", self.queue_length),
                ("coldpipe_requests_completed_total", "counter", self.completed),
                ("coldpipe_completion_tokens_total", "counter", self.completion_tokens),
                ("coldpipe_unloads_total", "counter", self.unloads),
            ):
                lines += [f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"
