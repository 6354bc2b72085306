"""``coldpipe report SCENARIO --out DIR``: a self-contained HTML page and the same as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coldpipe.cli._common import DEMO_SCENARIO, console, demo_scenario_text, scenario_arg
from coldpipe.core.types import parse_mechanisms


def report_command(
    scenario: Annotated[str, typer.Argument(help="Scenario file (YAML/JSON), or 'demo' for the bundled one.")],
    out: Annotated[Path, typer.Option(help="Folder for index.html, report.md and figures/.")] = Path("coldpipe-report"),
    mechanisms: Annotated[
        str, typer.Option(help="Cold-start mechanisms beyond the paper's model: all | comma-separated names.")
    ] = "",
) -> None:
    """Write a report of SCENARIO: plans, speedups, schedules, idle accounting, the scenario itself."""
    from coldpipe.viz.report import write_report

    sc = scenario_arg(scenario).replace(mechanisms=parse_mechanisms(mechanisms))
    if scenario == DEMO_SCENARIO and not Path(scenario).exists():
        text = demo_scenario_text()
    else:
        text = Path(scenario).read_text(encoding="utf-8")
    paths = write_report(sc, out, scenario_text=text)
    console.print(f"wrote {paths[0]} (self-contained) and {paths[1]} (figures in {out / 'figures'})")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
