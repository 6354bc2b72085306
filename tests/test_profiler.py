"""``coldpipe profile``: its output is a valid device entry; link, storage and error paths."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from coldpipe.cli import main
from coldpipe.errors import InputError
from coldpipe.profiler import link, measure
from coldpipe.scenario_file import scenario_from_dict


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def _server(sessions: int = 1) -> tuple[threading.Thread, int]:
    ready = threading.Event()
    port: list[int] = []

    def on_ready(p: int) -> None:
        port.append(p)
        ready.set()

    th = threading.Thread(target=link.serve, args=("127.0.0.1", 0), kwargs={"sessions": sessions, "on_ready": on_ready})
    th.daemon = True
    th.start()
    assert ready.wait(10)
    return th, port[0]


def _load_entry(entry: dict) -> None:
    doc = {"workload": {"prompt_tokens": 16}, "model": {"catalog": "llama-3.2-1b"}, "devices": [entry]}
    dev = scenario_from_dict(doc).devices[0]
    assert dev.flops > 0 and dev.load_bandwidth > 0 and dev.memory > 0


def test_profile_quick_prints_a_valid_device_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    th, port = _server()
    code, out, err = _run(
        ["profile", "--quick", "--path", str(tmp_path), "--name", "ci-box", "--peer", f"127.0.0.1:{port}"], capsys
    )
    th.join(10)
    assert code == 0, err
    entries = yaml.safe_load(out)
    assert isinstance(entries, list) and len(entries) == 1
    entry = entries[0]
    assert entry["name"] == "ci-box"
    assert set(entry) == {"name", "flops", "load_bandwidth", "startup", "memory", "mem_bandwidth", "uplink", "downlink"}
    _load_entry(entry)  # pasted into a scenario, it loads as is
    assert "network.hop_latency ~ rtt / 2" in out  # the RTT hint is a comment
    assert entry["flops"].endswith(" TFLOPS") and entry["memory"].endswith("B") and entry["uplink"].endswith("bit/s")
    assert list(tmp_path.iterdir()) == []  # the storage test file is gone


def test_profile_without_peer_prints_a_complete_entry_with_units() -> None:
    """Without a peer the entry still pastes (link rates are placeholders, and a comment says so)."""
    from coldpipe.cli.profile_cmd import LINK_PLACEHOLDER, entry_yaml

    m = lambda v: measure.Measurement(v, "test")  # noqa: E731
    prof = measure.Profile("box", m(2.5e12), m(5e10), m(1.8e9), m(7.5e9), m(1.25))
    text = entry_yaml(prof)
    (entry,) = yaml.safe_load(text)
    assert entry == {"name": "box", "flops": "2.5 TFLOPS", "load_bandwidth": "1.8 GB/s", "startup": "1.25 s",
                     "memory": "7.5 GB", "mem_bandwidth": "50 GB/s", "uplink": LINK_PLACEHOLDER,
                     "downlink": LINK_PLACEHOLDER}  # fmt: skip
    assert "NOT MEASURED" in text
    _load_entry(entry)
    dev = scenario_from_dict({"workload": {"prompt_tokens": 16}, "model": {"catalog": "llama-3.2-1b"},
                              "devices": [entry]}).devices[0]  # fmt: skip
    assert (dev.flops, dev.load_bandwidth, dev.startup, dev.memory) == (2.5e12, 1.8e9, 1.25, 7.5e9)


def test_profile_without_peer_needs_link_rates_to_be_added(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["profile", "--quick", "--path", str(tmp_path), "--json"], capsys)
    assert code == 0
    import json

    doc = json.loads(out)
    assert "uplink" not in doc["device"]
    _load_entry({**doc["device"], "uplink": "100 Mbit/s", "downlink": "100 Mbit/s"})
    assert "fadvise" in doc["how"]["load_bandwidth"] or "O_DIRECT" in doc["how"]["load_bandwidth"]


def test_link_measurement_on_loopback() -> None:
    th, port = _server()
    got = link.measure_link("127.0.0.1", port, size_bytes=4 * 2**20, probes=5)
    th.join(10)
    assert set(got) == {"rtt", "uplink", "downlink"}
    assert 0 < got["rtt"].value < 1.0
    assert got["uplink"].value > 0 and got["downlink"].value > 0


def test_storage_read_of_a_given_file_and_of_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\1" * (9 * 2**20))
    m = measure.measure_storage_read(f)
    assert m.value > 0 and "9 MiB" in m.how
    assert f.exists()  # a given file is read, never deleted
    m2 = measure.measure_storage_read(tmp_path, size_bytes=8 * 2**20)
    assert m2.value > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_direct_read_works_or_says_why(tmp_path: Path) -> None:
    try:
        m = measure.measure_storage_read(tmp_path, size_bytes=8 * 2**20, direct=True)
    except InputError as exc:  # some file systems (tmpfs) refuse O_DIRECT
        assert str(exc).startswith("--direct: O_DIRECT read failed")
    else:
        assert m.value > 0 and "O_DIRECT" in m.how
    assert list(tmp_path.iterdir()) == []


def test_memory_and_matmul_measurements_are_positive() -> None:
    assert measure.available_memory_bytes().value > 0
    m = measure.measure_matmul_flops(hidden=256, tokens=16, repeats=1)
    assert m.value > 0 and len(m.samples) == 1


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["profile", "--quick", "--peer", "nonsense"], "--peer: cannot read 'nonsense' as HOST:PORT"),
        (["profile", "--listen", "127.0.0.1:99999"], "--listen: cannot read"),
        (["profile", "--quick", "--path", "/does/not/exist"], "--path: '/does/not/exist' does not exist"),
        (["profile", "--quick", "--file-size", "1 MB"], "--file-size: must be at least 8 MiB"),
        (["profile", "--quick", "--dtype", "int3"], "--dtype: cannot time matmuls in 'int3'"),
        (["profile", "--quick", "--hidden", "1000"], "--hidden: must be a multiple of 256"),
    ],
)
def test_bad_profile_inputs_give_one_line_errors(
    argv: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--path" not in argv and "--listen" not in argv:
        argv = [*argv, "--path", str(tmp_path)]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert match in err
    assert len(err.strip().splitlines()) == 1


def test_peer_that_is_not_listening(tmp_path: Path) -> None:
    th, port = _server()  # a free port: the server stops after this one session
    link.measure_link("127.0.0.1", port, size_bytes=8 * 2**20, probes=1)
    th.join(10)
    with pytest.raises(InputError, match=r"^--peer: cannot connect"):
        link.measure_link("127.0.0.1", port, size_bytes=8 * 2**20, probes=1)


def test_an_idle_client_does_not_block_the_link_server() -> None:
    """Regression (issue 15): one idle client blocked `profile --listen` for every later one."""
    import socket
    import threading

    ports: list[int] = []
    ready = threading.Event()
    th = threading.Thread(
        target=link.serve,
        args=("127.0.0.1", 0),
        kwargs={"sessions": 2, "on_ready": lambda p: (ports.append(p), ready.set()), "idle_timeout_s": 0.5},
        daemon=True,
    )
    th.start()
    assert ready.wait(10)
    idle = socket.create_connection(("127.0.0.1", ports[0]))  # connects, then says nothing
    try:
        got = link.measure_link("127.0.0.1", ports[0], size_bytes=2**20, probes=3)
    finally:
        idle.close()
    th.join(10)
    assert not th.is_alive() and got["downlink"].value > 0


def test_a_huge_download_request_is_refused() -> None:
    """Regression (issue 15): a 9-byte request (b"d" + 2**64 - 1) made the server stream without limit."""
    import socket
    import struct
    import time

    th, port = _server()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"d" + struct.pack("<Q", 2**64 - 1))
        got, t0 = 0, time.monotonic()
        while chunk := s.recv(65536):
            got += len(chunk)
            assert time.monotonic() - t0 < 10
    th.join(10)
    assert got == 0 and not th.is_alive()
    with pytest.raises(InputError, match="--link-size"):
        link.measure_link("127.0.0.1", port, size_bytes=2**31)
