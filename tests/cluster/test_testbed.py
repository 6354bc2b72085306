"""The kernel-enforced testbed: 3 agents, one cold request, measured vs predicted; then a killed agent.

Needs root (network namespaces, tc, cgroup v1); skipped with the reason otherwise. One testbed is
built for the module (its agents measure themselves under the limits: ~30-60 s on a shared 2-core host).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from coldpipe.testbed.bed import require_root

WHY = require_root()
pytestmark = [pytest.mark.skipif(WHY is not None, reason=WHY or ""), pytest.mark.multiprocess]

NAME = "ci"
LIMITS = [  # (share of a host core, read MB/s, uplink Mbit/s, downlink Mbit/s)
    (0.30, 20, 40, 60),
    (0.25, 30, 30, 50),
    (0.20, 40, 20, 40),
]


@pytest.fixture(scope="module")
def bed_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 MB: several throttle slices of reading (a few hundred KB would pass inside blkio's first slice)."""
    from coldpipe.runtime.checkpoint import arch_for, make_checkpoint

    arch = arch_for("llama-3.1-8b", layers=6, hidden=256, vocab=2048)
    return make_checkpoint(arch, tmp_path_factory.mktemp("tbck") / "ck")


@pytest.fixture(scope="module")
def testbed(bed_checkpoint: Path, token_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tiny_checkpoint = bed_checkpoint
    import torch

    from coldpipe.cluster.measure import layer_flops
    from coldpipe.runtime.checkpoint import open_checkpoint
    from coldpipe.testbed import down, up

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("tb")
    host_flops = layer_flops(open_checkpoint(tiny_checkpoint), 16, clock="cpu")[0]
    scenario = {
        "source": "ap",
        "workload": {"prompt_tokens": 16, "new_tokens": 1},
        "model": {"hf_config": str(tiny_checkpoint / "config.json"), "dtype": "float32"},
        "devices": [
            {
                "name": f"dev{i}",
                "flops": share * host_flops,
                "load_bandwidth": mb * 1e6,
                "startup": 0.0,
                "memory": 200e6,
                "uplink": up_m * 1e6,
                "downlink": down_m * 1e6,
            }
            for i, (share, mb, up_m, down_m) in enumerate(LIMITS)
        ],
    }
    from coldpipe.scenario_file import scenario_from_dict

    sc = scenario_from_dict(scenario)
    cluster = d / "cluster.yaml"
    state = up(sc, tiny_checkpoint, token_file, cluster, name=NAME, host_flops=host_flops)
    yield sc, cluster, state
    down(NAME)


def _coordinator(token_file: Path, cluster: Path) -> Any:
    from coldpipe.cluster.coordinator import Coordinator, load_cluster
    from coldpipe.cluster.token import read_token
    from coldpipe.cluster.transport import Keys

    return Coordinator(Keys(read_token(token_file)), load_cluster(cluster))


def _measured(co: Any, checkpoint: Path) -> tuple[Any, str]:
    from coldpipe.cluster.coordinator import scenario_from_measurements
    from coldpipe.cluster.measure import fingerprint
    from coldpipe.core.types import Workload
    from coldpipe.profiler.checkpoint import profile_checkpoint
    from coldpipe.runtime.checkpoint import open_checkpoint

    fp = fingerprint(open_checkpoint(checkpoint))
    cp = profile_checkpoint(checkpoint, prompt_tokens=16, dtype="float32")
    m = co.measure(fp, 16, link_bytes=512 * 1024)
    return scenario_from_measurements(cp.blocks, m, Workload(16, 1), "tiny"), fp


def test_three_agents_one_cold_request(testbed: Any, bed_checkpoint: Path, token_file: Path) -> None:
    from coldpipe.cluster.run import run_request
    from coldpipe.planning import Problem, plan

    limits, cluster, _state = testbed
    with _coordinator(token_file, cluster) as co:
        for ch in co.ch.values():
            ch.request("drop", 5.0)
        sc, fp = _measured(co, bed_checkpoint)
        # the coordinator measured what the kernel enforces (never read from the scenario file)
        for want, got in zip(limits.devices, sc.devices, strict=True):
            assert got.load_bandwidth == pytest.approx(want.load_bandwidth, rel=0.25)
            assert got.uplink == pytest.approx(want.uplink, rel=0.25)
            assert got.downlink == pytest.approx(want.downlink, rel=0.25)
        p = plan(Problem(sc, "layer")).plan
        out = run_request(co, sc, p, "layer", tuple(range(16)), fp)
        # device-to-device transfers are stored and forwarded whole by the AP's relay, as the model says:
        # 8n/up_u + hop + 8n/down_v + hop (straight through the bridge they would take ~8n/min(up_u, down_v))
        from coldpipe.core.types import Plan

        fixed = Plan.parse("dev0[0-2] > dev1[3-5] > dev2[6-7]")
        raw = co.run(sc, fixed, "none", tuple(range(128)), fp)  # 128 KB activations; nothing else running
    for j, (src, dst) in enumerate([("dev0", "dev1"), ("dev1", "dev2")]):
        send = next(x for x in raw["stages"][j]["spans"] if x["name"] == "send output")
        recv = next(x for x in raw["stages"][j + 1]["spans"] if x["name"] == "recv input")
        n = int(send["bytes"])
        want = 8 * n / sc.device(src).uplink + 8 * n / sc.device(dst).downlink + 2 * sc.network.hop_latency
        got = recv["end"] - send["start"]
        print(f"\ntransfer {src} -> {dst}: {n} B in {got * 1e3:.1f} ms, model {want * 1e3:.1f} ms ({got / want:.2f})")
        assert 0.8 < got / want < 1.35, (src, dst, got, want)
    ratio = out["measured_ttft"] / out["predicted_ttft"]
    print(
        f"\ntestbed: plan {out['plan_text']}: measured TTFT {out['measured_ttft']:.3f} s, predicted "
        f"{out['predicted_ttft']:.3f} s, ratio {ratio:.3f}"
    )
    assert len(out["token_ids"]) == 1
    assert 0.5 < ratio < 2.0  # loose: the host is shared; the benchmark reports the real spread


def _fault(kind: str, state: Any, victim: str) -> Any:
    """Break ``victim`` (``stop``: SIGSTOP, ``cut``: its AP-side link down, ``kill``: SIGKILL); the undo."""
    import subprocess

    names = [a["name"] for a in state["agents"]]
    i = names.index(victim)
    pid = state["pids"][i]
    if kind == "stop":
        os.kill(pid, signal.SIGSTOP)
        return lambda: os.kill(pid, signal.SIGCONT)
    if kind == "cut":
        link = ["ip", "netns", "exec", f"coldpipe-{NAME}-ap", "ip", "link", "set", f"cp{NAME}{i}a"]
        subprocess.run([*link, "down"], check=True)
        return lambda: subprocess.run([*link, "up"], check=True)
    os.kill(pid, signal.SIGKILL)
    return lambda: None


@pytest.mark.parametrize("kind", ["stop", "cut", "kill"])  # kill last: it cannot be undone
def test_a_lost_agent_mid_load_the_request_completes_on_survivors(
    kind: str, testbed: Any, bed_checkpoint: Path, token_file: Path
) -> None:
    from coldpipe.cluster.run import run_request
    from coldpipe.planning import Problem, plan

    _limits, cluster, state = testbed
    with _coordinator(token_file, cluster) as co:
        for ch in co.ch.values():
            ch.request("drop", 5.0)
        sc, fp = _measured(co, bed_checkpoint)
        p = plan(Problem(sc, "layer")).plan
        victim = p.stages[0].device
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                out["r"] = run_request(co, sc, p, "layer", tuple(range(16)), fp)
            except Exception as exc:  # reported by the assertion below
                out["e"] = exc

        th = threading.Thread(target=run)
        th.start()
        time.sleep(0.45)  # t0 is 0.3 s after the start messages: the stages are loading
        undo = _fault(kind, state, victim)
        try:
            th.join(60)
        finally:
            undo()
    assert "e" not in out, out.get("e")
    r = out["r"]
    rec = r["recovery"]
    print(
        f"\nfault {kind}: {victim}; detected {rec['lost_at_s']:.2f} s after the request; re-planned {rec['plan']}; "
        f"tail measured {rec['measured_tail_s']:.3f} s / predicted {rec['predicted_tail_s']:.3f} s; "
        f"TTFT {r['measured_ttft']:.3f} s"
    )
    assert rec["lost"] == victim and victim not in rec["plan"]
    assert rec["lost_at_s"] < 0.45 + 2.0  # noticed within 2 s of the fault (heartbeats)
    assert len(r["token_ids"]) == 1


def test_down_leaves_nothing() -> None:
    """Runs last in the module: `down` of a missing testbed is a no-op, and nothing of NAME is left after it."""
    from coldpipe.testbed import down

    down(NAME)
    down(NAME)
    import subprocess

    assert f"coldpipe-{NAME}-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not list(Path("/sys/fs/cgroup/cpu").glob(f"coldpipe-{NAME}-*"))
    assert not Path(f"/var/tmp/coldpipe-testbed/{NAME}").exists()


@pytest.mark.slow  # ~30-60 s: a fresh `coldpipe` process up to its first cgroups, then Ctrl-C
def test_interrupted_up_leaves_nothing(bed_checkpoint: Path, token_file: Path, tmp_path: Path) -> None:
    """Ctrl-C during `testbed up` (while the agents start) removes what it had built."""
    import subprocess
    import sys

    sc = tmp_path / "s.yaml"
    sc.write_text(
        "workload: {prompt_tokens: 16}\n"
        f"model: {{hf_config: {bed_checkpoint / 'config.json'}, dtype: float32}}\n"
        "devices:\n"
        "  - {name: x, flops: 8 GFLOPS, load_bandwidth: 50 MB/s, startup: 0 s, memory: 200 MB, "
        "uplink: 50 Mbit/s, downlink: 50 Mbit/s}\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [
        sys.executable,
        "-m",
        "coldpipe",
        "testbed",
        "up",
        str(sc),
        "--checkpoint",
        str(bed_checkpoint),
        "--token-file",
        str(token_file),
        "--cluster-out",
        str(tmp_path / "c.yaml"),
        "--name",
        "ci2",
    ]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(Path("/sys/fs/cgroup/cpu").glob("coldpipe-ci2-*")):
        assert p.poll() is None, p.communicate()[0]
        time.sleep(0.1)
    assert list(Path("/sys/fs/cgroup/cpu").glob("coldpipe-ci2-*")), "up never got to the cgroups"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert "coldpipe-ci2-" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not list(Path("/sys/fs/cgroup/cpu").glob("coldpipe-ci2-*"))
    assert not Path("/var/tmp/coldpipe-testbed/ci2").exists()
