"""The Lagrangian bound (:mod:`coldpipe.planning.lagrange`) never exceeds the optimum: brute force and the exact DP.

Brute force over every plan on small random instances (identical devices, warm devices, a source on a
device, tight memory), for every overlap and every objective the heuristic certifies; the exact DP on
8 distinct devices; and on the heuristic's own answers (the bound is below the plan's value).
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coldpipe.core.types import OVERLAPS, Scenario
from coldpipe.planning import Problem
from coldpipe.planning.bounds import dual_bound, objective_lower_bound
from coldpipe.planning.exact import plan_exact
from coldpipe.planning.heuristic import plan_heuristic
from coldpipe.planning.kernels import KIND_BURST, Mode
from coldpipe.planning.lagrange import PricedDag, burst_none_bound, lagrangian_bound, pareto_bound, priced_value
from coldpipe.planning.reuse_kernels import reuse_pareto_dp
from coldpipe.planning.tables import StageTables
from random_instances import brute_value, random_scenario

OBJECTIVES = [("ttft", 1, "max"), ("tpot", 1, "max"), ("e2e", 1, "max"), ("ttft", 3, "max"), ("ttft", 3, "mean")]


def decoding(sc: Scenario, seed: int, requests: int = 1, completion: str = "max") -> Scenario:
    """``sc`` with memory bandwidths, some warm devices, new tokens, and ``requests`` at once."""
    rng = random.Random(seed)
    devices = []
    for d in sc.devices:
        resident = ((a := rng.randrange(sc.n_blocks), rng.randrange(a, sc.n_blocks)),) if rng.random() < 0.2 else ()
        devices.append(dataclasses.replace(d, mem_bandwidth=rng.choice([1e9, 1e10, 1e11]), resident=resident))
    out = sc.replace(devices=devices).replace(workload={"new_tokens": rng.choice([2, 16])})
    return out.replace(workload={"requests": requests, "completion": completion}) if requests > 1 else out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10**6),
    overlap=st.sampled_from(OVERLAPS),
    case=st.sampled_from(OBJECTIVES),
    tracked=st.sampled_from([0, 1, None]),
)
def test_bound_never_exceeds_brute_force(
    seed: int, overlap: str, case: tuple[str, int, str], tracked: int | None
) -> None:
    objective, requests, completion = case
    rng = random.Random(seed)
    sc = decoding(
        random_scenario(
            seed, rng.randint(2, 4), rng.randint(2, 6), tight=rng.random() < 0.7, source_device=rng.random() < 0.3
        ),
        seed,
        requests,
        completion,
    )
    optimum, _ = brute_value(sc, overlap, objective)
    if math.isinf(optimum):
        return  # no plan: any bound holds
    bound, _ = objective_lower_bound(sc, objective, overlap, optimum * 1.5)
    assert bound <= optimum * (1 + 1e-9)
    # the ascent's result for a given number of tracked types, and any fixed prices, are bounds too
    one = sc.replace(workload={"requests": 1})
    tables = StageTables.build(one)
    if objective == "tpot":
        tables, mode = StageTables.build(one, phase="decode"), Mode.ADDITIVE
    elif objective == "e2e":
        tables, mode = (
            tables.plus(StageTables.build(one, phase="decode"), one.workload.new_tokens - 1.0),
            Mode.of(overlap),
        )
    else:
        mode = Mode.of(overlap)
    none = overlap == "none" and objective != "tpot"
    if requests > 1 and not none:  # the burst's pair DP, with fronts merged down to 2 pairs and fixed prices
        pre = StageTables.build(sc)
        lam = (requests - 1.0) * (1.0 if completion == "max" else 0.5)
        assert pareto_bound(pre, pre, mode, KIND_BURST, lam, optimum, max_front=2).value_s <= optimum * (1 + 1e-9)
        price = np.array([rng.uniform(0.0, optimum) for _ in pre.types.members])
        value, _ = reuse_pareto_dp(
            int(mode), KIND_BURST, lam, price, pre.cf, pre.mp, pre.mem, pre.down, pre.up, pre.ret, *pre.grid,
            pre.types.source_type, pre.prompt_at_ap, pre.cf, pre.down, pre.up, pre.ret, pre.prompt_at_ap, 1, math.inf,
        )  # fmt: skip
        assert value - float(price @ pre.types.counts) <= optimum * (1 + 1e-9)
    if requests > 1 and none:  # a burst under "none": the pair DP inside the threshold search, fixed prices
        pre = StageTables.build(sc)
        lam = (requests - 1.0) * (1.0 if completion == "max" else 0.5)
        price = np.array([rng.uniform(0.0, optimum) for _ in pre.types.members])
        for p in (price, np.zeros(len(price))):
            assert burst_none_bound(pre, lam, p, max_front=rng.choice([1, 2, 32])) <= optimum * (1 + 1e-9)
    assert lagrangian_bound(tables, mode, optimum, none=none, tracked=tracked).value_s <= optimum * (1 + 1e-9)
    if not none:
        price = np.array([rng.uniform(0.0, optimum) for _ in tables.types.members])
        dag = PricedDag.build(tables.types, np.zeros(len(price), dtype=bool))
        value, uses, _ = priced_value(tables, dag, mode, price)
        assert value - float(price @ tables.types.counts) <= optimum * (1 + 1e-9)
        assert uses.sum() >= 1


def distinct(seed: int, n: int) -> Scenario:
    rng = random.Random(seed)
    sc = random_scenario(seed, n, 10, tight=True, source_device=seed % 3 == 0)
    devices = [
        dataclasses.replace(
            d, flops=d.flops * rng.uniform(0.5, 2), load_bandwidth=d.load_bandwidth * rng.uniform(0.5, 2)
        )
        for d in sc.devices
    ]
    return decoding(sc.replace(devices=devices), seed)


@pytest.mark.parametrize("overlap", OVERLAPS)
def test_bound_against_the_exact_dp_on_distinct_devices(overlap: str) -> None:
    """8 distinct devices: below the exact optimum for ttft, tpot and e2e; the TTFT bound within 15 %."""
    gaps = []
    for seed in range(3):
        sc = distinct(seed, 8)
        for objective in ("ttft", "tpot", "e2e"):
            exact = plan_exact(Problem(sc, overlap, objective)).value_s  # type: ignore[arg-type]
            bound = dual_bound(sc, objective, overlap, exact)
            assert bound <= exact * (1 + 1e-9), (seed, objective)
            if objective == "ttft":
                gaps.append(exact / bound - 1)
    assert max(gaps) <= 0.15


def test_fully_tracked_is_the_exact_dp() -> None:
    """Tracking every type leaves nothing to price: the bound is the exact optimum."""
    sc = distinct(5, 5)
    for overlap in OVERLAPS:
        exact = plan_exact(Problem(sc, overlap)).value_s
        tables = StageTables.build(sc)
        got = lagrangian_bound(tables, Mode.of(overlap), math.inf, none=overlap == "none", tracked=5)
        assert (
            got.value_s == pytest.approx(exact, rel=1e-9) or got.value_s <= exact
        )  # the untracked pass may stop first
        assert got.value_s <= exact * (1 + 1e-9)


def test_heuristic_reports_the_certified_gap() -> None:
    """The heuristic's bound is below its value, and a plan that meets its bound is reported exact."""
    sc = distinct(7, 6)
    for overlap in OVERLAPS:
        res = plan_heuristic(Problem(sc, overlap))
        assert res.lower_bound_s is not None and res.lower_bound_s <= res.value_s * (1 + 1e-12)
        assert res.details["gap_to_lower_bound"] == pytest.approx(res.value_s / res.lower_bound_s - 1)
        assert res.exact == (res.details["gap_to_lower_bound"] <= 1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), overlap=st.sampled_from(OVERLAPS), completion=st.sampled_from(["max", "mean"]))
