"""``coldpipe compare SCENARIO`` and ``coldpipe demo``: the optimum against every baseline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from coldpipe.cli._common import (
    JsonFlag,
    ObjectiveOption,
    QuietFlag,
    ScenarioArg,
    console,
    demo_scenario_text,
    is_narrow,
    new_table,
    objective_arg,
    print_json,
    scenario_arg,
    with_mechanisms,
)
from coldpipe.cli.plan_cmd import alternative, objective_words, print_plan
from coldpipe.core.simulator import Timeline
from coldpipe.errors import InputError
from coldpipe.planning import Problem
from coldpipe.planning.compare import Comparison, compare, idle_s, mechanism_rows
from coldpipe.units import format_seconds

AXES = ("shared", "own")


def _idle_cells(timeline: Timeline | None) -> tuple[str, str]:
    if timeline is None:
        return "-", "-"
    return format_seconds(idle_s(timeline, "weights") or 0.0), format_seconds(idle_s(timeline, "input") or 0.0)


def bound_words(cmp: Comparison) -> str:
    """The optimum's TTFT as a ratio to the larger lower bound, naming it."""
    bd = cmp.bounds
    assert bd is not None
    which = "parallel-loading" if bd.parallel_load_s >= bd.warm_s else "warm-optimum"
    return (
        f"lower bounds: warm optimum {format_seconds(bd.warm_s)}, parallel loading {format_seconds(bd.parallel_load_s)}"
        f" -> coldpipe's TTFT is {cmp.optimal.ttft_s / bd.best_s:.2f}x the {which} bound"
    )


def print_comparison(cmp: Comparison, scenario_words: str = "TTFT") -> None:
    opt = cmp.optimal
    narrow = is_narrow()
    what = "TTFT" if cmp.by_ttft else scenario_words
    value_opt = opt.ttft_s if cmp.by_ttft else opt.value_s
    best_words = "optimum" if opt.exact else "best plan (not proven optimal)"
    table = new_table(
        f"coldpipe {best_words} {format_seconds(value_opt)} vs the usual splits (speedup = their {what} / coldpipe's; "
        "idle: summed over each plan's devices)"
    )
    cols = ["strategy", "overlap", what, "speedup", "hidden load", "idle: weights", "idle: input", "plan"]
    if not cmp.by_ttft:
        cols.insert(3, "TTFT")
    plans: list[tuple[str, str]] = []  # narrow: listed below the table, wrapped between stages
    if narrow:  # the strategy names its overlap (uniform/none); two-line headers; the plans below the table
        cols.remove("overlap")
        cols.remove("plan")
        cols = [c.replace(": ", ":\n").replace("hidden load", "hidden\nload") for c in cols]
    for col in cols:
        left = col in ("strategy", "overlap", "plan")
        table.add_column(col, justify="left" if left else "right", no_wrap=col != "plan")

    def row(name: str, overlap: str, value: str, ttft: str, speedup: str, hidden: str, idle: tuple[str, str],
            plan: str) -> None:  # fmt: skip
        cells = [name] + ([] if narrow else [overlap]) + [value] + ([] if cmp.by_ttft else [ttft])
        if narrow:
            plans.append((name, plan))
        table.add_row(*cells, speedup, hidden, *idle, *([] if narrow else [plan]))

    def plan_cell(p: object) -> str:
        return str(p) if p is not None else "-"

    for ov in ("layer", "stage", "none"):
        r = cmp.optimal_per_mode[ov]  # type: ignore[index]
        assert r.timeline is not None
        value = r.ttft_s if cmp.by_ttft else r.value_s
        word = "optimal" if r.exact else "best"  # a mechanism's local search proves no optimum
        name = "[bold]coldpipe[/bold]" if ov == "layer" else f"{word}/{ov}" if narrow else f"{word} ({ov})"
        row(
            name,
            ov,
            f"[bold]{format_seconds(value)}[/bold]" if ov == "layer" else format_seconds(value),
            format_seconds(r.ttft_s),
            "1.00x" if ov == "layer" else f"{cmp.value_speedup(value):.2f}x",
            f"{100 * r.timeline.hidden_load_share:.0f}%",
            _idle_cells(r.timeline),
            plan_cell(r.plan),
        )
    for b in cmp.baselines:
        name = b.name if narrow else b.partition
        if not math.isfinite(b.ttft_s):
            why = b.why_not.split(";")[0]
            row(name, b.overlap, "infeasible", "-", "-", "-", ("-", "-"), f"({why})" if narrow else why[:70])
            continue
        value = cmp.value(b)
        row(
            name,
            b.overlap,
            format_seconds(value),
            format_seconds(b.ttft_s),
            f"{cmp.value_speedup(value):.2f}x",
            f"{100 * (b.hidden_load_share or 0):.0f}%",
            _idle_cells(b.timeline),
            plan_cell(b.plan),
        )
    console.print(table)
    for name, plan in plans:
        console.print(f"{name}: {plan}")
    console.print(bound_words(cmp) + ("" if cmp.by_ttft else " (bounds of one request's TTFT)"))


