"""``coldpipe serve --cluster``: the :class:`~coldpipe.serve.protocol.Backend` protocol over a cluster's agents.

The server is the coordinator (the source, at the access point): it holds one CurveZMQ channel per agent
(:class:`~coldpipe.cluster.coordinator.Coordinator`) and speaks the agents' protocol (:mod:`coldpipe.cluster.agent`)
with its server fields: ``prepare`` with ``open`` (the stage serves inputs until an ``end`` input, and several
requests, each naming its ``req``) and ``exclusive`` (a device holds its latest stage only, as
``Scenario.after`` assumes), ``start`` with ``sampling`` (the last stage samples with
:class:`coldpipe.serve.sampling.Sampler`, as the local backend's last stage does).

- **Devices up** are the agents that answered within :data:`~coldpipe.cluster.coordinator.DEAD_S`: a thread
  sends a ``clock`` probe to every agent every :data:`~coldpipe.cluster.coordinator.HEARTBEAT_S` while no
  burst runs (a burst probes its own agents) and tells the engine when the set changes (``on_change``), so
  the engine re-plans before the next request. An agent that comes back is told to ``drop`` (cold) and its
  clock offset is measured again.
- **prepare** (the engine's next plan, off the critical path) sends ``prepare`` to every stage's agent: the
  agent builds its stage, connects to the next agent and, when cold, drops its checkpoint's page cache.
- **A burst** sends ``start`` (``t0`` = now, on each agent's clock) with the requests' sampling, the prompts
  to the first stage (overlap ``none``: once every agent reported ``loaded``), then each token the last stage
  pushes goes to ``on_token`` as it arrives and, while its request wants more, back to the first stage as that
  request's next decode step. When no request wants more, an ``end`` input closes the pipeline; every agent
  reports its spans (the bytes it loaded). Blocks stay resident on the agents.
- **A lost agent** (silent for ``DEAD_S``, or a stage that failed) fails the burst
  (:class:`~coldpipe.serve.BackendFailed`): the job is aborted on every agent, the survivors drop their blocks
  (the engine goes on cold, as with the local backend's restart) and the lost agent is no longer up, so the
  engine's next plan is over the survivors.
- **unload** is every agent's ``drop``; **close** drops too and closes the channels (the agents keep running).

Only one thread uses the ZeroMQ sockets at a time (:attr:`ClusterBackend.lock`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from coldpipe.cluster.clocks import estimate_offset
from coldpipe.cluster.coordinator import DEAD_S, HEARTBEAT_S, Coordinator
from coldpipe.cluster.transport import TransportTimeout, decode, encode
from coldpipe.core.types import Overlap, Plan
from coldpipe.errors import ColdpipeError
from coldpipe.serve import BackendFailed
from coldpipe.serve.protocol import Burst, BurstOutcome

__all__ = ["ClusterBackend"]

log = logging.getLogger("coldpipe.serve")

POLL_S = 0.05


@dataclass(frozen=True)
class _Prepared:
    job: str
    plan: Plan
    overlap: Overlap


class ClusterBackend:
    """The agents of ``co`` as a serving pipeline (see the module docstring).

    ``block_bytes[b]``: block ``b``'s weight bytes (what ``unload`` reports freed); ``fingerprint``: the
    checkpoint's, which every agent checks at ``prepare``.
    """

    def __init__(
        self,
        co: Coordinator,
        fingerprint: str,
        block_bytes: list[int],
        overlap: Overlap,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        dead_s: float = DEAD_S,
        timeout_s: float = 60.0,
    ) -> None:
        self.co, self.fingerprint, self.block_bytes, self.overlap = co, fingerprint, block_bytes, overlap
        self.heartbeat_s, self.dead_s, self.timeout_s = heartbeat_s, dead_s, timeout_s
        self.names = tuple(co.ch)
        self.lock = threading.Lock()
        self.on_change: Callable[[], None] | None = None
        self.poller = zmq.Poller()
        self.name_of = {co.ch[n].sock: n for n in self.names}
        for sock in self.name_of:
            self.poller.register(sock, zmq.POLLIN)
        self.last_seen = {n: 0.0 for n in self.names}  # time.monotonic() of its latest message
        self.unanswered: dict[str, float | None] = {n: None for n in self.names}  # oldest probe since then
        self.down_at = {n: 0.0 for n in self.names}  # when it was last found down
        self.up: set[str] = set()
        self.wanted: set[tuple[str, int]] = set()  # replies someone waits for
        self.replies: dict[tuple[str, int], dict[str, Any]] = {}
        self.pushes: deque[tuple[str, dict[str, Any], list[bytes]]] = deque()
        self.job: str | None = None  # the running burst's job: its pushes are kept
        self.prepared: _Prepared | None = None
        self.held_plan: Plan | None = None  # the latest burst's plan: its agents hold their stages
        self._n = 0
        self.closing = threading.Event()
        with self.lock:
            for n in self.names:  # the server starts cold: every agent up drops what it holds
                try:
                    self._join(n)
                except (TransportTimeout, ColdpipeError) as exc:
                    log.warning("coldpipe serve: agent %s is not up: %s", n, exc)
                    self.down_at[n] = time.monotonic()
        self.heart = threading.Thread(target=self._heartbeats, name="coldpipe-heartbeats", daemon=True)
        self.heart.start()

    # -- messages (the caller holds the lock) -------------------------------------------------------------
    def _send(self, name: str, header: dict[str, Any], *payload: bytes) -> int:
        """Send without blocking (a silent agent's queue may be full); the message id."""
        self._n += 1
        try:
            self.co.ch[name].sock.send_multipart(encode({**header, "id": self._n}, *payload), flags=zmq.NOBLOCK)
        except zmq.Again:
            raise BackendFailed(f"agent {name} is not taking messages (its queue is full)") from None
        return self._n

    def _pump(self, timeout_s: float) -> None:
        """Read every message that arrives within ``timeout_s`` (at least one poll): replies and pushes."""
        for sock, _ in self.poller.poll(int(timeout_s * 1000)):
            n = self.name_of[sock]
            while sock.poll(0):
                try:
                    h, payload = decode(sock.recv_multipart())
                except (ValueError, UnicodeDecodeError, IndexError):
                    continue
                self.last_seen[n], self.unanswered[n] = time.monotonic(), None
                if "re" in h:
                    key = (n, int(h["re"]))
                    if key in self.wanted:
                        self.replies[key] = h
                elif self.job is not None and h.get("job") == self.job:
                    self.pushes.append((n, h, payload))

    def _wait(self, name: str, rid: int, op: str, timeout_s: float) -> dict[str, Any]:
        key = (name, rid)
        self.wanted.add(key)
        deadline = time.monotonic() + timeout_s
        next_probe = time.monotonic() + self.heartbeat_s
        try:
            while key not in self.replies:
                now = time.monotonic()
                if now >= deadline:
                    raise TransportTimeout(f"agent {name} did not answer {op!r} within {timeout_s:g} s")
                if now >= next_probe:  # a lost agent fails the wait after DEAD_S, not after the whole timeout
                    self._probe(name)
                    next_probe = now + self.heartbeat_s
                if self._silent_s(name) > self.dead_s:
                    self._lost(name)
                    raise TransportTimeout(f"agent {name} stopped answering (waiting for {op!r})")
                self._pump(min(deadline - now, POLL_S))
            h = self.replies.pop(key)
        finally:
            self.wanted.discard(key)
            self.replies.pop(key, None)
        if h.get("error"):
            raise ColdpipeError(f"agent {name}: {h['error']}")
        return h

    def _request(self, name: str, op: str, timeout_s: float = 5.0, **fields: Any) -> dict[str, Any]:
        return self._wait(name, self._send(name, {"op": op, **fields}), op, timeout_s)

    def _join(self, name: str) -> None:
        """An agent (back) up: nothing resident, its clock offset measured."""
        self._request(name, "drop", 5.0)
        self.co.offsets[name], _ = estimate_offset(lambda: float(self._request(name, "clock", 2.0)["t"]))
        self.up.add(name)

    def _probe(self, name: str) -> None:
        """A heartbeat: ``clock``; the agent is silent from the first probe it has not answered."""
        with contextlib.suppress(BackendFailed, zmq.ZMQError):
            self._send(name, {"op": "clock"})
        if self.unanswered[name] is None:
            self.unanswered[name] = time.monotonic()

    def _silent_s(self, name: str) -> float:
        since = self.unanswered[name]
        return 0.0 if since is None else time.monotonic() - since

    def _lost(self, name: str) -> None:
        """``name`` is down; when it held a stage of the resident plan the others drop theirs (the engine then
        forgets that plan and counts every device cold)."""
        self.up.discard(name)
        self.down_at[name] = time.monotonic()
        if self.held_plan is not None and name in {st.device for st in self.held_plan.stages}:
            self._drop_all()

    def _abort(self, job: str, names: Any) -> None:
        for n in names:
            with contextlib.suppress(BackendFailed, zmq.ZMQError):
                self._send(n, {"op": "abort", "job": job})

    # -- heartbeats -----------------------------------------------------------------------------------------
    def _heartbeats(self) -> None:
        reported = frozenset(self.up)  # what the engine planned over (it asked devices_up at its start)
        while not self.closing.wait(self.heartbeat_s):
            with self.lock:
                if self.closing.is_set():
                    return
                self._pump(0.0)
                for n in self.names:
                    if n in self.up and self._silent_s(n) > self.dead_s:
                        log.warning("coldpipe serve: agent %s lost (no answer for %.1f s)", n, self._silent_s(n))
                        self._lost(n)
                    elif n not in self.up and self.last_seen[n] > self.down_at[n]:
                        try:
                            self._join(n)
                            log.info("coldpipe serve: agent %s is up again (cold)", n)
                        except (TransportTimeout, ColdpipeError):
                            self.down_at[n] = time.monotonic()
                    self._probe(n)
                up = frozenset(self.up)  # also what a burst or a prepare found lost
            if up != reported and self.on_change is not None:
                reported = up
                self.on_change()

    # -- the Backend protocol ---------------------------------------------------------------------------------
    def devices_up(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n in self.up)

    def prepare(self, plan: Plan, cold: bool) -> None:
        with self.lock:
            try:
                self._prepare(plan, self.overlap, cold)
            except (BackendFailed, TransportTimeout, ColdpipeError, zmq.ZMQError) as exc:
                log.warning("coldpipe serve: could not prepare plan %s: %s", plan, exc)  # the burst will say
                self.prepared = None

    def _prepare(self, plan: Plan, overlap: Overlap, cold: bool) -> None:
        if self.prepared is not None:
            self._abort(self.prepared.job, {st.device for st in self.prepared.plan.stages})
            self.prepared = None
        self._n += 1
        job = f"serve-{self._n}"
        stages = plan.stages
        sent = []
        for j, st in enumerate(stages):
            nxt = stages[j + 1].device if j + 1 < len(stages) else None
            spec = {
                "op": "prepare",
                "job": job,
                "first": st.first,
                "last": st.last,
                "overlap": overlap,
                "prompt_tokens": 1,
                "new_tokens": 1,
                "next": None if nxt is None else {"name": nxt, "address": self.co.agents[nxt].address},
                "fingerprint": self.fingerprint,
                "cold": cold,
                "open": True,
                "exclusive": True,
            }
            rid = self._send(st.device, spec)
            self.wanted.add((st.device, rid))  # its reply may arrive while an earlier one is awaited
            sent.append((st.device, rid))
        for n, rid in sent:  # every agent builds its stage at once
            self._wait(n, rid, "prepare", 30.0)
        self.prepared = _Prepared(job, plan, overlap)

    def run_burst(self, burst: Burst, on_token: Callable[[int, int], bool]) -> BurstOutcome:
        with self.lock:
            try:
                return self._run(burst, on_token)
            except (BackendFailed, TransportTimeout, ColdpipeError, zmq.ZMQError) as exc:
                self._failed(burst)
                if isinstance(exc, BackendFailed):
                    raise
                raise BackendFailed(str(exc)) from exc
            finally:
                self.job = None
                self.pushes.clear()

    def _drop_all(self) -> None:
        self.held_plan = None
        for n in sorted(self.up):
            with contextlib.suppress(BackendFailed, zmq.ZMQError):
                self._send(n, {"op": "drop"})

    def _failed(self, burst: Burst) -> None:
        """Abort the job everywhere; the survivors drop their blocks (the engine goes on cold)."""
        if self.job is not None:
            self._abort(self.job, self.names)
        self.prepared = None
        self._drop_all()
        log.info("coldpipe serve: aborted the burst of plan %s; the agents up dropped their blocks", burst.plan)

    def _run(self, burst: Burst, on_token: Callable[[int, int], bool]) -> BurstOutcome:
        import numpy as np

        names = [st.device for st in burst.plan.stages]
        for n in names:
            if n not in self.up:
                raise BackendFailed(f"agent {n} is not up")
        prep = self.prepared
        if prep is None or prep.plan != burst.plan or prep.overlap != burst.overlap:
            self._prepare(burst.plan, burst.overlap, burst.drop_cache)
            prep = self.prepared
        assert prep is not None
        self.prepared, self.job = None, prep.job
        job = prep.job
        t0 = time.time()
        sampling = [s.to_dict() for s in burst.sampling]
        starts = {n: self._send(n, {"op": "start", "job": job, "t0": t0 + self.co.offsets[n], "sampling": sampling})
                  for n in names}  # fmt: skip
        for n, rid in starts.items():
            self.wanted.add((n, rid))

        def send_input(req: int, step: int, ids: Any) -> None:
            arr = np.asarray(ids, dtype=np.int32).reshape(1, -1)  # (1, q)
            hdr = {"op": "act", "job": job, "req": req, "step": step, "sent": time.time()}
            self._send(names[0], {**hdr, "dtype": "int32", "shape": list(arr.shape)}, arr.tobytes())

        if burst.overlap != "none":
            for r, p in enumerate(burst.prompts):
                send_input(r, 0, p)
        active = set(range(len(burst.prompts)))
        loaded: set[str] = set()
        reports: dict[str, dict[str, Any]] = {}
        next_beat = time.monotonic()
        quiet_since = time.monotonic()
        first_s: float | None = None
        try:
            while active or len(reports) < len(names):
                now = time.monotonic()
                if now >= next_beat:
                    for n in names:
                        if n not in reports:
                            self._probe(n)
                    next_beat = now + self.heartbeat_s
                for n in names:
                    if n not in reports and self._silent_s(n) > self.dead_s:
                        silent_s = self._silent_s(n)
                        self._lost(n)
                        raise BackendFailed(f"agent {n} stopped answering (no heartbeat answer for {silent_s:.1f} s)")
                if now - quiet_since > self.timeout_s:
                    raise BackendFailed(f"no token within {self.timeout_s:g} s")
                for n, rid in list(starts.items()):
                    h = self.replies.pop((n, rid), None)
                    if h is not None:
                        del starts[n]
                        self.wanted.discard((n, rid))
                        if h.get("error"):
                            raise BackendFailed(f"agent {n} could not start: {h['error']}")
                self._pump(POLL_S)
                while self.pushes:
                    n, h, payload = self.pushes.popleft()
                    op = h.get("op")
                    if op == "token":
                        quiet_since = time.monotonic()
                        if first_s is None:
                            first_s = time.time() - t0
                        r, step = int(h.get("req", 0)), int(h["step"])
                        tok = int(np.frombuffer(payload[0], dtype=np.int32)[0])
                        if r in active and on_token(r, tok):
                            send_input(r, step + 1, [tok])
                        else:
                            active.discard(r)
                            if not active:  # no request wants more: close the pipeline
                                self._send(names[0], {"op": "act", "job": job, "end": True})
                    elif op == "loaded":
                        loaded.add(n)
                        if len(loaded) == len(names):
                            for r, p in enumerate(burst.prompts):
                                send_input(r, 0, p)
                    elif op == "report":
                        reports[n] = h
                    elif op == "failed":
                        raise BackendFailed(f"agent {n} failed its stage: {h.get('error')}")
        finally:
            for n, rid in starts.items():
                self.wanted.discard((n, rid))
                self.replies.pop((n, rid), None)
        outcome = BurstOutcome(t0)
        load_start_s: dict[str, float] = {}
        for n in names:
            loads = [s for s in reports[n]["spans"] if s.get("cat") == "load"]
            outcome.loaded_bytes[n] = int(sum(int(s.get("bytes") or 0) for s in loads))
            if loads:
                outcome.load_end_s[n] = max(float(s["end"]) for s in loads) - self.co.offsets[n] - t0
                load_start_s[n] = min(float(s["start"]) for s in loads) - self.co.offsets[n] - t0
        loads = ", ".join(
            f"{n} {outcome.loaded_bytes[n]} bytes from {1e3 * load_start_s[n]:.1f} ms to {outcome.load_end_s[n]:.3f} s"
            for n in names
            if n in outcome.load_end_s
        )
        log.info("coldpipe serve: first token %.3f s after the start; loaded: %s", first_s or 0.0, loads or "nothing")
        for n in sorted(self.up - set(names)):  # a device holds its latest stage only; these have none now
            with contextlib.suppress(BackendFailed, zmq.ZMQError):
                self._send(n, {"op": "drop"})
        self.held_plan = burst.plan
        return outcome

    def unload(self) -> dict[str, int]:
        with self.lock:
            self.held_plan = None
            if self.prepared is not None:
                self._abort(self.prepared.job, self.names)
                self.prepared = None
            freed = {}
            for n in self.devices_up():
                try:
                    held = self._request(n, "status", 5.0)["resident"]
                    self._request(n, "drop", 5.0)
                    freed[n] = int(sum(self.block_bytes[b] for b in held))
                except (TransportTimeout, ColdpipeError, BackendFailed) as exc:
                    log.warning("coldpipe serve: agent %s did not unload: %s", n, exc)
            return freed

    def close(self) -> None:
        self.closing.set()
        if self.heart.is_alive():
            self.heart.join(5)
        with self.lock:
            if self.prepared is not None:
                self._abort(self.prepared.job, self.names)
                self.prepared = None
            for n in self.devices_up():  # free the devices; the agents keep running
                with contextlib.suppress(TransportTimeout, ColdpipeError, BackendFailed):
                    self._request(n, "drop", 1.0)
            self.co.close()
