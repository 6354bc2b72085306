"""Warm residency: blocks a device already holds cost no loading, and the planner exploits it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings

from coldpipe.cli._common import demo_scenario_text, scenario_arg
from coldpipe.core.simulator import simulate
from coldpipe.core.types import Block, Device, Plan, Scenario, Workload
from coldpipe.errors import InputError, InvalidPlan
from coldpipe.planning import Problem
from coldpipe.planning.exact import plan_exact
from strategies import scenarios
from test_cli import run


def _sc(resident: tuple[tuple[int, int], ...] = (), flops: float = 1e12) -> Scenario:
    blocks = [Block(f"b{i}", 1e9, flops, 0.0) for i in range(4)]
    a = Device("a", 1e12, 1e9, 0.5, 1e12, 8e9, 8e9, mem_bandwidth=1e12, resident=resident)
    b = Device("b", 1e12, 1e9, 0.5, 1e12, 8e9, 8e9, mem_bandwidth=1e12)
    return Scenario(blocks, (a, b), Workload(4, prompt_bytes=0.0, token_bytes=0.0))


def test_resident_blocks_are_skipped_by_the_loader() -> None:
    tl = simulate(_sc(resident=((1, 2),), flops=1e11), Plan.parse("a[0-3]"), "layer")
    spans = tl.stages[0].blocks
    # block 0 loads 0.5-1.5; blocks 1 and 2 are there at t = 0; block 3 loads next: 1.5-2.5
    assert [(s.load_start_s, s.load_end_s) for s in spans] == [(0.5, 1.5), (0.0, 0.0), (0.0, 0.0), (1.5, 2.5)]
    assert tl.stages[0].load_s == pytest.approx(2.0)
    # 0.1 s per block: computed 1.5-1.6, 1.6-1.7, 1.7-1.8, and block 3 (resident at 2.5) 2.5-2.6
    assert tl.ttft_s == pytest.approx(2.6)
    assert tl.stages[0].wait_weights_s == pytest.approx(1.5 + 0.7)
    cold = simulate(_sc(flops=1e11), Plan.parse("a[0-3]"), "layer")
    assert cold.ttft_s == pytest.approx(4.6)  # block 3 resident only at 4.5


def test_a_fully_resident_stage_never_waits() -> None:
    sc = _sc(resident=((0, 3),))
    for overlap in ("layer", "stage", "none"):
        tl = simulate(sc, Plan.parse("a[0-3]"), overlap)  # type: ignore[arg-type]
        assert tl.ttft_s == pytest.approx(4.0)
        assert tl.stages[0].load_end_s == 0.0


def test_the_planner_exploits_residency() -> None:
    cold = plan_exact(Problem(_sc()))
    warm = plan_exact(Problem(_sc(resident=((0, 3),))))
    assert str(warm.plan) == "a[0-3]" and warm.ttft_s == pytest.approx(4.0)
    assert cold.ttft_s > warm.ttft_s


@pytest.mark.parametrize("overlap", ["layer", "stage", "none"])
def test_every_planner_lets_resident_blocks_start_before_the_startup(overlap: str) -> None:
    """A fully resident stage computes from t = 0 although its device's start-up is 0.5 s (every kernel)."""
    from coldpipe.planning import Problem
    from coldpipe.planning.exact import plan_exact
    from coldpipe.planning.order import solve_order
    from random_instances import brute_value

    sc = _sc(resident=((0, 3),))
    assert plan_exact(Problem(sc, overlap)).solver_value_s == pytest.approx(4.0)  # type: ignore[arg-type]
    order_plan = solve_order(Problem(sc, overlap), ["a", "b"])  # type: ignore[arg-type]
    assert order_plan is not None and simulate(sc, order_plan, overlap).ttft_s == pytest.approx(4.0)  # type: ignore[arg-type]
    e2e_sc = sc.replace(workload={"new_tokens": 3})
    e2e = plan_exact(Problem(e2e_sc, overlap, "e2e"))  # type: ignore[arg-type]
    assert str(e2e.plan) == "a[0-3]" and e2e.solver_value_s == pytest.approx(e2e.value_s)
    if overlap != "none":  # the Pareto kernel on its own, without the TTFT-optimal plan as a fallback
        from coldpipe.planning import exact
        from coldpipe.planning.kernels import Mode
        from coldpipe.planning.tables import StageTables

        pre, dec = StageTables.build(e2e_sc), StageTables.build(e2e_sc, phase="decode")
        mode = Mode.of(overlap)
        value, _, _ = exact.pareto_plan(pre, dec, mode, 2.0, math.inf)
        assert value == pytest.approx(e2e.value_s)
    burst_sc = sc.replace(workload={"requests": 3})
    burst = plan_exact(Problem(burst_sc, overlap, "ttft"))  # type: ignore[arg-type]
    assert burst.value_s == pytest.approx(brute_value(burst_sc, overlap)[0])  # type: ignore[arg-type]


