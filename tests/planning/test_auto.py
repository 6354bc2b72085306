"""``auto``: the exact DP when its predicted planning time is within the budget, else the heuristic, saying why."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from coldpipe.core.architectures import CATALOG, blocks_for
from coldpipe.core.types import Device, Network, Scenario, Workload
from coldpipe.planning import Problem, plan, planner
from coldpipe.planning.heuristic import CERTIFIED_GAP
from coldpipe.planning.predict import predicted_time_s, work_units
from coldpipe.planning.tables import MAX_USAGE_VECTORS, DeviceTypes

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def _cluster(n: int, model: str = "llama-3.1-70b") -> Scenario:
    """``n`` distinct devices that must share ``model`` (each holds 1/8 to 3/8 of it)."""
    blocks = blocks_for(CATALOG[model], prompt_tokens=512, dtype="bfloat16")
    size = sum(b.memory_bytes for b in blocks)
    devices = [
        Device(f"d{k}", 1e12 * (1 + k), 3e8 * (1 + k % 5), 0.2 * k, (1 + 2 * (k % 7) / 6) * size / 8, 1e8, 1e8)
        for k in range(n)
    ]
    return Scenario(blocks, devices, Workload(512), Network(0.003))


def test_the_prediction_grows_with_usage_vectors_and_blocks() -> None:
    small, wide, long = _cluster(8, "llama-3.1-8b"), _cluster(12, "llama-3.1-8b"), _cluster(8)
    assert work_units(Problem(wide)) > 8 * work_units(Problem(small))
    assert work_units(Problem(long)) > 2 * work_units(Problem(small))
    for overlap in ("layer", "stage", "none"):
        assert predicted_time_s(Problem(small, overlap)) < predicted_time_s(Problem(wide, overlap))
    burst = small.replace(workload={"requests": 8})
    assert predicted_time_s(Problem(small, "none")) < predicted_time_s(Problem(burst, "none"))


def test_auto_runs_the_exact_dp_within_the_budget() -> None:
    sc = _cluster(6, "llama-3.1-8b")
    assert predicted_time_s(Problem(sc)) <= planner.AUTO_TIME_BUDGET_S
    res = plan(Problem(sc))
    assert res.method == "dp" and "auto" not in res.details


def test_auto_switches_on_predicted_time_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = _cluster(6, "llama-3.1-8b")
    monkeypatch.setattr(planner, "AUTO_TIME_BUDGET_S", 1e-9)
    res = plan(Problem(sc))
    assert res.method == "heuristic" and res.exact is (res.details["gap_to_lower_bound"] <= CERTIFIED_GAP)
    assert res.details["auto"].startswith("heuristic, not dp: predicted exact planning time")
    assert "above auto's budget of 1e-09 s" in res.details["auto"]
    assert plan(Problem(sc), "dp").method == "dp"  # asked for by name, the exact DP runs whatever its time


def test_sixteen_distinct_devices_on_an_82_block_model_are_beyond_the_budget() -> None:
    """Within the exact DP's range of usage vectors, but predicted above auto's budget: the heuristic."""
    sc = _cluster(16)
    assert DeviceTypes.of(sc).n_usage_vectors <= MAX_USAGE_VECTORS
    assert predicted_time_s(Problem(sc)) > planner.AUTO_TIME_BUDGET_S
    chosen, why = planner.auto_choice(Problem(sc))
    assert chosen.name == "heuristic" and why is not None and "predicted exact planning time" in why


def test_beyond_the_usage_vector_limit_auto_says_so() -> None:
    sc = _cluster(17, "llama-3.2-1b")
    chosen, why = planner.auto_choice(Problem(sc))
    assert chosen.name == "heuristic" and why is not None and "above the exact DP's limit" in why


def test_the_targets_are_predicted_within_the_budget() -> None:
    from bench_targets import problems

    for _label, sc, objective, overlap, _target in problems():
        assert predicted_time_s(Problem(sc, overlap, objective)) <= planner.AUTO_TIME_BUDGET_S


def test_the_cli_says_why_auto_chose_the_heuristic(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from coldpipe.cli import main

    path = tmp_path / "sc.json"
    path.write_text(json.dumps(_cluster(6, "llama-3.1-8b").to_dict()))
    monkeypatch.setattr(planner, "AUTO_TIME_BUDGET_S", 1e-9)
    with pytest.raises(SystemExit) as info:
        main(["plan", str(path), "--json"])
    assert info.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["solver"]["name"] == "heuristic" and "predicted exact planning time" in out["solver"]["auto"]
    with pytest.raises(SystemExit):
        main(["plan", str(path)])
    assert "auto: heuristic, not dp" in capsys.readouterr().out
