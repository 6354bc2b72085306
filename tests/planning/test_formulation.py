"""The solver-neutral model (planning/formulation.py): it admits every valid plan's true schedule, its
bounds and big-Ms are valid, its scaling is what docs/formulation.md says, and ``certify`` labels honestly."""

from __future__ import annotations

import math

import pytest

from coldpipe.core.simulator import simulate
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario
from coldpipe.planning.brute import all_plans, fits
from coldpipe.planning.formulation import CERTIFY_REL, Formulation, certify, formulate, ttft_lower_bound_s
from random_instances import brute_value, hard_scenario


def _point(sc: Scenario, f: Formulation, plan: Plan, overlap: Overlap) -> list[float]:
    """The model's variables for ``plan`` with the simulator's schedule (in the model's units)."""
    tl = simulate(sc, plan, overlap)
    names = {n: i for i, n in enumerate(f.names)}
    val = [0.0] * f.n_vars
    owner = {}
    for st, stl in zip(plan.stages, tl.stages, strict=True):
        k = [d.name for d in sc.devices].index(st.device)
        dev = sc.devices[k]
        val[names[f"f_{st.first}_{k}"]] = 1.0
        if any(not dev.holds(l) for l in range(st.first, st.last + 1)):
            val[names[f"v_{k}"]] = 1.0
        for span in stl.blocks:
            l = span.block
            owner[l] = k
            val[f.x[l][k]] = 1.0
            val[f.s[l]] = span.compute_start_s / f.unit_s
            val[f.c[l]] = span.compute_end_s / f.unit_s
    for l in range(1, sc.n_blocks):
        if owner[l] == owner[l - 1]:
            val[names[f"y_{l}_{owner[l]}"]] = 1.0
    val[names["t0"]] = tl.transfers[0].start_s / f.unit_s
    val[f.ttft] = tl.ttft_s / f.unit_s
    return val


@pytest.mark.parametrize("overlap", OVERLAPS)
@pytest.mark.parametrize("seed", range(12))
def test_every_fitting_plan_with_its_simulated_schedule_satisfies_every_row(seed: int, overlap: Overlap) -> None:
    """The linearised model (McCormick, least big-Ms, bounds) contains every valid plan at its true TTFT."""
    sc = hard_scenario(seed, max_blocks=5, max_devices=3)
    f = formulate(sc, overlap)
    rows = f.linear_rows()
    checked = 0
    for plan in all_plans(sc):
        if not fits(sc, plan):
            continue
        val = _point(sc, f, plan, overlap)
        for j, v in enumerate(val):
            assert f.lb[j] - 1e-9 * max(1.0, abs(v)) <= v <= f.ub[j] + 1e-9, (plan, f.names[j])
        for r in rows:
            lhs = sum(a * val[i] for i, a in r.coefs.items())
            tol = 1e-9 * max(1.0, abs(r.lo) if math.isfinite(r.lo) else 0.0, abs(r.hi) if math.isfinite(r.hi) else 0.0)
            assert r.lo - tol <= lhs <= r.hi + tol, (str(plan), r.name, lhs, r.lo, r.hi)
        checked += 1
    assert checked > 0 or math.isinf(brute_value(sc, overlap)[0])


@pytest.mark.parametrize("seed", range(20))
def test_lower_bound_is_below_the_optimum_and_sets_the_unit(seed: int) -> None:
    sc = hard_scenario(seed, max_blocks=6, max_devices=3)
    bound = ttft_lower_bound_s(sc)
    for overlap in OVERLAPS:
        best, _ = brute_value(sc, overlap)
        assert bound <= best * (1 + 1e-12)
    unit = formulate(sc, "layer").unit_s
    assert math.log2(unit) == int(math.log2(unit))  # a power of two: dividing by it is exact
    assert bound / 32 / math.sqrt(2) <= unit <= bound / 32 * math.sqrt(2)


def test_memory_rows_exclude_exactly_the_plans_that_do_not_fit() -> None:
    """With contiguity, the integer rows (2') alone decide memory: no tolerance can admit a plan that does not fit."""
    sc = hard_scenario(4, max_blocks=6, max_devices=3)
    f = formulate(sc, "layer")
    fit_rows = [r for r in f.rows if r.name.startswith("fit_")]
    assert fit_rows
    for plan in all_plans(sc):
        if fits(sc, plan):
            continue
        x = [[0.0] * len(sc.devices) for _ in range(sc.n_blocks)]
        for st in plan.stages:
            k = [d.name for d in sc.devices].index(st.device)
            for l in range(st.first, st.last + 1):
                x[l][k] = 1.0
        flat = {f.x[l][k]: x[l][k] for l in range(sc.n_blocks) for k in range(len(sc.devices))}
        violated = any(sum(a * flat[i] for i, a in r.coefs.items()) > r.hi for r in fit_rows)
        fixed_out = any(f.ub[i] == 0.0 and v == 1.0 for i, v in flat.items())
        assert violated or fixed_out, str(plan)


def test_certify_labels_optimal_only_when_the_bound_meets_the_simulated_value() -> None:
    sc = hard_scenario(2, max_blocks=5, max_devices=3)
    best, plan = brute_value(sc, "layer")
    assert plan is not None
    ok = certify(sc, plan, "layer", best * (1 - 0.5 * CERTIFY_REL), finished=True)
    assert ok.optimal and ok.status == "optimal" and ok.value_s == best
    loose = certify(sc, plan, "layer", 0.9 * best, finished=True)
    assert not loose.optimal and loose.status == "feasible, gap 10 %" and loose.gap == pytest.approx(0.1)
    stopped = certify(sc, plan, "layer", best, finished=False)  # a time limit: never optimal
    assert not stopped.optimal and stopped.status.startswith("feasible")
    above = certify(sc, plan, "layer", 1.1 * best, finished=True)
    assert not above.optimal and "above the plan's value" in above.status
