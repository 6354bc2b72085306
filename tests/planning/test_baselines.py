from __future__ import annotations

import math

import pytest
from hypothesis import given

from coldpipe.cli._common import scenario_arg
from coldpipe.core.types import OVERLAPS, Block, Device, Scenario, Workload
from coldpipe.errors import Infeasible
from coldpipe.planning import Problem
from coldpipe.planning.baselines import PARTITIONS, evaluate_baselines, partition
from coldpipe.planning.bounds import lower_bounds
from coldpipe.planning.exact import plan_exact
from strategies import scenarios


def _sc(memories: list[float], flops: list[float], n_blocks: int = 10) -> Scenario:
    devices = [Device(f"d{k}", f, 1e9, 0.0, m, 1e9, 1e9) for k, (m, f) in enumerate(zip(memories, flops, strict=True))]
    return Scenario([Block(f"b{i}", 1e8, 1e10, 1e5) for i in range(n_blocks)], devices, Workload(8))


def test_uniform_gives_the_first_devices_one_more_block() -> None:
    sc = _sc([1e10] * 3, [1e12] * 3)
    assert str(partition("uniform", sc)) == "d0[0-3] > d1[4-6] > d2[7-9]"


def test_proportional_partitions() -> None:
    sc = _sc([1e9, 3e9, 6e9], [6e12, 3e12, 1e12])
    assert str(partition("memory", sc)) == "d0[0-0] > d1[1-3] > d2[4-9]"
    assert str(partition("compute", sc)) == "d0[0-5] > d1[6-8] > d2[9-9]"


def test_a_device_whose_share_rounds_to_nothing_is_left_out() -> None:
    sc = _sc([1e9, 1e6, 1e9], [1e12] * 3)
    assert str(partition("memory", sc)) == "d0[0-4] > d2[5-9]"


def test_every_partition_under_every_mode_is_reported_even_when_it_does_not_fit() -> None:
    sc = _sc([2e8, 2e9], [1e12, 1e12])  # uniform gives d0 five blocks = 5e8 bytes > 2e8
    rows = evaluate_baselines(sc)
    assert [(r.partition, r.overlap) for r in rows] == [(p, o) for p in PARTITIONS for o in OVERLAPS]
    uniform = [r for r in rows if r.partition == "uniform"]
    assert all(math.isinf(r.ttft_s) and "short by" in r.why_not for r in uniform)
    single = [r for r in rows if r.partition == "single"]
    assert all(str(r.plan) == "d1[0-9]" for r in single)


@given(sc=scenarios(min_devices=1, max_devices=4, min_blocks=1, max_blocks=8))
def test_bounds_and_baselines_bracket_the_optimum(sc: Scenario) -> None:
    try:
        opt = {ov: plan_exact(Problem(sc, ov)).solver_value_s for ov in OVERLAPS}
    except Infeasible:
        return
    bounds = lower_bounds(sc)
    assert bounds.warm_s <= opt["layer"] * (1 + 1e-9)
    assert bounds.parallel_load_s <= opt["layer"] * (1 + 1e-9)
    for row in evaluate_baselines(sc):
        assert opt[row.overlap] <= row.ttft_s * (1 + 1e-9)  # the exact optimum of a mode beats every split in it


def test_bundled_scenario_bounds_are_informative() -> None:
    sc = scenario_arg("demo")
    bounds = lower_bounds(sc)
    opt = plan_exact(Problem(sc)).solver_value_s
    assert bounds.parallel_load_s > bounds.warm_s  # loading, not compute, dominates this cold start
    assert bounds.best_s <= opt
    assert opt == pytest.approx(3.52, abs=0.01)  # regression guard for the README's worked example