def draw_comparison(cmp: Comparison, out_dir: Path, fmt: str = "png", axis: str = "shared") -> list[Path]:
    """One Gantt chart per strategy that can run, named after it; ``axis`` shared (one time axis) or own."""
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
        draw_gantt(
            tl,
            path,
            t_max_s=t_max if axis == "shared" else None,
            title=f"{name}: {tl.plan}, TTFT {format_seconds(tl.ttft_s)}",
        )
        written.append(path)
    return written


def compare_command(
    scenario: ScenarioArg,
    json_out: JsonFlag = False,
    quiet: QuietFlag = False,
    objective: ObjectiveOption = "ttft",
    gantt_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Also draw one Gantt chart per strategy into this folder."),
    ] = None,
    gantt_format: Annotated[str, typer.Option(help="png | svg, for --gantt-dir.")] = "png",
    axis: Annotated[
        str, typer.Option(help="--gantt-dir's time axes: shared (one scale, comparable) | own (each chart fills).")
    ] = "shared",
    mechanisms: Annotated[
        str, typer.Option(help="Cold-start mechanisms beyond the paper's model: all | comma-separated names.")
    ] = "",
) -> None:
    """Compare coldpipe's optimal plan with every baseline partition under every overlap mode."""
    if gantt_format not in ("png", "svg"):
        raise InputError("--gantt-format", f"unknown format {gantt_format!r}", "use png or svg")
    if axis not in AXES:
        raise InputError("--axis", f"unknown axis {axis!r}", "use shared or own")
    obj = objective_arg(objective)
    sc = with_mechanisms(scenario_arg(scenario), mechanisms)
    cmp = compare(sc, objective=obj)
    if gantt_dir is not None:
        written = draw_comparison(cmp, gantt_dir, gantt_format, axis)
        if not json_out:
            console.print(f"{len(written)} Gantt charts (one per strategy, {axis} time axis) in {gantt_dir}/")
    rows = mechanism_rows(sc) if sc.mechanisms else []  # docs/model.md#mechanisms: each alone and together
    if json_out:
        extra = {"mechanisms": [{"mechanisms": n, "ttft": s.value_s, "plan": str(s.plan)} for n, s in rows]}
        print_json({**cmp.to_dict(), **(extra if rows else {})})
        return
    if quiet:
        best = min(cmp.baselines, key=cmp.value)
        console.print(
            f"coldpipe {format_seconds(cmp.optimal.value_s)} ({objective_words(obj, sc)}); best baseline {best.name} "
            f"{format_seconds(cmp.value(best))} ({cmp.value_speedup(cmp.value(best)):.2f}x)"
        )
        return
    print_comparison(cmp, objective_words(obj, sc))
    for name, sol in rows:
        console.print(f"mechanisms {name}: TTFT {format_seconds(sol.value_s)}  {sol.plan}")


def demo_command() -> None:
    """Plan and compare the bundled scenario (Llama-3.1-8B on 4 edge devices behind one Wi-Fi AP)."""
    sc = scenario_arg("demo")
    console.rule("coldpipe demo: the bundled scenario")
    console.print(demo_scenario_text().strip(), markup=False)
    console.rule("the optimal cold-start plan")
    cmp = compare(sc)
    print_plan(cmp.optimal, sc, alt=alternative(Problem(sc), cmp.optimal.plan))
    console.rule("against the usual ways to split the model")
    print_comparison(cmp)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
    app.command("demo")(demo_command)
