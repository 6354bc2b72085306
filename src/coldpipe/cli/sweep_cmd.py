"""``coldpipe sweep``: TTFT of the optimum, every baseline and the bounds along one axis (CSV + plot)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coldpipe.cli._common import DEMO_SCENARIO, console, err_console, scenario_arg, with_mechanisms
from coldpipe.errors import InputError
from coldpipe.units import format_seconds


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,  # stdout keeps the tables only
        transient=True,
        disable=not err_console.is_terminal,
    )


def _summary_table(result: object, title: str) -> Table:
    from coldpipe.viz.sweep import STRATEGY_OPTIMAL, SweepResult

    assert isinstance(result, SweepResult)
    table = Table(title=title, title_justify="left")
    for col in ("value", "coldpipe", "best baseline", "its TTFT", "speedup", "lower bound"):
        table.add_column(col, justify="left" if col in ("value", "best baseline") else "right")
    for value in result.values():
        at = result.at(value)
        opt = at[STRATEGY_OPTIMAL]
        baselines = [r for r in at.values() if r.kind == "baseline"]
        best = min(baselines, key=lambda r: r.ttft_s)
        bound = max(r.ttft_s for r in at.values() if r.kind == "bound")
        if not math.isfinite(opt.ttft_s):
            table.add_row(value, "infeasible", "-", "-", "-", "-")
            continue
        table.add_row(
            value,
            format_seconds(opt.ttft_s),
            best.strategy if math.isfinite(best.ttft_s) else "(none runs)",
            format_seconds(best.ttft_s) if math.isfinite(best.ttft_s) else "-",
            f"{best.ttft_s / opt.ttft_s:.2f}x" if math.isfinite(best.ttft_s) else "-",
            format_seconds(bound),
        )
    return table


def sweep_command(
    scenario: Annotated[
        str | None,
        typer.Argument(metavar="SCENARIO", help="Scenario file (YAML/JSON), or 'demo'. Default with --paper: demo."),
    ] = None,
    axis: Annotated[
        str | None, typer.Option(help="devices | uplink | load_bandwidth | model | prompt_tokens | startup.")
    ] = None,
    values: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated values (default: the axis's own set). devices: counts (beyond the scenario's, "
            "copies); uplink / load_bandwidth / startup: multipliers (2x) or absolute values ('600 Mbit/s', "
            "'3 GB/s', '500 ms'); model: catalog names; prompt_tokens: counts."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for sweep_<axis>.csv/.png/.svg.")
    ] = Path("out/sweep"),
    paper: Annotated[
        bool, typer.Option("--paper", help="Run the full default evaluation (every axis) on the scenario.")
    ] = False,
    mechanisms: Annotated[
        str, typer.Option(help="Cold-start mechanisms beyond the paper's model: all | comma-separated names.")
    ] = "",
) -> None:
    """Sweep one axis of SCENARIO: TTFT of coldpipe's optimum, of every baseline and the lower bounds."""
    from coldpipe.viz.sweep import AXES, DEFAULT_VALUES, paper_plan, plot_sweep, run_paper, run_sweep, write_csv

    if paper:
        if axis is not None or values is not None:
            raise InputError("--paper", "runs every axis with its default values", "drop --axis / --values")
        sc = with_mechanisms(scenario_arg(scenario or DEMO_SCENARIO), mechanisms)
        total = sum(len(v) for _ps, _sc, v in paper_plan(sc))
        with _progress() as progress:
            task = progress.add_task("paper sweeps", total=total)
            results = run_paper(sc, out, lambda v: progress.advance(task))
        for name, res in results.items():
            console.print(_summary_table(res, f"sweep {name}"))
        console.print(f"wrote {len(results)} sweeps (CSV, PNG, SVG) to {out}/")
        return
    if scenario is None:
        raise InputError("SCENARIO", "is required without --paper", "give a scenario file or 'demo'")
    if axis is None:
        raise InputError("--axis", "is required", f"use one of {', '.join(AXES)}")
    if axis not in AXES:
        raise InputError("--axis", f"unknown axis {axis!r}", f"use one of {', '.join(AXES)}")
    value_list = (
        [v.strip() for v in values.split(",") if v.strip()] if values is not None else list(DEFAULT_VALUES[axis])
    )
    sc = with_mechanisms(scenario_arg(scenario), mechanisms)
    with _progress() as progress:
        task = progress.add_task(f"sweep {axis}", total=len(value_list))
        result = run_sweep(sc, axis, value_list, lambda v: progress.advance(task))
    csv_path = write_csv(result, out / f"sweep_{axis}.csv")
    plots = plot_sweep(result, [out / f"sweep_{axis}.png", out / f"sweep_{axis}.svg"])
    console.print(_summary_table(result, f"sweep over {axis} (scenario model: {sc.model_name})"))
    console.print(f"wrote {csv_path}, {', '.join(str(p) for p in plots)}")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
