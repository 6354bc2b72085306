"""Authenticated, encrypted messaging for the cluster: ZeroMQ with CURVE (CurveZMQ), keys derived from a join token.

Why CurveZMQ (docs/cluster.md#security): every connection, control and activations, is a CurveZMQ
session: both ends prove they hold a key derived from the join token (mutual), every message is
encrypted and authenticated (XSalsa20-Poly1305 with per-message nonces), and the handshake uses
fresh short-term keys and a server cookie, so a recorded handshake replayed byte for byte cannot be
completed. libsodium is bundled with pyzmq; gloo (torch.distributed) has no authentication at all.

Keys: ``HKDF-SHA256(token, info)`` gives 32-byte Curve25519 secret keys; one server key per agent name
(``info = "coldpipe agent NAME"``) and one client key for every member (``"coldpipe member"``). Anyone
holding the token can derive every key: the token *is* membership (treat it as a password).

Limits on a server (:class:`Server`): a frame larger than ``max_frame_bytes`` closes the connection
before it is read (``ZMQ_MAXMSGSIZE``); a handshake not finished within ``handshake_s`` closes it
(``ZMQ_HANDSHAKE_IVL``: half-open or silent peers); each refused connection is logged on one line
(never a key or the token). Messages are multipart ``[identity, header JSON, payload...]``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.utils.monitor
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from coldpipe.cluster.token import read_token
from coldpipe.errors import ColdpipeError, InputError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Channel",
    "ChannelClosed",
    "Keys",
    "Server",
    "TransportTimeout",
    "decode",
    "encode",
    "read_token",
]

log = logging.getLogger("coldpipe.cluster")

DEFAULT_MAX_FRAME_BYTES = 256 * 2**20
HANDSHAKE_S = 0.8  # a peer that has not completed the CURVE handshake by then is dropped
_ZAP = "inproc://zeromq.zap.01"


class TransportTimeout(ColdpipeError):
    """A peer did not answer in time."""


class ChannelClosed(ColdpipeError):
    """The channel was closed while waiting."""


def _derive(token: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"coldpipe-cluster-v1", info=info.encode()).derive(token)


@dataclass(frozen=True)
class Keys:
    """The CURVE keys (Z85) a join token gives: the member (client) pair, and any agent's server pair."""

    token: bytes

    def __repr__(self) -> str:  # never print the token
        return "Keys(<derived from the join token>)"

    def _pair(self, info: str) -> tuple[bytes, bytes]:
        import zmq.utils.z85

        secret = zmq.utils.z85.encode(_derive(self.token, info))
        return zmq.curve_public(secret), secret

    def secret(self, info: str) -> bytes:
        """A 32-byte secret for another purpose (``info``), independent of every CURVE key (HKDF)."""
        return _derive(self.token, info)

    def member(self) -> tuple[bytes, bytes]:
        """(public, secret) of every client connection."""
        return self._pair("coldpipe member")

    def agent(self, name: str) -> tuple[bytes, bytes]:
        """(public, secret) of agent ``name``'s server socket."""
        return self._pair(f"coldpipe agent {name}")

    def relay(self) -> tuple[bytes, bytes]:
        """(public, secret) of the access point's store-and-forward relay (the testbed's; a member too)."""
        return self._pair("coldpipe relay")


def encode(header: dict[str, Any], *payload: bytes | memoryview) -> list[bytes | memoryview]:
    return [json.dumps(header, separators=(",", ":")).encode(), *payload]


def decode(frames: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    header = json.loads(frames[0])
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return header, list(frames[1:])


def _zap_handler(ctx: zmq.Context[Any], allowed: bytes, ready: threading.Event) -> None:
    """ZAP: accept a CURVE client only if its long-term public key is the token's member key."""
    import zmq.utils.z85

    sock = ctx.socket(zmq.REP)
    sock.linger = 0
    sock.bind(_ZAP)
    ready.set()
    allowed_raw = zmq.utils.z85.decode(allowed)
    while True:
        try:
            msg = sock.recv_multipart()
        except zmq.ContextTerminated:
            break
        version, request_id, _domain, _address, _identity, mechanism, *creds = msg
        ok = mechanism == b"CURVE" and creds and creds[0] == allowed_raw
        code, text = (b"200", b"OK") if ok else (b"400", b"not a member key")
        sock.send_multipart([version, request_id, code, text, b"", b""])
    sock.close()


_FAIL_EVENTS = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake failed: not a CurveZMQ peer with the join token",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "client key refused (wrong join token)",
}