def test_scenario_after_a_plan_reaches_the_warm_optimum_when_nothing_moves() -> None:
    sc = scenario_arg("demo")
    first = plan_exact(Problem(sc))
    nxt = sc.after(first.plan)
    second = plan_exact(Problem(nxt))
    assert second.ttft_s <= simulate(nxt, first.plan).ttft_s + 1e-12
    assert simulate(nxt, first.plan).ttft_s == pytest.approx(simulate(sc, first.plan).warm_ttft_s)
    assert second.ttft_s < first.ttft_s


@pytest.mark.parametrize(
    ("resident", "match"),
    [(((3, 1),), "not a block range"), (((0, 9),), "goes past the last block 3"), ((("x", 1),), "block ranges")],
)
def test_bad_resident_ranges(resident: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        _sc(resident=resident)  # type: ignore[arg-type]


def test_after_rejects_a_plan_for_another_cluster() -> None:
    with pytest.raises(InvalidPlan, match="unknown device"):
        scenario_arg("demo").after(Plan.parse("pi[0-33]"))


def test_cli_plan_after(tmp_path: Path) -> None:
    demo = tmp_path / "demo.yaml"
    demo.write_text(demo_scenario_text())
    first = run("plan", str(demo), "--json")
    assert first.returncode == 0
    prev = tmp_path / "prev.json"
    prev.write_text(first.stdout)
    res = run("plan", str(demo), "--after", str(prev), "--json")
    assert res.returncode == 0, res.stderr
    out, before = json.loads(res.stdout), json.loads(first.stdout)
    assert out["ttft"] < before["ttft"]
    sc = scenario_arg("demo").after(Plan.from_dict(before))
    assert out["ttft"] == pytest.approx(plan_exact(Problem(sc)).solver_value_s)
    bad = tmp_path / "bad.json"
    bad.write_text('{"stages": [{"device": "pi", "first": 0, "last": 33}]}')
    res = run("plan", str(demo), "--after", str(bad))
    assert res.returncode == 2 and "unknown device 'pi'" in res.stderr


@pytest.mark.parametrize("overlap", ["layer", "stage", "none"])
@given(sc=scenarios(min_devices=2, max_devices=3, min_blocks=2, max_blocks=7))
@settings(max_examples=25)
def test_heuristic_order_dp_honours_residency(sc: Scenario, overlap: str) -> None:
    """The heuristic's exact per-order DP equals brute force over the order's subsequences, warm devices included."""
    from coldpipe.planning.brute import all_plans, fits
    from coldpipe.planning.order import solve_order

    order = [d.name for d in sc.devices]
    rank = {name: k for k, name in enumerate(order)}
    best = math.inf
    for plan in all_plans(sc):
        ranks = [rank[d] for d in plan.devices]
        if ranks == sorted(ranks) and fits(sc, plan):
            best = min(best, simulate(sc, plan, overlap).ttft_s)  # type: ignore[arg-type]
    got = solve_order(Problem(sc, overlap), order)  # type: ignore[arg-type]
    if math.isinf(best):
        assert got is None
    else:
        assert got is not None
        assert simulate(sc, got, overlap).ttft_s == pytest.approx(best, rel=1e-9)  # type: ignore[arg-type]
