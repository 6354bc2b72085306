"""Gantt charts: the drawn data is the simulator's timeline, span for span; idle marks add up to its waits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coldpipe.cli._common import scenario_arg
from coldpipe.core.simulator import Timeline, simulate
from coldpipe.core.types import OVERLAPS, Block, Device, Plan, Scenario, Stage, Workload
from coldpipe.errors import InputError
from coldpipe.planning import Problem, plan
from coldpipe.viz.gantt import build_gantt, draw_gantt, gantt_bars, idle_bars, source_row_device, transfer_arrows
from strategies import scenarios

DEMO = scenario_arg("demo")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coldpipe", *args], capture_output=True, text=True, timeout=300)


@st.composite
def scenario_and_plan(draw: st.DrawFn) -> tuple[Scenario, Plan]:
    """A random scenario and a random contiguous plan over a random ordered subset of its devices."""
    sc = draw(scenarios(max_devices=4, max_blocks=8))
    n_stages = draw(st.integers(1, min(len(sc.devices), sc.n_blocks)))
    inner = st.integers(1, max(1, sc.n_blocks - 1))
    cuts = sorted(draw(st.sets(inner, min_size=n_stages - 1, max_size=n_stages - 1))) if n_stages > 1 else []
    devices = draw(st.permutations([d.name for d in sc.devices]))[:n_stages]
    bounds = [0, *cuts, sc.n_blocks]
    stages = [Stage(devices[j], bounds[j], bounds[j + 1] - 1) for j in range(n_stages)]
    return sc, Plan(tuple(stages))


def _spans(tl: Timeline) -> set[tuple[int, str, int, float, float]]:
    out = set()
    for j, st_ in enumerate(tl.stages):
        for b in st_.blocks:
            out.add((j, "load", b.block, b.load_start_s, b.load_end_s))
            out.add((j, "compute", b.block, b.compute_start_s, b.compute_end_s))
    return out


@pytest.mark.parametrize("overlap", OVERLAPS)
def test_bars_are_the_timeline_spans(overlap: str) -> None:
    tl = plan(Problem(DEMO, overlap)).timeline  # type: ignore[arg-type]
    bars = gantt_bars(tl)
    drawn = {(b.stage, b.kind, b.block, b.start_s, b.end_s) for b in bars if b.kind != "startup"}
    assert drawn == _spans(tl)
    assert len([b for b in bars if b.kind != "startup"]) == 2 * DEMO.n_blocks  # one load + one compute per block
    startups = {b.stage: (b.start_s, b.end_s) for b in bars if b.kind == "startup"}
    assert startups == {j: (0.0, st_.startup_s) for j, st_ in enumerate(tl.stages) if st_.startup_s > 0}
    # each row is its own device, in stage order
    assert [b.device for b in bars if b.kind == "compute" and b.block == tl.stages[0].first] == [tl.stages[0].device]


@given(scenario_and_plan(), st.sampled_from(OVERLAPS))
def test_idle_marks_add_up_to_the_timeline_waits(case: tuple[Scenario, Plan], overlap: str) -> None:
    sc, p = case
    tl = simulate(sc, p, overlap, validate=False)  # type: ignore[arg-type]
    idle = idle_bars(tl)
    for j, st_ in enumerate(tl.stages):
        w = sum(b.duration_s for b in idle if b.stage == j and b.kind == "idle-weights")
        i = sum(b.duration_s for b in idle if b.stage == j and b.kind == "idle-input")
        assert w == pytest.approx(st_.wait_weights_s, abs=1e-9)
        assert i == pytest.approx(st_.wait_input_s, abs=1e-9)
    assert all(b.end_s > b.start_s for b in idle)
    # an idle-weights mark never overlaps a compute bar of its own row
    comps = [b for b in gantt_bars(tl) if b.kind == "compute"]
    for m in idle:
        if m.kind == "idle-weights":
            for c in comps:
                if c.stage == m.stage:
                    assert c.end_s <= m.start_s + 1e-12 or c.start_s >= m.end_s - 1e-12


@given(scenario_and_plan())
def test_arrows_are_the_transfers(case: tuple[Scenario, Plan]) -> None:
    sc, p = case
    tl = simulate(sc, p, "layer", validate=False)
    arrows = transfer_arrows(tl)
    moving = [tr for tr in tl.transfers if tr.src != tr.dst]
    assert [(a.what, a.start_s, a.at_ap_s, a.end_s) for a in arrows] == [
        (tr.what, tr.start_s, tr.at_ap_s, tr.end_s) for tr in moving
    ]
    rows = {st_.device: j for j, st_ in enumerate(tl.stages)}
    if sc.source != "ap" and sc.source not in rows:  # a source without a stage has its own row, last
        rows[sc.source] = len(tl.stages)
        assert source_row_device(tl) == sc.source
    else:
        assert source_row_device(tl) is None
    for a, tr in zip(arrows, moving, strict=True):
        assert a.src_stage == rows.get(tr.src) and a.dst_stage == rows.get(tr.dst)


def test_layer_waits_for_weights_then_input() -> None:
    """Two equal devices, 1 GB blocks at 1 GB/s: a waits 1 s for block 0, b waits ~1 s for a's activation."""
    blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
    dev = lambda n: Device(n, 1e12, 1e9, 0.0, 1e12, 8e9, 8e9)  # noqa: E731
    sc = Scenario(blocks, (dev("a"), dev("b")), Workload(prompt_tokens=1, prompt_bytes=0, token_bytes=0))
    tl = simulate(sc, Plan.parse("a[0-1] > b[2-3]"), "layer")
    idle = [(b.stage, b.kind, b.start_s, round(b.end_s, 6)) for b in idle_bars(tl)]
    # b has block 2 resident at 1 s; a's activation arrives at 3 s + 2 ms
    assert idle == [(0, "idle-weights", 0.0, 1.0), (1, "idle-input", 1.0, 3.002)]


