"""The testbed's access point: a store-and-forward relay of the agents' activations (CurveZMQ, token members only).

Why (docs/cluster.md#terms-the-testbed-found, docs/model.md#transfers): the model's device-to-device
transfer is ``8n/up_u + hop + 8n/down_v + hop``, the two hops serialised, as on one shared Wi-Fi channel
where the AP's retransmission cannot overlap the sender's airtime. Veths through a bridge are independent
full-duplex links: packets pipeline through the bridge and a transfer takes about ``8n/min(up_u, down_v)``.
This relay runs in the AP's namespace and makes the AP store and forward each message whole: ZeroMQ
delivers a message only once all of it has arrived, so the relay's copy to ``v`` starts when the last
byte from ``u`` is in, and the kernel's ``tc`` limits still set both rates (``u``'s veth egress at its
uplink, the AP-side veth egress towards ``v`` at its downlink). Nothing here sleeps or paces.

Security: the relay is a member like any agent. It listens as a CURVE server with the relay key derived
from the join token (:meth:`Keys.relay`; a client checks it reached the relay), its ZAP handler admits only
the member key, and it forwards over a CURVE channel to each destination agent (which checks the relay
holds the member key, and the relay checks the agent's own key). It forwards only to the agents it was
started with (``--agents``: a JSON ``{name: HOST:PORT}``), never to an address a message names.

Protocol: a message whose header has ``"to": NAME`` (an ``act`` from an agent whose next stage is
``NAME``) is forwarded verbatim to ``NAME``; ``status`` and ``clock`` are answered (health checks);
anything else is answered with an error. Run: ``python -m coldpipe.testbed.relay --listen HOST:PORT
--token-file F --agents FILE [--log-file F]`` (``testbed up`` starts it in the AP namespace).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from coldpipe.cluster.transport import DEFAULT_MAX_FRAME_BYTES, Channel, Keys, Server, decode

__all__ = ["RELAY_NAME", "Relay"]

log = logging.getLogger("coldpipe.cluster")

RELAY_NAME = "relay"  # how it appears in log lines and the ``name`` of its status


class Relay:
    """The relay's state and its loop (:meth:`serve`); ``forwarded`` counts messages, ``stop`` ends it."""

    def __init__(
        self,
        keys: Keys,
        host: str,
        port: int,
        agents: dict[str, str],
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.keys, self.host, self.port = keys, host, port
        self.agents = dict(agents)
        self.max_frame_bytes = max_frame_bytes
        self.stop = threading.Event()
        self.forwarded = 0
        self.forwarded_bytes = 0
        self.started = time.time()

    def serve(self, on_ready: Any = None) -> None:
        srv = Server(
            self.keys,
            RELAY_NAME,
            self.host,
            self.port,
            max_frame_bytes=self.max_frame_bytes,
            server_pair=self.keys.relay(),
        )
        # one channel per agent, connected now (ZeroMQ reconnects until the agent listens): no handshake
        # on a transfer's critical path
        out = {n: Channel(self.keys, n, a, srv.ctx) for n, a in self.agents.items()}
        log.info("relay: listening on %s:%d for %d agents", self.host, srv.port, len(out))
        if on_ready is not None:
            on_ready(srv.port)
        poller = zmq.Poller()  # the sockets are fixed: one poller for the relay's life
        poller.register(srv.sock, zmq.POLLIN)
        poller.register(srv.monitor, zmq.POLLIN)
        for ch in out.values():
            poller.register(ch.sock, zmq.POLLIN)
        try:
            while not self.stop.is_set():
                ready = dict(poller.poll(200))
                if srv.monitor in ready:
                    srv.poll(0.0)  # logs refused connections
                if srv.sock in ready:
                    while srv.sock.poll(0):
                        self._one(srv, out, srv.sock.recv_multipart(copy=True))
                for ch in out.values():
                    while ch.sock.poll(0):
                        ch.sock.recv_multipart()  # agents never answer data; drain
        finally:
            for ch in out.values():
                ch.close()
            srv.close()

    def _one(self, srv: Server, out: dict[str, Channel], frames: list[bytes]) -> None:
        ident, body = frames[0], frames[1:]
        try:
            h, _payload = decode(body)
        except (ValueError, UnicodeDecodeError, IndexError):
            log.warning("relay: dropped a malformed message (%d frames)", len(body))
            return
        to = h.get("to")
        if to is not None:
            ch = out.get(str(to))
            if ch is None:
                log.warning("relay: dropped a message for %s (not an agent of this testbed)", str(to)[:40])
                return
            try:
                ch.sock.send_multipart(body, flags=zmq.NOBLOCK, copy=False)  # the whole message, as received
            except zmq.ZMQError as exc:
                log.info("relay: dropped a message to %s: %s", to, exc)
                return
            self.forwarded += 1
            self.forwarded_bytes += sum(len(f) for f in body)
            return
        op = h.get("op")
        if op == "clock":
            srv.send(ident, {"re": h.get("id"), "t": time.time()})
        elif op == "status":
            status = {
                "name": RELAY_NAME,
                "agents": sorted(self.agents),
                "forwarded": self.forwarded,
                "forwarded_bytes": self.forwarded_bytes,
                "uptime_s": time.time() - self.started,
                "t": time.time(),
            }
            srv.send(ident, {"re": h.get("id"), **status})
        else:
            why = f"the relay forwards messages with 'to'; not {str(op)[:40]!r}"
            srv.send(ident, {"re": h.get("id"), "error": why})


def main(argv: list[str] | None = None) -> None:
    from coldpipe.cluster.token import read_token
    from coldpipe.errors import ColdpipeError
    from coldpipe.profiler.link import parse_host_port

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="HOST:PORT (the AP's address on its bridge)")
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--agents", required=True, help='JSON file {"NAME": "HOST:PORT", ...}')
    ap.add_argument("--log-file")
    args = ap.parse_args(argv)
    try:
        host, port = parse_host_port(args.listen, "--listen")
        keys = Keys(read_token(args.token_file))
        agents = json.loads(Path(args.agents).read_text())
        if not isinstance(agents, dict) or not all(isinstance(v, str) for v in agents.values()):
            raise ValueError("not an object of NAME: HOST:PORT")
    except (ColdpipeError, OSError, ValueError) as exc:
        print(f"coldpipe relay: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    handler: logging.Handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    relay = Relay(keys, host, port, agents)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: relay.stop.set())
    relay.serve(on_ready=lambda p: print(f"relay ready on {host}:{p}", flush=True))


if __name__ == "__main__":
    main()