def test_decoding_burst_bound_never_exceeds_brute_force(seed: int, overlap: str, completion: str) -> None:
    """A decoding burst's e2e (each request's last token): first tokens + (T - 1) x the least TPOT, or one alone."""
    rng = random.Random(seed)
    sc = decoding(random_scenario(seed, rng.randint(2, 3), rng.randint(2, 4), tight=True, source_device=False), seed)
    sc = sc.replace(workload={"requests": 2, "completion": completion, "new_tokens": rng.choice([2, 3])})
    optimum, _ = brute_value(sc, overlap, "e2e")
    if math.isinf(optimum):
        return
    bound, _ = objective_lower_bound(sc, "e2e", overlap, optimum)
    assert bound <= optimum * (1 + 1e-9)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), mode=st.sampled_from([Mode.LAYER, Mode.STAGE]))
def test_reuse_kernel_compiled_equals_interpreted(seed: int, mode: Mode) -> None:
    """The priced pair DP compiled by numba and run by the interpreter agree (fronts merged to 2 pairs)."""
    rng = random.Random(seed)
    sc = random_scenario(seed, 3, 5, tight=True, source_device=rng.random() < 0.3)
    pre = StageTables.build(sc)
    price = np.array([rng.uniform(0.0, 1.0) for _ in pre.types.members])
    args = (
        int(mode), KIND_BURST, 2.0, price, pre.cf, pre.mp, pre.mem, pre.down, pre.up, pre.ret, *pre.grid,
        pre.types.source_type, pre.prompt_at_ap, pre.cf, pre.down, pre.up, pre.ret, pre.prompt_at_ap, 2, math.inf,
    )  # fmt: skip
    compiled = reuse_pareto_dp(*args)
    interpreted = reuse_pareto_dp.py(*args)
    assert compiled[0] == interpreted[0] or math.isclose(compiled[0], interpreted[0], rel_tol=1e-12)
    assert np.array_equal(compiled[1], interpreted[1])
