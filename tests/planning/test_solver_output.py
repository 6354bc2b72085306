"""The MINLP solvers print nothing of their own, and a Ctrl-C during a solve ends in one line and exit code 130.

Real processes: ``python -m coldpipe plan ... --json`` in a subprocess, so that output written by SCIP
or HiGHS at the C level (which ``capsys`` cannot see) would show up and break the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pyscipopt")
pytest.importorskip("highspy")

from coldpipe.core.architectures import CATALOG, blocks_for
from coldpipe.core.types import AP, Device, Network, Scenario, Workload
from random_instances import hard_scenario

SRC = Path(__file__).resolve().parents[2] / "src"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _default_sigint() -> None:  # a child of a background job would inherit SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _coldpipe(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "coldpipe", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_default_sigint,  # only resets a signal
    )


def _slow_scenario() -> Scenario:
    """Eight heterogeneous devices x 34 blocks: minutes for either solver, so the Ctrl-C lands mid-solve."""
    arch = dataclasses.replace(CATALOG["llama-3.1-8b"], num_hidden_layers=32)
    blocks = blocks_for(arch, prompt_tokens=512, new_tokens=1, dtype="bfloat16")
    total = sum(b.memory_bytes for b in blocks)
    devices = [
        Device(f"dev{k}", 2e12 * (1 + k), 2e8 * (1 + k % 3), 0.3 * k, total * (0.2 + 0.05 * k), 1e8 * (1 + k), 3e8)
        for k in range(8)
    ]
    return Scenario(tuple(blocks), tuple(devices), Workload(512), Network(0.002), AP, "llama-34")


@pytest.mark.parametrize("solver", ["minlp", "highs"])
def test_json_output_is_only_json(solver: str, tmp_path: Path) -> None:
    path = tmp_path / "sc.json"
    path.write_text(json.dumps(hard_scenario(3, max_blocks=6).to_dict()))
    proc = _coldpipe("plan", str(path), "--solver", solver, "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    data = json.loads(out)  # a banner or a log line of the solver would break this
    assert data["solver"]["name"] == solver and data["solver"]["status"] == "optimal"
    assert err == ""


# The child runs the real CLI; it only says on stderr when the solver starts, so the Ctrl-C lands mid-solve.
_CHILD = """
import sys
import coldpipe.planning.highs as highs
import coldpipe.planning.minlp as minlp

def announce(solve):
    def run(model):
        print("solve started", file=sys.stderr, flush=True)
        return solve(model)
    return run

minlp._optimize = announce(minlp._optimize)
highs._solve = announce(highs._solve)
from coldpipe.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("solver", ["minlp", "highs"])
def test_ctrl_c_during_a_solve_ends_in_one_line_and_exit_130(solver: str, tmp_path: Path) -> None:
    path = tmp_path / "sc.json"
    path.write_text(json.dumps(_slow_scenario().to_dict()))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "plan", str(path), "--solver", solver, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_default_sigint,  # only resets a signal
    )
    assert proc.stderr is not None
    assert proc.stderr.readline() == "solve started\n"
    time.sleep(1.0)  # well into the solve
    assert proc.poll() is None, "the solve ended before the interrupt: use a harder instance"
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - start < 20, "the solver did not stop promptly"
    assert proc.returncode == 130
    assert out == ""  # nothing from SCIP or HiGHS either ("pressed CTRL-C", banners)
    assert err == "coldpipe: interrupted\n"
