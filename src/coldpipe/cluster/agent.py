"""``coldpipe agent``: one per device. Cold at start, measures itself, runs the stage it is given, keeps it resident.

Threads: the **I/O loop** (main thread) owns every ZeroMQ socket: the CURVE server (:class:`Server`) that
the coordinator and the upstream agent connect to, the channels to downstream agents, and an inproc
``outbox`` that the other threads push their messages to. A job's **stage thread** receives its inputs
from a queue the I/O loop fills, runs each block once the overlap mode allows (as the local runtime:
``StageModel.run_block``), and pushes its output downstream; its **loader thread** reads the blocks in
block order from ``t0`` (``read_tensor``, no pacing: the device's own storage, or the testbed's blkio
limit, sets the rate). Spans are stamped on this agent's own clock (``time.time()``); the coordinator maps
them to its clock (:mod:`coldpipe.cluster.clocks`). Blocks stay resident until ``drop``.

Control ops (request -> reply ``{"re": id, ...}``): ``status``, ``clock``, ``profile``, ``link``,
``prepare``, ``start``, ``abort``, ``drop``. Data: ``act`` (an input of a job; no reply). Pushes to the
coordinator: ``token`` (the last stage's output), ``loaded`` (overlap none), ``report`` (spans), ``failed``.

Optional fields for a server (``coldpipe serve --cluster``; absent, a job is one request of ``new_tokens``
greedy tokens as ``cluster run`` sends): ``prepare`` ``open: true`` (the stage serves inputs until an ``act``
with ``end: true``, which it passes downstream, and takes several requests, each ``act`` naming its ``req``
and a request's prompt length read from its step-0 input) and ``exclusive: true`` (resident blocks outside
the stage are dropped: a device holds its latest stage, as ``Scenario.after`` assumes); ``start``
``sampling: [{temperature, top_p, seed}, ...]`` (per request: the last stage samples with
:class:`coldpipe.serve.sampling.Sampler`, the local backend's, instead of taking the argmax). ``token``
pushes carry the ``req`` of their input.
``prepare``'s ``next`` may carry ``relay: HOST:PORT`` (optional): the stage's output then goes to that
store-and-forward relay (:mod:`coldpipe.testbed.relay`, the testbed's access point) with ``"to": NAME``
added to its header, instead of straight to the next agent.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from coldpipe.cluster.transport import Channel, Keys, Server

__all__ = ["Agent", "AgentOptions"]

log = logging.getLogger("coldpipe.cluster")

INPUT_TIMEOUT_S = 60.0  # a stage waiting longer than this for its input gives up


@dataclass(frozen=True)
class AgentOptions:
    name: str
    host: str
    port: int
    checkpoint: str
    profile: dict[str, Any] | None = None  # None: measure at start (--profile auto)
    prompt_tokens: int = 128
    max_frame_bytes: int = 256 * 2**20
    threads: int = 1


@dataclass
class _Job:
    """One stage of one request on this agent, between ``prepare`` and its ``report``."""

    job: str
    spec: dict[str, Any]
    coordinator: bytes  # the identity of the coordinator's connection
    model: Any
    inbox: queue.Queue[tuple[dict[str, Any], list[bytes]]] = field(default_factory=queue.Queue)
    abort: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Agent:
    """The agent's state and its I/O loop (:meth:`serve`)."""

    def __init__(self, keys: Keys, opts: AgentOptions) -> None:
        from coldpipe.cluster.measure import fingerprint
        from coldpipe.runtime.checkpoint import open_checkpoint

        self.keys, self.opts = keys, opts
        self.ckpt = open_checkpoint(opts.checkpoint)
        self.fingerprint = fingerprint(self.ckpt)
        self.resident: dict[int, Any] = {}  # block -> its module, weights in memory
        self.jobs: dict[str, _Job] = {}
        self.peers: dict[str, Channel] = {}
        self.profile = opts.profile
        self.started = time.time()
        self.stop = threading.Event()
        self._local = threading.local()
        self.server: Server | None = None
        self._threads: list[threading.Thread] = []  # stage and loader threads, for status' job_threads
        self._threads_lock = threading.Lock()

    # -- messages from the other threads, through the I/O loop --------------------------------------
    def _push(self, target: str, header: dict[str, Any], *payload: bytes) -> None:
        """Send from any thread: ``target`` is ``"coord:" + hex identity`` or ``"peer:" + name``."""
        from coldpipe.cluster.transport import encode

        sock = getattr(self._local, "sock", None)
        if sock is None:
            assert self.server is not None
            sock = self.server.ctx.socket(zmq.PUSH)
            sock.linger = 1000
            sock.connect("inproc://outbox")
            self._local.sock = sock
        sock.send_multipart([target.encode(), *encode(header, *payload)])

    def _close_push(self) -> None:
        """Close this thread's outbox socket (flushes, linger 1 s): the context cannot end while it is open."""
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            sock.close()
            self._local.sock = None

    # -- the I/O loop ---------------------------------------------------------------------------------
    def serve(self, on_ready: Any = None) -> None:
        import torch

        from coldpipe.cluster.measure import measure_device

        torch.set_num_threads(self.opts.threads)
        if self.profile is None:
            log.info("agent %s: measuring this device (compute, storage, memory)", self.opts.name)
            self.profile = measure_device(self.ckpt, self.opts.prompt_tokens)
        else:  # what measuring does on the way: import the architecture and run its kernels once, so the first
            # prepare does not hold the I/O loop for seconds and the first request's compute is not slower
            from coldpipe.runtime.checkpoint import torch_dtype
            from coldpipe.runtime.stage_model import StageModel

            StageModel(self.ckpt.config, 1, 0, torch_dtype(self.ckpt.dtype)).warm_up(16)
        self.server = srv = Server(
            self.keys, self.opts.name, self.opts.host, self.opts.port, max_frame_bytes=self.opts.max_frame_bytes
        )
        outbox = srv.ctx.socket(zmq.PULL)
        outbox.bind("inproc://outbox")
        log.info("agent %s: listening on %s:%d (cold: nothing resident)", self.opts.name, self.opts.host, srv.port)
        if on_ready is not None:
            on_ready(srv.port)
        try:
            while not self.stop.is_set():
                srv.poll(0.0)
                poller = zmq.Poller()
                poller.register(srv.sock, zmq.POLLIN)
                poller.register(outbox, zmq.POLLIN)
                poller.register(srv.monitor, zmq.POLLIN)  # security events: logged by poll()
                for ch in self.peers.values():
                    poller.register(ch.sock, zmq.POLLIN)
                ready = dict(poller.poll(200))
                if srv.monitor in ready:
                    srv.poll(0.0)
                if srv.sock in ready:
                    while srv.sock.poll(0):
                        msg = srv.recv()
                        if msg is not None:
                            self._handle(*msg)
                if outbox in ready:
                    while outbox.poll(0):
                        target, *frames = outbox.recv_multipart()
                        self._forward(target.decode(), frames)
                for ch in self.peers.values():
                    while ch.sock.poll(0):
                        ch.sock.recv_multipart()  # peers never answer data; drain
        finally:
            for j in self.jobs.values():
                j.abort.set()
            for ch in self.peers.values():
                ch.close()
            outbox.close(0)
            srv.close()

    def _forward(self, target: str, frames: list[bytes]) -> None:
        kind, _, who = target.partition(":")
        assert self.server is not None
        try:
            if kind == "coord":
                self.server.sock.send_multipart([bytes.fromhex(who), *frames])
            else:
                self.peers[who].sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except (zmq.ZMQError, KeyError) as exc:  # that coordinator or peer is gone: drop, keep serving
            log.info("agent %s: dropped a message to %s: %s", self.opts.name, kind, exc)

    def _reply(self, ident: bytes, header: dict[str, Any], **fields: Any) -> None:
        assert self.server is not None
        self.server.send(ident, {"re": header.get("id"), **fields})

    def _handle(self, ident: bytes, h: dict[str, Any], payload: list[bytes]) -> None:
        op = h.get("op")
        try:
            if op == "act":
                job = self.jobs.get(str(h.get("job")))
                if job is not None:
                    job.inbox.put((h, payload))
                return
            if op == "clock":
                self._reply(ident, h, t=time.time())
            elif op == "status":
                self._reply(ident, h, **self.status())
            elif op == "profile":
                tokens = int(h.get("prompt_tokens") or 0)
                auto = self.opts.profile is None and self.profile is not None  # --profile auto: measure again
                if auto and tokens > 0 and tokens != self.profile.get("prompt_tokens"):
                    from coldpipe.cluster.measure import layer_flops  # FLOP/s depend on the prompt length

                    flops, how = layer_flops(self.ckpt, tokens)
                    how_all = {**self.profile.get("how", {}), "flops": how}
                    self.profile = {**self.profile, "flops": flops, "prompt_tokens": tokens, "how": how_all}
                self._reply(ident, h, profile=self.profile, fingerprint=self.fingerprint, name=self.opts.name)
            elif op == "link":
                self._reply(ident, h, port=self._link_server())
            elif op == "prepare":
                self._prepare(ident, h)
                self._reply(ident, h, ok=True)
            elif op == "start":
                self._start(str(h["job"]), float(h["t0"]), h.get("sampling"))
                self._reply(ident, h, ok=True)
            elif op == "abort":
                job = self.jobs.pop(str(h.get("job")), None)
                if job is not None:
                    job.abort.set()
                self._reply(ident, h, ok=True)
            elif op == "drop":
                self.resident.clear()
                self._reply(ident, h, ok=True)
            else:
                self._reply(ident, h, error=f"unknown op {str(op)[:40]!r}")
        except Exception as exc:  # a bad request never ends the agent
            log.warning("agent %s: %s failed: %s", self.opts.name, op, exc)
            self._reply(ident, h, error=f"{op}: {type(exc).__name__}: {str(exc)[:300]}")

    def status(self) -> dict[str, Any]:
        return {
            "name": self.opts.name,
            "fingerprint": self.fingerprint,
            "resident": sorted(self.resident),
            "jobs": sorted(self.jobs),
            # threads of jobs still running (an aborted job leaves ``jobs`` at once, its threads soon after)
            "job_threads": self._job_threads(),
            "uptime_s": time.time() - self.started,
            "t": time.time(),
        }

    def _job_threads(self) -> list[str]:
        """Names of this agent's stage and loader threads still alive (other agents' in this process not)."""
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return sorted(t.name for t in self._threads)

    def _track(self, th: threading.Thread) -> None:
        with self._threads_lock:
            self._threads.append(th)

    def _link_server(self) -> int:
        """Start a one-session link-profiler server (token-checked) on an ephemeral port; its port."""
        from coldpipe.profiler import link

        got: queue.Queue[int] = queue.Queue()

        def run() -> None:
            try:
                link.serve(self.opts.host, 0, sessions=1, on_ready=got.put, token=self.keys.token)
            except OSError as exc:
                log.warning("agent %s: link server failed: %s", self.opts.name, exc)

        threading.Thread(target=run, daemon=True).start()
        return got.get(timeout=5)

    # -- jobs -----------------------------------------------------------------------------------------
    def _prepare(self, ident: bytes, h: dict[str, Any]) -> None:
        """Build the stage (meta device; resident blocks reused), connect downstream, drop the page cache."""
        import torch

        from coldpipe.runtime.checkpoint import torch_dtype
        from coldpipe.runtime.emulation import drop_page_cache
        from coldpipe.runtime.stage_model import StageModel

        if h.get("fingerprint") != self.fingerprint:
            raise ValueError("the coordinator's checkpoint differs from this agent's (fingerprint mismatch)")
        first, last = int(h["first"]), int(h["last"])
        if h.get("exclusive"):  # a device holds its latest stage only
            for b in [b for b in self.resident if b < first or b > last]:
                del self.resident[b]
        model = StageModel(self.ckpt.config, first, last, torch_dtype(self.ckpt.dtype))
        for b in range(first, last + 1):
            if b in self.resident:
                model.modules[b] = self.resident[b]
        nxt = h["next"]
        if nxt is not None and _route(nxt) not in self.peers:
            ctx = self.server.ctx if self.server else None
            if nxt.get("relay"):  # store-and-forward through the access point (the testbed's relay)
                relay_key = self.keys.relay()[0]
                self.peers[_route(nxt)] = Channel(self.keys, "relay", str(nxt["relay"]), ctx, server_key=relay_key)
            else:
                self.peers[_route(nxt)] = Channel(self.keys, nxt["name"], nxt["address"], ctx)
        if h.get("cold", True):
            drop_page_cache(self.ckpt.files)
        del torch
        self.jobs[str(h["job"])] = _Job(str(h["job"]), h, ident, model)

    def _start(self, job_id: str, t0: float, sampling: list[dict[str, Any]] | None = None) -> None:
        job = self.jobs[job_id]
        if sampling is not None:
            job.spec["sampling"] = sampling
        job.thread = threading.Thread(target=self._stage, args=(job, t0), daemon=True, name=f"stage-{job_id}")
        self._track(job.thread)
        job.thread.start()

    def _stage(self, job: _Job, t0: float) -> None:
        """The stage thread: loader + compute loop, prefill then decode steps; then the report."""
        target = "coord:" + job.coordinator.hex()
        try:
            spans = self._compute(job, t0)
            self._push(target, {"op": "report", "job": job.job, "spans": spans, "resident": sorted(self.resident)})
        except Exception as exc:
            log.warning("agent %s: job %s failed: %s", self.opts.name, job.job, exc)
            self._push(target, {"op": "failed", "job": job.job, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        finally:
            self.jobs.pop(job.job, None)
            self._close_push()

    def _loader(
        self,
        job: _Job,
        t0: float,
        blocks: list[int],
        ready: list[threading.Event],
        spans: list[Any],
        failure: list[BaseException],
    ) -> None:
        from coldpipe.runtime.checkpoint import read_tensor

        model = job.model
        fds: dict[str, int] = {}
        try:
            wait = t0 - time.time()
            if wait > 0:
                time.sleep(wait)
            for i, b in enumerate(blocks):
                if job.abort.is_set():
                    raise RuntimeError("aborted")
                if b in self.resident:
                    ready[i].set()
                    continue
                start = time.time()
                entries = sorted((self.ckpt.tensors[n] for n in self.ckpt.blocks[b]), key=lambda e: (e.file, e.offset))
                tensors = {}
                for e in entries:
                    if e.file not in fds:
                        fds[e.file] = os.open(e.file, os.O_RDONLY)
                        # no readahead: the kernel would read up to read_ahead_kb (8 MiB here) past each
                        # stage's last tensor, bytes of other stages, at this device's read rate
                        os.posix_fadvise(fds[e.file], 0, 0, os.POSIX_FADV_RANDOM)
                    tensors[e.name] = read_tensor(e, fds[e.file])
                model.assign(b, tensors)
                self.resident[b] = model.modules[b]
                spans.append(_span(f"load b{b}", "load", start, time.time(), b, sum(e.nbytes for e in entries)))
                ready[i].set()
            # progress for the coordinator's console: this stage is resident (agent clock)
            self._push("coord:" + job.coordinator.hex(), {"op": "resident", "job": job.job, "t": time.time()})
        except BaseException as exc:
            failure.append(exc)
            for ev in ready:
                ev.set()
        finally:
            for fd in fds.values():
                os.close(fd)
            self._close_push()

    def _next_input(self, job: _Job) -> tuple[dict[str, Any], list[bytes]]:
        deadline = time.monotonic() + INPUT_TIMEOUT_S
        while True:
            if job.abort.is_set():
                raise RuntimeError("aborted")
            try:
                return job.inbox.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no input within {INPUT_TIMEOUT_S:g} s") from None

    def _compute(self, job: _Job, t0: float) -> list[dict[str, Any]]:
        import torch
        from transformers import DynamicCache

        spec, model = job.spec, job.model
        first, last, overlap = int(spec["first"]), int(spec["last"]), str(spec["overlap"])
        blocks = list(range(first, last + 1))
        ready = [threading.Event() for _ in blocks]
        spans: list[dict[str, Any]] = []
        failure: list[BaseException] = []
        loader = threading.Thread(
            target=self._loader, args=(job, t0, blocks, ready, spans, failure), daemon=True, name=f"load-{job.job}"
        )
        self._track(loader)
        loader.start()
        coord = "coord:" + job.coordinator.hex()
        out_target = coord if spec["next"] is None else "peer:" + _route(spec["next"])
        relayed_to = spec["next"]["name"] if spec["next"] is not None and spec["next"].get("relay") else None
        is_last = last == self.ckpt.n_blocks - 1

        def wait_resident(i: int) -> None:
            if ready[i].is_set():
                if failure:
                    raise failure[0]
                return
            start = time.time()
            while not ready[i].wait(0.1):
                if job.abort.is_set():
                    raise RuntimeError("aborted")
            if failure:
                raise failure[0]
            spans.append(_span(f"wait b{blocks[i]}", "wait", start, time.time(), blocks[i]))

        if overlap == "none":  # load-then-compute: tell the coordinator, which sends the prompt once all loaded
            start = time.time()
            for i in range(len(blocks)):
                wait_resident(i)
            self._push(coord, {"op": "loaded", "job": job.job, "t": time.time()})
            spans.append(_span("wait all loaded", "wait", start, time.time()))
        open_job = bool(spec.get("open"))
        samplers: dict[int, Any] = {}
        if is_last and spec.get("sampling") is not None:
            from coldpipe.serve.sampling import Sampler

            samplers = {r: Sampler.from_dict(d) for r, d in enumerate(spec["sampling"])}
        caches: dict[int, Any] = {}
        lens: dict[int, int] = {}
        n_inputs = 0
        while open_job or n_inputs < int(spec["new_tokens"]):
            n_inputs += 1
            start = time.time()
            h, payload = self._next_input(job)
            if h.get("end"):  # an open job's last input: pass it on, then report
                end = {"op": "end" if is_last else "act", "job": job.job, "end": True}
                if relayed_to is not None:
                    end["to"] = relayed_to
                self._push(out_target, end)
                break
            step, req = int(h["step"]), int(h.get("req", 0))
            dtype = getattr(torch, h["dtype"])
            x = torch.frombuffer(bytearray(payload[0]), dtype=dtype).reshape(h["shape"])
            spans.append(
                _span(
                    "recv input" + (f" t{step + 1}" if step else ""), "recv", start, time.time(), None, len(payload[0])
                )
            )
            if first == 0:
                x = x.long()  # (1, q) token ids
            if step == 0:
                lens[req] = int(x.shape[1])
                caches[req] = DynamicCache(config=model.config)
            cache = caches[req]
            q = lens[req] if step == 0 else 1
            pos = 0 if step == 0 else lens[req] + step - 1
            position_ids = torch.arange(pos, pos + q).unsqueeze(0)  # (1, q)
            rope = None
            for i, b in enumerate(blocks):
                if step == 0 and overlap == "layer":
                    wait_resident(i)
                elif step == 0 and overlap == "stage" and i == 0:
                    for k in range(len(blocks)):
                        wait_resident(k)
                if job.abort.is_set():
                    raise RuntimeError("aborted")
                c0, cpu0 = time.time(), time.thread_time()
                if rope is None and 1 <= b <= model.n_layers:
                    rope = model.position_embeddings(x, position_ids)
                x = model.run_block(b, x, position_ids, rope, cache)
                cat = "compute" if step == 0 else "decode"
                spans.append(_span(f"{cat} b{b}", cat, c0, time.time(), b, cpu_s=time.thread_time() - cpu0))
            if is_last and req in samplers:
                x = torch.tensor([[samplers[req](x)]], dtype=torch.int32)  # (1, 1)
            elif is_last:
                x = torch.argmax(x, dim=-1).to(torch.int32).view(1, 1)  # (1, 1)
            x = x.contiguous()
            sent = time.time()
            header = {
                "op": "token" if is_last else "act",
                "job": job.job,
                "step": step,
                "req": req,
                "sent": sent,
                "dtype": str(x.dtype).removeprefix("torch."),
                "shape": list(x.shape),
            }
            if relayed_to is not None:
                header["to"] = relayed_to  # the relay forwards it whole to that agent
            raw = x.view(-1).view(torch.uint8).numpy().tobytes()
            self._push(out_target, header, raw)
            spans.append(_span("send output", "send", sent, time.time(), None, len(raw)))
        loader.join()
        if failure:
            raise failure[0]
        return spans


def _route(nxt: dict[str, Any]) -> str:
    """The peer channel a stage's output goes through: the next agent's own, or the relay's."""
    return f"relay@{nxt['relay']}" if nxt.get("relay") else str(nxt["name"])


def _span(
    name: str,
    cat: str,
    start: float,
    end: float,
    block: int | None = None,
    n_bytes: int | None = None,
    cpu_s: float | None = None,
) -> dict[str, Any]:
    """A span on this agent's clock (absolute ``time.time()`` seconds; the coordinator maps it)."""
    return {"name": name, "cat": cat, "start": start, "end": end, "block": block, "bytes": n_bytes, "cpu": cpu_s}
