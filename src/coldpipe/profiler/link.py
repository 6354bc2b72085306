"""Link rate and round-trip time to a peer: ``coldpipe profile --listen`` on one side, ``--peer`` on the other.

The protocol over one TCP connection (TCP_NODELAY), driven by the client:

- ``b"p"`` -> the server echoes ``b"p"``: one round trip (repeated; median = RTT);
- ``b"u" + n`` (8-byte little-endian) then ``n`` bytes -> the server answers ``b"k"`` once all arrived:
  uplink = ``8 n / (elapsed - RTT)`` bit/s;
- ``b"d" + n`` -> the server sends ``n`` bytes: downlink = ``8 n / (elapsed - RTT)`` bit/s;
- ``b"q"`` ends the session.

The server bounds what a client can make it do: a transfer is at most :data:`MAX_TRANSFER_BYTES` (a larger
``n`` ends the session), and a client silent for :data:`IDLE_TIMEOUT_S` is dropped, so that the next one
is served.

Rates are TCP goodput (payload bits per second), which is what a transfer of activations sees.
"""

from __future__ import annotations

import socket
import statistics
import struct
import time
from collections.abc import Callable

from coldpipe.errors import InputError
from coldpipe.profiler.measure import Measurement, Tick, no_tick

__all__ = ["measure_link", "parse_host_port", "serve"]

_BUF = 256 * 1024
MAX_TRANSFER_BYTES = 2**30  # one uplink/downlink probe: 1 GiB at most
IDLE_TIMEOUT_S = 10.0  # a client that sends nothing for this long is dropped


def parse_host_port(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InputError(flag, f"cannot read {text!r} as HOST:PORT", "e.g. 127.0.0.1:7777")
    return host or "0.0.0.0", int(port)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        c = sock.recv(min(_BUF, n - got))
        if not c:
            raise ConnectionError("peer closed the connection")
        chunks.append(c)
        got += len(c)
    return b"".join(chunks)


def _drain(sock: socket.socket, n: int, tick: Tick = no_tick) -> None:
    buf = bytearray(_BUF)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view, min(_BUF, n - got))
        if k == 0:
            raise ConnectionError("peer closed the connection")
        got += k
        tick(got / n)


def _send_zeros(sock: socket.socket, n: int, tick: Tick = no_tick) -> None:
    block = bytes(_BUF)
    sent = 0
    while sent < n:
        sock.sendall(block[: min(_BUF, n - sent)])
        sent += min(_BUF, n - sent)
        tick(sent / n)


def _session(conn: socket.socket) -> None:
    while True:
        op = conn.recv(1)
        if op in (b"", b"q"):
            return
        if op == b"p":
            conn.sendall(b"p")
        elif op == b"u":
            (n,) = struct.unpack("<Q", _recv_exact(conn, 8))
            if n > MAX_TRANSFER_BYTES:
                return
            _drain(conn, n)
            conn.sendall(b"k")
        elif op == b"d":
            (n,) = struct.unpack("<Q", _recv_exact(conn, 8))
            if n > MAX_TRANSFER_BYTES:  # a 9-byte request must not make the server stream without end
                return
            _send_zeros(conn, n)
        else:
            return


def serve(
    host: str,
    port: int,
    *,
    sessions: int = 1,
    on_ready: Callable[[int], None] | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> None:
    """Answer ``sessions`` clients, one after the other, then return. ``on_ready(port)`` once listening."""
    with socket.create_server((host, port), reuse_port=False) as srv:
        if on_ready is not None:
            on_ready(srv.getsockname()[1])
        for _ in range(sessions):
            conn, _addr = srv.accept()
            with conn:
                conn.settimeout(idle_timeout_s)  # an idle client must not block the next one
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    _session(conn)
                except (ConnectionError, OSError):
                    continue


def measure_link(
    host: str, port: int, *, size_bytes: int = 64 * 2**20, probes: int = 20, tick: Tick = no_tick
) -> dict[str, Measurement]:
    """RTT, uplink and downlink to a peer running :func:`serve` (``coldpipe profile --listen``)."""
    if not 0 < size_bytes <= MAX_TRANSFER_BYTES:
        raise InputError(
            "--link-size",
            f"a link probe of {size_bytes} bytes is outside 1..{MAX_TRANSFER_BYTES}",
            "the peer sends 1 GiB at most",
        )
    try:
        sock = socket.create_connection((host, port), timeout=30)
    except OSError as exc:
        raise InputError(
            "--peer", f"cannot connect to {host}:{port}: {exc.strerror or exc}", "start `coldpipe profile --listen`"
        ) from None
    try:
        with sock:
            return _exchange(sock, host, port, size_bytes, probes, tick)
    except (ConnectionError, TimeoutError) as exc:
        raise InputError("--peer", f"the link to {host}:{port} broke: {exc}", "is the peer still listening?") from None


def _exchange(
    sock: socket.socket, host: str, port: int, size_bytes: int, probes: int, tick: Tick
) -> dict[str, Measurement]:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for i in range(probes):
        t0 = time.perf_counter()
        sock.sendall(b"p")
        _recv_exact(sock, 1)
        rtts.append(time.perf_counter() - t0)
        tick(0.1 * (i + 1) / probes)
    rtt = statistics.median(rtts)

    t0 = time.perf_counter()
    sock.sendall(b"u" + struct.pack("<Q", size_bytes))
    _send_zeros(sock, size_bytes, lambda f: tick(0.1 + 0.45 * f))
    _recv_exact(sock, 1)
    up_s = max(time.perf_counter() - t0 - rtt, 1e-9)

    t0 = time.perf_counter()
    sock.sendall(b"d" + struct.pack("<Q", size_bytes))
    _drain(sock, size_bytes, lambda f: tick(0.55 + 0.45 * f))
    down_s = max(time.perf_counter() - t0 - rtt, 1e-9)
    sock.sendall(b"q")
    mib = size_bytes / 2**20
    return {
        "rtt": Measurement(rtt, f"median of {probes} one-byte round trips to {host}:{port}", tuple(rtts)),
        "uplink": Measurement(
            8 * size_bytes / up_s, f"TCP goodput sending {mib:.0f} MiB to {host}:{port}, minus 1 RTT"
        ),
        "downlink": Measurement(
            8 * size_bytes / down_s, f"TCP goodput receiving {mib:.0f} MiB from {host}:{port}, minus 1 RTT"
        ),
    }