class Server:
    """A ROUTER socket bound at ``host:port`` speaking CURVE as agent ``name``; ``poll``/``recv``/``send``.

    Only the thread that created it may use it (ZeroMQ sockets are not thread-safe), except :meth:`close`.
    ``refused`` counts the connections dropped before or during the handshake (the security tests read it).
    """

    def __init__(
        self,
        keys: Keys,
        name: str,
        host: str,
        port: int,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        handshake_s: float = HANDSHAKE_S,
        server_pair: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        ready = threading.Event()
        threading.Thread(target=_zap_handler, args=(self.ctx, keys.member()[0], ready), daemon=True).start()
        ready.wait(5)
        pub, sec = server_pair or keys.agent(name)
        s = self.ctx.socket(zmq.ROUTER)
        s.linger = 0
        s.curve_server = True
        s.curve_publickey, s.curve_secretkey = pub, sec
        s.setsockopt(zmq.MAXMSGSIZE, int(max_frame_bytes))
        s.setsockopt(zmq.HANDSHAKE_IVL, int(handshake_s * 1000))
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.setsockopt(zmq.IPV6, 0)
        try:
            s.bind(f"tcp://{host}:{port}")
        except zmq.ZMQError as exc:
            s.close()
            self.ctx.term()
            raise InputError("--listen", f"cannot listen on {host}:{port}: {exc}", "pick a free port") from None
        self.sock = s
        self.port = int(s.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])
        self.refused = 0
        self.max_frame_bytes = int(max_frame_bytes)
        self._peers: dict[int, str] = {}
        self._ok: set[int] = set()
        self._reasons: list[str] = []
        self.monitor = s.get_monitor_socket()

    def poll(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a message; security events are logged meanwhile."""
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        for sock, _ in poller.poll(int(timeout_s * 1000)):
            if sock is self.monitor:
                self._events()
        return bool(self.sock.poll(0))

    def _events(self) -> None:
        while self.monitor.poll(0):
            ev = zmq.utils.monitor.recv_monitor_message(self.monitor)
            kind, value = ev["event"], int(ev["value"])
            if kind == zmq.EVENT_ACCEPTED:
                self._peers[value] = _peer_of(value)
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:  # its value is 0, not the fd: the oldest pending one
                pending = [fd for fd in self._peers if fd not in self._ok]
                if pending:
                    self._ok.add(pending[0])
            elif kind in _FAIL_EVENTS:
                self._reasons.append(_FAIL_EVENTS[kind])
            elif kind == zmq.EVENT_DISCONNECTED:
                peer = self._peers.pop(value, "?")
                if value in self._ok:
                    self._ok.discard(value)
                    log.info(
                        "connection from %s closed (the peer left, or sent a frame over the %d-byte cap)",
                        peer,
                        self.max_frame_bytes,
                    )
                    continue
                reason = self._reasons.pop(0) if self._reasons else "closed before completing the handshake"
                self.refused += 1
                log.warning("refused a connection from %s: %s", peer, reason)

    def recv(self) -> tuple[bytes, dict[str, Any], list[bytes]] | None:
        """(peer identity, header, payload frames), or None for a malformed message (logged, dropped)."""
        frames = self.sock.recv_multipart(copy=True)
        ident, body = frames[0], frames[1:]
        try:
            header, payload = decode(body)
        except (ValueError, UnicodeDecodeError, IndexError):
            log.warning("dropped a malformed message (%d frames)", len(body))
            return None
        return ident, header, payload

    def send(self, ident: bytes, header: dict[str, Any], *payload: bytes | memoryview) -> bool:
        """Send to a connected peer; False when it is gone."""
        try:
            self.sock.send_multipart([ident, *encode(header, *payload)], copy=False)
            return True
        except zmq.ZMQError:
            return False

    def close(self) -> None:
        self.monitor.close(0)
        self.sock.close(0)
        self.ctx.term()


def _peer_of(fd: int) -> str:
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            host, port = s.getpeername()[:2]
            return f"{host}:{port}"
    except OSError:
        return "?"


class Channel:
    """A client connection (DEALER) to agent ``name`` at ``address``; request/reply with a timeout.

    ``server_key`` (default: agent ``name``'s) is the public key the server must prove it holds.

    Only the creating thread may use it. Replies carry the request's ``id``; other messages (pushed by the
    agent: tokens, stage reports) are kept in :attr:`inbox` for :meth:`next_push`.
    """

    def __init__(
        self,
        keys: Keys,
        name: str,
        address: str,
        ctx: zmq.Context[Any] | None = None,
        *,
        server_key: bytes | None = None,
    ) -> None:
        self.name, self.address = name, address
        self.own_ctx = ctx is None
        self.ctx: zmq.Context[Any] = ctx or zmq.Context()
        s = self.ctx.socket(zmq.DEALER)
        s.linger = 0
        s.curve_serverkey = server_key or keys.agent(name)[0]
        s.curve_publickey, s.curve_secretkey = keys.member()
        s.setsockopt(zmq.IPV6, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.connect(f"tcp://{address}")
        self.sock = s
        self._next = 0
        self.inbox: list[tuple[dict[str, Any], list[bytes]]] = []

    def send(self, header: dict[str, Any], *payload: bytes | memoryview) -> None:
        self.sock.send_multipart(encode(header, *payload), copy=False)

    def request(
        self, op: str, timeout_s: float = 5.0, *payload: bytes | memoryview, **fields: Any
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Send ``{op, id, **fields}`` and wait for its reply; :class:`TransportTimeout` after ``timeout_s``."""
        import time

        self._next += 1
        rid = self._next
        self.send({"op": op, "id": rid, **fields}, *payload)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise TransportTimeout(
                    f"agent {self.name} ({self.address}) did not answer {op!r} within {timeout_s:g} s "
                    "(is it running, with the same join token?)"
                )
            header, payload_in = decode(self.sock.recv_multipart())
            if header.get("re") == rid:
                if header.get("error"):
                    raise ColdpipeError(f"agent {self.name}: {header['error']}")
                return header, payload_in
            self.inbox.append((header, payload_in))

    def close(self) -> None:
        self.sock.close(0)
        if self.own_ctx:
            self.ctx.term()
