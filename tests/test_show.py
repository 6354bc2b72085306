"""Runtime traces: read back per the shared format, overlaid on the prediction, compared stage by stage.

The traces here are synthetic: written from the simulator's own timeline (optionally stretched), in the
Chrome/Perfetto format the runtime writes, so the expected measured figures are known exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coldpipe.cli._common import scenario_arg
from coldpipe.core.simulator import Timeline
from coldpipe.errors import InputError
from coldpipe.planning import Problem, plan
from coldpipe.viz.gantt import draw_gantt, gantt_bars, idle_bars
from coldpipe.viz.trace import measured_bars, read_trace, stage_errors, trace_from_dict

DEMO = scenario_arg("demo")


def synthetic_trace(tl: Timeline, stretch: float = 1.0, with_scenario: bool = True) -> dict[str, Any]:
    """The timeline's spans as runtime events, every time multiplied by ``stretch``."""
    us = lambda s: round(s * stretch * 1e6, 3)  # noqa: E731
    events: list[dict[str, Any]] = []
    for j, st in enumerate(tl.stages):
        events.append({"ph": "M", "name": "process_name", "pid": j, "args": {"name": st.device}})
        for b in st.blocks:
            for cat, tid, t0, t1 in (
                ("load", 1, b.load_start_s, b.load_end_s),
                ("compute", 0, b.compute_start_s, b.compute_end_s),
            ):
                events.append(
                    {
                        "name": f"{cat} b{b.block}",
                        "cat": cat,
                        "ph": "X",
                        "ts": us(t0),
                        "dur": us(t1) - us(t0),
                        "pid": j,
                        "tid": tid,
                        "args": {"device": st.device, "block": b.block, "bytes": None},
                    }
                )
    for mark in idle_bars(tl):  # the runtime records idle-for-weights as "wait" spans
        if mark.kind == "idle-weights":
            events.append(
                {
                    "name": "wait weights",
                    "cat": "wait",
                    "ph": "X",
                    "ts": us(mark.start_s),
                    "dur": us(mark.end_s) - us(mark.start_s),
                    "pid": mark.stage,
                    "tid": 0,
                    "args": {"device": mark.device, "block": mark.block, "bytes": None},
                }
            )
    for tr in tl.transfers[1:-1]:  # activations: a send on the upstream stage
        j = [s.device for s in tl.stages].index(tr.src)
        events.append(
            {
                "name": "send",
                "cat": "send",
                "ph": "X",
                "ts": us(tr.start_s),
                "dur": us(tr.at_ap_s) - us(tr.start_s),
                "pid": j,
                "tid": 0,
                "args": {"device": tr.src, "block": None, "bytes": int(tr.n_bytes)},
            }
        )
    events.append({"name": "ignored", "ph": "i", "ts": 0, "pid": 0, "tid": 0})  # other phases are skipped
    meta: dict[str, Any] = {
        "plan": tl.plan.to_dict(),
        "overlap": tl.overlap,
        "measured_ttft": tl.ttft_s * stretch,
        "predicted_ttft": tl.ttft_s,
        "token_ids": [128000],
        "measured_e2e": None,
    }
    if with_scenario:
        meta["scenario"] = DEMO.to_dict()
    return {"traceEvents": events, "coldpipe": meta}


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return plan(Problem(DEMO)).timeline


def test_exact_trace_overlays_exactly(timeline: Timeline) -> None:
    tr = trace_from_dict(synthetic_trace(timeline))
    assert tr.plan == timeline.plan and tr.overlap == "layer" and tr.scenario == DEMO
    assert tr.stage_devices == {j: st.device for j, st in enumerate(timeline.stages)}
    measured = {
        (b.stage, b.kind, b.block): (b.start_s, b.end_s) for b in measured_bars(tr) if b.kind in ("load", "compute")
    }
    predicted = {(b.stage, b.kind, b.block): (b.start_s, b.end_s) for b in gantt_bars(timeline) if b.block is not None}
    assert measured.keys() == predicted.keys()
    for key, (t0, t1) in predicted.items():
        assert measured[key] == pytest.approx((t0, t1), abs=1e-6)
    assert sum(1 for b in measured_bars(tr) if b.kind == "send") == len(timeline.stages) - 1
    for row in stage_errors(tr, timeline):
        assert row["measured_load_end"] == pytest.approx(row["predicted_load_end"], abs=1e-6)
        assert row["measured_compute_start"] == pytest.approx(row["predicted_compute_start"], abs=1e-6)
        assert row["measured_compute_end"] == pytest.approx(row["predicted_compute_end"], abs=1e-6)
        assert (row["measured_idle_weights"] or 0.0) == pytest.approx(row["predicted_idle_weights"], abs=1e-6)
    assert any(row["measured_idle_weights"] for row in stage_errors(tr, timeline))  # the demo's plan does wait


