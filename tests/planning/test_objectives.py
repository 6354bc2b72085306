"""Objectives beyond TTFT: decode cost, E2E and TPOT, exact against brute force."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings

from coldpipe.cli._common import scenario_arg
from coldpipe.core.simulator import decode_step_s, objective_s, simulate
from coldpipe.core.types import OVERLAPS, Block, Device, Overlap, Plan, Scenario, Stage, Workload
from coldpipe.errors import Infeasible, InputError
from coldpipe.planning import Problem, exact, kernels
from coldpipe.planning.exact import plan_exact
from random_instances import brute_value
from strategies import scenarios


def _opt(sc: Scenario, overlap: Overlap, objective: str) -> tuple[float, Plan | None]:
    try:
        res = plan_exact(Problem(sc, overlap, objective))
    except Infeasible:
        return math.inf, None
    return res.value_s, res.plan


@pytest.mark.parametrize("objective", ["e2e", "tpot"])
@pytest.mark.parametrize("overlap", OVERLAPS)
@given(sc=scenarios(min_devices=2, max_devices=4, min_blocks=3, max_blocks=8))
@settings(max_examples=25)
def test_objective_optimum_equals_brute_force(sc: Scenario, overlap: Overlap, objective: str) -> None:
    expected, _ = brute_value(sc, overlap, objective)
    got, plan = _opt(sc, overlap, objective)
    if math.isinf(expected):
        assert math.isinf(got)
        return
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert plan is not None
    assert objective_s(sc, plan, overlap, objective) == pytest.approx(got, rel=1e-12)


@pytest.mark.parametrize("overlap", ["layer", "stage"])
@given(sc=scenarios(min_devices=2, max_devices=4, min_blocks=3, max_blocks=8))
@settings(max_examples=15)
def test_pareto_kernel_compiled_equals_interpreted(sc: Scenario, overlap: Overlap) -> None:
    compiled = _opt(sc, overlap, "e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLDPIPE_NO_NUMBA", "1")
        assert kernels.usage_pareto_dp.current() is kernels.usage_pareto_dp.py
        interpreted = _opt(sc, overlap, "e2e")
    assert compiled[0] == interpreted[0] or math.isclose(compiled[0], interpreted[0], rel_tol=1e-12)


def _dev(name: str, **kw: float) -> Device:
    base = {
        "flops": 1e12,
        "load_bandwidth": 1e9,
        "startup": 0.0,
        "memory": 1e12,
        "uplink": 8e9,
        "downlink": 8e9,
        "mem_bandwidth": 1e10,
    }
    base.update(kw)
    return Device(name, **base)


def test_decode_step_by_hand() -> None:
    blocks = [
        Block("b0", 1e9, 1e12, 1e6, kv_bytes=1e9, decode_flops=1e9, decode_out_bytes=1e3),
        Block("b1", 1e9, 1e12, 1e6, kv_bytes=0.0, decode_flops=4e12, decode_out_bytes=4.0),
    ]
    sc = Scenario(blocks, [_dev("a"), _dev("b")], Workload(8, new_tokens=11, token_bytes=1e3))
    plan = Plan.parse("a[0-0] > b[1-1]")
    # b0 on a: memory-bound 2e9 / 1e10 = 0.2 s; b1 on b: compute-bound 4e12 / 1e12 = 4 s
    # token in: 8e3 / 8e9 = 1 us; a -> b: 1 us + 1 us; token back: 1 us
    assert decode_step_s(sc, plan) == pytest.approx(0.2 + 4.0 + 4e-6)
    ttft = simulate(sc, plan).ttft_s
    assert objective_s(sc, plan, "layer", "e2e") == pytest.approx(ttft + 10 * (4.2 + 4e-6))


def test_decode_needs_mem_bandwidth() -> None:
    sc = Scenario([Block("b", 1.0, 1.0, 1.0)], [Device("x", 1.0, 1.0, 0.0, 10.0, 1.0, 1.0)], Workload(1, new_tokens=4))
    with pytest.raises(InputError, match=r"devices\[0\]\.mem_bandwidth"):
        plan_exact(Problem(sc, "layer", "e2e"))


def test_unknown_objective() -> None:
    with pytest.raises(InputError, match="objective"):
        plan_exact(Problem(scenario_arg("demo"), "layer", "throughput"))


def test_the_answer_changes_with_new_tokens_on_the_bundled_scenario() -> None:
    """Long answers favour plans that decode fast; one-token answers favour the cold-start optimum."""
    base = scenario_arg("demo")
    plans = {}
    for n in (1, 1024):
        sc = Scenario(base.blocks, base.devices, Workload(512, new_tokens=n), base.network, base.source)
        plans[n] = plan_exact(Problem(sc, "layer", "e2e"))
    assert plans[1].plan != plans[1024].plan
    sc = Scenario(base.blocks, base.devices, Workload(512, new_tokens=1024), base.network, base.source)
    assert objective_s(sc, plans[1].plan, "layer", "e2e") > plans[1024].value_s


@pytest.mark.parametrize("overlap", ["layer", "stage"])
@given(sc=scenarios(min_devices=2, max_devices=3, min_blocks=2, max_blocks=7))
@settings(max_examples=30)
def test_pareto_kernel_alone_equals_brute_force(sc: Scenario, overlap: Overlap) -> None:
    """Without an incumbent (no pruning, no seed plan to fall back on) the kernel's own objective is exact."""
    from coldpipe.planning.kernels import Mode
    from coldpipe.planning.tables import StageTables

    try:
        pre, dec = StageTables.build(sc), StageTables.build(sc, phase="decode")
    except InputError:
        return
    steps = float(sc.workload.new_tokens - 1)
    mode = Mode.of(overlap)
    value, plan, _ = exact.pareto_plan(pre, dec, mode, steps, math.inf)
    expected, _ = brute_value(sc, overlap, "e2e")
    if math.isinf(expected):
        assert plan is None
        return
    assert plan is not None
    assert value == pytest.approx(expected, rel=1e-9)
    assert objective_s(sc, plan, overlap, "e2e") == pytest.approx(expected, rel=1e-9)


@given(sc=scenarios(min_devices=2, max_devices=3, min_blocks=2, max_blocks=7))
@settings(max_examples=30)
def test_heuristic_order_dp_objective_is_the_simulated_ttft(sc: Scenario) -> None:
    """The heuristic's per-order DP reports the simulator's TTFT of the plan it returns (warm devices included)."""
    from coldpipe.planning.order import OrderProblem

    for overlap in OVERLAPS:
        problem = OrderProblem.build(Problem(sc, overlap))
        value, stages = problem.run(tuple(range(len(sc.devices))))
        if not stages:
            continue
        plan = Plan(tuple(Stage(problem.names[k], a, b) for k, a, b in stages))
        if overlap != "none":  # under "none" run() gives the additive part only
            assert value == pytest.approx(simulate(sc, plan, overlap).ttft_s, rel=1e-9)


def test_objectives_beyond_the_exact_range_say_what_to_do() -> None:
    import dataclasses

    base = scenario_arg("demo")
    devices = [dataclasses.replace(base.devices[k % 4], name=f"d{k}", startup=0.1 * k) for k in range(18)]
    sc = base.replace(devices=devices).replace(workload={"new_tokens": 8})
    with pytest.raises(InputError, match=r"planned exactly only within this range.*plan for ttft"):
        plan_exact(Problem(sc, "layer", "e2e"))
