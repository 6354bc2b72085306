"""The cost of the cluster's security: round trip and 1 MiB transfer over loopback, plain TCP vs CurveZMQ.

    PYTHONPATH=src python benchmarks/bench_transport.py [--reps 200]

Prints a markdown table (docs/cluster.md#security): median round trip of a 64-byte message and median
time of a 1 MiB message (an activation of a 2048-wide, 128-token float32 prefill is 1 MiB), for plain
TCP sockets, ZeroMQ without security (NULL) and ZeroMQ with CURVE (the cluster's transport).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time

import zmq

from coldpipe.cluster.transport import Keys


def _tcp(reps: int, n: int) -> list[float]:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def echo() -> None:
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with c:
            while True:
                got = b""
                while len(got) < n:
                    chunk = c.recv(n - len(got))
                    if not chunk:
                        return
                    got += chunk
                c.sendall(b"k")

    threading.Thread(target=echo, daemon=True).start()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = os.urandom(n)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        s.sendall(data)
        s.recv(1)
        out.append(time.perf_counter() - t0)
    s.close()
    srv.close()
    return out


def _zmq(reps: int, n: int, curve: bool) -> list[float]:
    ctx = zmq.Context()
    keys = Keys(b"bench-token-0123456789abcdef")
    rep = ctx.socket(zmq.ROUTER)
    req = ctx.socket(zmq.DEALER)
    if curve:
        rep.curve_server = True
        rep.curve_publickey, rep.curve_secretkey = keys.agent("x")
        req.curve_serverkey = keys.agent("x")[0]
        req.curve_publickey, req.curve_secretkey = keys.member()
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    req.connect(f"tcp://127.0.0.1:{port}")

    def echo() -> None:
        while True:
            try:
                ident, _msg = rep.recv_multipart()
            except zmq.ContextTerminated:
                return
            rep.send_multipart([ident, b"k"])

    threading.Thread(target=echo, daemon=True).start()
    data = os.urandom(n)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        req.send(data)
        req.recv()
        out.append(time.perf_counter() - t0)
    req.close(0)
    rep.close(0)
    ctx.term()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("| transport | 64 B round trip (median) | 1 MiB message + 1 B reply (median) | 1 MiB goodput |")
    print("|---|---|---|---|")
    for name, fn in (
        ("plain TCP", lambda n: _tcp(args.reps, n)),
        ("ZeroMQ NULL (no security)", lambda n: _zmq(args.reps, n, False)),
        ("ZeroMQ CURVE (cluster)", lambda n: _zmq(args.reps, n, True)),
    ):
        small = statistics.median(fn(64))
        big = statistics.median(fn(2**20))
        print(f"| {name} | {small * 1e6:.0f} us | {big * 1e3:.2f} ms | {8 * 2**20 / big / 1e9:.2f} Gbit/s |")


if __name__ == "__main__":
    main()
