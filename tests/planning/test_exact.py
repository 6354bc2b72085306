"""The exact DP against an independent exhaustive search, and against the simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldpipe.core.simulator import simulate
from coldpipe.core.types import OVERLAPS, Block, Device, Network, Overlap, Plan, Scenario, Workload
from coldpipe.errors import Infeasible
from coldpipe.planning import Problem, kernels
from coldpipe.planning.exact import plan_exact, plan_warm
from coldpipe.planning.tables import DeviceTypes
from random_instances import brute_value
from strategies import scenarios


def _dp_or_inf(sc: Scenario, overlap: Overlap) -> tuple[float, Plan | None]:
    try:
        res = plan_exact(Problem(sc, overlap))
    except Infeasible:
        return math.inf, None
    return res.solver_value_s, res.plan


def _check_against_brute(sc: Scenario, overlap: Overlap) -> None:
    expected, _ = brute_value(sc, overlap)
    got, plan = _dp_or_inf(sc, overlap)
    if math.isinf(expected):
        assert math.isinf(got)
        return
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert plan is not None
    plan.validate(sc)
    # one source of truth: the DP's objective is the simulator's TTFT of the DP's plan
    assert simulate(sc, plan, overlap).ttft_s == pytest.approx(got, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("overlap", OVERLAPS)
@given(sc=scenarios(min_devices=3, max_devices=4, min_blocks=8, max_blocks=9))
@settings(max_examples=25)
def test_dp_equals_brute_force_on_3_to_4_devices_and_8_plus_blocks(sc: Scenario, overlap: Overlap) -> None:
    _check_against_brute(sc, overlap)


@pytest.mark.parametrize("overlap", OVERLAPS)
@given(sc=scenarios(min_devices=1, max_devices=3, min_blocks=1, max_blocks=7))
def test_dp_equals_brute_force_on_small_instances(sc: Scenario, overlap: Overlap) -> None:
    _check_against_brute(sc, overlap)


@given(sc=scenarios(min_devices=2, max_devices=4, min_blocks=2, max_blocks=8))
def test_overlap_modes_are_ordered(sc: Scenario) -> None:
    """More overlap never hurts: layer <= stage <= none, for the optimum and for any one plan."""
    layer, plan = _dp_or_inf(sc, "layer")
    stage, _ = _dp_or_inf(sc, "stage")
    none, _ = _dp_or_inf(sc, "none")
    assert layer <= stage * (1 + 1e-12) and stage <= none * (1 + 1e-12)
    if plan is not None:
        t = [simulate(sc, plan, ov).ttft_s for ov in OVERLAPS]
        assert t[0] <= t[1] * (1 + 1e-12) and t[1] <= t[2] * (1 + 1e-12)


@given(sc=scenarios(min_devices=1, max_devices=4, min_blocks=1, max_blocks=8))
def test_warm_optimum_is_a_lower_bound_and_matches_simulated_warm_ttft(sc: Scenario) -> None:
    try:
        warm = plan_warm(sc)
    except Infeasible:
        return
    assert simulate(sc, warm.plan, "layer").warm_ttft_s == pytest.approx(warm.solver_value_s, rel=1e-9, abs=1e-12)
    for ov in OVERLAPS:
        assert warm.solver_value_s <= plan_exact(Problem(sc, ov)).solver_value_s * (1 + 1e-12)


@pytest.mark.parametrize("overlap", OVERLAPS)
@given(sc=scenarios(min_devices=2, max_devices=4, min_blocks=2, max_blocks=8))
@settings(max_examples=20)
def test_numba_kernel_equals_pure_python_kernel(sc: Scenario, overlap: Overlap) -> None:
    """Differential test of the compiled kernel against the very same code run by the interpreter."""
    compiled = _dp_or_inf(sc, overlap)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLDPIPE_NO_NUMBA", "1")
        assert not kernels.numba_enabled()
        interpreted = _dp_or_inf(sc, overlap)
    assert compiled[0] == interpreted[0] or math.isclose(compiled[0], interpreted[0], rel_tol=1e-12)
    assert compiled[1] == interpreted[1]


def _device(name: str, **kw: float) -> Device:
    base = {"flops": 1e12, "load_bandwidth": 1e9, "startup": 0.0, "memory": 1e12, "uplink": 1e9, "downlink": 1e9}
    base.update(kw)
    return Device(name, **base)


def _blocks(n: int, weight: float = 1e9, flops: float = 1e12) -> list[Block]:
    return [Block(f"b{i}", weight, flops, 1e6) for i in range(n)]


def test_single_device() -> None:
    sc = Scenario(_blocks(5), [_device("only")], Workload(8))
    res = plan_exact(Problem(sc))
    assert str(res.plan) == "only[0-4]"
    # loads 1 s per block, computes 1 s per block: block l done at max(t, l + 1) + 1
    assert res.solver_value_s == pytest.approx(simulate(sc, res.plan).ttft_s)
    assert res.solver_value_s == pytest.approx(6.0 + 2 * (8 * 4 / 1e9 + 0.0))


def test_model_does_not_fit_reports_the_aggregate_shortfall() -> None:
    sc = Scenario(_blocks(4), [_device("a", memory=1.5e9), _device("b", memory=1.5e9)], Workload(8))
    with pytest.raises(Infeasible, match=r"short by 1 GB \(1e\+09 bytes\)") as info:
        plan_exact(Problem(sc))
    assert info.value.shortfall_bytes == pytest.approx(1e9)


def test_block_larger_than_every_device_reports_the_per_device_shortfall() -> None:
    blocks = [Block("big", 3e9, 1e12, 1e6), Block("small", 1e9, 1e12, 1e6)]
    sc = Scenario(blocks, [_device("a", memory=2e9), _device("b", memory=2.5e9)], Workload(8))
    with pytest.raises(Infeasible, match="no contiguous split fits") as info:
        plan_exact(Problem(sc))
    # 3e9-byte block on the 2.5e9 device: 0.5e9 more bytes on every device make a plan exist
    assert info.value.shortfall_bytes == pytest.approx(0.5e9, rel=1e-6)


@pytest.mark.parametrize("overlap", OVERLAPS)
def test_identical_devices_are_not_permuted(overlap: Overlap) -> None:
    """32 devices of 3 profiles: 12 * 12 * 11 usage vectors, not 2**32 subsets; same optimum as distinct names."""
    profiles = [
        {"flops": 2e12, "load_bandwidth": 1e9, "startup": 0.5, "memory": 3e9},
        {"flops": 5e11, "load_bandwidth": 3e9, "startup": 0.1, "memory": 2e9},
        {"flops": 8e12, "load_bandwidth": 5e8, "startup": 1.0, "memory": 8e9},
    ]
    devices = [_device(f"d{k}", **profiles[k % 3]) for k in range(32)]
    sc = Scenario(_blocks(34, weight=4e8, flops=2e11), devices, Workload(64), Network(0.002))
    types = DeviceTypes.of(sc)
    assert types.n_usage_vectors == 12 * 12 * 11
    res = plan_exact(Problem(sc, overlap))
    assert simulate(sc, res.plan, overlap).ttft_s == pytest.approx(res.solver_value_s, rel=1e-9)
    # with fewer copies of each profile the optimum can only get worse (monotone in the device set)
    small = sc.replace(devices=devices[:6])
    assert plan_exact(Problem(small, overlap)).solver_value_s >= res.solver_value_s * (1 - 1e-12)


def test_source_device_gets_the_prompt_for_free() -> None:
    """A device that is the source pays no transfer for the prompt or the token when it computes alone."""
    slow_link = {"uplink": 1e3, "downlink": 1e3}
    sc = Scenario(
        _blocks(3, weight=0.0), [_device("phone", **slow_link)], Workload(8, prompt_bytes=1e6), source="phone"
    )
    res = plan_exact(Problem(sc))
    assert res.solver_value_s == pytest.approx(3.0)  # three 1-second blocks, no transfer at all


def test_usage_vector_strides_are_mixed_radix() -> None:
    sc = Scenario(_blocks(2), [_device("a"), _device("b"), _device("c", flops=2e12)], Workload(8))
    types = DeviceTypes.of(sc)
    assert types.members == (("a", "b"), ("c",))
    assert list(types.strides) == [1, 3]
    assert types.n_usage_vectors == 6
    assert isinstance(types.counts, np.ndarray)


@given(sc=scenarios(min_devices=2, max_devices=3, min_blocks=3, max_blocks=6), data=st.data())
@settings(max_examples=30)
def test_renaming_and_reordering_devices_does_not_change_the_optimum(sc: Scenario, data: st.DataObject) -> None:
    perm = data.draw(st.permutations(range(len(sc.devices))))
    shuffled = sc.replace(devices=[sc.devices[i] for i in perm])
    for ov in OVERLAPS:
        a, _ = _dp_or_inf(sc, ov)
        b, _ = _dp_or_inf(shuffled, ov)
        assert a == b or math.isclose(a, b, rel_tol=1e-9)
