"""Runtime traces (Chrome/Perfetto JSON, the format the runtime writes) read back for charts.

The contract (shared with the runtime)::

    {"traceEvents": [
        {"name": "load b3", "cat": "load" | "compute" | "send" | "recv" | "wait", "ph": "X",
         "ts": <µs since the request arrived>, "dur": <µs>, "pid": <stage index, 0-based>,
         "tid": 0 for compute/send/recv, 1 for load,
         "args": {"device": "<name>", "block": <int or null>, "bytes": <int or null>}},
        {"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "<device>"}}, ...],
     "coldpipe": {"scenario": <Scenario.to_dict()>, "plan": <Plan.to_dict()>, "overlap": "layer",
                  "measured_ttft": <s>, "predicted_ttft": <s>, "token_ids": [...], "measured_e2e": <s or null>}}

Events of other phases or categories are ignored (a trace may carry more than coldpipe draws).

>>> doc = {"traceEvents": [{"name": "load b0", "cat": "load", "ph": "X", "ts": 0, "dur": 2e6, "pid": 0,
...        "tid": 1, "args": {"device": "a", "block": 0, "bytes": 10}}],
...        "coldpipe": {"plan": {"stages": [{"device": "a", "first": 0, "last": 0}]}, "measured_ttft": 2.5}}
>>> tr = trace_from_dict(doc)
>>> tr.spans[0].cat, tr.spans[0].start_s, tr.spans[0].end_s, str(tr.plan), tr.measured_ttft_s
('load', 0.0, 2.0, 'a[0-0]', 2.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coldpipe.core.limits import cut
from coldpipe.core.simulator import Timeline
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario
from coldpipe.errors import InputError
from coldpipe.viz.gantt import MEASURED_KINDS, Bar

__all__ = ["Trace", "TraceSpan", "measured_bars", "read_trace", "stage_errors", "trace_from_dict"]


@dataclass(frozen=True)
class TraceSpan:
    """One complete ("X") event of the trace, in seconds since the request arrived."""

    stage: int
    device: str
    cat: str
    name: str
    start_s: float
    end_s: float
    block: int | None
    n_bytes: float | None
    request: int = 0  # a burst's request (``args.request``; 0: the first or only one)


@dataclass(frozen=True)
class Trace:
    spans: tuple[TraceSpan, ...]
    plan: Plan | None
    scenario: Scenario | None
    overlap: Overlap
    measured_ttft_s: float | None
    predicted_ttft_s: float | None
    measured_e2e_s: float | None
    stage_devices: dict[int, str]  # from the "process_name" metadata events
    meta: dict[str, Any] = field(default_factory=dict)  # the whole "coldpipe" object (token ids, a burst's times)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(
            where, f"must be a finite number, got {cut(repr(value), 80)}", "see docs/evaluation.md for the format"
        )
    return float(value)


def _optional_number(value: Any, where: str) -> float | None:
    return None if value is None else _number(value, where)


def trace_from_dict(doc: Any) -> Trace:
    """Validate a parsed trace; every problem is an :class:`InputError` naming the event."""
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise InputError("trace", "expected a JSON object with a 'traceEvents' list", "is this a coldpipe trace?")
    spans: list[TraceSpan] = []
    stage_devices: dict[int, str] = {}
    for i, ev in enumerate(doc["traceEvents"]):
        where = f"trace.traceEvents[{i}]"
        if not isinstance(ev, dict):
            raise InputError(where, f"expected an object, got {cut(repr(ev), 80)}")
        ph = ev.get("ph")
        args = ev.get("args") or {}
        if not isinstance(args, dict):
            raise InputError(f"{where}.args", f"expected an object, got {cut(repr(args), 80)}")
        if ph == "M" and ev.get("name") == "process_name" and isinstance(ev.get("pid"), int):
            stage_devices[ev["pid"]] = str(args.get("name", ""))
            continue
        if ph != "X" or not isinstance(ev.get("cat"), str) or ev["cat"] not in MEASURED_KINDS:
            continue
        pid = ev.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid < 0:
            raise InputError(f"{where}.pid", f"must be a stage index >= 0, got {cut(repr(pid), 80)}")
        start = _number(ev.get("ts"), f"{where}.ts") / 1e6
        dur = _number(ev.get("dur"), f"{where}.dur") / 1e6
        if dur < 0:
            raise InputError(f"{where}.dur", f"must be >= 0, got {cut(repr(ev.get('dur')), 80)}")
        block = args.get("block")
        if block is not None and (isinstance(block, bool) or not isinstance(block, int)):
            raise InputError(f"{where}.args.block", f"must be a block index or null, got {cut(repr(block), 80)}")
        spans.append(
            TraceSpan(
                stage=pid,
                device=str(args.get("device", "")),
                cat=str(ev["cat"]),
                name=str(ev.get("name", "")),
                start_s=start,
                end_s=start + dur,
                block=block,
                n_bytes=_optional_number(args.get("bytes"), f"{where}.args.bytes"),
                request=_request(args.get("request", 0), f"{where}.args.request"),
            )
        )
    meta = doc.get("coldpipe") or {}
    if not isinstance(meta, dict):
        raise InputError("trace.coldpipe", f"expected an object, got {cut(repr(meta), 80)}")
    plan = Plan.from_dict(meta["plan"]) if meta.get("plan") is not None else None
    scenario = None
    if meta.get("scenario") is not None:
        from coldpipe.scenario_file import scenario_from_dict

        try:  # validated like a scenario file (the runtime writes Scenario.to_dict(), a valid one)
            scenario = scenario_from_dict(meta["scenario"])
        except InputError as exc:
            raise InputError(f"trace.coldpipe.scenario.{exc.field}", exc.problem, exc.fix) from None
    overlap = meta.get("overlap", "layer")
    if overlap not in OVERLAPS:
        raise InputError(
            "trace.coldpipe.overlap", f"unknown mode {cut(repr(overlap), 80)}", f"use one of {list(OVERLAPS)}"
        )
    return Trace(
        spans=tuple(sorted(spans, key=lambda s: (s.stage, s.start_s))),
        plan=plan,
        scenario=scenario,
        overlap=overlap,
        measured_ttft_s=_optional_number(meta.get("measured_ttft"), "trace.coldpipe.measured_ttft"),
        predicted_ttft_s=_optional_number(meta.get("predicted_ttft"), "trace.coldpipe.predicted_ttft"),
        measured_e2e_s=_optional_number(meta.get("measured_e2e"), "trace.coldpipe.measured_e2e"),
        stage_devices=stage_devices,
        meta=meta,
    )


def read_trace(path: str | Path) -> Trace:
    """Read a trace file written by the runtime."""
    from coldpipe.structured_file import parse_json_text, read_text_limited

    p = Path(path)
    doc = parse_json_text(read_text_limited(p, "trace"), repr(str(p)), "trace")
    return trace_from_dict(doc)


def _request(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(where, f"must be a request index >= 0, got {cut(repr(value), 80)}")
    return value


def measured_bars(trace: Trace) -> list[Bar]:
    """The trace's spans as chart bars (``measured=True``), on the row of their stage."""
    return [
        Bar(s.stage, s.device or trace.stage_devices.get(s.stage, ""), s.cat, s.start_s, s.end_s, s.block, True)
        for s in trace.spans
    ]


