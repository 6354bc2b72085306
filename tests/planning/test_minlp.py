"""The MINLP (SCIP) against the DP and brute force on seeded random instances, and against the simulator."""

from __future__ import annotations

import json
import math
import random

import pytest

pytest.importorskip("pyscipopt")

from coldpipe.cli import main
from coldpipe.core.simulator import simulate
from coldpipe.core.types import AP, OVERLAPS, Block, Device, Network, Overlap, Scenario, Workload
from coldpipe.errors import Infeasible
from coldpipe.planning import Problem, plan
from coldpipe.planning.exact import plan_exact
from coldpipe.planning.minlp import build_model, plan_minlp
from random_instances import brute_value, random_scenario

REL = 1e-6


def _cases(n: int, max_blocks: int, offset: int = 0) -> list[tuple[int, int, int, bool, bool, Overlap]]:
    """``n`` seeded cases cycling through overlap, tight/loose memory and source at the AP/a device."""
    rng = random.Random(1000 + offset)
    out = []
    for i in range(n):
        out.append(
            (
                offset + i,
                rng.randint(2, 4),
                rng.randint(4, max_blocks),
                i % 2 == 0,
                (i // 2) % 2 == 0,
                OVERLAPS[i % 3],
            )
        )
    return out


def _check_agreement(seed: int, n_dev: int, n_blk: int, tight: bool, src_dev: bool, overlap: Overlap) -> None:
    sc = random_scenario(seed, n_dev, n_blk, tight=tight, source_device=src_dev)
    expected, _ = brute_value(sc, overlap)
    if math.isinf(expected):
        with pytest.raises(Infeasible):
            plan_minlp(Problem(sc, overlap))
        return
    dp = plan_exact(Problem(sc, overlap)).solver_value_s
    res = plan_minlp(Problem(sc, overlap))
    assert res.exact, res.details
    assert dp == pytest.approx(expected, rel=REL)
    assert res.solver_value_s == pytest.approx(expected, rel=REL)
    # The MINLP's own schedule, replayed by the simulator, gives the objective it reports.
    tl = simulate(sc, res.plan, overlap)
    assert tl.ttft_s == pytest.approx(res.solver_value_s, rel=REL)
    assert [(s["device"], s["first"], s["last"]) for s in res.details["stages"]] == [
        (s.device, s.first, s.last) for s in res.plan.stages
    ]
    for mine, sim in zip(res.details["stages"], tl.stages, strict=True):
        # SCIP's start times are feasible: never before the simulator's earliest ones.
        assert mine["compute_start"] >= sim.compute_start_s - 1e-6 * max(1.0, res.solver_value_s)
        assert mine["load_end"] == pytest.approx(sim.load_end_s, rel=REL)
    last = res.details["stages"][-1]
    assert last["compute_end"] + tl.transfers[-1].end_s - tl.transfers[-1].start_s == pytest.approx(
        res.solver_value_s, rel=REL
    )


@pytest.mark.parametrize(("seed", "n_dev", "n_blk", "tight", "src_dev", "overlap"), _cases(30, 8))
def test_minlp_equals_dp_equals_brute_force(
    seed: int, n_dev: int, n_blk: int, tight: bool, src_dev: bool, overlap: Overlap
) -> None:
    _check_agreement(seed, n_dev, n_blk, tight, src_dev, overlap)


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "n_dev", "n_blk", "tight", "src_dev", "overlap"), _cases(60, 10, offset=500))
def test_minlp_equals_dp_equals_brute_force_up_to_10_blocks(
    seed: int, n_dev: int, n_blk: int, tight: bool, src_dev: bool, overlap: Overlap
) -> None:
    _check_agreement(seed, n_dev, n_blk, tight, src_dev, overlap)


@pytest.mark.parametrize("overlap", OVERLAPS)
@pytest.mark.parametrize("seed", [3, 11])
def test_linearized_model_equals_bilinear_model(seed: int, overlap: Overlap) -> None:
    sc = random_scenario(seed, 3, 6, tight=True, source_device=seed % 2 == 1)
    try:
        expected = plan_exact(Problem(sc, overlap)).solver_value_s
    except Infeasible:
        pytest.skip("instance infeasible")
    bilinear = plan_minlp(Problem(sc, overlap))
    linear = plan_minlp(Problem(sc, overlap), linearize=True)
    assert linear.details["linearized"] and not bilinear.details["linearized"]
    assert bilinear.solver_value_s == pytest.approx(expected, rel=REL)
    assert linear.solver_value_s == pytest.approx(expected, rel=REL)


def test_bilinear_model_keeps_native_nonlinear_and_indicator_constraints() -> None:
    sc = random_scenario(1, 3, 5, tight=False, source_device=False)
    bilinear = build_model(sc, "layer")  # keep the models alive while their constraints are read
    linear = build_model(sc, "layer", linearize=True)
    kinds = {c.getConshdlrName() for c in bilinear.scip.getConss()}
    kinds_lin = {c.getConshdlrName() for c in linear.scip.getConss()}
    assert "indicator" in kinds
    assert kinds & {"nonlinear", "quadratic"}
    assert not kinds_lin & {"nonlinear", "quadratic", "indicator"}


def _tiny(memory: float, source: str = AP) -> Scenario:
    blocks = [Block(f"b{i}", 1e9, 1e12, 1e6) for i in range(4)]
    devs = [Device(n, 1e12, 1e9, 0.0, memory, 8e9, 8e9) for n in ("a", "b")]
    return Scenario(blocks, devs, Workload(1, prompt_bytes=1e6, token_bytes=4.0), Network(0.001), source)


def test_model_does_not_fit_raises_infeasible_with_shortfall() -> None:
    with pytest.raises(Infeasible, match="short by") as info:
        plan_minlp(Problem(_tiny(memory=1.5e9), "layer"))
    assert info.value.shortfall_bytes == pytest.approx(1e9)


def test_source_device_gets_the_prompt_and_the_token_for_free() -> None:
    res = plan_minlp(Problem(_tiny(memory=1e12, source="b"), "layer"))
    assert str(res.plan) == "b[0-3]"
    assert res.solver_value_s == pytest.approx(5.0)  # loads end at 1..4 s, 1 s of compute each, no transfer


def test_time_limit_reports_status_and_gap_through_the_planner() -> None:
    sc = random_scenario(7, 4, 8, tight=True, source_device=False)
    res = plan(Problem(sc, "layer", time_limit_s=30.0), "minlp")
    assert res.method == "minlp"
    for key in ("status", "gap", "solve_time_s", "n_vars", "n_conss"):
        assert key in res.details
    assert res.solver_value_s is not None  # SCIP's own objective
    assert res.exact == (res.details["status"] == "optimal")
    assert res.ttft_s == pytest.approx(res.solver_value_s, rel=REL)


def test_cli_plan_solver_minlp_json(tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    sc = random_scenario(5, 3, 6, tight=False, source_device=True)
    path = tmp_path / "sc.json"  # type: ignore[operator]
    path.write_text(json.dumps(sc.to_dict()))
    with pytest.raises(SystemExit) as info:
        main(["plan", str(path), "--solver", "minlp", "--time-limit", "60", "--json"])
    assert info.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["solver"]["name"] == "minlp"
    assert out["solver"]["status"] == "optimal" and out["solver"]["exact"] is True
    assert out["ttft"] == pytest.approx(plan_exact(Problem(sc, "layer")).solver_value_s, rel=REL)