def test_stretched_trace_shows_the_error(timeline: Timeline, tmp_path: Path) -> None:
    tr = trace_from_dict(synthetic_trace(timeline, stretch=1.25))
    rows = stage_errors(tr, timeline)
    last = rows[-1]
    assert last["measured_compute_end"] == pytest.approx(1.25 * last["predicted_compute_end"], abs=1e-6)
    chart = draw_gantt(timeline, tmp_path / "o.png", measured=measured_bars(tr), measured_ttft_s=tr.measured_ttft_s)
    assert len(chart.measured) == len(measured_bars(tr)) and chart.t_max_s >= 1.25 * timeline.ttft_s


def test_a_bursts_later_requests_are_drawn_but_not_compared(timeline: Timeline) -> None:
    """The per-stage comparison is the first request's: a burst's request 1 computing later changes nothing."""
    doc = synthetic_trace(timeline)
    late = [
        {**e, "name": e["name"] + " r1", "ts": e["ts"] + 5e6, "args": {**e["args"], "request": 1}}
        for e in doc["traceEvents"]
        if e.get("cat") == "compute"
    ]
    doc["traceEvents"] += late
    tr = trace_from_dict(doc)
    assert sum(1 for b in measured_bars(tr) if b.kind == "compute") == 2 * len(late)
    for row in stage_errors(tr, timeline):
        assert row["measured_compute_end"] == pytest.approx(row["predicted_compute_end"], abs=1e-6)
    with pytest.raises(InputError, match=r"args\.request"):
        trace_from_dict({"traceEvents": [{**late[0], "args": {"request": -1}}]})


def test_show_cli(timeline: Timeline, tmp_path: Path) -> None:
    path = tmp_path / "run.trace.json"
    path.write_text(json.dumps(synthetic_trace(timeline, stretch=1.1, with_scenario=False)))
    cmd = [sys.executable, "-m", "coldpipe", "show", str(path)]
    no_scenario = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert no_scenario.returncode == 2 and "--scenario" in no_scenario.stderr
    res = subprocess.run([*cmd, "--scenario", "demo", "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["predicted_ttft"] == pytest.approx(timeline.ttft_s)
    assert doc["ttft_error"] == pytest.approx(0.1)
    assert Path(doc["chart"]).is_file() and Path(doc["chart"]).suffix == ".png"


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([], r"trace: expected a JSON object with a 'traceEvents' list"),
        ({"traceEvents": [{"cat": "load", "ph": "X", "ts": "soon", "dur": 1, "pid": 0}]}, r"traceEvents\[0\]\.ts"),
        ({"traceEvents": [{"cat": "load", "ph": "X", "ts": 0, "dur": -1, "pid": 0}]}, r"traceEvents\[0\]\.dur"),
        ({"traceEvents": [{"cat": "compute", "ph": "X", "ts": 0, "dur": 1, "pid": -1}]}, r"traceEvents\[0\]\.pid"),
        ({"traceEvents": [], "coldpipe": {"overlap": "some"}}, r"trace\.coldpipe\.overlap: unknown mode"),
    ],
)
def test_malformed_traces_name_the_field(doc: Any, match: str) -> None:
    with pytest.raises(InputError, match=match):
        trace_from_dict(doc)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_trace(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="is not valid JSON"):
        read_trace(tmp_path / "bad.json")
