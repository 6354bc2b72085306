"""streamed-weights in the local runtime (docs/model.md#streamed-weights): rank 0, the source, stands for the
access point that holds the model file and serves blocks' tensors over a loopback socket; the loader of a
streaming rank fetches its blocks from it instead of reading its storage, one block after another, each
taking the model's transfer time ``8n/downlink + hop`` from the moment the previous one arrived (it sleeps
until then, as :class:`~coldpipe.runtime.links.Links` does for activations; it can only be slower).

With ``network.sharing: tdma`` or ``fdma`` every emulated hop (the activations' of
:class:`~coldpipe.runtime.links.Links`, the streamed blocks') first asks rank 0's :class:`AirServer` for the
channel (``tdma``: one for all; ``fdma``: its device's link): it grants one hop at a time per channel, when
the channel is free choosing among the hops ready by then the request's before weights, then the earliest
ready (the model's rule); a hop's start may be backdated to its ready time, never before the channel's free.

Supported: a streaming device holding one stage, no head shard, and not sparse-embedding's block 0
(:func:`unsupported` says why a plan is refused). A peer source is emulated by its links only: the bytes
come from rank 0's file, timed as the peer's uplink hop then the device's downlink hop (the peer's
storage read is not charged, as in the model).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["AirClient", "AirServer", "BlockServer", "StreamClient", "hops", "unsupported"]


def unsupported(scenario: Any, plan: Any) -> str | None:
    """Why the local runtime cannot run ``plan``'s streams (None: it can, or nothing streams)."""
    from coldpipe.core.streamed import streams

    if not streams(scenario, plan):
        return None
    for st in plan.stages:
        dev = scenario.device(st.device)
        if dev.weights == "local":
            continue
        if [s.device for s in plan.stages].count(st.device) > 1:
            return f"device {st.device!r} streams and holds several stages (reuse), which is not emulated"
        if st.first == 0 and "sparse-embedding" in scenario.mechanisms:
            return f"device {st.device!r} streams sparse-embedding's rows, which is not emulated"
    if any(scenario.device(sh.device).weights != "local" for sh in plan.head_shards):
        return "a streaming device holds a head shard, which is not emulated"
    return None


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    done = 0
    while done < len(view):
        n = sock.recv_into(view[done:])
        if n == 0:
            raise ConnectionError("the block server closed the connection")
        done += n


class BlockServer:
    """Rank 0: serves ``ckpt()``'s block ``b`` (its tensors' bytes in (file, offset) order) to each request."""

    def __init__(self, ckpt: Any) -> None:
        self.ckpt = ckpt  # a callable: the checkpoint the current job indexes (sublayer: the split blocks)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=_accept_forever, args=(self.sock, self._serve), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        fds: dict[str, int] = {}
        try:
            with conn:
                while True:
                    head = bytearray(4)
                    try:
                        _recv_exact(conn, memoryview(head))
                    except ConnectionError:
                        return
                    (b,) = struct.unpack("<i", head)
                    ckpt = self.ckpt()
                    for e in sorted((ckpt.tensors[n] for n in ckpt.blocks[b]), key=lambda e: (e.file, e.offset)):
                        if e.file not in fds:
                            fds[e.file] = os.open(e.file, os.O_RDONLY)
                        conn.sendall(os.pread(fds[e.file], e.nbytes, e.offset))
        finally:
            for fd in fds.values():
                os.close(fd)

    def close(self) -> None:
        self.sock.close()


class StreamClient:
    """A streaming rank's loader: one connection to the block server; :meth:`fetch` returns a block's tensors."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))

    def fetch(self, ckpt: Any, b: int) -> tuple[dict[str, Any], int]:
        """Block ``b``'s tensors (fresh memory, as :func:`~coldpipe.runtime.checkpoint.read_tensor` gives) and bytes."""
        import torch

        from coldpipe.runtime.checkpoint import torch_dtype

        self.sock.sendall(struct.pack("<i", b))
        tensors, n = {}, 0
        for e in sorted((ckpt.tensors[name] for name in ckpt.blocks[b]), key=lambda e: (e.file, e.offset)):
            buf = torch.empty(e.nbytes, dtype=torch.uint8)
            _recv_exact(self.sock, memoryview(buf.numpy()))
            tensors[e.name] = buf.view(torch_dtype(e.dtype_name, "--checkpoint")).reshape(e.shape)
            n += e.nbytes
        return tensors, n

    def close(self) -> None:
        self.sock.close()


