"""The runtime's single-process tools: emulation knobs, profile-host, calibration, CLI input errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")

from coldpipe.cli import main
from coldpipe.core.architectures import blocks_for
from coldpipe.core.simulator import block_decode_s, burst_completions_s, simulate
from coldpipe.core.types import Device, Network, Plan, Scenario, Workload
from coldpipe.runtime.checkpoint import open_checkpoint
from coldpipe.runtime.emulation import emulation_for
from coldpipe.runtime.job import Job
from coldpipe.runtime.launch import make_spec, prompt_ids
from coldpipe.runtime.profile_host import HostProfile, calibrated_blocks, profile_host
from coldpipe.runtime.report import build_report


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tools") / "tiny"
    argv = ["make-checkpoint", "--config", "qwen2.5-0.5b", "--layers", "2", "--hidden", "32", "--heads", "2",
            "--kv-heads", "1", "--vocab", "100", "--out", str(out)]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    return out


def _devices() -> list[Device]:
    return [Device(n, flops=f, load_bandwidth=1e8, startup=0.1, memory=1e9, uplink=1e8, downlink=1e8)
            for n, f in [("fast", 4e9), ("slow", 1e9)]]  # fmt: skip


def test_emulation_knobs_come_from_the_scenario(tiny: Path) -> None:
    blocks = blocks_for(open_checkpoint(tiny).architecture(), prompt_tokens=4, dtype="float32")
    sc = Scenario(blocks, _devices(), Workload(4))
    plan = Plan.parse("fast[0-1] > slow[2-3]")
    fast, slow = emulation_for(sc, plan, host_flops=8e9)
    assert (fast.slowdown, slow.slowdown) == (2.0, 8.0)
    assert fast.read_bytes_per_s == 1e8 and fast.startup_s == 0.1
    assert emulation_for(sc, plan, host_flops=1e9)[0].slowdown == 1.0  # never faster than the host
    off = emulation_for(sc, plan, host_flops=8e9, enabled=False)[1]
    assert (off.slowdown, off.read_bytes_per_s, off.startup_s, off.mem_bandwidth) == (1.0, None, 0.0, None)
    assert fast.mem_bandwidth is None  # no mem_bandwidth in the scenario: decode steps are not floored
    sc_mem = sc.replace(devices=[replace(d, mem_bandwidth=2e9) for d in sc.devices])
    assert [e.mem_bandwidth for e in emulation_for(sc_mem, plan, host_flops=8e9)] == [2e9, 2e9]


def test_profile_host_and_calibration(tiny: Path) -> None:
    prof = profile_host(tiny, 6, reps=1)
    assert len(prof.block_s) == 4 and prof.host_flops > 0 and prof.read_cold_bytes_per_s > 0
    assert HostProfile.from_dict(json.loads(json.dumps(prof.to_dict()))) == prof
    blocks = calibrated_blocks(blocks_for(open_checkpoint(tiny).architecture(), prompt_tokens=6), prof)
    host = Device("host", prof.host_flops, float("inf"), 0.0, 1e12, float("inf"), float("inf"))
    sc = Scenario(blocks, [host], Workload(6, prompt_bytes=0, token_bytes=0), Network(0.0))
    tl = simulate(sc, Plan.parse("host[0-3]"), "layer")
    assert tl.stages[0].compute_s == pytest.approx(sum(prof.block_s))  # the simulator replays the measurement
    # decode steps are profiled and calibrated too: with a memory too fast to matter, the simulator's decode
    # step of each block is the host's measured one
    assert len(prof.decode_block_s) == 4 and all(t > 0 for t in prof.decode_block_s)
    fast_mem = sc.replace(devices=[replace(host, mem_bandwidth=1e30)])
    for b, t in enumerate(prof.decode_block_s):
        assert block_decode_s(fast_mem, b, "host") == pytest.approx(t)
    # a profile written before decode steps were profiled still loads, and calibrates the prefill only
    old = {k: v for k, v in prof.to_dict().items() if k != "decode_block_s"}
    analytic = blocks_for(open_checkpoint(tiny).architecture(), prompt_tokens=6)
    legacy = calibrated_blocks(analytic, HostProfile.from_dict(old))
    assert [b.flops for b in legacy] == [b.flops for b in blocks]
    assert [b.decode_flops for b in legacy] == [b.decode_flops for b in analytic]


def test_report_compares_a_burst_request_by_request(tiny: Path) -> None:
    """The runtime report of a burst: each request's first token, measured against burst_completions_s."""
    blocks = blocks_for(open_checkpoint(tiny).architecture(), prompt_tokens=4, dtype="float32")
    sc = Scenario(blocks, _devices(), Workload(4, requests=3), Network(0.001))
    plan = Plan.parse("fast[0-1] > slow[2-3]")
    tl = simulate(sc, plan, "layer")
    predicted = burst_completions_s(sc, plan, "layer")
    stage = {"spans": [{"name": "recv", "cat": "recv", "start": 0.0, "end": 0.1},
                       {"name": "compute b0", "cat": "compute", "start": 0.1, "end": 0.2, "block": 0},
                       {"name": "compute b0 r1", "cat": "compute", "start": 0.2, "end": 0.9, "block": 0,
                        "request": 1}]}  # fmt: skip
    result = {"measured_ttft": 1.0, "token_ids": [7], "first_token_ids": [7, 8, 9], "completions": [1.0, 1.5, 3.0],
              "stages": [{"device": "fast", **stage}, {"device": "slow", **stage}]}  # fmt: skip
    rep = build_report(result, sc, plan, "layer")
    burst = rep.to_dict()["burst"]
    assert burst["measured_max"] == 3.0 and burst["measured_mean"] == pytest.approx(5.5 / 3)
    assert burst["predicted_max"] == max(predicted) and burst["ratio_max"] == pytest.approx(3.0 / max(predicted))
    assert burst["first_token_ids"] == [7, 8, 9]
    assert rep.stages[0].m_compute_end_s == 0.2  # the per-stage figures are the first request's
    assert rep.trace["coldpipe"]["predicted_completions"] == list(predicted)
    summary = {row["what"]: (row["measured"], row["predicted"]) for row in rep.summary}  # the CLI's one table
    assert summary["TTFT"] == (1.0, tl.ttft_s) and summary["request 3: first token"] == (3.0, predicted[2])
    assert summary["burst: last first token (max)"] == (3.0, max(predicted))
    with pytest.raises(ValueError, match="3 requests ran but 0 were predicted"):
        build_report(result, replace(sc, workload=Workload(4)), plan, "layer")  # the scenario has 1 request
    single = {**result, "completions": [1.0], "first_token_ids": [7]}
    assert build_report(single, sc, plan, "layer").to_dict()["burst"] is None


