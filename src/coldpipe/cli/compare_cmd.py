"""``coldpipe compare SCENARIO`` and ``coldpipe demo``: the optimum against every baseline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coldpipe.cli._common import console, demo_scenario_text, print_json, scenario_arg
from coldpipe.cli.plan_cmd import print_plan
from coldpipe.core.simulator import Timeline
from coldpipe.core.types import parse_mechanisms
from coldpipe.errors import InputError
from coldpipe.planning.compare import Comparison, compare, idle_s, mechanism_rows
from coldpipe.units import format_seconds


def _idle_cells(timeline: Timeline | None) -> tuple[str, str]:
    if timeline is None:
        return "-", "-"
    return format_seconds(idle_s(timeline, "weights") or 0.0), format_seconds(idle_s(timeline, "input") or 0.0)


def print_comparison(cmp: Comparison) -> None:
    opt = cmp.optimal
    table = Table(
        title=f"coldpipe optimum {format_seconds(opt.ttft_s)} vs the usual splits (speedup = their TTFT / coldpipe's)",
        title_justify="left",
    )
    numeric = ("TTFT", "speedup", "hidden load", "idle: weights", "idle: input")
    for col in ("strategy", "overlap", "TTFT", "speedup", "hidden load", "idle: weights", "idle: input", "plan"):
        table.add_column(col, justify="right" if col in numeric else "left")
    table.add_row(
        "[bold]coldpipe[/bold]",
        "layer",
        f"[bold]{format_seconds(opt.ttft_s)}[/bold]",
        "1.00x",
        f"{100 * opt.timeline.hidden_load_share:.0f}%",
        *_idle_cells(opt.timeline),
        str(opt.plan),
    )
    for ov in ("stage", "none"):
        r = cmp.optimal_per_mode[ov]
        table.add_row(
            f"optimal ({ov})",
            ov,
            format_seconds(r.ttft_s),
            f"{cmp.speedup(r.ttft_s):.2f}x",
            f"{100 * r.timeline.hidden_load_share:.0f}%",
            *_idle_cells(r.timeline),
            str(r.plan),
        )
    for b in cmp.baselines:
        if not math.isfinite(b.ttft_s):
            table.add_row(b.partition, b.overlap, "infeasible", "-", "-", "-", "-", b.why_not.split(";")[0][:70])
            continue
        table.add_row(
            b.partition,
            b.overlap,
            format_seconds(b.ttft_s),
            f"{cmp.speedup(b.ttft_s):.2f}x",
            f"{100 * (b.hidden_load_share or 0):.0f}%",
            *_idle_cells(b.timeline),
            str(b.plan),
        )
    console.print(table)
    bd = cmp.bounds
    console.print(
        f"lower bounds: warm optimum {format_seconds(bd.warm_s)}, parallel loading {format_seconds(bd.parallel_load_s)}"
        f" -> coldpipe is within {100 * (opt.ttft_s / bd.best_s - 1):.1f}% of the best bound"
    )


def draw_comparison(cmp: Comparison, out_dir: Path, fmt: str = "png") -> list[Path]:
    """One Gantt chart per strategy that can run, named after it, all with the same time axis."""
    from coldpipe.viz.gantt import draw_gantt

    charts: list[tuple[str, Timeline]] = [
        ("coldpipe" if ov == "layer" else f"optimal-{ov}", r.timeline)
        for ov, r in cmp.optimal_per_mode.items()
        if r.timeline is not None
    ]
    charts += [(b.name.replace("/", "-"), b.timeline) for b in cmp.baselines if b.timeline is not None]
    t_max = 1.04 * max(tl.ttft_s for _name, tl in charts)
    written = []
    for name, tl in charts:
        path = out_dir / f"{name}.{fmt}"
        draw_gantt(tl, path, t_max_s=t_max, title=f"{name}: {tl.plan}, TTFT {format_seconds(tl.ttft_s)}")
        written.append(path)
    return written


def compare_command(
    scenario: Annotated[str, typer.Argument(help="Scenario file (YAML/JSON), or 'demo' for the bundled one.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    gantt_dir: Annotated[
        Path | None,
        typer.Option(help="Also draw one Gantt chart per strategy into this folder, all on the same time axis."),
    ] = None,
    gantt_format: Annotated[str, typer.Option(help="png | svg, for --gantt-dir.")] = "png",
    mechanisms: Annotated[
        str, typer.Option(help="Cold-start mechanisms beyond the paper's model: all | comma-separated names.")
    ] = "",
) -> None:
    """Compare coldpipe's optimal plan with every baseline partition under every overlap mode."""
    if gantt_format not in ("png", "svg"):
        raise InputError("--gantt-format", f"unknown format {gantt_format!r}", "use png or svg")
    sc = scenario_arg(scenario).replace(mechanisms=parse_mechanisms(mechanisms))
    cmp = compare(sc)
    if gantt_dir is not None:
        written = draw_comparison(cmp, gantt_dir, gantt_format)
        if not json_out:
            console.print(f"{len(written)} Gantt charts (one per strategy, same time axis) in {gantt_dir}/")
    rows = mechanism_rows(sc) if sc.mechanisms else []  # docs/model.md#mechanisms: each alone and together
    if json_out:
        extra = {"mechanisms": [{"mechanisms": n, "ttft": s.value_s, "plan": str(s.plan)} for n, s in rows]}
        print_json({**cmp.to_dict(), **(extra if rows else {})})
        return
    print_comparison(cmp)
    for name, sol in rows:
        console.print(f"mechanisms {name}: TTFT {format_seconds(sol.value_s)}  {sol.plan}")


def demo_command() -> None:
    """Plan and compare the bundled scenario (Llama-3.1-8B on 4 edge devices behind one Wi-Fi AP)."""
    sc = scenario_arg("demo")
    console.rule("coldpipe demo: the bundled scenario")
    console.print(demo_scenario_text().strip(), markup=False)
    console.rule("the optimal cold-start plan")
    cmp = compare(sc)
    print_plan(cmp.optimal, sc)
    console.rule("against the usual ways to split the model")
    print_comparison(cmp)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
    app.command("demo")(demo_command)
