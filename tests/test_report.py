"""Reports: a self-contained HTML page and the same Markdown, with the planner's own numbers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from coldpipe.cli._common import demo_scenario_text, scenario_arg
from coldpipe.core.types import OVERLAPS
from coldpipe.planning import Problem, plan
from coldpipe.planning.baselines import PARTITIONS, evaluate_baselines
from coldpipe.units import format_seconds
from coldpipe.viz.report import evaluate_strategies, write_report

DEMO = scenario_arg("demo")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(DEMO, out, scenario_text=demo_scenario_text())
    return out


def test_strategies_are_the_planner_and_the_baselines() -> None:
    strategies, bounds = evaluate_strategies(DEMO)
    assert [s.name for s in strategies[:3]] == ["coldpipe", "optimal/stage", "optimal/none"]
    for s, ov in zip(strategies[:3], OVERLAPS, strict=True):
        assert s.ttft_s == plan(Problem(DEMO, ov)).ttft_s
    baselines = evaluate_baselines(DEMO)
    assert [(s.name, s.ttft_s) for s in strategies[3:]] == [(b.name, b.ttft_s) for b in baselines]
    assert len(strategies) == 3 + len(PARTITIONS) * len(OVERLAPS)
    assert bounds.best_s <= strategies[0].ttft_s


def test_html_is_self_contained(report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)  # every figure embedded
    assert "<link" not in page and "http://" not in page and "https://" not in page
    assert format_seconds(plan(Problem(DEMO)).ttft_s) in page
    assert "orin-agx" in page and "load_bandwidth: 2.0 GB/s" in page  # the scenario echoed


def test_markdown_has_a_row_per_strategy_and_its_figures(report_dir: Path) -> None:
    md = (report_dir / "report.md").read_text()
    table_rows = [line for line in md.splitlines() if line.startswith("| ") and "/" in line.split("|")[1]]
    names = {line.split("|")[1].strip() for line in table_rows}
    assert {f"{p}/{o}" for p in PARTITIONS for o in OVERLAPS} <= names
    for fig in re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", md):
        assert (report_dir / fig).read_bytes().startswith(b"\x89PNG")
    best = min((b for b in evaluate_baselines(DEMO) if b.plan is not None), key=lambda b: b.ttft_s)
    assert f"coldpipe is {best.ttft_s / plan(Problem(DEMO)).ttft_s:.2f}x faster" in md


def test_report_cli(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "coldpipe", "report", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "index.html").is_file() and (tmp_path / "report.md").is_file()