def test_a_job_round_trips_through_the_run_spec(tiny: Path) -> None:
    """Every rank rebuilds the launcher's job from the spec; each prompt is in it once."""
    blocks = blocks_for(open_checkpoint(tiny).architecture(), prompt_tokens=4, dtype="float32")
    sc = Scenario(blocks, _devices(), Workload(4, requests=3), Network(0.001))
    plan = Plan.parse("fast[0-1] > slow[2-3]")
    burst = (prompt_ids(4, 100, seed=1), prompt_ids(4, 100, seed=2))
    job = Job(plan, "stage", prompt_ids(4, 100), 2, tuple(emulation_for(sc, plan, 8e9)), links=False, burst=burst)
    spec = json.loads(json.dumps(make_spec(tiny, sc, [job])))
    (d,) = spec["jobs"]
    assert d["prompts"] == [list(p) for p in job.prompts] and "prompt_ids" not in d
    assert Job.from_dict(d) == job and Job.from_dict(d).prompts == (job.prompt_ids, *burst)
    with pytest.raises(ValueError, match="overlap"):
        Job.from_dict({**d, "overlap": "eager"})


def test_run_rejects_a_scenario_of_another_model(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "s.yaml"  # Llama-3.2-1B has 18 blocks, the tiny checkpoint 4
    path.write_text(
        "workload: {prompt_tokens: 4}\nmodel: {catalog: llama-3.2-1b}\ndevices:\n"
        "  - {name: a, flops: 1 TFLOPS, load_bandwidth: 1 GB/s, memory: 8 GB, uplink: 1 Gbit/s, downlink: 1 Gbit/s}\n"
    )
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--local", "--checkpoint", str(tiny)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("coldpipe: error: SCENARIO:") and "18 blocks" in err and len(err.splitlines()) == 1


def test_make_checkpoint_rejects_a_bad_dtype(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["make-checkpoint", "--config", "llama-3.2-1b", "--dtype", "int3", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--dtype" in capsys.readouterr().err


def test_profile_host_calibrates_a_scenario(tiny: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        f"workload: {{prompt_tokens: 5}}\nmodel: {{hf_config: {tiny}/config.json, dtype: float32}}\ndevices:\n"
        "  - {name: a, flops: 10 MFLOPS, load_bandwidth: 1 GB/s, memory: 8 GB, uplink: 1 Gbit/s, downlink: 1 Gbit/s}\n"
    )
    out, prof = tmp_path / "cal.json", tmp_path / "host.json"
    argv = ["profile-host", "--checkpoint", str(tiny), "--calibrate", str(scenario), "--scenario-out", str(out),
            "--out", str(prof), "--reps", "1"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    host = HostProfile.from_dict(json.loads(prof.read_text()))
    cal = Scenario.from_dict(json.loads(out.read_text()))
    assert host.prompt_tokens == 5 and cal.n_blocks == 4
    assert host.gap_s > 0  # by default it idles after each block as the (slower) device will (emulated_gap_s)
    assert [b.flops for b in cal.blocks] == pytest.approx([s * host.host_flops for s in host.block_s])
