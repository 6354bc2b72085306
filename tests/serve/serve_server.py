"""Start ``coldpipe serve --local`` on a free port, over a tiny checkpoint with its tokenizer (test helper)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key-0123456789"
MODEL = "tiny"
IDLE_UNLOAD_S = 4.0
MAX_QUEUE = 8


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    checkpoint: Path
    scenario: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tiny(root: Path) -> tuple[Path, Path]:
    """A 2-layer checkpoint (~0.5 MB) with a tokenizer, and a 3-device scenario whose cold start is ~0.5 s."""
    from coldpipe.runtime.checkpoint import arch_for, make_checkpoint
    from coldpipe.runtime.tokenizer import write_tokenizer

    arch = arch_for("llama-3.1-8b", layers=2, hidden=64, heads=4, kv_heads=2, vocab=512, intermediate=128)
    ckpt = make_checkpoint(arch, root / MODEL, init_std=0.3)
    write_tokenizer(ckpt, arch.vocab_size)
    devices = "\n".join(
        f"  - {{name: {n}, flops: 2 GFLOPS, load_bandwidth: {bw} MB/s, startup: {st} ms, memory: 1 GB, "
        "uplink: 100 Mbit/s, downlink: 200 Mbit/s, mem_bandwidth: 2 GB/s}"
        for n, bw, st in (("a", 1.5, 150), ("b", 2, 250), ("c", 2.5, 300))
    )
    sc = root / "scenario.yaml"
    sc.write_text(
        "network: {hop_latency: 1 ms}\nworkload: {prompt_tokens: 16, new_tokens: 8}\n"
        f"model: {{hf_config: {ckpt}/config.json, dtype: float32}}\ndevices:\n{devices}\n"
    )
    return ckpt, sc


def start_server(root: Path, ckpt: Path, sc: Path, *extra: str) -> Server:
    return wait_started(launch_server(root, ckpt, sc, ["--local", str(sc)], *extra))


def launch_server(root: Path, ckpt: Path, sc: Path, mode: list[str], *extra: str) -> Server:
    """``coldpipe serve MODE... --checkpoint CKPT`` started, not yet waited for (:func:`wait_started`)."""
    port = free_port()
    key = root / "key"
    key.write_text(KEY + "\n")
    log = root / f"server-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "coldpipe",
        "serve",
        *mode,
        "--checkpoint",
        str(ckpt),
        "--port",
        str(port),
        "--api-key-file",
        str(key),
        "--model-name",
        MODEL,
        "--max-context",
        "256",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    return Server(proc, f"http://127.0.0.1:{port}", log, ckpt, sc)


def wait_started(server: Server) -> Server:
    proc = server.proc
    deadline = time.monotonic() + 120
    while "Ctrl-C stops" not in server.log_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server did not start:\n{server.log_text()}")
        time.sleep(0.2)
    return server


FIXED_PROFILE = {  # an agent's figures given instead of measured (the agents of the tests start fast)
    "flops": 2e9,
    "load_bandwidth": 200e6,
    "memory": 2e9,
    "mem_bandwidth": 5e9,
    "startup": 0.01,
    "prompt_tokens": 16,
}


@dataclass
class AgentProc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0


def launch_agents(root: Path, ckpt: Path, token: Path, names: list[str]) -> list[AgentProc]:
    """``coldpipe agent`` processes on 127.0.0.1 (ephemeral ports, the fixed profile), not yet waited for."""
    import json

    prof = root / "agent-profile.json"
    prof.write_text(json.dumps(FIXED_PROFILE))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = []
    for n in names:
        log = root / f"agent-{n}.log"
        cmd = [sys.executable, "-m", "coldpipe", "agent", "--name", n, "--listen", "127.0.0.1:0"]
        cmd += ["--token-file", str(token), "--checkpoint", str(ckpt), "--profile", str(prof)]
        proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        out.append(AgentProc(n, proc, log))
    return out


def wait_agents(agents: list[AgentProc], cluster_file: Path) -> None:
    """Every agent listening; their cluster file written."""
    import re

    deadline = time.monotonic() + 120
    for a in agents:
        while not (m := re.search(r"ready on 127\.0\.0\.1:(\d+)", a.log.read_text(errors="replace"))):
            if a.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent {a.name} did not start:\n{a.log.read_text(errors='replace')}")
            time.sleep(0.1)
        a.port = int(m.group(1))
    rows = "\n".join(f"  - {{name: {a.name}, address: '127.0.0.1:{a.port}'}}" for a in agents)
    cluster_file.write_text(f"agents:\n{rows}\n")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
