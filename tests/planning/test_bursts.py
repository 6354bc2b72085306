"""Bursts of identical requests: the simulator by hand, the exact max-completion planner and the mean heuristic."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coldpipe.core.simulator import burst_completions_s, burst_schedule, decode_step_s, objective_s, simulate
from coldpipe.core.types import OVERLAPS, Block, Device, Overlap, Plan, Scenario, Workload
from coldpipe.errors import Infeasible, InputError
from coldpipe.planning import Problem
from coldpipe.planning.exact import plan_exact
from random_instances import brute_value
from strategies import scenarios


def _two_stage(requests: int) -> tuple[Scenario, Plan]:
    blocks = [Block("b0", 1e9, 2e12, 0.0), Block("b1", 1e9, 1e12, 0.0)]
    devs = [Device(n, 1e12, 1e9, 0.0, 1e12, 8e9, 8e9) for n in "ab"]
    sc = Scenario(blocks, devs, Workload(4, prompt_bytes=0.0, token_bytes=0.0, requests=requests))
    return sc, Plan.parse("a[0-0] > b[1-1]")


def test_burst_by_hand() -> None:
    sc, plan = _two_stage(3)
    # a: block 0 resident at 1 s, 2 s per request -> ends 3, 5, 7; b: resident at 1 s, 1 s -> 4, 6, 8
    assert burst_completions_s(sc, plan, "layer") == pytest.approx((4.0, 6.0, 8.0))
    # none: everything loaded at 1 s; same here since a had to wait for its weights anyway
    assert burst_completions_s(sc, plan, "none") == pytest.approx((4.0, 6.0, 8.0))
    assert objective_s(sc, plan, "layer", "ttft") == pytest.approx(8.0)
    mean_sc = sc.replace(workload={"completion": "mean"})
    assert objective_s(mean_sc, plan, "layer", "ttft") == pytest.approx(6.0)


@given(sc=scenarios(min_devices=1, max_devices=3, min_blocks=1, max_blocks=6))
@settings(max_examples=30)
def test_one_request_is_the_ttft(sc: Scenario) -> None:
    from coldpipe.planning.brute import all_plans, fits

    for plan in list(all_plans(sc))[:10]:
        if fits(sc, plan):
            for ov in OVERLAPS:
                assert burst_completions_s(sc, plan, ov) == (simulate(sc, plan, ov).ttft_s,)


@pytest.mark.parametrize("overlap", OVERLAPS)
@given(sc=scenarios(min_devices=2, max_devices=4, min_blocks=3, max_blocks=8), requests=st.sampled_from([2, 3, 8]))
@settings(max_examples=25)
def test_max_completion_optimum_equals_brute_force(sc: Scenario, overlap: Overlap, requests: int) -> None:
    sc = sc.replace(workload={"requests": requests, "completion": "max"})
    expected, _ = brute_value(sc, overlap)
    try:
        got = plan_exact(Problem(sc, overlap, "ttft"))
    except Infeasible:
        assert math.isinf(expected)
        return
    assert got.value_s == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert got.exact == 1


def _random_cluster(rng: random.Random, max_blocks: int, *, mem_bandwidth: bool = False) -> tuple[list, list]:
    """4..max_blocks blocks and 2-4 devices on coarse grids (memory 0.3-1.5 x the model: often tight)."""
    blocks = [
        Block(f"b{i}", rng.choice([1e8, 3e8, 8e8]), rng.choice([1e10, 2e11, 1e12]), rng.choice([1e5, 4e6]))
        for i in range(rng.randint(4, max_blocks))
    ]
    model = sum(b.weight_bytes for b in blocks)
    devs = [
        Device(
            f"d{k}",
            rng.choice([1e11, 1e12, 1e13]),
            rng.choice([1e8, 1e9, 3e9]),
            rng.choice([0.0, 0.5, 2.0]),
            rng.choice([0.3, 0.6, 1.5]) * model,
            rng.choice([1e7, 1e8, 6e8]),
            rng.choice([1e7, 1e8, 8e8]),
            mem_bandwidth=rng.choice([1e9, 5e9, 5e10]) if mem_bandwidth else None,
        )
        for k in range(rng.randint(2, 4))
    ]
    return blocks, devs


def test_mean_completion_heuristic_gap_to_brute_force() -> None:
    """The documented heuristic for mean completion: its gap to the exhaustive optimum on seeded instances."""
    rng = random.Random(7)
    gaps = []
    for _k in range(40):
        blocks, devs = _random_cluster(rng, 8)
        sc = Scenario(blocks, devs, Workload(16, requests=rng.choice([2, 4, 8]), completion="mean"))
        overlap = rng.choice(OVERLAPS)
        expected, _ = brute_value(sc, overlap)
        if math.isinf(expected):
            continue
        got = plan_exact(Problem(sc, overlap, "ttft"))
        assert got.exact == 0
        gaps.append(got.value_s / expected - 1.0)
    assert min(gaps) >= -1e-9  # never better than the optimum: the simulator times both
    print(
        f"mean-completion heuristic gap over {len(gaps)} instances: median {100 * statistics.median(gaps):.2f}%, "
        f"max {100 * max(gaps):.2f}%, optimal in {sum(g < 1e-9 for g in gaps)}"
    )
    assert statistics.median(gaps) <= 1e-9
    assert max(gaps) <= 0.05


def test_a_decoding_burst_by_hand() -> None:
    """One device, 1 s per prefill and per decode step, no transfer time: the stage serves jobs by arrival."""
    blocks = [Block("b0", 1e9, 1e12, 0.0)]
    dev = Device("a", 1e12, 1e9, 0.0, 1e12, 8e9, 8e9, mem_bandwidth=1e9, resident=((0, 0),))
    sc = Scenario(blocks, [dev], Workload(4, new_tokens=2, prompt_bytes=0.0, token_bytes=0.0, requests=2))
    plan = Plan.parse("a[0-0]")
    bs = burst_schedule(sc, plan, "layer")
    # both prompts at 0: prefill r0 0-1, prefill r1 1-2 (it arrived at 0, before r0's token at 1), then the
    # decode steps in the order their tokens came back: r0 2-3, r1 3-4
    assert bs.order == ((0, 0), (1, 0), (0, 1), (1, 1))
    assert bs.first_token_s == pytest.approx((1.0, 2.0)) and bs.last_token_s == pytest.approx((3.0, 4.0))
    assert objective_s(sc, plan, "layer", "e2e") == pytest.approx(4.0)
    assert objective_s(sc.replace(workload={"completion": "mean"}), plan, "layer", "e2e") == pytest.approx(3.5)
    assert burst_completions_s(sc, plan, "layer") == pytest.approx((1.0, 2.0))


@given(sc=scenarios(min_devices=1, max_devices=3, min_blocks=1, max_blocks=6), requests=st.sampled_from([1, 2, 5]))
@settings(max_examples=30)
def test_burst_schedule_agrees_with_the_single_request_model(sc: Scenario, requests: int) -> None:
    """One request: TTFT then (new_tokens - 1) x TPOT. Any burst: first tokens as without decoding, every
    request's answer after its first token, and at least (new_tokens - 1) decode steps after it."""
    from coldpipe.planning.brute import all_plans, fits

    burst = sc.replace(workload={"requests": requests})
    for plan in list(all_plans(sc))[:6]:
        if not fits(sc, plan):
            continue
        for ov in OVERLAPS:
            one = burst_schedule(sc.replace(workload={"requests": 1}), plan, ov)
            steps = sc.workload.new_tokens - 1
            tpot = decode_step_s(sc, plan)
            assert one.last_token_s[0] == pytest.approx(simulate(sc, plan, ov).ttft_s + steps * tpot, rel=1e-9)
            bs = burst_schedule(burst, plan, ov)
            assert bs.first_token_s == pytest.approx(
                burst_completions_s(burst.replace(workload={"new_tokens": 1}), plan, ov)
            )
            assert len(bs.order) == requests * sc.workload.new_tokens
            for f, last in zip(bs.first_token_s, bs.last_token_s, strict=True):
                assert last >= f + steps * tpot * (1 - 1e-9)


