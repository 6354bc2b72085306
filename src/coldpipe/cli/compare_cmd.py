"""``coldpipe compare SCENARIO`` and ``coldpipe demo``: the optimum against every baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from coldpipe.cli._common import console, demo_scenario_text, print_json, scenario_arg
from coldpipe.cli.plan_cmd import print_plan
from coldpipe.core.baselines import Baseline, Bounds, evaluate_baselines, lower_bounds
from coldpipe.core.planner import PlanResult, plan
from coldpipe.core.types import OVERLAPS, Scenario
from coldpipe.units import format_seconds


@dataclass(frozen=True)
class Comparison:
    """The coldpipe optimum (overlap ``layer``), the exact optimum per mode, baselines and bounds."""

    optimal: PlanResult
    optimal_per_mode: dict[str, PlanResult]
    baselines: list[Baseline]
    bounds: Bounds

    def speedup(self, ttft_s: float) -> float:
        return ttft_s / self.optimal.ttft_s if math.isfinite(ttft_s) else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimal": self.optimal.to_dict(),
            "optimal_per_mode": {
                ov: {"ttft": r.ttft_s, "stages": r.plan.to_dict()["stages"]} for ov, r in self.optimal_per_mode.items()
            },
            "baselines": [
                {
                    "name": b.name,
                    "partition": b.partition,
                    "overlap": b.overlap,
                    "ttft": b.ttft_s,
                    "speedup": self.speedup(b.ttft_s),
                    "hidden_load_share": b.hidden_load_share,
                    "plan": str(b.plan) if b.plan is not None else None,
                    "infeasible": b.why_not or None,
                }
                for b in self.baselines
            ],
            "bounds": {
                "warm": self.bounds.warm_s,
                "parallel_load": self.bounds.parallel_load_s,
                "best": self.bounds.best_s,
            },
            "gap_to_bound": self.optimal.ttft_s / self.bounds.best_s - 1.0,
        }


def compare(scenario: Scenario) -> Comparison:
    per_mode = {ov: plan(scenario, ov) for ov in OVERLAPS}
    return Comparison(per_mode["layer"], per_mode, evaluate_baselines(scenario), lower_bounds(scenario))


def print_comparison(cmp: Comparison) -> None:
    opt = cmp.optimal
    table = Table(
        title=f"coldpipe optimum {format_seconds(opt.ttft_s)} vs the usual splits (speedup = their TTFT / coldpipe's)",
        title_justify="left",
    )
    for col in ("strategy", "overlap", "TTFT", "speedup", "hidden load", "plan"):
        table.add_column(col, justify="right" if col in ("TTFT", "speedup", "hidden load") else "left")
    table.add_row(
        "[bold]coldpipe[/bold]",
        "layer",
        f"[bold]{format_seconds(opt.ttft_s)}[/bold]",
        "1.00x",
        f"{100 * opt.timeline.hidden_load_share:.0f}%",
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
            str(r.plan),
        )
    for b in cmp.baselines:
        if not math.isfinite(b.ttft_s):
            table.add_row(b.partition, b.overlap, "infeasible", "-", "-", b.why_not.split(";")[0][:70])
            continue
        table.add_row(
            b.partition,
            b.overlap,
            format_seconds(b.ttft_s),
            f"{cmp.speedup(b.ttft_s):.2f}x",
            f"{100 * (b.hidden_load_share or 0):.0f}%",
            str(b.plan),
        )
    console.print(table)
    bd = cmp.bounds
    console.print(
        f"lower bounds: warm optimum {format_seconds(bd.warm_s)}, parallel loading {format_seconds(bd.parallel_load_s)}"
        f" -> coldpipe is within {100 * (opt.ttft_s / bd.best_s - 1):.1f}% of the best bound"
    )


def compare_command(
    scenario: Annotated[str, typer.Argument(help="Scenario file (YAML/JSON), or 'demo' for the bundled one.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Compare coldpipe's optimal plan with every baseline partition under every overlap mode."""
    sc = scenario_arg(scenario)
    cmp = compare(sc)
    if json_out:
        print_json(cmp.to_dict())
        return
    print_comparison(cmp)


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
