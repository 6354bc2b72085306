"""The heuristic planner against the exact DP, and its per-order DP against brute force over that order."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from coldpipe.cli import main
from coldpipe.core.architectures import CATALOG, blocks_for
from coldpipe.core.simulator import simulate
from coldpipe.core.types import AP, OVERLAPS, Device, Network, Overlap, Plan, Scenario, Stage, Workload
from coldpipe.errors import Infeasible
from coldpipe.planning import Problem, kernels, plan
from coldpipe.planning.bounds import relaxed_lower_bound_s
from coldpipe.planning.brute import fits
from coldpipe.planning.exact import plan_exact
from coldpipe.planning.heuristic import CERTIFIED_GAP, plan_heuristic
from coldpipe.planning.order import solve_order
from coldpipe.planning.tables import MAX_USAGE_VECTORS, DeviceTypes
from random_instances import random_scenario


def distinct_devices(rng: random.Random, n: int, model_bytes: float, lo: float, hi: float) -> list[Device]:
    return [
        Device(
            f"dev{k}",
            flops=rng.uniform(1e11, 2e13),
            load_bandwidth=rng.uniform(1e8, 3e9),
            startup=rng.uniform(0.0, 3.0),
            memory=rng.uniform(lo, hi) * model_bytes,
            uplink=rng.uniform(5e7, 1e9),
            downlink=rng.uniform(5e7, 1e9),
        )
        for k in range(n)
    ]


def cluster(seed: int, n_devices: int, model: str = "llama-3.2-1b") -> Scenario:
    rng = random.Random(seed)
    blocks = blocks_for(CATALOG[model], prompt_tokens=256, new_tokens=1, dtype="bfloat16")
    model_bytes = sum(b.memory_bytes for b in blocks)
    devices = distinct_devices(rng, n_devices, model_bytes, 0.1, 0.6)
    source = devices[1].name if seed % 3 == 0 else AP
    return Scenario(tuple(blocks), tuple(devices), Workload(256), Network(0.002), source)


def _best_over_order_by_brute_force(sc: Scenario, order: list[str], overlap: Overlap) -> float:
    """Every subsequence of ``order`` x every contiguous split, timed by the simulator."""
    n = sc.n_blocks
    best = math.inf
    for j in range(1, min(len(order), n) + 1):
        for devs in itertools.combinations(order, j):  # subsequences keep the order
            for cuts in itertools.combinations(range(1, n), j - 1):
                bounds = (0, *cuts, n)
                p = Plan(tuple(Stage(devs[i], bounds[i], bounds[i + 1] - 1) for i in range(j)))
                if fits(sc, p):
                    best = min(best, simulate(sc, p, overlap, validate=False).ttft_s)
    return best


@pytest.mark.parametrize("overlap", OVERLAPS)
@pytest.mark.parametrize("seed", range(6))
def test_order_dp_is_exact_for_its_order(seed: int, overlap: Overlap) -> None:
    sc = random_scenario(seed, 4, 7, tight=seed % 2 == 0, source_device=seed % 3 == 0)
    order = [d.name for d in sc.devices]
    random.Random(seed).shuffle(order)
    expected = _best_over_order_by_brute_force(sc, order, overlap)
    got = solve_order(Problem(sc, overlap), order)
    if math.isinf(expected):
        assert got is None
        return
    assert got is not None
    assert [st.device for st in got.stages] == [d for d in order if d in got.devices]  # a subsequence
    assert simulate(sc, got, overlap).ttft_s == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("overlap", OVERLAPS)
@pytest.mark.parametrize("seed", range(8))
def test_heuristic_matches_exact_optimum_on_small_random_instances(seed: int, overlap: Overlap) -> None:
    sc = random_scenario(100 + seed, 4, 8, tight=seed % 2 == 0, source_device=seed % 3 == 0)
    try:
        exact = plan_exact(Problem(sc, overlap)).solver_value_s
    except Infeasible:
        with pytest.raises(Infeasible):
            plan_heuristic(Problem(sc, overlap))
        return
    res = plan_heuristic(Problem(sc, overlap))
    assert res.ttft_s == pytest.approx(simulate(sc, res.plan, overlap).ttft_s, rel=1e-12)
    assert res.ttft_s >= exact * (1 - 1e-9)  # never better than the optimum
    assert res.ttft_s <= exact * 1.01


@pytest.mark.parametrize(
    ("seed", "n_devices", "overlap"), [(1, 8, "layer"), (2, 9, "stage"), (3, 10, "none"), (4, 10, "layer")]
)
def test_heuristic_gap_to_exact_dp_is_small_on_8_to_10_distinct_devices(
    seed: int, n_devices: int, overlap: Overlap
) -> None:
    sc = cluster(seed, n_devices)
    assert DeviceTypes.of(sc).n_usage_vectors == 2**n_devices  # all distinct: the hard case for the DP
    exact = plan_exact(Problem(sc, overlap)).solver_value_s
    res = plan_heuristic(Problem(sc, overlap))
    res.plan.validate(sc)
    assert res.ttft_s >= exact * (1 - 1e-9)
    assert res.ttft_s <= exact * 1.01
    assert res.details["lower_bound"] <= exact * (1 + 1e-9)
    assert res.details["gap_to_lower_bound"] == pytest.approx(res.ttft_s / res.details["lower_bound"] - 1)


def test_relaxed_lower_bound_is_below_the_optimum() -> None:
    for seed in range(20):
        sc = random_scenario(200 + seed, 4, 8, tight=seed % 2 == 0, source_device=seed % 3 == 0)
        try:
            exact = min(plan_exact(Problem(sc, ov)).solver_value_s for ov in OVERLAPS)
        except Infeasible:
            continue
        assert relaxed_lower_bound_s(sc) <= exact * (1 + 1e-9)


def test_beyond_the_exact_range_auto_uses_the_heuristic_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    sc = cluster(5, 18)
    assert DeviceTypes.of(sc).n_usage_vectors > MAX_USAGE_VECTORS
    res = plan(Problem(sc, "layer"), "auto")
    # not proven optimal unless the certified bound meets the plan's value
    assert res.method == "heuristic" and res.exact is (res.details["gap_to_lower_bound"] <= CERTIFIED_GAP)
    assert res.details["lower_bound"] <= res.ttft_s
    assert res.details["lower_bound_kind"].startswith("Lagrangian")
    path = tmp_path / "big.json"
    path.write_text(json.dumps(sc.to_dict()))
    with pytest.raises(SystemExit) as info:
        main(["plan", str(path), "--json"])
    assert info.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["solver"]["name"] == "heuristic" and out["solver"]["exact"] is res.exact
    with pytest.raises(SystemExit):
        main(["plan", str(path)])
    title = " ".join(capsys.readouterr().out.split())
    if res.exact:
        assert "(heuristic, proven optimal: meets its lower bound; overlap=layer)" in title
    else:  # the certified gap, as --json gives it
        assert f"(heuristic, not proven optimal, within {100 * res.gap:.1f}% of a lower bound; " in title


def test_model_does_not_fit_raises_infeasible() -> None:
    sc = cluster(6, 18)
    small = sc.replace(
        devices=[Device(d.name, d.flops, d.load_bandwidth, d.startup, 1e6, d.uplink, d.downlink) for d in sc.devices]
    )
    with pytest.raises(Infeasible):
        plan_heuristic(Problem(small, "layer"))


def test_numba_and_pure_python_order_kernels_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = cluster(7, 6)
    order = [d.name for d in sc.devices]
    compiled = solve_order(Problem(sc, "layer"), order)
    monkeypatch.setenv("COLDPIPE_NO_NUMBA", "1")
    assert kernels.scalar_dp.current() is kernels.scalar_dp.py
    assert solve_order(Problem(sc, "layer"), order) == compiled
