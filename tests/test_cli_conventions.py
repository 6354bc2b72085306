"""The command line's conventions and answers, in-process (fast): version, help, catalogs, 80 columns,
objectives, plan files that know their model, one measured/predicted table, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from coldpipe.cli import main
from coldpipe.cli._common import configure_console, demo_scenario_text, scenario_arg
from coldpipe.core.simulator import decode_step_s, objective_s
from coldpipe.core.types import Plan
from coldpipe.errors import InputError
from coldpipe.planning import Problem, plan
from coldpipe.units import format_seconds

DEMO = scenario_arg("demo")


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def scenario_file(tmp_path: Path, name: str = "s.yaml", **changes: str) -> Path:
    """The bundled scenario with some top-level lines replaced (``workload``, ``model``)."""
    lines = demo_scenario_text().splitlines()
    for key, value in changes.items():
        lines = [f"{key}: {value}" if ln.startswith(f"{key}:") else ln for ln in lines]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_version_and_short_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["--version"], capsys)
    assert code == 0 and out.startswith("coldpipe ") and out.split()[1][0].isdigit()
    code, out, _ = cli(["plan", "-h"], capsys)
    assert code == 0 and "Usage: coldpipe plan [OPTIONS] SCENARIO" in out
    assert "<bool>" not in out and "{scenario}" not in out
    for flag in ("-j", "-q", "--objective", "--after"):
        assert flag in out
    code, out, _ = cli(["run", "-h"], capsys)
    assert "Usage: coldpipe run [OPTIONS] [SCENARIO]" in out and "<bool>" not in out and "-o" in out


def test_catalogs_list_models_and_devices_with_sources(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["catalog", "models", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and {"llama-3.1-8b", "qwen2.5-7b"} <= {m["name"] for m in doc["models"]}
    assert all(m["source"] for m in doc["models"]) and "q4_k_m" in doc["dtypes"]
    code, out, _ = cli(["catalog", "devices", "-j"], capsys)
    devices = json.loads(out)["devices"]
    assert code == 0 and len(devices) >= 10
    assert all(f["source"] for d in devices for f in d["figures"].values())
    code, out, _ = cli(["catalog", "devices", "jetson-orin-nx"], capsys)
    assert code == 0 and "mem_bandwidth: NVIDIA Jetson Orin NX" in " ".join(out.split())
    code, _, err = cli(["catalog", "devices", "jetson-orin-xx"], capsys)
    assert code == 2 and err.count("\n") == 1 and "jetson-orin-nx" in err


def _stage_tokens(p: Plan) -> list[str]:
    return [str(s) for s in p.stages]


def test_plan_fits_80_columns_with_full_device_names(narrow: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["plan", "demo"], capsys)
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    best = plan(Problem(DEMO))
    rows = [line.split() for line in out.splitlines()]
    for j, name in enumerate(best.plan.devices):  # each stage row starts with its number and the full name
        assert [str(j + 1), name] in [r[:2] for r in rows]
    words = out.split()
    assert all(tok in words or f"{tok}" in out for tok in _stage_tokens(best.plan))  # wrapped between stages only
    assert "loading hidden behind compute: 71 %" in out
    assert "idle, summed over the 4 devices" in " ".join(out.split())


def test_compare_fits_80_columns_and_lists_every_plan_by_stage(
    narrow: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(["compare", "demo"], capsys)
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    words = out.split()
    for name in ("orin-agx", "orin-nx", "mini-pc", "laptop"):  # never cut
        assert any(w.startswith(f"{name}[") for w in words)
    for tok in _stage_tokens(plan(Problem(DEMO)).plan):
        assert tok in words
    flat = " ".join(words)
    assert "x the parallel-loading bound" in flat and "within" not in flat
    ratio = plan(Problem(DEMO)).ttft_s / max(2.76, 0.759)
    assert f"{ratio:.2f}x" in flat or f"{ratio - 0.01:.2f}x" in flat or f"{ratio + 0.01:.2f}x" in flat


def test_wide_plan_keeps_every_column(wide: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["plan", "demo"], capsys)
    assert code == 0 and "idle: weights" in out and "(embed..layer8)" in out


def test_plan_with_many_tokens_answers_ttft_e2e_tpot_and_names_the_other_optimum(
    tmp_path: Path, wide: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = scenario_file(tmp_path, workload="{prompt_tokens: 512, new_tokens: 128}")
    sc = scenario_arg(str(path))
    code, out, _ = cli(["plan", str(path), "--json"], capsys)
    doc = json.loads(out)
    p = Plan.from_dict(doc)
    assert code == 0 and doc["objective"] == "ttft"
    assert doc["ttft"] == pytest.approx(objective_s(sc, p, "layer", "ttft"))
    assert doc["e2e"] == pytest.approx(objective_s(sc, p, "layer", "e2e"))
    assert doc["tpot"] == pytest.approx(decode_step_s(sc, p))
    e2e_best = plan(Problem(sc, "layer", "e2e"))
    assert doc["other_objective"]["objective"] == "e2e"
    assert doc["other_objective"]["value"] == pytest.approx(e2e_best.value_s) and e2e_best.value_s < doc["e2e"]
    code, out, _ = cli(["plan", str(path)], capsys)
    flat = " ".join(out.split())
    assert "E2E (128 tokens)" in flat and "TPOT" in flat and "minimised: TTFT" in flat
    assert "get it with --objective e2e" in flat
    code, out, _ = cli(["plan", str(path), "--objective", "e2e", "-q"], capsys)
    assert code == 0 and "minimised: E2E (128 tokens)" in " ".join(out.split()) and "┃" not in out


def test_plan_json_always_has_ttft_and_e2e_when_defined(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(["plan", "demo", "--objective", "e2e"], capsys)
    assert code == 0 and "new_tokens is 1, so E2E is the TTFT" in err  # said, not silently passed
    code, out, _ = cli(["plan", "demo", "-j"], capsys)
    doc = json.loads(out)
    assert doc["e2e"] == doc["ttft"] and "tpot" in doc and doc["other_objective"] is None
    assert doc["target"]["model"] == DEMO.model_name and len(doc["target"]["block_weight_bytes"]) == DEMO.n_blocks
    assert sorted(doc["target"]["devices"]) == sorted(d.name for d in DEMO.devices)


def test_after_refuses_another_models_plan_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["plan", "demo", "--json"], capsys)
    first = tmp_path / "first.json"
    first.write_text(out)
    # mistral-7b-v0.3 has as many blocks as llama-3.1-8b (34): only the fingerprint tells them apart
    other = scenario_file(tmp_path, "mistral.yaml", model="{catalog: mistral-7b-v0.3, dtype: bfloat16}")
    assert scenario_arg(str(other)).n_blocks == DEMO.n_blocks
    code, out, err = cli(["plan", str(other), "--after", str(first)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert str(first) in err and "llama-3.1-8b" in err and "mistral-7b-v0.3" in err
    doc = yaml.safe_load(demo_scenario_text())
    doc["devices"] = [d for d in doc["devices"] if d["name"] != "laptop"]
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(yaml.safe_dump(doc))
    code, _, err = cli(["plan", str(fewer), "--after", str(first)], capsys)
    assert code == 2 and "devices" in err and str(first) in err
    code, out, _ = cli(["plan", "demo", "--after", str(first), "-q"], capsys)  # its own model: fine
    assert code == 0 and "TTFT" in out
    old = tmp_path / "old.json"  # a plan file from before fingerprints: loads, with a note
    old.write_text(json.dumps({k: v for k, v in json.loads(first.read_text()).items() if k != "target"}))
    code, out, err = cli(["plan", "demo", "--after", str(old), "-q"], capsys)
    assert code == 0 and "does not record its model" in err and str(old) in err


def test_run_plan_file_of_another_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coldpipe.cli.run_cmd import resolve_plan

    _code, out, _ = cli(["plan", "demo", "--json"], capsys)
    first = tmp_path / "first.json"
    first.write_text(out)
    other = scenario_arg(str(scenario_file(tmp_path, model="{catalog: mistral-7b-v0.3, dtype: bfloat16}")))
    with pytest.raises(InputError, match=r"--plan .*first\.json: the plan was made for model 'llama-3\.1-8b'"):
        resolve_plan(str(first), other, None)
    p, ov = resolve_plan(str(first), DEMO, None)
    assert ov == "layer" and p == plan(Problem(DEMO)).plan


def test_compare_and_report_take_the_objective(tmp_path: Path, wide: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = scenario_file(tmp_path, workload="{prompt_tokens: 512, new_tokens: 128}")
    sc = scenario_arg(str(path))
    code, out, _ = cli(["compare", str(path), "--objective", "e2e", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["objective"] == "e2e"
    assert doc["optimal_value"] == pytest.approx(plan(Problem(sc, "layer", "e2e")).value_s)
    uniform = Plan.parse(next(b["plan"] for b in doc["baselines"] if b["name"] == "uniform/layer"))
    assert doc["values"]["uniform/layer"] == pytest.approx(objective_s(sc, uniform, "layer", "e2e"))
    assert all(v is None or v >= doc["optimal_value"] - 1e-9 for v in doc["values"].values())
    code, out, _ = cli(["compare", str(path), "--objective", "e2e"], capsys)
    assert code == 0 and "E2E (128 tokens)" in out and "their E2E (128 tokens) / coldpipe's" in out
    code, _, err = cli(["compare", "demo", "--objective", "latency"], capsys)
    assert code == 2 and "--objective" in err
    code, out, _ = cli(["compare", str(path), "--objective", "e2e", "-q"], capsys)
    assert code == 0 and out.count("\n") == 1 and "E2E (128 tokens)" in out and "best baseline" in out
    code, out, _ = cli(["report", str(path), "--objective", "e2e", "-o", str(tmp_path / "rep")], capsys)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert code == 0 and "Speedup = the strategy's E2E (128 tokens) / coldpipe's." in md
    assert f"E2E (128 tokens) {format_seconds(doc['optimal_value'])}" in md and "x the parallel-loading bound" in md


def test_compare_gantt_axes_shared_or_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import coldpipe.viz.gantt as gantt
    from coldpipe.cli.compare_cmd import draw_comparison
    from coldpipe.planning.compare import compare

    calls: list[float | None] = []
    monkeypatch.setattr(gantt, "draw_gantt", lambda tl, path, t_max_s=None, title=None: calls.append(t_max_s))
    cmp = compare(DEMO)
    draw_comparison(cmp, tmp_path, "svg", "shared")
    assert len(set(calls)) == 1 and calls[0] is not None and calls[0] >= max(b.ttft_s for b in cmp.baselines
                                                                               if b.timeline is not None)  # fmt: skip
    calls.clear()
    draw_comparison(cmp, tmp_path, "svg", "own")
    assert calls and all(t is None for t in calls)  # each chart scales to its own plan


def test_model_info_reads_catalog_names_in_any_case(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["model-info", "Llama-3.2-3B", "--json"], capsys)
    assert code == 0 and json.loads(out)["model"] == "llama-3.2-3b"
    code, _, err = cli(["model-info", "llama-4"], capsys)
    assert code == 2 and err.count("\n") == 1 and "catalog" in err


def test_run_and_show_print_the_same_table(tmp_path: Path, narrow: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A run's report printed by `run` (print_measured) equals what `show` prints from the trace it wrote."""
    from coldpipe.cli.measured import print_measured
    from coldpipe.core.simulator import simulate
    from coldpipe.runtime.report import build_report

    p = plan(Problem(DEMO)).plan
    tl = simulate(DEMO, p, "layer")
    stages = []
    for st in tl.stages:  # the simulator's own timeline, stretched by 10 %, as a run's spans
        spans = [{"name": f"load b{b.block}", "cat": "load", "start": 1.1 * b.load_start_s, "end": 1.1 * b.load_end_s,
                  "block": b.block} for b in st.blocks]  # fmt: skip
        spans += [{"name": f"compute b{b.block}", "cat": "compute", "start": 1.1 * b.compute_start_s,
                   "end": 1.1 * b.compute_end_s, "block": b.block} for b in st.blocks]  # fmt: skip
        spans.append({"name": "recv", "cat": "recv", "start": 1.1 * st.arrival_s * 0.9, "end": 1.1 * st.arrival_s})
        stages.append({"device": st.device, "spans": spans})
    step = decode_step_s(DEMO, p)
    result = {"measured_ttft": 1.1 * tl.ttft_s, "measured_e2e": 1.1 * (tl.ttft_s + 2 * step),
              "token_ids": [5, 6, 7], "stages": stages}  # fmt: skip
    report = build_report(result, DEMO, p, "layer")
    configure_console()  # as main() does: COLUMNS=80
    print_measured(report, p, "layer")
    printed_by_run = capsys.readouterr().out
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps(report.trace))
    code, out, err = cli(["show", str(trace), "-o", str(tmp_path / "chart.svg")], capsys)
    assert code == 0, err
    assert out.startswith(printed_by_run) and "chart:" in out.removeprefix(printed_by_run)
    for what in ("TTFT", "TPOT (mean of 2 steps)", "E2E (3 tokens)"):
        assert what in printed_by_run
    header = next(line for line in printed_by_run.splitlines() if "measured" in line and "predicted" in line
                  and "ratio" in line)  # fmt: skip
    assert header.index("measured") < header.index("predicted") < header.index("ratio")
    assert "1.100" in printed_by_run  # TTFT measured / predicted


