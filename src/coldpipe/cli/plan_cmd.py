"""``coldpipe plan SCENARIO``: the optimal plan and its predicted timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coldpipe.cli._common import console, overlap_arg, print_json, read_json_arg, scenario_arg
from coldpipe.core.simulator import Timeline
from coldpipe.core.types import Plan, Scenario
from coldpipe.errors import InputError
from coldpipe.planning import OBJECTIVES, SOLVERS, Problem, Solution, plan
from coldpipe.units import format_bytes, format_seconds


def timeline_summary(timeline: Timeline, scenario: Scenario) -> dict[str, Any]:
    """The timeline's own JSON (``Timeline.to_dict``) with each stage's memory capacity, for ``--json``."""
    out = timeline.to_dict()
    for st in out["stages"]:
        st["blocks_count"] = st["last"] - st["first"] + 1
        st["memory_capacity_bytes"] = scenario.device(st["device"]).memory
    return out


def plan_table(timeline: Timeline, scenario: Scenario, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in (
        "#",
        "device",
        "blocks",
        "weights",
        "memory used",
        "loaded at",
        "compute",
        "input at",
        "idle: weights",
        "idle: input",
        "done at",
    ):
        table.add_column(col, justify="left" if col in ("device", "blocks") else "right")
    for j, st in enumerate(timeline.stages):
        cap = scenario.device(st.device).memory
        names = f"{st.first}-{st.last} ({scenario.blocks[st.first].name}..{scenario.blocks[st.last].name})"
        table.add_row(
            str(j + 1),
            st.device,
            names,
            format_bytes(st.weight_bytes),
            f"{format_bytes(st.memory_bytes)} / {format_bytes(cap)}",
            format_seconds(st.load_end_s),
            format_seconds(st.compute_s),
            format_seconds(st.arrival_s),
            format_seconds(st.wait_weights_s),
            format_seconds(st.wait_input_s),
            format_seconds(st.compute_end_s),
        )
    return table


def print_plan(result: Solution, scenario: Scenario) -> None:
    tl = result.timeline
    assert tl is not None
    if result.exact:
        # the heuristic's plan is proven optimal when it meets its certified lower bound
        exact = "proven optimal: meets its lower bound" if result.method == "heuristic" else "exact"
    elif result.method == "minlp":  # SCIP stopped by its time limit
        gap = result.details.get("gap")
        exact = "not proven optimal" + (f", gap {100 * gap:.1f}%" if isinstance(gap, (int, float)) else "")
    else:  # the heuristic, or a local search: say what is known of the optimum
        bound_gap = result.details.get("gap_to_lower_bound")
        exact = "not proven optimal" + (
            f", within {100 * bound_gap:.1f}% of a lower bound" if isinstance(bound_gap, (int, float)) else ""
        )
    console.print(plan_table(tl, scenario, f"Plan ({result.method}, {exact}; overlap={tl.overlap}): {result.plan}"))
    if "auto" in result.details:  # why auto did not run the exact DP
        console.print(f"auto: {result.details['auto']}")
    unused = [d.name for d in scenario.devices if d.name not in result.plan.devices]
    if unused:
        console.print(f"unused devices: {', '.join(unused)}")
    console.print(
        f"[bold]TTFT {format_seconds(tl.ttft_s)}[/bold]  (warm {format_seconds(tl.warm_ttft_s)}, cold-start penalty "
        f"{format_seconds(tl.cold_penalty_s)}, {100 * tl.hidden_load_share:.0f}% of the loading critical path hidden)"
    )
    wl = scenario.workload
    if result.objective != "ttft" or wl.requests > 1:
        what = {"e2e": f"E2E ({wl.new_tokens} tokens)", "tpot": "time per output token"}.get(result.objective, "")
        if wl.requests > 1 and result.objective == "ttft":
            what = f"{wl.completion} first-token completion of {wl.requests} requests"
        elif wl.requests > 1 and result.objective == "e2e":
            what = f"{wl.completion} last-token completion of {wl.requests} requests ({wl.new_tokens} tokens each)"
        console.print(f"[bold]{what}: {format_seconds(result.value_s)}[/bold] (the objective minimised)")


def plan_command(
    scenario: Annotated[str, typer.Argument(help="Scenario file (YAML/JSON), or 'demo' for the bundled one.")],
    overlap: Annotated[str, typer.Option(help="Overlap of loading and compute: layer | stage | none.")] = "layer",
    solver: Annotated[str, typer.Option(help="auto | dp | brute | minlp | heuristic.")] = "auto",
    time_limit: Annotated[float | None, typer.Option(help="Seconds for the MINLP solver.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    gantt: Annotated[
        Path | None, typer.Option(help="Also draw the plan's timeline as a Gantt chart (.png or .svg).")
    ] = None,
    objective: Annotated[
        str, typer.Option(help="ttft | e2e (TTFT + (new_tokens-1) x TPOT) | tpot (time per output token).")
    ] = "ttft",
    after: Annotated[
        Path | None,
        typer.Option(help="Plan the next request after this plan (JSON from 'plan --json'): its blocks stay resident."),
    ] = None,
) -> None:
    """Plan SCENARIO: which devices, in which order, with which blocks, and the predicted TTFT."""
    sc = scenario_arg(scenario)
    ov = overlap_arg(overlap)
    if solver not in SOLVERS:
        raise InputError("--solver", f"unknown solver {solver!r}", f"use one of {', '.join(SOLVERS)}")
    if time_limit is not None and not time_limit > 0:
        raise InputError("--time-limit", f"must be > 0, got {time_limit}")
    if objective not in OBJECTIVES:
        raise InputError("--objective", f"unknown objective {objective!r}", f"use one of {', '.join(OBJECTIVES)}")
    if after is not None:
        previous = Plan.from_dict(read_json_arg(str(after), "--after"))
        sc = sc.after(previous)
    if gantt is not None:
        from coldpipe.viz._mpl import check_paths

        check_paths(gantt, "--gantt")  # a wrong suffix fails before planning, not after
    result = plan(Problem(sc, ov, objective, time_limit), solver)  # type: ignore[arg-type]
    assert result.timeline is not None
    if gantt is not None:
        from coldpipe.viz.gantt import draw_gantt

        draw_gantt(result.timeline, gantt)
    if json_out:
        print_json({**result.to_dict(), "model": sc.model_name, "timeline": timeline_summary(result.timeline, sc)})
        return
    print_plan(result, sc)
    if gantt is not None:
        console.print(f"Gantt chart: {gantt}")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