def test_decoding_burst_local_search_gap_to_brute_force() -> None:
    """objective e2e with a burst (each request's last token): local search, its gap to the exhaustive optimum."""
    rng = random.Random(11)
    gaps = []
    for _k in range(30):
        blocks, devs = _random_cluster(rng, 7, mem_bandwidth=True)
        wl = Workload(
            16, new_tokens=rng.choice([2, 8, 32]), requests=rng.choice([2, 4]), completion=rng.choice(["max", "mean"])
        )
        sc = Scenario(blocks, devs, wl)
        overlap = rng.choice(OVERLAPS)
        expected, _ = brute_value(sc, overlap, "e2e")
        if math.isinf(expected):
            continue
        got = plan_exact(Problem(sc, overlap, "e2e"))
        assert got.exact == 0 and got.objective == "e2e"
        assert got.value_s == pytest.approx(objective_s(sc, got.plan, overlap, "e2e"))
        gaps.append(got.value_s / expected - 1.0)
    assert len(gaps) >= 15 and min(gaps) >= -1e-9  # never better than the optimum: the simulator times both
    print(
        f"decoding-burst local search gap over {len(gaps)} instances: median {100 * statistics.median(gaps):.2f}%, "
        f"max {100 * max(gaps):.2f}%, optimal in {sum(g < 1e-9 for g in gaps)}"
    )
    assert statistics.median(gaps) <= 1e-9
    assert max(gaps) <= 0.05


@pytest.mark.parametrize(("field", "value"), [("requests", 0), ("completion", "median")])
def test_bad_burst_fields(field: str, value: object) -> None:
    with pytest.raises(InputError, match=f"workload.{field}"):
        Workload(4, **{field: value})  # type: ignore[arg-type]


def test_plan_cli_plans_a_decoding_burst(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coldpipe.cli import main
    from coldpipe.scenario_file import load_scenario

    demo = Path(__file__).resolve().parents[2] / "src" / "coldpipe" / "data" / "demo.yaml"
    text = demo.read_text().replace("new_tokens: 1}", "new_tokens: 16, requests: 3, completion: mean}")
    assert text != demo.read_text()
    path = tmp_path / "burst.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(path), "--objective", "e2e", "--json"])
    assert exc.value.code == 0
    out = json.loads(capsys.readouterr().out)
    sc = load_scenario(path)
    plan = Plan.from_dict({"stages": out["stages"]})
    assert out["objective"] == "e2e" and out["solver"]["exact"] == 0
    assert out["objective_value"] == pytest.approx(objective_s(sc, plan, "layer", "e2e"))
    done = burst_schedule(sc, plan, "layer").last_token_s
    assert out["objective_value"] == pytest.approx(sum(done) / 3)  # completion: mean of the last tokens
