"""Frames between the source and the stages: a 4-byte length, a JSON header, then ``header['nbytes']`` raw bytes.

Every connection starts with a ``{"hello": NAME}`` frame from the connecting side, so a listener knows which
peer each accepted socket belongs to. Data frames carry ``req`` (index in the burst), ``step`` (0 the prefill,
``k`` the ``k``-th decode step), ``sent`` (wall time of the send, for the emulated link time), ``shape`` and
``dtype``; ``{"end": true}`` closes a burst and travels the whole pipeline back to the source;
``{"cancel": REQ}`` (source to first stage) drops the steps the last stage still feeds back for request ``REQ``.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from typing import Any

__all__ = ["Peers", "connect", "listener", "recv_frame", "send_frame"]

_LEN = struct.Struct("!I")
SMALL_BYTES = 1 << 20  # payloads up to this size go out in the same write as their header
# Socket buffers asked for (the kernel caps them at net.core.[rw]mem_max): large enough that a prefill's
# activations (e.g. 64 tokens x 768 x 4 bytes = 196 KB) leave in one write, where the initial ones (16 KB to
# send, 128 KB to receive) can make the sender wait for the receiver to be scheduled and drain part of it.
BUF_BYTES = 4 << 20


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUF_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUF_BYTES)


def listener() -> socket.socket:
    """A listener on 127.0.0.1 (a free port) whose accepted connections have the large buffers."""
    sock = socket.socket()
    _tune(sock)  # before listen: accepted sockets inherit it, and the window scale is agreed at the handshake
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def send_frame(sock: socket.socket, header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    """Send one frame (``header['nbytes']`` is set to the payload's length)."""
    header = {**header, "nbytes": len(payload)}
    data = json.dumps(header).encode()
    if len(payload) <= SMALL_BYTES:  # one write, so the receiver wakes up once (decode steps, tokens)
        sock.sendall(b"".join((_LEN.pack(len(data)), data, payload)))
        return
    sock.sendall(_LEN.pack(len(data)) + data)
    sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("the peer closed the connection")
        got += k
    return buf


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], bytearray]:
    """The next frame: (header, payload)."""
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    header = json.loads(bytes(_recv_exact(sock, n)))
    return header, _recv_exact(sock, int(header.get("nbytes", 0)))


def connect(port: int, my_name: str, timeout_s: float = 10.0) -> socket.socket:
    """A connection to a peer's listener on 127.0.0.1, introduced by a hello frame."""
    sock = socket.socket()
    _tune(sock)  # before connect (the window scale is agreed at the handshake)
    sock.settimeout(timeout_s)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    send_frame(sock, {"hello": my_name})
    return sock


class Peers:
    """Accepted connections, by the name in their hello frame."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.socks: dict[str, socket.socket] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello, _ = recv_frame(sock)
            with self.cond:
                old = self.socks.pop(str(hello["hello"]), None)
                if old is not None:
                    old.close()
                self.socks[str(hello["hello"])] = sock
                self.cond.notify_all()

    def get(self, name: str, timeout_s: float) -> socket.socket:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.socks, timeout=timeout_s):
                raise TimeoutError(f"{name} never connected")
            return self.socks[name]