def stage_errors(trace: Trace, timeline: Timeline) -> list[dict[str, Any]]:
    """Per stage, predicted against measured: last load end, first compute start, last compute end, and
    the time idle waiting for weights (the runtime records it as ``wait`` spans). Computations are the first
    request's (a burst's later requests never change the first one's timeline).

    A measured figure is ``None`` when the trace has no span of that kind for the stage.
    """
    out = []
    for j, st in enumerate(timeline.stages):
        loads = [s for s in trace.spans if s.stage == j and s.cat == "load"]
        comps = [s for s in trace.spans if s.stage == j and s.cat == "compute" and s.request == 0]
        waits = [s for s in trace.spans if s.stage == j and s.cat == "wait"]
        out.append(
            {
                "stage": j,
                "device": st.device,
                "predicted_load_end": st.load_end_s,
                "measured_load_end": max((s.end_s for s in loads), default=None),
                "predicted_compute_start": st.compute_start_s,
                "measured_compute_start": min((s.start_s for s in comps), default=None),
                "predicted_compute_end": st.compute_end_s,
                "measured_compute_end": max((s.end_s for s in comps), default=None),
                "predicted_idle_weights": st.wait_weights_s,
                "measured_idle_weights": sum(s.end_s - s.start_s for s in waits) if waits else None,
            }
        )
    return out
