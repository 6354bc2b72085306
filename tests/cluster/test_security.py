"""The agent refuses every connection that does not hold the join token, within 1 s, with one log line each.

Attacks: no token (a plain ZeroMQ peer), a wrong token, a recorded handshake replayed byte for byte,
garbage bytes, an oversized frame, a half-open connection. After each the agent still serves, and a
request in flight during all of them completes; no secret appears in the logs.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
import zmq
from cluster_helpers import FIXED_PROFILE, LogLines, start_agent

from coldpipe.cluster.coordinator import AgentRef, Coordinator
from coldpipe.cluster.measure import fingerprint
from coldpipe.cluster.token import read_token
from coldpipe.cluster.transport import Channel, Keys, TransportTimeout
from coldpipe.core.types import Plan
from coldpipe.errors import InputError
from coldpipe.profiler.checkpoint import profile_checkpoint
from coldpipe.runtime.checkpoint import open_checkpoint

MAX_FRAME = 64 * 1024


@pytest.fixture(scope="module")
def agent(tiny_checkpoint: Path, token_file: Path, log_lines: LogLines):  # type: ignore[no-untyped-def]
    keys = Keys(read_token(token_file))
    ag, th, port = start_agent(keys, "dev", tiny_checkpoint, max_frame_bytes=MAX_FRAME)
    yield keys, port
    ag.stop.set()
    th.join(5)


def _still_serves(keys: Keys, port: int) -> None:
    ch = Channel(keys, "dev", f"127.0.0.1:{port}")
    try:
        assert ch.request("status", 3.0)[0]["name"] == "dev"
    finally:
        ch.close()


def _refused_within(log_lines: LogLines, t0: float, text: str = "refused a connection") -> float:
    dt = log_lines.wait_for(text, t0, 2.0)
    assert dt is not None, f"no log line {text!r}; lines: {[m for _, m in log_lines.lines[-5:]]}"
    return dt


def _attack_no_token(port: int) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(f"tcp://127.0.0.1:{port}")
    s.send(b'{"op":"status","id":1}')
    time.sleep(0.3)
    s.close()
    ctx.term()


def _attack_wrong_token(port: int) -> None:
    ch = Channel(Keys(b"not-the-join-token-at-all-000"), "dev", f"127.0.0.1:{port}")
    with pytest.raises(TransportTimeout):
        ch.request("status", 0.3)
    ch.close()


def _attack_garbage(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(os.urandom(4096))
        time.sleep(0.2)


def _attack_half_open(port: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))  # connects, never speaks; closed by the test later
    _HALF_OPEN.append(s)


_HALF_OPEN: list[socket.socket] = []


@pytest.mark.parametrize(
    "attack", [_attack_no_token, _attack_wrong_token, _attack_garbage, _attack_half_open], ids=lambda f: f.__name__
)
def test_refused_within_one_second(agent, log_lines: LogLines, attack) -> None:  # type: ignore[no-untyped-def]
    keys, port = agent
    t0 = time.monotonic()
    attack(port)
    assert _refused_within(log_lines, t0) < 1.0
    _still_serves(keys, port)
    for s in _HALF_OPEN:
        s.close()


def test_replayed_handshake_is_refused(agent, log_lines: LogLines) -> None:  # type: ignore[no-untyped-def]
    """Record a genuine client's bytes through a TCP relay, then replay them verbatim to the agent."""
    keys, port = agent
    recorded = bytearray()
    relay = socket.create_server(("127.0.0.1", 0))
    relay_port = relay.getsockname()[1]

    def pump(src: socket.socket, dst: socket.socket, keep: bool) -> None:
        try:
            while data := src.recv(65536):
                if keep:
                    recorded.extend(data)
                dst.sendall(data)
        except OSError:
            pass

    def serve() -> None:
        c, _ = relay.accept()
        up = socket.create_connection(("127.0.0.1", port))
        threading.Thread(target=pump, args=(c, up, True), daemon=True).start()
        pump(up, c, False)

    threading.Thread(target=serve, daemon=True).start()
    ch = Channel(keys, "dev", f"127.0.0.1:{relay_port}")
    assert ch.request("status", 3.0)[0]["name"] == "dev"  # the genuine session works through the relay
    ch.close()
    relay.close()
    time.sleep(0.2)
    assert len(recorded) > 200  # greeting + HELLO + INITIATE + a message
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(bytes(recorded))
        s.settimeout(2.0)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
    assert _refused_within(log_lines, t0) < 1.0
    _still_serves(keys, port)


def test_oversized_frame_closes_the_connection(agent, log_lines: LogLines) -> None:  # type: ignore[no-untyped-def]
    keys, port = agent
    ch = Channel(keys, "dev", f"127.0.0.1:{port}")
    assert ch.request("status", 3.0)[0]["name"] == "dev"
    t0 = time.monotonic()
    ch.send({"op": "status", "id": 99}, bytes(4 * MAX_FRAME))
    assert _refused_within(log_lines, t0, "over the") < 1.0
    ch.close()
    _still_serves(keys, port)


