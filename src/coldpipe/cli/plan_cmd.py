"""``coldpipe plan SCENARIO``: the optimal plan and its predicted timeline."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coldpipe.cli._common import (
    JsonFlag,
    ObjectiveOption,
    QuietFlag,
    ScenarioArg,
    console,
    err_console,
    is_narrow,
    new_table,
    note,
    objective_arg,
    overlap_arg,
    print_json,
    read_plan_file,
    scenario_arg,
    with_mechanisms,
)
from coldpipe.core.simulator import Timeline, decode_step_s, objective_s
from coldpipe.core.types import Overlap, Plan, Scenario
from coldpipe.errors import InputError
from coldpipe.planning import SOLVERS, Problem, Solution, plan
from coldpipe.units import format_bytes, format_seconds


def timeline_summary(timeline: Timeline, scenario: Scenario) -> dict[str, Any]:
    """The timeline's own JSON (``Timeline.to_dict``) with each stage's memory capacity, for ``--json``."""
    out = timeline.to_dict()
    for st in out["stages"]:
        st["blocks_count"] = st["last"] - st["first"] + 1
        st["memory_capacity_bytes"] = scenario.device(st["device"]).memory
    return out


def plan_string(p: Plan, *, by_stage: bool) -> str:
    """``a[0-9] > b[10-33]``, or one stage per line (a narrow table's cell)."""
    return " >\n".join(str(s) for s in p.stages) if by_stage else str(p)


def plan_table(timeline: Timeline, scenario: Scenario, title: str) -> Table:
    """One row per stage; at narrow widths fewer, shorter columns, and device names are never cut."""
    narrow = is_narrow()
    table = new_table(title)
    if narrow:
        cols = ("#", "device", "blocks", "memory used", "loaded\nat", "input\nat", "done\nat", "idle:\nweights",
                "idle:\ninput")  # fmt: skip
    else:
        cols = ("#", "device", "blocks", "weights", "memory used", "loaded at", "compute", "input at",
                "idle: weights", "idle: input", "done at")  # fmt: skip
    width = max(len(st.device) for st in timeline.stages)
    for col in cols:
        if col == "device":
            table.add_column(col, no_wrap=True, min_width=width)
        elif col == "memory used" and narrow:
            table.add_column("memory\nused", justify="right", no_wrap=True)
        else:  # every cell is short: wrapping them would only make the rows taller
            table.add_column(col, justify="left" if col == "blocks" else "right", no_wrap=narrow)
    for j, st in enumerate(timeline.stages):
        cap = scenario.device(st.device).memory
        used = f"{format_bytes(st.memory_bytes)} / {format_bytes(cap)}"
        if narrow:
            used = used.replace(" / ", "/")
            table.add_row(
                str(j + 1),
                st.device,
                f"{st.first}-{st.last}",
                used,
                format_seconds(st.load_end_s),
                format_seconds(st.arrival_s),
                format_seconds(st.compute_end_s),
                format_seconds(st.wait_weights_s),
                format_seconds(st.wait_input_s),
            )
            continue
        blocks = scenario.planned().blocks  # sublayer: the plan indexes the split blocks
        names = f"{st.first}-{st.last} ({blocks[st.first].name}..{blocks[st.last].name})"
        table.add_row(
            str(j + 1),
            st.device,
            names,
            format_bytes(st.weight_bytes),
            used,
            format_seconds(st.load_end_s),
            format_seconds(st.compute_s),
            format_seconds(st.arrival_s),
            format_seconds(st.wait_weights_s),
            format_seconds(st.wait_input_s),
            format_seconds(st.compute_end_s),
        )
    return table


def plan_figures(scenario: Scenario, p: Plan, overlap: Overlap) -> dict[str, float]:
    """The plan's ``ttft`` (first request), and ``tpot`` and ``e2e`` when the simulator can time them
    (``e2e``: TTFT + (new_tokens - 1) x TPOT, a burst's max or mean last token; equal to the TTFT when
    ``new_tokens`` is 1 and there is one request)."""
    wl = scenario.workload
    out = {"ttft": objective_s(scenario.replace(workload={"requests": 1}), p, overlap, "ttft")}
    if all(scenario.device(d).mem_bandwidth is not None for d in p.devices):
        out["tpot"] = decode_step_s(scenario, p)
        out["e2e"] = objective_s(scenario, p, overlap, "e2e")
    elif wl.new_tokens == 1 and wl.requests == 1:
        out["e2e"] = out["ttft"]
    return out


def alternative(problem: Problem, chosen: Plan) -> dict[str, Any] | None:
    """With several tokens, the other objective's (TTFT <-> E2E) optimum when it differs from ``chosen``."""
    sc, wl = problem.scenario, problem.scenario.workload
    if wl.new_tokens < 2 or problem.objective == "tpot":
        return None
    if any(d.mem_bandwidth is None for d in sc.devices):
        return None
    other = "e2e" if problem.objective == "ttft" else "ttft"
    best = plan(problem.replace(objective=other, time_limit_s=None))
    mine = objective_s(sc, chosen, problem.overlap, other)
    if best.value_s >= mine * (1 - 1e-9):
        return None
    return {
        "objective": other,
        "value": best.value_s,
        "this_plan": mine,
        "its_value_of_chosen": objective_s(sc, best.plan, problem.overlap, problem.objective),
        "stages": best.plan.to_dict()["stages"],
        "plan": str(best.plan),
    }


def objective_words(objective: str, scenario: Scenario) -> str:
    wl = scenario.workload
    if wl.requests > 1:
        first = {"max": "last first token", "mean": "mean first token"}[wl.completion]
        last = {"max": "last answer", "mean": "mean answer"}[wl.completion]
        return {"ttft": f"the burst's {first}", "e2e": f"the burst's {last}", "tpot": "TPOT"}[objective]
    return {"ttft": "TTFT", "e2e": f"E2E ({wl.new_tokens} tokens)", "tpot": "TPOT"}[objective]


def print_plan(result: Solution, scenario: Scenario, *, alt: dict[str, Any] | None = None, quiet: bool = False) -> None:
    tl = result.timeline
    assert tl is not None
    figures = plan_figures(scenario, result.plan, result.overlap)
    if not quiet:
        if result.exact:
            # the heuristic's plan is proven optimal when it meets its certified lower bound
            exact = "proven optimal: meets its lower bound" if result.method == "heuristic" else "exact"
        elif result.method in ("minlp", "highs"):  # the solver stopped early, or its bound does not meet the plan
            exact = f"not proven optimal: {result.details.get('status')}"
        else:  # the heuristic, or a local search: say what is known of the optimum
            bound_gap = result.details.get("gap_to_lower_bound")
            exact = "not proven optimal" + (
                f", within {100 * bound_gap:.1f}% of a lower bound" if isinstance(bound_gap, (int, float)) else ""
            )
        title = f"Plan ({result.method}, {exact}; overlap={tl.overlap}):"
        console.print(plan_table(tl, scenario, f"{title} {plan_string(result.plan, by_stage=False)}"))
        for sh in tl.head:  # sharded-head (docs/model.md#sharded-head)
            console.print(
                f"head shard {sh.device}: rows {sh.first_row}-{sh.last_row}, "
                f"loaded at {format_seconds(sh.load_end_s)}, input at {format_seconds(sh.arrival_s)}, "
                f"candidates back at {format_seconds(sh.returned_s)}"
            )
        if "auto" in result.details:  # why auto did not run the exact DP
            console.print(f"auto: {result.details['auto']}")
        unused = [d.name for d in scenario.devices if d.name not in result.plan.devices]
        if unused:
            console.print(f"unused devices: {', '.join(unused)}")
    wl = scenario.workload
    head = f"[bold]TTFT {format_seconds(figures['ttft'])}[/bold]"
    if wl.new_tokens > 1 and "e2e" in figures and wl.requests == 1:
        head += f"  E2E ({wl.new_tokens} tokens) [bold]{format_seconds(figures['e2e'])}[/bold]"
    if "tpot" in figures and (wl.new_tokens > 1 or result.objective == "tpot"):
        head += f"  TPOT {format_seconds(figures['tpot'])}"
    if wl.requests > 1:
        head += f"  {objective_words(result.objective, scenario)} [bold]{format_seconds(result.value_s)}[/bold]"
        if result.objective == "ttft" and wl.new_tokens > 1 and "e2e" in figures:
            head += f", {objective_words('e2e', scenario)} {format_seconds(figures['e2e'])}"
    head += f"  (minimised: {objective_words(result.objective, scenario)}, --objective {result.objective})"
    console.print(head)
    if quiet:
        console.print(f"plan: {result.plan}")
        return
    waits_w = [st.wait_weights_s for st in tl.stages]
    waits_i = [st.wait_input_s for st in tl.stages]
    console.print(
        f"warm TTFT {format_seconds(tl.warm_ttft_s)}, cold-start penalty {format_seconds(tl.cold_penalty_s)}; "
        f"loading hidden behind compute: {100 * tl.hidden_load_share:.0f} %"
    )
    console.print(
        f"idle, summed over the {len(tl.stages)} devices: waiting for weights {format_seconds(sum(waits_w))}, "
        f"waiting for input {format_seconds(sum(waits_i))} (per device: the table's idle columns)"
    )
    if wl.new_tokens > 1 and "tpot" not in figures:
        console.print("E2E and TPOT: not predicted (a device of the plan has no mem_bandwidth)")
    if alt is not None:
        other = alt["objective"]
        gain = 1 - alt["value"] / alt["this_plan"]
        cost = alt["its_value_of_chosen"] / result.value_s - 1
        console.print(
            f"the {objective_words(other, scenario)} optimum differs: {format_seconds(alt['value'])} instead of "
            f"this plan's {format_seconds(alt['this_plan'])} ({100 * gain:.0f} % less), at "
            f"{format_seconds(alt['its_value_of_chosen'])} {objective_words(result.objective, scenario)} "
            f"(+{100 * cost:.0f} %): {alt['plan']}; get it with --objective {other}"
        )


def plan_command(
    scenario: ScenarioArg,
    overlap: Annotated[str, typer.Option(help="Overlap of loading and compute: layer | stage | none.")] = "layer",
    solver: Annotated[str, typer.Option(help=f"{' | '.join(SOLVERS)}.")] = "auto",
    time_limit: Annotated[float | None, typer.Option(help="Seconds for the MINLP solvers (minlp, highs).")] = None,
    json_out: JsonFlag = False,
    quiet: QuietFlag = False,
    gantt: Annotated[
        Path | None, typer.Option(help="Also draw the plan's timeline as a Gantt chart (.png or .svg).")
    ] = None,
    objective: ObjectiveOption = "ttft",
    after: Annotated[
        Path | None,
        typer.Option(
            metavar="PLAN.json",
            help="Plan the next request after this plan (JSON from 'plan --json'): its blocks stay resident.",
        ),
    ] = None,
    mechanisms: Annotated[
        str, typer.Option(help="Cold-start mechanisms beyond the paper's model: all | comma-separated names.")
    ] = "",
) -> None:
    """Plan SCENARIO: which devices, in which order, with which blocks; the predicted TTFT (and E2E, TPOT)."""
    sc = with_mechanisms(scenario_arg(scenario), mechanisms)
    ov = overlap_arg(overlap)
    if solver not in SOLVERS:
        raise InputError("--solver", f"unknown solver {solver!r}", f"use one of {', '.join(SOLVERS)}")
    if time_limit is not None and not 0 < time_limit < float("inf"):  # nan too
        raise InputError("--time-limit", f"must be a finite number of seconds > 0, got {time_limit}")
    objective = objective_arg(objective)
    if objective == "e2e" and sc.workload.new_tokens == 1 and not json_out:
        note(
            "the scenario's workload.new_tokens is 1, so E2E is the TTFT; "
            "set workload.new_tokens to plan a longer answer"
        )
    target = sc
    if after is not None:
        previous, _data = read_plan_file(str(after), "--after", sc)
        sc = sc.after(previous)
    if gantt is not None:
        from coldpipe.viz._mpl import check_paths

        check_paths(gantt, "--gantt")  # a wrong suffix fails before planning, not after
    problem = Problem(sc, ov, objective, time_limit)  # type: ignore[arg-type]
    slow = solver in ("minlp", "highs", "brute") or (solver == "auto" and len(sc.devices) > 10)
    status = err_console.status(f"planning ({solver}) ...") if slow and err_console.is_terminal else nullcontext()
    with status:
        result = plan(problem, solver)
        alt = alternative(problem, result.plan)
    assert result.timeline is not None
    if gantt is not None:
        from coldpipe.viz.gantt import draw_gantt

        draw_gantt(result.timeline, gantt)
    if json_out:
        out = {**result.to_dict(), **plan_figures(sc, result.plan, ov), "model": sc.model_name}
        out["target"] = result.plan.for_target(target).target.to_dict()  # type: ignore[union-attr]
        out["other_objective"] = alt
        print_json({**out, "timeline": timeline_summary(result.timeline, sc)})
        return
    print_plan(result, sc, alt=alt, quiet=quiet)
    if gantt is not None:
        console.print(f"Gantt chart: {gantt}")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
