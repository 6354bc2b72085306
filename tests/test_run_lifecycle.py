"""What a local run leaves behind (issue 15): nothing, whether it ends, fails, or is stopped by a signal.

- SIGTERM / SIGINT to ``coldpipe run --local``: one line, exit 143 / 130, no ``coldpipe-run-*`` or
  ``pymp-*`` temporary directory and no child process left;
- a trace that cannot be written after a successful run: the results are printed first, no half-written file;
- the soak test: many sequential runs and bursts in one process and through the CLI leak no process,
  thread, file descriptor, temporary file or shared-memory segment, and memory stays within a stated bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
psutil = pytest.importorskip("psutil")

from coldpipe.cli import main  # noqa: E402
from coldpipe.runtime.checkpoint import arch_for, make_checkpoint  # noqa: E402
from coldpipe.runtime.emulation import emulation_for  # noqa: E402
from coldpipe.runtime.job import Job  # noqa: E402
from coldpipe.runtime.launch import prompt_ids, run_local  # noqa: E402
from coldpipe.scenario_file import load_scenario  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
SOAK_MEMORY_GROWTH_BYTES = 64 * 2**20  # the stated bound: RSS may grow at most this much over the soak


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The smallest checkpoint (2 layers, hidden 32, vocab 64) and a two-device scenario of it."""
    d = tmp_path_factory.mktemp("life")
    ckpt = make_checkpoint(arch_for("llama-3.2-1b", layers=2, hidden=32, heads=2, kv_heads=1, vocab=64), d / "ckpt")
    return ckpt, _scenario_file(d / "s.yaml", ckpt, startup_s=0.0)


def _scenario_file(path: Path, ckpt: Path, startup_s: float, requests: int = 1) -> Path:
    doc = {
        "workload": {"prompt_tokens": 4, "new_tokens": 2, "requests": requests},
        "model": {"checkpoint": str(ckpt), "dtype": "float32"},
        "devices": [
            {"name": n, "flops": "50 GFLOPS", "load_bandwidth": "1 GB/s", "startup": f"{startup_s} s",
             "memory": "1 GB", "uplink": "1 Gbit/s", "downlink": "1 Gbit/s"}
            for n in ("a", "b")
        ],
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "TMPDIR": str(tmp)}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.multiprocess
@pytest.mark.parametrize(
    ("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_signal_stops_the_run_and_cleans_up(
    small: tuple[Path, Path], tmp_path: Path, sig: int, code: int, word: str
) -> None:
    """Regression (issue 15): SIGTERM left coldpipe-run-* and pymp-* temp dirs and printed nothing."""
    ckpt, _ = small
    scen = _scenario_file(tmp_path / "slow.yaml", ckpt, startup_s=120.0)  # the ranks wait 2 minutes to load
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "coldpipe", "run", str(scen), "--local", "--checkpoint", str(ckpt),
         "--plan", "a[0-1] > b[2-3]", "--trace", str(tmp_path / "t.json")],
        env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    seen: list[psutil.Process] = []
    while time.monotonic() < deadline:  # until the ranks are up (each writes its log in the run's temp dir)
        logs = list(tmp.glob("coldpipe-run-*/rank*.log"))
        seen = _descendants(proc.pid)
        if len(logs) == 3 and len(seen) >= 4:  # forkserver + 3 ranks
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the ranks never started")
    time.sleep(1.0)
    seen = _descendants(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"coldpipe: {word}"), err
    _, alive = psutil.wait_procs(seen, timeout=10)
    assert not alive, f"left running: {alive}"
    assert sorted(p.name for p in tmp.iterdir()) == []  # no coldpipe-run-*, no pymp-*
    assert not (tmp_path / "t.json").exists()


@pytest.mark.multiprocess
def test_an_unwritable_trace_keeps_the_results(
    small: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (issue 15): a --trace that could not be written after a successful run lost the results."""
    ckpt, scen = small
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["run", str(scen), "--local", "--checkpoint", str(ckpt), "--plan", "a[0-1] > b[2-3]",
              "--no-cold", "--json", "--trace", str(blocker / "trace.json")])  # fmt: skip
    captured = capsys.readouterr()
    assert info.value.code == 2
    result = json.loads(captured.out)  # printed first, whole
    assert result["token_ids"] and result["trace"] == str(blocker / "trace.json")
    assert captured.err.count("\n") == 1 and captured.err.startswith("coldpipe: error: ")
    assert blocker.read_text() == "x"


def test_an_atomic_write_that_fails_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk during a write: the old file stays as it was and no temporary file is left."""
    from coldpipe import atomic

    target = tmp_path / "trace.json"
    target.write_text("old")

    def full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text_atomic(target, "new" * 1000)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["trace.json"]


def _census(tmp: Path) -> dict[str, int]:
    me = psutil.Process()
    return {
        "children": len(me.children(recursive=True)),
        "threads": threading.active_count(),
        "os_threads": me.num_threads(),
        "fds": me.num_fds(),
        "temp_entries": len(list(tmp.iterdir())),
        "shm": len(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else 0,
    }


def _soak(small: tuple[Path, Path], tmp_path: Path, runs: int, cli_runs: int) -> None:
    ckpt, scen = small
    burst_scen = load_scenario(_scenario_file(tmp_path / "burst.yaml", ckpt, 0.0, requests=3))
    sc = load_scenario(scen)
    from coldpipe.core.types import Plan

    plan = Plan.parse("a[0-1] > b[2-3]")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    old_tempdir = tempfile.tempdir
    tempfile.tempdir = str(tmp)  # every temp file of the runs lands here
    try:

        def one(i: int) -> None:
            s = burst_scen if i % 2 else sc  # runs and bursts, alternately
            ids = prompt_ids(4, 64, seed=i)
            burst = tuple(prompt_ids(4, 64, seed=i + r) for r in range(1, s.workload.requests))
            job = Job(plan, "layer", ids, 2, tuple(emulation_for(s, plan, None)), burst=burst)
            (res,) = run_local(ckpt, s, [job], timeout_s=30, cold_cache=False)
            assert len(res["token_ids"]) == 2

        one(0)  # the first run starts the forkserver (it stays for the process)
        one(1)
        before = _census(tmp)
        rss0 = psutil.Process().memory_info().rss
        for i in range(runs):
            one(i)
        for i in range(cli_runs):
            with pytest.raises(SystemExit) as info:
                main(["run", str(scen), "--local", "--checkpoint", str(ckpt), "--plan",
                      "a[0-1] > b[2-3]", "--no-cold", "--json", "--trace", str(tmp_path / f"t{i}.json")])  # fmt: skip
            assert info.value.code == 0
        after = _census(tmp)
        growth = psutil.Process().memory_info().rss - rss0
    finally:
        tempfile.tempdir = old_tempdir
    assert after == before, f"leaked: {before} -> {after}"
    assert growth < SOAK_MEMORY_GROWTH_BYTES, f"RSS grew {growth / 2**20:.1f} MiB over {runs + cli_runs} runs"
    print(f"soak: {runs} runs + {cli_runs} CLI runs, RSS growth {growth / 2**20:.1f} MiB, census {after}")


@pytest.mark.multiprocess
def test_soak_short(small: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CI variant: 12 runs and bursts in one process, 3 through the CLI."""
    _soak(small, tmp_path, runs=12, cli_runs=3)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_soak_200(small: tuple[Path, Path], tmp_path: Path) -> None:
    """200 sequential runs and bursts in one process and 20 through the CLI."""
    _soak(small, tmp_path, runs=200, cli_runs=20)