def test_show_chart_colours_measured_spans_by_kind() -> None:
    from coldpipe.viz.gantt import MEASURED_COLORS, Bar, build_gantt

    tl = plan(Problem(DEMO)).timeline
    assert tl is not None
    measured = [Bar(0, tl.stages[0].device, k, 0.1, 0.2, None, True) for k in ("load", "compute", "recv")]
    _chart, fig = build_gantt(tl, measured=measured)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"measured load (lower lanes)", "measured compute", "measured recv"} <= set(labels)
    assert len({MEASURED_COLORS[k] for k in ("load", "compute", "recv")}) == 3


def test_gantt_has_a_row_for_a_source_without_a_stage() -> None:
    from coldpipe.viz.gantt import build_gantt, source_row_device

    sc = DEMO.replace(source="orin-agx")
    p = Plan.parse("mini-pc[0-9] > laptop[10-22] > orin-nx[23-33]")
    from coldpipe.core.simulator import simulate

    tl = simulate(sc, p, "layer")
    assert source_row_device(tl) == "orin-agx"
    chart, fig = build_gantt(tl)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(ticks) == len(p.stages) + 2 and ticks[-1].startswith("orin-agx")
    assert chart.arrows[0].src_stage == len(p.stages)  # the prompt leaves the source's own row


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "coldpipe", "sweep", "--paper", "-o", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any(tmp_path.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # the first sweep's files: past the imports, inside the sweeps
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "coldpipe: interrupted\n"


def test_sizes_any_case_and_rates_explicit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = yaml.safe_load(demo_scenario_text())
    base["devices"][0]["memory"] = "12gb"
    base["devices"][1]["memory"] = "8G"
    path = tmp_path / "units.yaml"
    path.write_text(yaml.safe_dump(base))
    sc = scenario_arg(str(path))
    assert sc.devices[0].memory == 12e9 and sc.devices[1].memory == 8e9
    base["devices"][2]["uplink"] = "600 MBps"
    path.write_text(yaml.safe_dump(base))
    code, _, err = cli(["plan", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "devices[2].uplink" in err and "'600 MB/s' for bytes or '600 Mbit/s' for bits" in err