def test_draw_writes_png_and_svg_and_returns_its_data(tmp_path: Path) -> None:
    tl = plan(Problem(DEMO)).timeline
    chart = draw_gantt(tl, [tmp_path / "g.png", tmp_path / "sub" / "g.svg"], t_max_s=10.0)
    png, svg = (tmp_path / "g.png").read_bytes(), (tmp_path / "sub" / "g.svg").read_text()
    assert png.startswith(b"\x89PNG") and "<svg" in svg
    assert chart.paths == (tmp_path / "g.png", tmp_path / "sub" / "g.svg")
    assert list(chart.bars) == gantt_bars(tl) and list(chart.idle) == idle_bars(tl)
    assert chart.ttft_s == tl.ttft_s and chart.t_max_s == 10.0
    # the block range of every stage is written on its row
    for st_ in tl.stages:
        assert f"{st_.device}  blocks {st_.first}-{st_.last}" in svg
    assert len(png) < 200_000 and len(svg) < 200_000


def test_default_time_axis_covers_the_ttft() -> None:
    tl = plan(Problem(DEMO, "none")).timeline
    chart, _fig = build_gantt(tl)
    assert chart.t_max_s >= tl.ttft_s and chart.t_max_s >= max(b.end_s for b in chart.bars)


def test_unknown_image_format_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"--gantt: .*\.png or \.svg"):
        draw_gantt(plan(Problem(DEMO)).timeline, tmp_path / "g.pdf")


def test_plan_cli_gantt_keeps_the_json_contract(tmp_path: Path) -> None:
    out = tmp_path / "plan.svg"
    res = run("plan", "demo", "--gantt", str(out), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # still exactly one JSON object
    assert doc["ttft"] == pytest.approx(plan(Problem(DEMO)).ttft_s)
    assert out.is_file() and "<svg" in out.read_text()
    bad = run("plan", "demo", "--gantt", str(tmp_path / "plan.gif"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--gantt" in bad.stderr


def test_compare_cli_draws_one_chart_per_strategy(tmp_path: Path) -> None:
    res = run("compare", "demo", "--gantt-dir", str(tmp_path), "--gantt-format", "svg")  # svg: faster to render
    assert res.returncode == 0, res.stderr
    assert "idle:" in res.stdout and "weights" in res.stdout  # the wide or the 80-column layout
    names = sorted(p.stem for p in tmp_path.glob("*.svg"))
    # the three exact optima and every baseline that can run (no single device holds the demo model)
    partitions = ("uniform", "memory", "compute", "warm-optimal")
    expected = sorted(
        ["coldpipe", "optimal-stage", "optimal-none"] + [f"{p}-{o}" for p in partitions for o in OVERLAPS]
    )
    assert names == expected
