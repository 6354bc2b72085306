"""``testbed up`` / ``testbed down``: namespaces, veths, tc, cgroups and agents (see the package docstring)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coldpipe.core.types import Scenario
from coldpipe.errors import ColdpipeError, InputError

__all__ = ["PROCESS_BYTES", "cpu_shares", "down", "require_root", "up"]

PROCESS_BYTES = 700 * 2**20  # an agent's own footprint (Python, torch, transformers) on top of the device's memory
SLACK_BYTES = 64 * 2**20  # room for activations, buffers and the self-measurement beyond the device's memory
CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "blkio", "memory")
STATE_DIR = Path("/run/coldpipe-testbed")
WORK_DIR = Path("/var/tmp/coldpipe-testbed")
PORT = 7070
RELAY_PORT = 7071
CFS_PERIOD_US = 10_000  # short periods: a block computing a few ms cannot run unthrottled on a 100 ms quota


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise ColdpipeError(f"testbed: `{' '.join(argv)}` failed: {p.stderr.strip()[:300]}")
    return p


def _ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _sh("ip", "netns", "exec", ns, *argv, check=check)


def _check_name(name: str) -> None:
    if not (name.isalnum() and name.islower() and 1 <= len(name) <= 5):
        raise InputError("--name", f"{name!r} is not 1-5 lower-case letters/digits", "interface names are short")


def _subnet(name: str) -> int:
    return zlib.crc32(name.encode()) % 200 + 20


def require_root() -> str | None:
    """None when the testbed can run here, else why not (for the tests' skip reason)."""
    if os.geteuid() != 0:
        return "the testbed needs root (network namespaces, tc, cgroups)"
    for c in CONTROLLERS:
        if not (CGROUP_ROOT / c / "cgroup.procs").is_file():
            return f"no cgroup v1 {c!r} hierarchy at {CGROUP_ROOT / c}"
    for tool in ("ip", "tc", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


def _block_device(path: Path) -> str:
    """``MAJOR:MINOR`` of the whole disk holding ``path`` (blkio throttles whole disks, not partitions)."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    sys_dev = Path(f"/sys/dev/block/{major}:{minor}")
    if (sys_dev / "partition").is_file():  # a partition: throttle its parent disk
        major_minor = (sys_dev.resolve().parent / "dev").read_text().strip()
        return major_minor
    return f"{major}:{minor}"


def _cg(ctrl: str, cg: str) -> Path:
    return CGROUP_ROOT / ctrl / cg


def cpu_shares(sc: Scenario, host_flops: float) -> list[float]:
    shares = [d.flops / host_flops for d in sc.devices]
    cores = os.cpu_count() or 1
    too_fast = [(d.name, s) for d, s in zip(sc.devices, shares, strict=True) if s > 1.0]
    if too_fast:
        n, s = too_fast[0]
        raise InputError(
            f"devices[{n!r}].flops",
            f"{sc.device(n).flops / 1e9:.2f} GFLOP/s is {s:.2f} x this host's {host_flops / 1e9:.2f} GFLOP/s per core "
            "(an agent computes on one core)",
            "give every device at most one host core's FLOP/s",
        )
    too_slow = [(d.name, s) for d, s in zip(sc.devices, shares, strict=True) if s * CFS_PERIOD_US < 1000]
    if too_slow:
        n, s = too_slow[0]
        raise InputError(
            f"devices[{n!r}].flops",
            f"{sc.device(n).flops / 1e9:.3f} GFLOP/s is {s:.3f} of a host core; the smallest cpu quota is "
            f"{1000 / CFS_PERIOD_US:.2f} core (1 ms per {CFS_PERIOD_US // 1000} ms period)",
            "give every device at least a tenth of a host core's FLOP/s",
        )
    if sum(shares) > cores:
        raise InputError(
            "devices[].flops",
            f"the devices need {sum(shares):.2f} cores of this host ({', '.join(f'{x:.2f}' for x in shares)}) "
            f"but it has {cores}",
            "lower the devices' flops or use fewer devices",
        )
    return shares


def up(
    scenario: Scenario,
    checkpoint: str | Path,
    token_file: str | Path,
    cluster_out: str | Path,
    *,
    name: str = "tb",
    host_flops: float | None = None,
    say: Callable[[str], None] = lambda _m: None,
    ready_timeout_s: float = 180.0,
    relay: bool = True,
) -> dict[str, Any]:
    """Build the testbed of ``scenario`` and start its agents; writes the cluster file; returns the state.

    ``relay``: the AP runs the store-and-forward relay (:mod:`coldpipe.testbed.relay`) and the cluster file
    sends device-to-device messages through it, as the model's shared channel does; ``False``: straight
    through the bridge (packets pipeline: a transfer takes about ``8n / min(up, down)``).
    """
    _check_name(name)
    why = require_root()
    if why:
        raise ColdpipeError(f"testbed: {why}")
    from coldpipe.cluster.measure import layer_flops
    from coldpipe.runtime.checkpoint import open_checkpoint

    ckpt = open_checkpoint(checkpoint)
    if host_flops is None:
        import torch

        torch.set_num_threads(1)  # thread CPU time counts the calling thread: one torch thread, as the agents
        say("timing a decoder layer of the checkpoint on this host (the cpu quotas' reference)")
        host_flops = layer_flops(ckpt, scenario.workload.prompt_tokens, clock="cpu")[0]
    shares = cpu_shares(scenario, host_flops)
    down(name)  # a previous, maybe crashed, testbed of this name
    k = _subnet(name)
    ap = f"coldpipe-{name}-ap"
    state: dict[str, Any] = {"name": name, "namespaces": [ap], "host_veth": f"cp{name}h", "pids": [], "cgroups": []}
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state_file = STATE_DIR / f"{name}.json"
    work = WORK_DIR / name
    state["work"] = str(work)

    def save() -> None:
        state_file.write_text(json.dumps(state, indent=1))

    save()
    try:
        say(f"network: AP namespace {ap}, bridge 10.77.{k}.1/24")
        _sh("ip", "netns", "add", ap)
        _ns(ap, "ip", "link", "set", "lo", "up")
        _ns(ap, "ip", "link", "add", "br0", "type", "bridge")
        _ns(ap, "ip", "addr", "add", f"10.77.{k}.1/24", "dev", "br0")
        _ns(ap, "ip", "link", "set", "br0", "up")
        _ns(ap, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        hv = state["host_veth"]
        _sh("ip", "link", "add", hv, "type", "veth", "peer", "name", "uplink", "netns", ap)
        _sh("ip", "addr", "add", f"10.78.{k}.1/30", "dev", hv)
        _sh("ip", "link", "set", hv, "up")
        _ns(ap, "ip", "addr", "add", f"10.78.{k}.2/30", "dev", "uplink")
        _ns(ap, "ip", "link", "set", "uplink", "up")
        _sh("ip", "route", "replace", f"10.77.{k}.0/24", "via", f"10.78.{k}.2")
        blockdev = _block_device(Path(ckpt.files[0]))
        agents = []
        quotas: list[tuple[str, int]] = []
        for i, (d, share) in enumerate(zip(scenario.devices, shares, strict=True)):
            ns = f"coldpipe-{name}-d{i}"
            state["namespaces"].append(ns)
            save()
            ip = f"10.77.{k}.{10 + i}"
            say(
                f"device {d.name}: {ns} {ip}, up {d.uplink / 1e6:.1f} / down {d.downlink / 1e6:.1f} Mbit/s, "
                f"read {d.load_bandwidth / 1e6:.1f} MB/s, {share:.2f} core, memory {d.memory / 1e6:.0f} MB"
            )
            _sh("ip", "netns", "add", ns)
            _ns(ns, "ip", "link", "set", "lo", "up")
            dv, av = f"cp{name}{i}d", f"cp{name}{i}a"
            _sh("ip", "link", "add", dv, "netns", ns, "type", "veth", "peer", "name", av, "netns", ap)
            _ns(ap, "ip", "link", "set", av, "master", "br0")
            _ns(ap, "ip", "link", "set", av, "up")
            _ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", dv)
            _ns(ns, "ip", "link", "set", dv, "up")
            _ns(ns, "ip", "route", "add", "default", "via", f"10.77.{k}.1")
            _tbf(ns, dv, d.uplink)
            _tbf(ap, av, d.downlink)
            cg = f"coldpipe-{name}-d{i}"
            state["cgroups"].append(cg)
            save()
            for c in CONTROLLERS:
                _cg(c, cg).mkdir(exist_ok=True)
            _cg("cpu", cg).joinpath("cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            quotas.append((cg, int(share * CFS_PERIOD_US)))  # set once the agent has imported torch
            if d.load_bandwidth != float("inf"):
                _cg("blkio", cg).joinpath("blkio.throttle.read_bps_device").write_text(
                    f"{blockdev} {int(d.load_bandwidth)}"
                )
            if d.memory != float("inf"):  # until the imports are done; then usage + memory (see below)
                _cg("memory", cg).joinpath("memory.limit_in_bytes").write_text(str(int(d.memory + PROCESS_BYTES)))
            own = work / d.name
            shutil.rmtree(own, ignore_errors=True)
            own.mkdir(parents=True)
            shutil.copytree(ckpt.path, own / "checkpoint")  # its own files: its own page-cache pages
            log = own / "agent.log"
            procs = " ".join(f"echo $$ > {_cg(c, cg)}/cgroup.procs;" for c in CONTROLLERS)
            # nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup limits from the agent
            cmd = (
                f"{procs} exec nsenter --net=/run/netns/{ns} env PYTHONPATH={os.pathsep.join(sys.path)} "
                f"{sys.executable} -m "
                f"coldpipe agent --name {d.name} --listen {ip}:{PORT} --token-file {Path(token_file).resolve()} "
                f"--checkpoint {own / 'checkpoint'} --prompt-tokens {scenario.workload.prompt_tokens} "
                f"--log-file {log} --hold-file {own / 'go'}"
            )
            with open(own / "agent.out", "w") as out:
                p = subprocess.Popen(["sh", "-c", cmd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            state["pids"].append(p.pid)
            save()
            agents.append(
                {
                    "name": d.name,
                    "address": f"{ip}:{PORT}",
                    "log": str(log),
                    "out": str(own / "agent.out"),
                    "dir": str(own),
                }
            )
        relay_address = None
        if relay:
            relay_address = f"10.77.{k}.1:{RELAY_PORT}"
            say(f"relay: the AP stores and forwards every device-to-device message whole, on {relay_address}")
            work.mkdir(parents=True, exist_ok=True)
            table = work / "relay-agents.json"
            table.write_text(json.dumps({a["name"]: a["address"] for a in agents}))
            rout = work / "relay.out"
            cmd = (
                f"exec nsenter --net=/run/netns/{ap} env PYTHONPATH={os.pathsep.join(sys.path)} {sys.executable} "
                f"-m coldpipe.testbed.relay --listen {relay_address} --token-file {Path(token_file).resolve()} "
                f"--agents {table} --log-file {work / 'relay.log'}"
            )
            with open(rout, "w") as out:
                p = subprocess.Popen(["sh", "-c", cmd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            state["pids"].append(p.pid)
            state["relay"] = {"address": relay_address, "out": str(rout), "pid": p.pid}
            save()
        say(f"waiting for {len(agents)} agents to measure themselves and listen")
        deadline = time.monotonic() + ready_timeout_s
        pending = list(agents) + ([{"name": "relay", "out": str(rout)}] if relay else [])
        pending_or_done = list(pending)  # in the order of state["pids"]
        held = list(zip(agents, quotas, strict=True))
        while pending:
            for a, (cg, quota) in list(held):
                if " imported" in Path(a["out"]).read_text(errors="replace"):  # now limit its CPU, then let it go
                    _cg("cpu", cg).joinpath("cpu.cfs_quota_us").write_text(str(quota))
                    mem = scenario.device(a["name"]).memory
                    if mem != float("inf"):  # the device's memory on top of what the agent process holds now
                        used = int(_cg("memory", cg).joinpath("memory.usage_in_bytes").read_text())
                        limit = used + int(mem) + SLACK_BYTES
                        _cg("memory", cg).joinpath("memory.limit_in_bytes").write_text(str(limit))
                    Path(a["dir"], "go").touch()
                    held.remove((a, (cg, quota)))
            for a in list(pending):
                if "ready on" in Path(a["out"]).read_text(errors="replace"):
                    pending.remove(a)
            if time.monotonic() > deadline:
                raise ColdpipeError(
                    f"testbed: agents {[a['name'] for a in pending]} not ready in {ready_timeout_s:g} s"
                )
            for pid, a in zip(state["pids"], pending_or_done, strict=True):
                with contextlib.suppress(ChildProcessError):
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        tail = Path(a["out"]).read_text(errors="replace").strip().splitlines()[-1:]
                        raise ColdpipeError(f"testbed: agent {a['name']} exited: {tail[0] if tail else status}")
            time.sleep(0.2)
        import yaml

        Path(cluster_out).write_text(
            yaml.safe_dump(
                {
                    "agents": [
                        {"name": a["name"], "address": a["address"]}
                        | ({"relay": relay_address} if relay_address else {})
                        for a in agents
                    ]
                },
                sort_keys=False,
            )
        )
        state["agents"] = agents
        state["host_flops"] = host_flops
        save()
        return state
    except BaseException:
        down(name)
        raise


def _tbf(ns: str, dev: str, rate_bps: float) -> None:
    """Token bucket at ``rate_bps`` on ``dev``'s egress: a 1 ms burst (at least two full frames)."""
    if rate_bps == float("inf"):
        return
    burst = max(3100, int(rate_bps / 8 * 0.001))
    _ns(
        ns,
        "tc",
        "qdisc",
        "add",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        f"{int(rate_bps)}bit",
        "burst",
        str(burst),
        "latency",
        "200ms",
    )


def down(name: str = "tb") -> list[str]:
    """Remove testbed ``name``: agents, namespaces, host veth and route, cgroups, work files. Idempotent."""
    _check_name(name)
    removed = []
    state_file = STATE_DIR / f"{name}.json"
    state: dict[str, Any] = {}
    if state_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            state = json.loads(state_file.read_text())
    prefix = f"coldpipe-{name}-"
    pids: set[int] = set(state.get("pids", []))
    cgs = {p.name for c in CONTROLLERS for p in (CGROUP_ROOT / c).glob(prefix + "*")} if CGROUP_ROOT.is_dir() else set()
    for cg in cgs:
        for c in CONTROLLERS:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in _cg(c, cg).joinpath("cgroup.procs").read_text().split())
    namespaces = set(state.get("namespaces", []))
    if shutil.which("ip"):
        out = _sh("ip", "netns", "list", check=False).stdout
        namespaces |= {ln.split()[0] for ln in out.splitlines() if ln.startswith(prefix)}
        for ns in namespaces:  # processes still inside a namespace (e.g. agents whose cgroup was lost)
            pids.update(int(x) for x in _sh("ip", "netns", "pids", ns, check=False).stdout.split() if x.isdigit())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                alive.append(pid)
        deadline = time.monotonic() + 3.0
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _alive(p)]
            time.sleep(0.05)
        if not alive:
            break
    if pids:
        removed.append(f"{len(pids)} processes")
    for ns in sorted(namespaces):
        if _sh("ip", "netns", "del", ns, check=False).returncode == 0:
            removed.append(ns)
    if shutil.which("ip"):
        _sh("ip", "link", "del", f"cp{name}h", check=False)
        _sh("ip", "route", "del", f"10.77.{_subnet(name)}.0/24", check=False)
    for cg in sorted(cgs):
        for c in CONTROLLERS:
            d = _cg(c, cg)
            for _ in range(50):
                try:
                    if d.exists():
                        d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        removed.append(f"cgroup {cg}")
    shutil.rmtree(WORK_DIR / name, ignore_errors=True)
    state_file.unlink(missing_ok=True)
    for d in (WORK_DIR, STATE_DIR):  # the parents too, once no other testbed uses them
        with contextlib.suppress(OSError):
            d.rmdir()
    return removed


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, OSError):
        return False
