"""``coldpipe show TRACE``: a runtime trace's measured spans drawn over the simulator's prediction.

The tables are ``coldpipe run``'s own (:mod:`coldpipe.cli.measured`), rebuilt from the trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from coldpipe.cli._common import JsonFlag, console, note, print_json, scenario_arg
from coldpipe.cli.measured import print_measured
from coldpipe.errors import InputError
from coldpipe.units import format_seconds


def show_command(
    trace: Annotated[
        str, typer.Argument(metavar="TRACE", help="Trace JSON written by `coldpipe run` (Chrome/Perfetto format).")
    ],
    scenario: Annotated[
        str | None,
        typer.Option(metavar="SCENARIO", help="Scenario to predict with (default: the one stored in the trace)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Chart to write, .png or .svg (default: TRACE with .png).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Overlay the measured spans of TRACE on the predicted timeline of its plan, and compare them."""
    from coldpipe.core.simulator import simulate
    from coldpipe.runtime.report import build_report, result_from_trace
    from coldpipe.runtime.trace import Span
    from coldpipe.viz.gantt import draw_gantt
    from coldpipe.viz.trace import measured_bars, read_trace, stage_errors

    tr = read_trace(trace)
    if tr.plan is None:
        raise InputError("trace.coldpipe.plan", "is missing", "the runtime writes the plan it ran there")
    if scenario is not None:
        sc = scenario_arg(scenario)
    elif tr.scenario is not None:
        sc = tr.scenario
    else:
        raise InputError("--scenario", "the trace carries no scenario", "pass --scenario FILE")
    timeline = simulate(sc, tr.plan, tr.overlap)
    path = out if out is not None else Path(trace).with_suffix(".png")
    chart = draw_gantt(
        timeline,
        path,
        title=f"measured (lower lanes) vs predicted: {tr.plan} (overlap={tr.overlap})",
        measured=measured_bars(tr),
        measured_ttft_s=tr.measured_ttft_s,
        option="--out",
    )
    report = None
    if tr.measured_ttft_s is not None and "token_ids" in tr.meta:
        stage_spans = [
            (
                st.device,
                [
                    Span(
                        s.name,
                        s.cat,
                        s.start_s,
                        s.end_s,
                        s.block,
                        None if s.n_bytes is None else int(s.n_bytes),
                        None,
                        s.request,
                    )
                    for s in tr.spans
                    if s.stage == j
                ],
            )
            for j, st in enumerate(timeline.stages)
        ]
        try:
            report = build_report(result_from_trace(stage_spans, tr.meta), sc, tr.plan, tr.overlap)
        except (IndexError, KeyError, ValueError) as exc:  # a trace without every span kind: the chart only
            note(f"no measured/predicted table, the trace lacks spans it needs ({exc!r})")
    summary: dict[str, Any] = {
        "plan": str(tr.plan),
        "overlap": tr.overlap,
        "predicted_ttft": timeline.ttft_s,
        "measured_ttft": tr.measured_ttft_s,
        "ttft_error": (tr.measured_ttft_s / timeline.ttft_s - 1.0) if tr.measured_ttft_s is not None else None,
        "stages": stage_errors(tr, timeline),
        "chart": str(chart.paths[0]),
    }
    if report is not None:
        summary["report"] = report.to_dict()
    if json_out:
        print_json(summary)
        return
    if report is not None:
        print_measured(report, tr.plan, tr.overlap)
    else:
        measured = "-" if tr.measured_ttft_s is None else format_seconds(tr.measured_ttft_s)
        console.print(f"TTFT measured {measured}, predicted {format_seconds(timeline.ttft_s)}")
    console.print(f"chart: {chart.paths[0]}")


def register(app: typer.Typer) -> None:
    app.command("show")(show_command)
