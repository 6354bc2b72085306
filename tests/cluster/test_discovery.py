"""mDNS discovery of agents (docs/cluster.md#discovery-mdns), on 127.0.0.1: the agents' Zeroconf bound to
the loopback (``Zeroconf(interfaces=["127.0.0.1"])``), the coordinator browsing every interface.

Agents of this token are found and then authenticated over CurveZMQ; agents of another token are ignored;
an advertisement that lies (this cluster's id, another agent's port) is found but refused by the handshake;
two agents of one name and none at all are one-line errors. ~15 s beyond what the other cluster tests
share (torch, the checkpoint): the agent process, mDNS probing (~1.7 s, in parallel) and the browses.
"""

from __future__ import annotations

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

pytest.importorskip("zeroconf")

from cluster_helpers import FIXED_PROFILE, start_agent

from coldpipe.cluster.coordinator import Coordinator, load_cluster
from coldpipe.cluster.discovery import Advertiser, cluster_id, discover
from coldpipe.cluster.token import read_token
from coldpipe.cluster.transport import Keys
from coldpipe.errors import InputError

BROWSE_S = 0.6


def _token(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def advertised(tiny_checkpoint: Path, token_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """a1, a2 (this token) and b1 (another token) serving and advertised; a3 a lie pointing at b1; and a
    third token's two services both named d1 (at a1's and a2's ports): all registered at once."""
    other = _token(tmp_path_factory.mktemp("tokb") / "token", "another-cluster-token-0123456789")
    keys, other_keys = Keys(read_token(token_file)), Keys(read_token(other))
    dup_keys = Keys(b"a-third-cluster-with-a-duplicate")
    started = {n: start_agent(keys, n, tiny_checkpoint) for n in ("a1", "a2")}
    started["b1"] = start_agent(other_keys, "b1", tiny_checkpoint)
    ports = {n: s[2] for n, s in started.items()}
    advs = [Advertiser(keys, n, "127.0.0.1", ports[n]) for n in ("a1", "a2")]
    advs.append(Advertiser(other_keys, "b1", "127.0.0.1", ports["b1"]))
    advs.append(Advertiser(keys, "a3", "127.0.0.1", ports["b1"]))  # anyone may advertise anything
    advs += [Advertiser(dup_keys, "d1", "127.0.0.1", ports[n]) for n in ("a1", "a2")]
    try:
        for a in advs:
            assert a.registered.wait(10), f"{a.name} was not registered"
        yield keys, ports, other_keys, dup_keys
    finally:
        closing = [threading.Thread(target=a.close) for a in advs]  # each goodbye takes ~0.25 s
        for th in closing:
            th.start()
        for th in closing:
            th.join(10)
        for ag, th, _ in started.values():
            ag.stop.set()
            th.join(5)


def test_cluster_id_is_per_token() -> None:
    a, b = Keys(b"x" * 32), Keys(b"y" * 32)
    assert cluster_id(a) == cluster_id(Keys(b"x" * 32)) != cluster_id(b)
    assert len(cluster_id(a)) == 16


def test_finds_this_tokens_agents_and_authenticates_them(advertised: Any, tmp_path: Path) -> None:
    keys, ports, _, _ = advertised
    p = tmp_path / "c.yaml"  # a listed agent and discovery: one entry per agent
    p.write_text(
        f"discover: true\ndiscover_timeout_s: {BROWSE_S}\nagents: [{{name: a1, address: '127.0.0.1:{ports['a1']}'}}]\n"
    )
    t = time.monotonic()
    refs = load_cluster(p, keys)
    assert time.monotonic() - t < BROWSE_S + 2.0
    assert {r.name: r.address for r in refs} == {  # b1 (another token) and d1 (a third one): ignored
        "a1": f"127.0.0.1:{ports['a1']}",
        "a2": f"127.0.0.1:{ports['a2']}",
        "a3": f"127.0.0.1:{ports['b1']}",  # found: discovery is not authentication
    }
    assert [r.discovered for r in refs] == [False, True, True]
    with Coordinator(keys, refs) as co:
        rows = {r["name"]: r for r in co.status(timeout_s=0.6)}
        assert rows["a1"]["reachable"] and rows["a2"]["reachable"]
        assert not rows["a3"]["reachable"]  # b1 does not hold a3's key of this token: the handshake fails


def test_plan_refuses_a_lying_advertisement_before_measuring(
    advertised: Any, tiny_checkpoint: Path, token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coldpipe.cli import main

    _keys, ports, _, _ = advertised
    args = ["cluster", "plan", "--discover", "--discover-timeout", str(BROWSE_S), "--token-file", str(token_file)]
    with pytest.raises(SystemExit) as ex:
        main([*args, "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.count("\n") == 1, err
    assert f"'a3' advertised at 127.0.0.1:{ports['b1']} did not answer over the authenticated channel" in err
    assert "profiling" not in err  # nothing was measured


def test_duplicate_name_names_both_addresses(advertised: Any) -> None:
    _keys, ports, _, dup_keys = advertised
    with pytest.raises(InputError, match="two agents advertise the name 'd1'") as exc:
        discover(dup_keys, BROWSE_S)
    msg = str(exc.value)
    assert f"127.0.0.1:{ports['a1']}" in msg and f"127.0.0.1:{ports['a2']}" in msg and "\n" not in msg


def test_listed_and_advertised_at_two_addresses(advertised: Any, tmp_path: Path) -> None:
    keys, ports, _, _ = advertised
    p = tmp_path / "c.yaml"
    p.write_text(f"discover: true\ndiscover_timeout_s: {BROWSE_S}\nagents: [{{name: a2, address: '127.0.0.1:1'}}]\n")
    with pytest.raises(
        InputError, match=rf"'a2' is listed at 127\.0\.0\.1:1 and advertised at 127\.0\.0\.1:{ports['a2']}"
    ):
        load_cluster(p, keys)


def test_zero_found_says_how_long_and_what_to_check(
    advertised: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coldpipe.cli import main

    tok = _token(tmp_path / "token", "a-third-token-nobody-serves-0123")
    t = time.monotonic()
    with pytest.raises(SystemExit) as ex:  # no cluster file is needed with --discover
        main(["cluster", "status", "--discover", "--discover-timeout", "0.5", "--token-file", str(tok)])
    assert time.monotonic() - t < 0.5 + 3.0
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.count("\n") == 1, err
    assert "no agent of this cluster answered within 0.5 s" in err
    assert "of another cluster" in err and "--advertise" in err  # the fixture's agents: seen, ignored


def test_cluster_file_and_cli_errors(tmp_path: Path, token_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coldpipe.cli import main

    p = tmp_path / "c.yaml"
    bad = {"discover": "discover: yes-please\n", "discover_timeout_s": "discover: true\ndiscover_timeout_s: 0\n"}
    for field, text in bad.items():
        p.write_text(text)
        with pytest.raises(InputError, match=f"^{field}:"):
            load_cluster(p, Keys(b"k" * 32))
    p.write_text("discover: true\n")
    with pytest.raises(InputError, match="pass --token-file"):
        load_cluster(p)
    for args, want in (([], "CLUSTER: no cluster file given"), (["--discover", "--discover-timeout", "0"], "> 0")):
        with pytest.raises(SystemExit) as ex:
            main(["cluster", "status", "--token-file", str(token_file), *args])
        err = capsys.readouterr().err
        assert ex.value.code == 2 and want in err and err.count("\n") == 1, err


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


class _Watch:
    """A browser left running: the names it saw added and removed (a goodbye packet removes at once)."""

    def __init__(self) -> None:
        import zeroconf

        self.added: set[str] = set()
        self.removed: set[str] = set()
        self.zc = zeroconf.Zeroconf(interfaces=["127.0.0.1"], ip_version=zeroconf.IPVersion.V4Only)

        def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
            (self.removed if state_change.name == "Removed" else self.added).add(name)

        self.browser = zeroconf.ServiceBrowser(self.zc, "_coldpipe._tcp.local.", handlers=[on_change])

    def close(self) -> None:
        self.browser.cancel()
        self.zc.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_agent_cli_advertises_and_unregisters_on_signal(
    sig: signal.Signals, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT takes another way out of the agent than SIGTERM (an exception, not the stop flag); slow only
    because each case starts an agent process (~4 s of imports)."""
    from coldpipe.cli import main

    token_file = _token(tmp_path / "token", f"cli-test-token-{sig.name}-0123456789")  # not the fixture's agents
    prof = tmp_path / "profile.json"
    prof.write_text(json.dumps(FIXED_PROFILE))
    name = f"cli-{sig.name.lower()}"
    cmd = [sys.executable, "-m", "coldpipe", "agent", "--name", name, "--listen", "127.0.0.1:0", "--advertise"]
    cmd += ["--token-file", str(token_file), "--checkpoint", str(tiny_checkpoint), "--profile", str(prof)]
    out = tmp_path / "agent.out"
    watch = _Watch()
    with open(out, "wb") as f:
        p = subprocess.Popen(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "advertised as" not in out.read_text():
            assert p.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        port = int(out.read_text().split(" ready on ")[1].split()[0].rsplit(":", 1)[1])
        with pytest.raises(SystemExit) as ex:
            main(
                [
                    "cluster",
                    "status",
                    "--discover",
                    "--discover-timeout",
                    str(BROWSE_S),
                    "--token-file",
                    str(token_file),
                    "--json",
                ]
            )
        got = capsys.readouterr()
        assert ex.value.code == 0, got.err
        rows = {a["name"]: a for a in json.loads(got.out)["agents"]}
        assert list(rows) == [name] and rows[name]["address"] == f"127.0.0.1:{port}" and rows[name]["reachable"]
        seen = [n for n in watch.added if n.startswith(f"{name} on ")]
        assert len(seen) == 1, watch.added
        p.send_signal(sig)
        assert p.wait(20) in (0, 128 + sig)
        deadline = time.monotonic() + 3.0  # without the goodbye the record would live for its TTL (>= 75 s)
        while seen[0] not in watch.removed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen[0] in watch.removed, "the agent did not unregister on exit"
    finally:
        watch.close()
        if p.poll() is None:
            p.kill()
            p.wait()
