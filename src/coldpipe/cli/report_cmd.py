"""``coldpipe report SCENARIO --out DIR``: a self-contained HTML page and the same as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coldpipe.cli._common import (
    DEMO_SCENARIO,
    ObjectiveOption,
    ScenarioArg,
    console,
    demo_scenario_text,
    objective_arg,
    scenario_arg,
    with_mechanisms,
)


def report_command(
    scenario: ScenarioArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for index.html, report.md and figures/.")
    ] = Path("out/report"),
    objective: ObjectiveOption = "ttft",
    mechanisms: Annotated[
        str, typer.Option(help="Cold-start mechanisms beyond the paper's model: all | comma-separated names.")
    ] = "",
) -> None:
    """Write a report of SCENARIO: plans, speedups, schedules, idle accounting, the scenario itself."""
    from coldpipe.viz.report import write_report

    obj = objective_arg(objective)
    sc = with_mechanisms(scenario_arg(scenario), mechanisms)
    if scenario == DEMO_SCENARIO and not Path(scenario).exists():
        text = demo_scenario_text()
    else:
        text = Path(scenario).read_text(encoding="utf-8")
    paths = write_report(sc, out, scenario_text=text, objective=obj)
    console.print(f"wrote {paths[0]} (self-contained) and {paths[1]} (figures in {out / 'figures'})")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