def test_request_in_flight_survives_attacks(agent, tiny_checkpoint: Path, log_lines: LogLines) -> None:  # type: ignore[no-untyped-def]
    keys, port = agent
    ckpt = open_checkpoint(tiny_checkpoint)
    cp = profile_checkpoint(tiny_checkpoint, prompt_tokens=8, new_tokens=40, dtype=ckpt.dtype)
    from coldpipe.cluster.coordinator import scenario_from_measurements
    from coldpipe.core.types import Workload

    measured = {"dev": {"profile": FIXED_PROFILE, "link": {"rtt": 1e-4, "uplink": 1e9, "downlink": 1e9}}}
    sc = scenario_from_measurements(cp.blocks, measured, Workload(8, 40), "tiny")
    plan = Plan.parse(f"dev[0-{ckpt.n_blocks - 1}]")
    out: dict[str, object] = {}

    def run() -> None:
        with Coordinator(keys, [AgentRef("dev", f"127.0.0.1:{port}")]) as co:
            out["r"] = co.run(sc, plan, "layer", tuple(range(8)), fingerprint(ckpt), new_tokens=40)

    th = threading.Thread(target=run)
    th.start()
    for attack in (_attack_garbage, _attack_no_token, _attack_wrong_token, _attack_garbage):
        attack(port)
    th.join(60)
    assert len(out["r"]["token_ids"]) == 40  # type: ignore[index]
    secret = read_token_text()
    pub, sec = keys.member()
    for _, msg in log_lines.lines:
        assert secret not in msg and sec.decode() not in msg and pub.decode() not in msg


def read_token_text() -> str:
    return "s3cr3t-join-token-for-tests-0123456789"


def test_token_file_must_be_private(tmp_path: Path) -> None:
    p = tmp_path / "t"
    p.write_text("x" * 32)
    p.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        read_token(p)
    p.chmod(0o600)
    p.write_text("short")
    with pytest.raises(InputError, match="at least 16"):
        read_token(p)


def test_link_profiler_checks_the_token(token_file: Path) -> None:
    """`profile --listen --token-file`: a client with another token is dropped before any measurement."""
    from coldpipe.profiler import link

    token = read_token(token_file)
    ready: list[int] = []
    th = threading.Thread(
        target=link.serve, args=("127.0.0.1", 0), kwargs={"sessions": 2, "on_ready": ready.append, "token": token}
    )
    th.start()
    while not ready:
        time.sleep(0.01)
    with pytest.raises(InputError, match=r"does not hold the join token|broke"):
        link.measure_link("127.0.0.1", ready[0], size_bytes=64 * 1024, probes=2, token=b"another-token-0123456789")
    got = link.measure_link("127.0.0.1", ready[0], size_bytes=64 * 1024, probes=2, token=token)
    assert got["uplink"].value > 0
    th.join(10)


def test_profile_listen_beyond_loopback_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    from coldpipe.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["profile", "--listen", "0.0.0.0:0"])
    assert exc.value.code == 2
    assert "--token-file" in capsys.readouterr().err


def test_cluster_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coldpipe.cli import main

    cl = tmp_path / "c.yaml"
    cl.write_text("agents: [{name: a, address: '127.0.0.1:9'}]\n")
    with pytest.raises(SystemExit) as exc:
        main(["cluster", "status", str(cl), "--token-file", str(tmp_path / "missing")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("coldpipe: error: --token-file")


def test_the_relay_admits_members_only_and_forwards_only_to_its_agents(token_file: Path, log_lines: LogLines) -> None:
    """The testbed's store-and-forward relay is a member like an agent: a wrong token is refused, a relay
    with another token is not trusted by a member, and a message for an agent it was not given is dropped."""
    from cluster_helpers import start_relay

    keys = Keys(read_token(token_file))
    relay, th, port = start_relay(keys, {"dev": "127.0.0.1:9"})
    impostor, th2, port2 = start_relay(Keys(b"not-the-join-token-at-all-000"), {})
    try:
        t0 = time.monotonic()
        _attack_wrong_token(port)  # a client with another token
        assert _refused_within(log_lines, t0) < 1.0
        member = Channel(keys, "relay", f"127.0.0.1:{port}", server_key=keys.relay()[0])
        assert member.request("status", 3.0)[0]["name"] == "relay"
        t0 = time.monotonic()
        member.send({"op": "act", "to": "elsewhere", "job": "j"}, b"x")
        assert log_lines.wait_for("not an agent of this testbed", t0, 2.0) is not None
        assert relay.forwarded == 0
        member.close()
        fake = Channel(keys, "relay", f"127.0.0.1:{port2}", server_key=keys.relay()[0])  # proves another key
        with pytest.raises(TransportTimeout):
            fake.request("status", 0.5)
        fake.close()
    finally:
        for r, t in ((relay, th), (impostor, th2)):
            r.stop.set()
            t.join(5)
