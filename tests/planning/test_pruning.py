"""The Pareto DPs' pruning: tighter dominance, suffix bounds, quick incumbents, against the plain method.

The plain method (``tight=False``: Pareto dominance only, each block on its own cheapest type as the
bound on the rest) is the reference the brute-force tests validated; the tight one must find the
same optimum everywhere, on small instances (also against brute force) and on seeded larger ones that
brute force cannot reach.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldpipe.core.simulator import objective_s
from coldpipe.core.types import Block, Device, Network, Overlap, Plan, Scenario, Workload
from coldpipe.errors import Infeasible, InputError
from coldpipe.planning import Problem, kernels
from coldpipe.planning.brute import all_plans, fits
from coldpipe.planning.exact import pareto_optimum, pareto_plan, plan_exact, plan_warm
from coldpipe.planning.kernels import KIND_BURST, KIND_E2E, Mode
from coldpipe.planning.suffix import suffix_bounds
from coldpipe.planning.tables import StageTables
from random_instances import brute_value
from strategies import scenarios


def _tables(sc: Scenario, kind: int) -> tuple[StageTables, StageTables, float] | None:
    """``(pre, second, lam)`` of the E2E or burst Pareto DP, or None if decode cannot be timed."""
    pre = StageTables.build(sc)
    if kind == KIND_BURST:
        return pre, pre, float(sc.workload.requests - 1)
    try:
        return pre, StageTables.build(sc, phase="decode"), float(sc.workload.new_tokens - 1)
    except InputError:
        return None


def _both(sc: Scenario, overlap: Overlap, kind: int) -> tuple[float, float]:
    """The tight and the plain Pareto DP's optimum, neither with an incumbent."""
    tables = _tables(sc, kind)
    assert tables is not None
    pre, sec, lam = tables
    mode = Mode.of(overlap)
    tight, _, _ = pareto_plan(pre, sec, mode, lam, math.inf, kind=kind)
    plain, _, _ = pareto_plan(pre, sec, mode, lam, math.inf, kind=kind, tight=False)
    return tight, plain


def _same(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-9)


@pytest.mark.parametrize("overlap", ["layer", "stage"])
@given(sc=scenarios(min_devices=2, max_devices=4, min_blocks=2, max_blocks=8))
@settings(max_examples=40)
def test_tight_e2e_pareto_equals_plain_and_brute_force(sc: Scenario, overlap: Overlap) -> None:
    if _tables(sc, KIND_E2E) is None:
        return
    tight, plain = _both(sc, overlap, KIND_E2E)
    assert _same(tight, plain)
    expected, _ = brute_value(sc, overlap, "e2e")
    assert _same(tight, expected) or (math.isinf(tight) and math.isinf(expected))


@pytest.mark.parametrize("overlap", ["layer", "stage"])
@given(sc=scenarios(min_devices=2, max_devices=4, min_blocks=2, max_blocks=8), requests=st.sampled_from([2, 3, 8]))
@settings(max_examples=30)
def test_tight_burst_pareto_equals_plain(sc: Scenario, overlap: Overlap, requests: int) -> None:
    sc = sc.replace(workload={"requests": requests, "completion": "max", "new_tokens": 1})
    tight, plain = _both(sc, overlap, KIND_BURST)
    assert _same(tight, plain)


