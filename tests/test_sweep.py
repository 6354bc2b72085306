"""Sweeps: the axes rewrite the scenario as documented; the CSV has one row per value x strategy and the
numbers obey the orderings that must hold (coldpipe <= every baseline, bounds <= every optimum)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from coldpipe.cli._common import scenario_arg
from coldpipe.core.types import OVERLAPS, Block, Device, Scenario, Workload
from coldpipe.errors import InputError
from coldpipe.planning import Problem, plan
from coldpipe.planning.baselines import PARTITIONS, evaluate_baselines
from coldpipe.viz.sweep import (
    AXES,
    DEFAULT_VALUES,
    PAPER_SWEEPS,
    STRATEGY_BOUNDS,
    SweepResult,
    paper_plan,
    read_csv,
    run_sweep,
    scenario_at,
    write_csv,
)

DEMO = scenario_arg("demo")
STRATEGIES = 3 + len(PARTITIONS) * len(OVERLAPS) + len(STRATEGY_BOUNDS)  # optima, baselines, bounds


def check_orderings(result: SweepResult) -> None:
    for value in result.values():
        at = result.at(value)
        assert len(at) == STRATEGIES
        opt = at["coldpipe"].ttft_s
        if not math.isfinite(opt):  # nothing fits: no strategy may run either
            assert all(not math.isfinite(r.ttft_s) for r in at.values() if r.kind != "bound")
            continue
        for r in at.values():
            if r.kind == "baseline" or r.kind == "optimal":
                # layer <= stage <= none for the same plan, so the layer optimum beats every strategy of every mode
                assert opt <= r.ttft_s * (1 + 1e-12), (value, r.strategy)
            if r.kind == "baseline":
                same_mode = at["coldpipe" if r.overlap == "layer" else f"optimal/{r.overlap}"].ttft_s
                assert same_mode <= r.ttft_s * (1 + 1e-12), (value, r.strategy)
            if r.kind == "bound":
                assert r.ttft_s <= opt * (1 + 1e-12), (value, r.strategy)
        assert at["coldpipe"].speedup == 1.0


@pytest.mark.parametrize("axis", AXES)
def test_default_sweep_of_every_axis(axis: str, tmp_path: Path) -> None:
    result = run_sweep(DEMO, axis)
    assert len(result.rows) == len(DEFAULT_VALUES[axis]) * STRATEGIES
    assert result.values() == list(DEFAULT_VALUES[axis])
    check_orderings(result)
    csv_path = write_csv(result, tmp_path / f"{axis}.csv")
    rows = read_csv(csv_path)
    assert len(rows) == len(result.rows)
    for a, b in zip(rows, result.rows, strict=True):  # exact round trip, inf and nan included
        assert (a.value, a.strategy, a.plan) == (b.value, b.strategy, b.plan)
        assert a.ttft_s == b.ttft_s or (math.isnan(a.ttft_s) and math.isnan(b.ttft_s))


def test_sweep_point_equals_planning_the_rewritten_scenario() -> None:
    result = run_sweep(DEMO, "load_bandwidth", ["2x"])
    sc = scenario_at(DEMO, "load_bandwidth", "2x")
    at = result.at("2x")
    assert at["coldpipe"].ttft_s == plan(Problem(sc)).ttft_s
    assert at["coldpipe"].plan == str(plan(Problem(sc)).plan)
    for b in evaluate_baselines(sc):
        assert at[b.name].ttft_s == b.ttft_s


def test_one_device_too_small_is_infeasible_not_an_error() -> None:
    at = run_sweep(DEMO, "devices", ["1"]).at("1")  # orin-agx alone cannot hold 16 GB of weights
    assert at["coldpipe"].ttft_s == math.inf and at["coldpipe"].note
    assert all(r.ttft_s == math.inf for r in at.values())


def test_single_device_holding_the_model_gains_nothing() -> None:
    """With one device every strategy runs the same plan, up to its overlap mode."""
    small = scenario_at(DEMO, "model", "llama-3.2-1b")
    at = run_sweep(small, "devices", ["1"]).at("1")
    assert at["coldpipe"].ttft_s == at["single/layer"].ttft_s == at["uniform/layer"].ttft_s
    assert at["optimal/none"].ttft_s == at["single/none"].ttft_s


def test_axes_rewrite_every_device() -> None:
    up = scenario_at(DEMO, "uplink", "0.5x")
    for d0, d1 in zip(DEMO.devices, up.devices, strict=True):
        assert (d1.uplink, d1.downlink) == (0.5 * d0.uplink, 0.5 * d0.downlink)
    assert {d.load_bandwidth for d in scenario_at(DEMO, "load_bandwidth", "3 GB/s").devices} == {3e9}
    assert {d.startup for d in scenario_at(DEMO, "startup", "0x").devices} == {0.0}
    assert {d.startup for d in scenario_at(DEMO, "startup", "250 ms").devices} == {0.25}
    six = scenario_at(DEMO, "devices", "6")
    assert [d.name for d in six.devices] == [d.name for d in DEMO.devices] + ["orin-agx-2", "orin-nx-2"]
    assert six.devices[4].profile() == DEMO.devices[0].profile()
    long = scenario_at(DEMO, "prompt_tokens", "2048")
    assert long.workload.prompt_tokens == 2048 and long.workload.prompt_bytes == 4 * 2048
    assert long.blocks[1].flops > DEMO.blocks[1].flops and long.blocks[1].weight_bytes == DEMO.blocks[1].weight_bytes
    qwen = scenario_at(DEMO, "model", "qwen2.5-7b")
    assert qwen.model_name == "qwen2.5-7b" and qwen.n_blocks == 28 + 2


@pytest.mark.parametrize(
    ("axis", "values", "match"),
    [
        ("colour", ["1"], r"--axis: unknown axis"),
        ("devices", ["two"], r"--values \(devices\): 'two' is not a number of devices"),
        ("devices", ["0"], r"at least 1 device"),
        ("uplink", ["-2x"], r"must be finite and >= 0"),
        ("uplink", ["3 GB"], r"--values \(uplink\): unit 'GB' is a size"),
        ("uplink", ["2x", "1 Gbit/s"], r"--values: mixes multipliers and absolute values"),
        ("model", ["gpt-5"], r"unknown catalog model 'gpt-5'"),
        ("prompt_tokens", ["many"], r"not a number of tokens"),
    ],
)
def test_bad_values_name_the_field(axis: str, values: list[str], match: str) -> None:
    with pytest.raises(InputError, match=match):
        run_sweep(DEMO, axis, values)


def test_prompt_tokens_needs_a_catalog_model() -> None:
    sc = Scenario([Block("b", 1e9, 1e9, 1e3)], [Device("a", 1e12, 1e9, 0.0, 1e10, 1e9, 1e9)], Workload(8))
    with pytest.raises(InputError, match="not a catalog model"):
        scenario_at(sc, "prompt_tokens", "64")


def test_paper_covers_every_axis() -> None:
    planned = paper_plan(DEMO)
    assert {ps.axis for ps, _sc, _v in planned} == set(AXES)
    assert len({ps.name for ps in PAPER_SWEEPS}) == len(PAPER_SWEEPS)
    no_startup = next(sc for ps, sc, _v in planned if ps.name == "load_bandwidth-no-startup")
    assert {d.startup for d in no_startup.devices} == {0.0}


def test_run_paper_writes_every_sweep_and_the_schedules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The --paper run, cut to two sweeps of one value each to keep the test short (devices = 1 is infeasible);
    test_paper_covers_every_axis checks the full list."""
    import coldpipe.viz.sweep as sweep

    short = {axis: values[:1] for axis, values in DEFAULT_VALUES.items()}
    monkeypatch.setattr(sweep, "DEFAULT_VALUES", short)
    two = (PAPER_SWEEPS[0], PAPER_SWEEPS[-2])
    monkeypatch.setattr(sweep, "PAPER_SWEEPS", two)
    results = sweep.run_paper(DEMO, tmp_path)
    assert set(results) == {ps.name for ps in two}
    for ps in two:
        assert len(read_csv(tmp_path / f"sweep_{ps.name}.csv")) == STRATEGIES
        assert (tmp_path / f"sweep_{ps.name}.png").is_file() and (tmp_path / f"sweep_{ps.name}.svg").is_file()
    for role in ("coldpipe", "best-baseline", "load-then-compute"):
        assert (tmp_path / f"gantt_{role}.png").is_file() and (tmp_path / f"gantt_{role}.svg").is_file()
    svg = (tmp_path / "gantt_coldpipe.svg").read_text()
    assert all(str(stage) in svg for stage in plan(Problem(DEMO)).plan.stages)


def test_sweep_cli(tmp_path: Path) -> None:
    args = ["sweep", "demo", "--axis", "uplink", "--values", "0.5x,1x,2x", "--out", str(tmp_path)]
    res = subprocess.run(
        [sys.executable, "-m", "coldpipe", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    rows = read_csv(tmp_path / "sweep_uplink.csv")
    assert len(rows) == 3 * STRATEGIES
    assert (tmp_path / "sweep_uplink.png").is_file() and (tmp_path / "sweep_uplink.svg").is_file()
    assert "0.5x" in res.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "coldpipe", "sweep", "demo", "--axis", "weather"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--axis: unknown axis 'weather'" in bad.stderr and "Traceback" not in bad.stderr