def hops(scenario: Any, src: str, dst: str, n_bytes: float, sharing: str) -> list[tuple[str, float]]:
    """The hops of ``src -> AP -> dst`` as (channel, seconds): tdma's channel is ``"air"``, fdma's the device's."""
    from coldpipe.core.types import AP

    if src == dst:
        return []
    hop = scenario.network.hop_latency
    tdma = sharing == "tdma"
    out = []
    if src != AP:
        out.append(("air" if tdma else src, 8.0 * n_bytes / scenario.device(src).uplink + hop))
    if dst != AP:
        out.append(("air" if tdma else dst, 8.0 * n_bytes / scenario.device(dst).downlink + hop))
    return out


_REQ = struct.Struct("<64sdid")  # channel, ready (s since the epoch), class (0 request, 1 weights), duration


class AirServer:
    """Rank 0: grants every hop its start on its channel, one hop at a time per channel (module docstring)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.cond = threading.Condition()
        self.free: dict[str, float] = {}
        self.waiting: list[tuple[int, float, int, str, float, list[float], threading.Event]] = []
        self.seq = 0
        threading.Thread(target=_accept_forever, args=(self.sock, self._serve), daemon=True).start()
        threading.Thread(target=self._grant, daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                buf = bytearray(_REQ.size)
                try:
                    _recv_exact(conn, memoryview(buf))
                except (ConnectionError, OSError):
                    return
                name, ready, cls, dur = _REQ.unpack(buf)
                slot: list[float] = []
                done = threading.Event()
                with self.cond:
                    self.seq += 1
                    self.waiting.append((cls, ready, self.seq, name.rstrip(b"\0").decode(), dur, slot, done))
                    self.cond.notify_all()
                done.wait()
                conn.sendall(struct.pack("<d", slot[0]))

    def _grant(self) -> None:
        with self.cond:
            while True:
                now = time.time()
                wake = None
                for channel in sorted({w[3] for w in self.waiting}):
                    mine = [w for w in self.waiting if w[3] == channel]
                    at = max(self.free.get(channel, 0.0), min(w[1] for w in mine))  # the model's s = max(f, r)
                    if at > now:
                        wake = at if wake is None else min(wake, at)
                        continue
                    best = min((w for w in mine if w[1] <= at), key=lambda w: (w[0], w[1], w[2]))
                    self.waiting.remove(best)
                    start = max(self.free.get(channel, 0.0), best[1])
                    self.free[channel] = start + best[4]
                    best[5].append(start)
                    best[6].set()
                    wake = now  # look again at once: another channel, or this one's next
                self.cond.wait(None if wake is None else max(0.0, wake - time.time()))


class AirClient:
    """One thread's connection to the :class:`AirServer`: :meth:`hop` blocks until the hop is granted."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))

    def hop(self, channel: str, ready: float, cls: int, dur: float) -> float:
        """The granted start (s since the epoch) of a hop of ``dur`` seconds ready at ``ready``."""
        self.sock.sendall(_REQ.pack(channel.encode()[:64], ready, cls, dur))
        buf = bytearray(8)
        _recv_exact(self.sock, memoryview(buf))
        return float(struct.unpack("<d", buf)[0])

    def transfer_end(self, hop_list: list[tuple[str, float]], ready: float, cls: int) -> float:
        """When a transfer whose data exists at ``ready`` has crossed every hop (each granted in turn)."""
        t = ready
        for channel, dur in hop_list:
            t = self.hop(channel, t, cls, dur) + dur
        return t

    def close(self) -> None:
        self.sock.close()


def _accept_forever(sock: socket.socket, serve: Callable[[socket.socket], None]) -> None:
    """Serve each connection of ``sock`` on its own thread until the socket is closed."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