def _seeded(seed: int, n_devices: int, n_blocks: int, new_tokens: int, requests: int = 1) -> Scenario:
    """A larger instance than brute force reaches: coarse grids (ties), tight memory, some identical devices."""
    rng = random.Random(seed)
    blocks = [
        Block(
            f"b{i}",
            rng.choice([1e8, 3e8, 8e8]),
            rng.choice([1e10, 2e11, 1e12]),
            rng.choice([1e5, 4e6]),
            rng.choice([0.0, 1e7]),
        )
        for i in range(n_blocks)
    ]
    model = sum(b.memory_bytes for b in blocks)
    profiles = [
        {
            "flops": rng.choice([1e11, 1e12, 1e13]),
            "load_bandwidth": rng.choice([1e8, 1e9, 3e9]),
            "startup": rng.choice([0.0, 0.5, 2.0]),
            "memory": rng.choice([0.2, 0.35, 0.6]) * model,
            "uplink": rng.choice([1e7, 1e8, 6e8]),
            "downlink": rng.choice([1e7, 1e8, 8e8]),
            "mem_bandwidth": rng.choice([1e9, 1e10, 1e11]),
        }
        for _ in range(rng.randint(n_devices - 2, n_devices))
    ]
    devices = [Device(f"d{k}", **profiles[k % len(profiles)]) for k in range(n_devices)]
    wl = Workload(rng.choice([16, 256]), new_tokens=new_tokens, requests=requests)
    return Scenario(blocks, devices, wl, Network(rng.choice([0.0, 0.003])))


@pytest.mark.parametrize("seed", range(12))
def test_tight_pareto_equals_plain_on_seeded_larger_instances(seed: int) -> None:
    """6-7 devices x 16-30 blocks: the tight DP (and the quick-then-exact search) finds the plain DP's optimum."""
    rng = random.Random(1000 + seed)
    overlap: Overlap = rng.choice(["layer", "stage"])
    sc = _seeded(seed, rng.randint(6, 7), rng.randint(16, 30), new_tokens=rng.choice([2, 32, 128, 4096]))
    tight, plain = _both(sc, overlap, KIND_E2E)
    assert _same(tight, plain)
    pre, dec, lam = _tables(sc, KIND_E2E)  # type: ignore[misc]
    plan, value, _ = pareto_optimum(pre, dec, Mode.of(overlap), lam, KIND_E2E)
    assert plan is not None and _same(value, plain)
    assert _same(objective_s(sc, plan, overlap, "e2e"), plain)
    burst = sc.replace(workload={"requests": rng.choice([2, 8]), "new_tokens": 1})
    tight, plain = _both(burst, overlap, KIND_BURST)
    assert _same(tight, plain)


def test_tight_dominance_drops_pairs_plain_dominance_keeps() -> None:
    """Long answers: a later arrival that decodes faster wins for every completion, so the fronts shrink."""
    sc = _seeded(3, 7, 30, new_tokens=4096)
    pre, dec, lam = _tables(sc, KIND_E2E)  # type: ignore[misc]
    tight = pareto_plan(pre, dec, Mode.LAYER, lam, math.inf)
    plain = pareto_plan(pre, dec, Mode.LAYER, lam, math.inf, tight=False)
    assert _same(tight[0], plain[0])
    assert tight[2] < plain[2]  # fewer pairs


@given(sc=scenarios(min_devices=1, max_devices=4, min_blocks=1, max_blocks=7))
@settings(max_examples=40)
def test_suffix_bounds_are_the_relaxations_optima(sc: Scenario) -> None:
    """From the empty state, ``rest`` is the warm optimum and ``rest_peak`` the least latest load end of
    any valid plan; every state's bound is no more than any of its completions."""
    pre = StageTables.build(sc)
    rest, rest_peak = suffix_bounds(pre)
    plans = [p for p in all_plans(sc) if fits(sc, p)]
    if not plans:
        assert math.isinf(rest[0, 0]) and math.isinf(rest_peak[0, 0])
        return
    try:
        warm = plan_warm(sc).solver_value_s
    except Infeasible:  # pragma: no cover - a plan fits
        raise
    assert _same(rest[0, 0] + pre.prompt_at_ap, warm)
    types = pre.types
    least_load = min(max(pre.load_end(types.type_of(st.device), st.first, st.last) for st in p.stages) for p in plans)
    assert _same(rest_peak[0, 0], least_load)
    assert np.all(rest[:, -1] == 0.0) and np.all(rest_peak[:, -1] == 0.0)


