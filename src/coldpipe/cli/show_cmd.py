"""``coldpipe show TRACE``: a runtime trace's measured spans drawn over the simulator's prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coldpipe.cli._common import console, print_json, scenario_arg
from coldpipe.errors import InputError
from coldpipe.units import format_seconds


def _fmt(value: float | None) -> str:
    return "-" if value is None else format_seconds(value)


def show_command(
    trace: Annotated[str, typer.Argument(help="Trace JSON written by the runtime (Chrome/Perfetto format).")],
    scenario: Annotated[
        str | None, typer.Option(help="Scenario to predict with (default: the one stored in the trace).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Chart to write, .png or .svg (default: TRACE with .png).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Overlay the measured spans of TRACE on the predicted timeline of its plan, and compare them."""
    from coldpipe.core.simulator import simulate
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
    rows = stage_errors(tr, timeline)
    summary: dict[str, Any] = {
        "plan": str(tr.plan),
        "overlap": tr.overlap,
        "predicted_ttft": timeline.ttft_s,
        "measured_ttft": tr.measured_ttft_s,
        "ttft_error": (tr.measured_ttft_s / timeline.ttft_s - 1.0) if tr.measured_ttft_s is not None else None,
        "stages": rows,
        "chart": str(chart.paths[0]),
    }
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"{tr.plan} (overlap={tr.overlap}): predicted / measured", title_justify="left")
    for col in ("#", "device", "loaded at", "compute starts", "compute ends", "idle: weights"):
        table.add_column(col, justify="left" if col == "device" else "right")
    for r in rows:
        table.add_row(
            str(r["stage"] + 1),
            r["device"],
            f"{_fmt(r['predicted_load_end'])} / {_fmt(r['measured_load_end'])}",
            f"{_fmt(r['predicted_compute_start'])} / {_fmt(r['measured_compute_start'])}",
            f"{_fmt(r['predicted_compute_end'])} / {_fmt(r['measured_compute_end'])}",
            f"{_fmt(r['predicted_idle_weights'])} / {_fmt(r['measured_idle_weights'])}",
        )
    console.print(table)
    measured = _fmt(tr.measured_ttft_s)
    err = f" ({100 * summary['ttft_error']:+.1f}%)" if summary["ttft_error"] is not None else ""
    console.print(
        f"TTFT predicted {format_seconds(timeline.ttft_s)}, measured {measured}{err}; chart: {chart.paths[0]}"
    )


def register(app: typer.Typer) -> None:
    app.command("show")(show_command)
