"""Two agents as processes (``coldpipe agent``): Ctrl-C on ``cluster run`` stops every job and leaves nothing;
a lost agent whose survivors cannot hold the model fails the run with one line naming it and why.

No root needed. The agents start once for the module (~5-10 s: their imports); each request decodes
thousands of tokens so that it is still running when the test interrupts it or stops an agent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import FIXED_PROFILE

from coldpipe.cluster.token import read_token
from coldpipe.cluster.transport import Channel, Keys

pytestmark = pytest.mark.multiprocess

NEW_TOKENS = 5000  # far more than a test waits for: the request is always in flight when it is broken
PLAN = "a0[0-2] > a1[3-5]"  # overlap layer


@dataclasses.dataclass
class Bed:
    keys: Keys
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]]
    cluster: Path
    root: Path

    def status(self, name: str) -> dict[str, Any]:
        ch = Channel(self.keys, name, f"127.0.0.1:{self.ports[name]}")
        try:
            return ch.request("status", 3.0)[0]
        finally:
            ch.close()


@pytest.fixture(scope="module")
def bed(tiny_checkpoint: Path, token_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    root = tmp_path_factory.mktemp("faults")
    prof = root / "profile.json"
    prof.write_text(json.dumps(FIXED_PROFILE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs, outs = {}, {}
    for name in ("a0", "a1"):
        outs[name] = root / f"{name}.out"
        cmd = [sys.executable, "-m", "coldpipe", "agent", "--name", name, "--listen", "127.0.0.1:0"]
        cmd += ["--token-file", str(token_file), "--checkpoint", str(tiny_checkpoint), "--profile", str(prof)]
        with open(outs[name], "wb") as out:
            procs[name] = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 120
    try:
        while len(ports) < len(procs):
            assert time.monotonic() < deadline, "the agents did not start"
            for name, p in procs.items():
                assert p.poll() is None, outs[name].read_text()
                for line in outs[name].read_text().splitlines():
                    if " ready on " in line:
                        ports[name] = int(line.rsplit(":", 1)[1])
            time.sleep(0.1)
        cluster = root / "cluster.yaml"
        rows = "".join(f"  - {{name: {n}, address: '127.0.0.1:{p}'}}\n" for n, p in ports.items())
        cluster.write_text("agents:\n" + rows)
        yield Bed(Keys(read_token(token_file)), ports, procs, cluster, root)
    finally:
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
                p.terminate()
        for p in procs.values():
            p.wait(10)


def _scenario(tiny_checkpoint: Path, path: Path, memory_share: float | None) -> Path:
    """The two agents' scenario for a long request; ``memory_share``: each holds that share of what it needs."""
    from coldpipe.cluster.coordinator import scenario_from_measurements
    from coldpipe.core.types import Workload
    from coldpipe.errors import Infeasible
    from coldpipe.planning import Problem, plan
    from coldpipe.profiler.checkpoint import profile_checkpoint

    cp = profile_checkpoint(tiny_checkpoint, prompt_tokens=8, new_tokens=NEW_TOKENS, dtype="float32")
    m = {"profile": FIXED_PROFILE, "link": {"rtt": 1e-4, "uplink": 1e9, "downlink": 1e9}}
    sc = scenario_from_measurements(cp.blocks, {"a0": m, "a1": m}, Workload(8, NEW_TOKENS), "tiny")
    if memory_share is not None:
        one = sc.replace(devices=(dataclasses.replace(sc.devices[0], memory=1.0),))
        with pytest.raises(Infeasible) as exc:
            plan(Problem(one, "layer"))
        need = 1.0 + exc.value.shortfall_bytes  # weights + KV cache of the whole model on one device
        sc = sc.replace(devices=tuple(dataclasses.replace(d, memory=memory_share * need) for d in sc.devices))
    path.write_text(json.dumps(sc.to_dict()))
    return path


def _wait_running(bed: Bed, names: tuple[str, ...], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(bed.status(n)["job_threads"] for n in names):
            return
        time.sleep(0.05)
    raise AssertionError(f"the agents never ran the job: {[bed.status(n) for n in names]}")


def test_ctrl_c_on_cluster_run_stops_every_job_and_leaves_nothing(
    bed: Bed, tiny_checkpoint: Path, token_file: Path
) -> None:
    sc = _scenario(tiny_checkpoint, bed.root / "roomy.json", None)
    tmp = bed.root / "coord-tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TMPDIR": str(tmp)}
    cmd = [sys.executable, "-m", "coldpipe", "cluster", "run", str(bed.cluster), "--checkpoint", str(tiny_checkpoint)]
    cmd += ["--token-file", str(token_file), "--scenario", str(sc), "--plan", PLAN]
    cmd += ["--trace", str(bed.root / "trace.json")]
    err_file = bed.root / "coord.err"
    with open(err_file, "wb") as err_out:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err_out, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "first token after" not in err_file.read_text() and time.monotonic() < deadline:  # decoding now
            assert p.poll() is None, err_file.read_text()
            time.sleep(0.05)
        _wait_running(bed, ("a0", "a1"))
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    err = err_file.read_text()
    assert p.returncode == 130, (out, err)
    lines = err.strip().splitlines()
    assert lines[-1] == "coldpipe: interrupted", err
    # progress of the long steps went to stderr, one line each: rendezvous, first token
    assert "preparing stage 0 on a0 (blocks 0-2)" in lines and "preparing stage 1 on a1 (blocks 3-5)" in lines
    assert any(ln.startswith("every agent prepared; the request starts in ") for ln in lines), lines
    assert b"preparing" not in out
    with pytest.raises(ProcessLookupError):  # nothing of the coordinator's session is left
        os.killpg(p.pid, 0)
    assert list(tmp.iterdir()) == []
    deadline = time.monotonic() + 5
    while any(bed.status(n)["job_threads"] for n in ("a0", "a1")) and time.monotonic() < deadline:
        time.sleep(0.05)
    for n in ("a0", "a1"):  # the job is gone on every agent, its threads ended, and the agent still serves
        st = bed.status(n)
        assert st["jobs"] == [] and st["job_threads"] == [], st


def test_a_lost_agent_whose_survivors_cannot_hold_the_model_fails_on_one_line(
    bed: Bed, tiny_checkpoint: Path, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coldpipe.cli import main

    sc = _scenario(tiny_checkpoint, bed.root / "tight.json", 0.6)  # both hold the model; one alone cannot
    victim = bed.procs["a1"]

    def stop_a1() -> None:
        _wait_running(bed, ("a1",))
        os.kill(victim.pid, signal.SIGSTOP)

    th = threading.Thread(target=stop_a1)
    th.start()
    try:
        with pytest.raises(SystemExit) as exc:
            args = ["cluster", "run", str(bed.cluster), "--checkpoint", str(tiny_checkpoint)]
            args += ["--token-file", str(token_file), "--scenario", str(sc), "--plan", PLAN, "-q"]
            main([*args, "--trace", str(bed.root / "t2.json")])
    finally:
        th.join(60)
        os.kill(victim.pid, signal.SIGCONT)
    assert exc.value.code == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1, errors  # -q: no progress lines, only the error
    assert errors[0].startswith("coldpipe: error: agent a1 was lost ")
    assert "survivors (a0) cannot hold the model" in errors[0] and "short by" in errors[0]
    deadline = time.monotonic() + 10  # the stopped agent resumes, drops the job, and keeps serving
    while bed.status("a1")["job_threads"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bed.status("a1")["job_threads"] == [] and bed.status("a0")["jobs"] == []