@pytest.mark.parametrize("overlap", ["layer", "stage"])
@given(sc=scenarios(min_devices=2, max_devices=4, min_blocks=2, max_blocks=8))
@settings(max_examples=25)
def test_quick_run_is_a_real_plan(sc: Scenario, overlap: Overlap) -> None:
    """One pair per state: the DP's value is the simulator's for the plan it returns, never below the optimum."""
    tables = _tables(sc, KIND_E2E)
    if tables is None:
        return
    pre, dec, lam = tables
    value, plan, _ = pareto_plan(pre, dec, Mode.of(overlap), lam, math.inf, max_front=1)
    optimum, _, _ = pareto_plan(pre, dec, Mode.of(overlap), lam, math.inf)
    if plan is None:
        assert math.isinf(optimum)
        return
    assert _same(objective_s(sc, plan, overlap, "e2e"), value)
    assert value >= optimum * (1 - 1e-12)


@given(sc=scenarios(min_devices=2, max_devices=4, min_blocks=2, max_blocks=8))
@settings(max_examples=15)
def test_suffix_kernel_compiled_equals_interpreted(sc: Scenario) -> None:
    from coldpipe.planning import suffix

    pre = StageTables.build(sc)
    compiled = suffix_bounds(pre)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLDPIPE_NO_NUMBA", "1")
        assert suffix.suffix_dp.current() is suffix.suffix_dp.py
        interpreted = suffix_bounds(pre)
    for a, b in zip(compiled, interpreted, strict=True):
        assert np.array_equal(a, b)
    assert kernels.numba_enabled()


def test_identical_devices_and_ties_on_a_long_answer() -> None:
    """Every device the same and every block the same: all plans of a given shape tie exactly."""
    blocks = [Block(f"b{i}", 2e8, 1e11, 1e5, 1e7) for i in range(9)]
    dev = {"flops": 1e12, "load_bandwidth": 1e9, "startup": 0.5, "memory": 0.9e9, "uplink": 1e8, "downlink": 1e8}
    devices = [Device(f"d{k}", **dev, mem_bandwidth=1e10) for k in range(4)]
    sc = Scenario(blocks, devices, Workload(32, new_tokens=512), Network(0.003))
    for overlap in ("layer", "stage", "none"):
        got = plan_exact(Problem(sc, overlap, "e2e"))
        expected, _ = brute_value(sc, overlap, "e2e")
        assert _same(got.value_s, expected)
    for requests, overlap in itertools.product((2, 8), ("layer", "stage", "none")):
        burst = sc.replace(workload={"requests": requests, "new_tokens": 1})
        assert _same(plan_exact(Problem(burst, overlap)).value_s, brute_value(burst, overlap)[0])


# --- none: the front over (latest load end, additive time) against the threshold search -----------


def _none_both(sc: Scenario, objective: str) -> tuple[float, float]:
    """``none``'s optimum by the front DP (what plan_exact runs) and by the threshold search."""
    from coldpipe.planning.exact import plan_none_thresholds
    from coldpipe.planning.pareto import none_optimum

    tables = StageTables.build(sc)
    if objective == "e2e":
        tables = tables.plus(StageTables.build(sc, phase="decode"), float(sc.workload.new_tokens - 1))
    plan, front, _ = none_optimum(tables)
    try:
        _, thresholds, _ = plan_none_thresholds(sc, tables)
    except Infeasible:
        assert plan is None
        return math.inf, math.inf
    assert plan is not None
    assert _same(objective_s(sc, plan, "none", objective), front)  # type: ignore[arg-type]
    return front, thresholds


@pytest.mark.parametrize("seed", range(16))
def test_none_front_equals_threshold_search_on_seeded_larger_instances(seed: int) -> None:
    """6-8 devices x 16-40 blocks, some warm: TTFT and E2E under ``none``, both exact methods agree."""
    rng = random.Random(2000 + seed)
    sc = _seeded(seed, rng.randint(6, 8), rng.randint(16, 40), new_tokens=rng.choice([2, 128]))
    if rng.random() < 0.4:  # some devices hold some blocks already
        devices = list(sc.devices)
        for k in rng.sample(range(len(devices)), 2):
            a = rng.randrange(sc.n_blocks)
            devices[k] = dataclasses.replace(devices[k], resident=((a, min(sc.n_blocks - 1, a + 5)),))
        sc = sc.replace(devices=devices)
    for objective in ("ttft", "e2e"):
        front, thresholds = _none_both(sc, objective)
        assert _same(front, thresholds)


@given(sc=scenarios(min_devices=1, max_devices=4, min_blocks=1, max_blocks=8))
@settings(max_examples=40)
def test_none_front_equals_threshold_search(sc: Scenario) -> None:
    assert _same(*_none_both(sc, "ttft"))


@given(sc=scenarios(min_devices=1, max_devices=4, min_blocks=1, max_blocks=7))
@settings(max_examples=30)
def test_levelled_suffix_bounds_at_the_root_are_the_thresholds_optima(sc: Scenario) -> None:
    """``rest[0, 0, k]`` is the least additive time of a plan whose stages all load by ``levels[k]``:
    the threshold DP's ``D(levels[k])``, computed forwards."""
    from coldpipe.planning.tables import load_end_candidates

    pre = StageTables.build(sc)
    taus = load_end_candidates(pre)
    levels = np.concatenate([taus[:: max(1, len(taus) // 4)], [math.inf]])
    rest, rest_peak = suffix_bounds(pre, levels)
    for k, tau in enumerate(levels):
        d, _ = pre.run(Mode.ADDITIVE, float(tau))
        assert _same(rest[0, 0, k] + pre.prompt_at_ap, d) or (math.isinf(d) and math.isinf(rest[0, 0, k]))
    assert np.array_equal(suffix_bounds(pre)[1], rest_peak)  # the levels change nothing else


@given(sc=scenarios(min_devices=1, max_devices=4, min_blocks=1, max_blocks=8))
@settings(max_examples=40)
def test_sliding_window_additive_dp_equals_the_scalar_kernel(sc: Scenario) -> None:
    """The additive DP by window minima against scalar_dp's additive mode, every threshold and loading free."""
    from coldpipe.planning.kernels import scalar_dp
    from coldpipe.planning.tables import load_end_candidates

    for tables in (StageTables.build(sc), StageTables.build(sc, warm=True)):
        types = tables.types
        for tau in [*load_end_candidates(tables)[::3], math.inf]:
            window, plan = tables.run(Mode.ADDITIVE, float(tau))
            arrive = np.full((types.n_usage_vectors, tables.n_blocks), np.inf)
            arrive[0, 0] = tables.prompt_at_ap
            scalar = scalar_dp(
                int(Mode.ADDITIVE), float(tau), *types.edges(), arrive, 0, math.inf, tables.cf,
                tables.wpt, tables.nres, tables.mp, tables.startup, tables.inv_bw, tables.mem, tables.down,
                tables.up, tables.ret, types.source_type,
            )[0]  # fmt: skip
            assert _same(window, scalar) or (math.isinf(window) and math.isinf(scalar))
            if plan is not None:
                plan.validate(sc)


@given(sc=scenarios(min_devices=1, max_devices=4, min_blocks=1, max_blocks=7))
@settings(max_examples=30)
def test_compute_peak_is_the_least_slowest_stage(sc: Scenario) -> None:
    """``PEAK_COMPUTE``: from the empty state, the least over valid plans of their slowest stage's compute
    (what a burst's last request waits, ``requests - 1`` times, behind the first)."""
    from coldpipe.planning.suffix import PEAK_COMPUTE

    pre = StageTables.build(sc)
    _, peak = suffix_bounds(pre, peak=PEAK_COMPUTE)
    plans = [p for p in all_plans(sc) if fits(sc, p)]
    if not plans:
        assert math.isinf(peak[0, 0])
        return
    types = pre.types

    def slowest(p: Plan) -> float:
        cf = [pre.cf[types.type_of(st.device)] for st in p.stages]
        return max(c[st.last + 1] - c[st.first] for c, st in zip(cf, p.stages, strict=True))

    least = min(slowest(p) for p in plans)
    assert _same(peak[0, 0], least) or peak[0, 0] == least
