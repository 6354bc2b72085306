"""One device's persistent process: keeps the blocks it loaded resident between bursts.

Started once by :class:`~coldpipe.serve.local.LocalBackend` (forked from a forkserver that imported torch and
transformers), it warms its kernels, listens on 127.0.0.1 and waits for commands on its control pipe:

- ``("init", ports, scenario)``: every peer's listening port and the scenario (link times, block sizes);
- ``("burst", spec)``: play one stage of a burst. Blocks of the stage that are resident are used as they are;
  the others are read by a loader thread from ``t0 + startup`` (paced to the device's read rate, as
  :mod:`coldpipe.runtime.emulation` describes) while the compute loop already serves the requests whose
  blocks are there (overlap ``layer``: block by block; ``stage``: the whole stage; ``none``: the worker reports
  ``loaded`` and the source sends nothing before every stage did). Resident blocks outside the new stage are
  dropped (``Scenario.after``: a device holds its last stage). Answers ``("done", info)``;
- ``("unload",)``: drop every block (``--idle-unload``); ``("stop",)``: exit.

The compute loop is the runtime's (:func:`coldpipe.runtime.worker`): the same per-block emulation (compute
stretched by ``slowdown``, decode steps at least ``(weights + KV) / mem_bandwidth``) and the link time slept by
the receiver from the frame's send time. The last stage samples the token (:mod:`.sampling`) and sends only its
id back to the source, 4 bytes, as the model's ``token_bytes`` says. While a request's budget lasts (``n <
budget`` tokens and not the end token) it first sends the same id straight to the first stage as the request's
next step, on its own connection (hello name ``NAME/loop``; a single stage keeps it in a local queue); the first
stage sleeps the link time of the model's path, last stage -> source -> first stage, and drops the fed-back steps
of requests the source cancelled. At the end of a burst the last stage sends ``end`` on that connection too, and
the first stage reads it to its end, so no fed-back frame outlives the burst.
"""

from __future__ import annotations

import gc
import os
import select
import socket
import sys
import threading
import time
from collections import deque
from typing import Any

__all__ = ["LOOP", "main"]

LOOP = "/loop"  # the hello name's suffix of the connection on which the last stage feeds tokens back


def _log(line: str) -> None:
    print(f"coldpipe serve: {line}", file=sys.stderr, flush=True)


class _Worker:
    def __init__(self, name: str, checkpoint: str, conn: Any) -> None:
        import torch

        from coldpipe.runtime.checkpoint import open_checkpoint, torch_dtype
        from coldpipe.serve.wire import Peers, listener

        self.name, self.conn = name, conn
        self.ckpt = open_checkpoint(checkpoint)
        self.dtype = torch_dtype(self.ckpt.dtype)
        torch.set_num_threads(1)
        self.listener = listener()
        self.peers = Peers(self.listener)
        self.out: dict[str, socket.socket] = {}
        self.ports: dict[str, int] = {}
        self.scenario: Any = None
        self.held: dict[int, dict[str, Any]] = {}  # resident blocks: block -> its tensors
        self.prepared: Any = None  # the stage model of the next burst, built ahead (see "prepare")
        self.last_model: Any = None  # the last burst's stage model, every block resident: reused for the same stage

    def out_sock(self, peer: str, channel: str = "") -> socket.socket:
        """The connection to ``peer``; ``channel`` ``LOOP`` is the last stage's own one to the first stage."""
        from coldpipe.serve.wire import connect

        if peer + channel not in self.out:
            self.out[peer + channel] = connect(self.ports[peer], self.name + channel)
        return self.out[peer + channel]

    def loop(self) -> None:
        import torch

        from coldpipe.core.types import Scenario
        from coldpipe.runtime.stage_model import StageModel

        StageModel(self.ckpt.config, 1, 0, self.dtype).warm_up(16)
        _log(f"{self.name}: ready, {torch.get_num_threads()} torch thread(s)")
        self.conn.send(("ready", int(self.listener.getsockname()[1])))
        while True:
            msg = self.conn.recv()
            if msg[0] == "init":
                self.ports, self.scenario = dict(msg[1]), Scenario.from_dict(msg[2])
            elif msg[0] == "prepare":  # the next burst's stage, built before the request arrives
                first, last = int(msg[1]), int(msg[2])
                m = self.last_model
                reuse = m is not None and (m.first, m.last) == (first, last)
                if not reuse:  # (stage_model may drop blocks the last model has)
                    self.last_model = None
                self.prepared = m if reuse else self.stage_model(first, last)
            elif msg[0] == "burst":
                try:
                    self.conn.send(("done", self.burst(msg[1])))
                except Exception as exc:  # the backend gets one line; it restarts the pipeline
                    self.conn.send(("error", f"{self.name}: {type(exc).__name__}: {str(exc)[:300]}"))
                    return
            elif msg[0] == "unload":
                freed = sum(t.numel() * t.element_size() for ts in self.held.values() for t in ts.values())
                self.held.clear()
                self.prepared = self.last_model = None
                gc.collect()
                _log(f"{self.name}: unloaded {freed} bytes")
                self.conn.send(("unloaded", freed))
            elif msg[0] == "stop":
                return

    def _loader(
        self,
        model: Any,
        missing: list[int],
        spec: dict[str, Any],
        ready: dict[int, threading.Event],
        state: dict[str, Any],
    ) -> None:
        from coldpipe.runtime.checkpoint import read_tensor
        from coldpipe.runtime.emulation import Pacer

        t0, emu = float(spec["t0"]), spec["emu"]
        try:
            wait = t0 + float(emu["startup_s"]) - time.time()
            if wait > 0:
                time.sleep(wait)
            pacer = Pacer(emu["read_bytes_per_s"])
            fds: dict[str, int] = {}
            try:
                for b in missing:
                    tensors = {}
                    entries = sorted(
                        (self.ckpt.tensors[n] for n in self.ckpt.blocks[b]), key=lambda e: (e.file, e.offset)
                    )
                    for e in entries:
                        if e.file not in fds:
                            fds[e.file] = os.open(e.file, os.O_RDONLY)
                        tensors[e.name] = read_tensor(e, fds[e.file], pacer.pace)
                    model.assign(b, tensors)
                    self.held[b] = tensors
                    n = sum(e.nbytes for e in entries)
                    state["bytes"] += n
                    state["load_end"] = time.time() - t0
                    _log(f"{self.name}: block {b} resident ({n} bytes) at {state['load_end']:.3f} s")
                    ready[b].set()
            finally:
                for fd in fds.values():
                    os.close(fd)
        except BaseException as exc:
            state["failure"] = exc
            for ev in ready.values():
                ev.set()

    def stage_model(self, first: int, last: int) -> Any:
        """Blocks ``first..last`` with the resident ones assigned; the others are dropped (a device holds its
        latest stage only, as ``Scenario.after`` assumes)."""
        from coldpipe.runtime.stage_model import StageModel

        for b in [b for b in self.held if b < first or b > last]:
            del self.held[b]
        model = StageModel(self.ckpt.config, first, last, self.dtype)
        for b in range(first, last + 1):
            if b in self.held:
                model.assign(b, self.held[b])
        return model

    def burst(self, spec: dict[str, Any]) -> dict[str, Any]:
        import torch
        from transformers import DynamicCache

        from coldpipe.core.simulator import transfer_s
        from coldpipe.serve.sampling import Sampler
        from coldpipe.serve.wire import recv_frame, send_frame

        first, last, overlap, emu = int(spec["first"]), int(spec["last"]), spec["overlap"], spec["emu"]
        blocks = list(range(first, last + 1))
        prepared, self.prepared, self.last_model = self.prepared, None, None
        model = prepared if prepared is not None and (prepared.first, prepared.last) == (first, last) else None
        if model is None:
            model = self.stage_model(first, last)
        ready = {b: threading.Event() for b in blocks}
        for b in blocks:
            if b in self.held:
                ready[b].set()
        missing = [b for b in blocks if b not in self.held]
        state: dict[str, Any] = {"bytes": 0, "load_end": None, "failure": None}
        loader = None
        loop_to, loop_from = spec.get("loop_to"), spec.get("loop_from")
        # the last stage connects its feedback connection first: the first stage waits for it below
        loop_out = self.out_sock(loop_to, LOOP) if loop_to is not None and loop_to != self.name else None
        if missing:
            _log(f"{self.name}: cold start of blocks {missing[0]}-{missing[-1]} ({len(missing)} to load)")
            loader = threading.Thread(target=self._loader, args=(model, missing, spec, ready, state), daemon=True)
            loader.start()

        def wait_resident(b: int) -> None:
            ready[b].wait()
            if state["failure"] is not None:
                raise state["failure"]

        if overlap == "none":
            for b in blocks:
                wait_resident(b)
            self.conn.send(("loaded", time.time()))
        sc = self.scenario
        my_dev, prev_dev, src_dev = self.name, spec["prev_dev"], spec.get("source_dev", sc.source)
        is_last = last == self.ckpt.n_blocks - 1
        samplers = [Sampler.from_dict(d) for d in spec["sampling"]] if is_last else []
        budgets, eos = [int(n) for n in spec.get("budgets", ())], spec.get("eos")
        mem_floor = {b: 0.0 for b in blocks}
        if emu.get("mem_bandwidth"):
            mem_floor = {b: (sc.blocks[b].weight_bytes + sc.blocks[b].kv_bytes) / emu["mem_bandwidth"] for b in blocks}
        slowdown, clock = float(emu["slowdown"]), emu.get("compute_clock", "cpu")
        insock = self.peers.get(spec["prev"], 30.0)
        outsock = self.out_sock(spec["next"])
        loop_in = self.peers.get(loop_from + LOOP, 30.0) if loop_from is not None and loop_from != self.name else None
        socks = [insock] if loop_in is None else [insock, loop_in]
        loopback: deque[tuple[dict[str, Any], bytearray]] = deque()  # a single stage's own fed-back tokens
        cancelled: set[int] = set()  # the source's cancels (first stage): their fed-back steps are dropped
        source_ended = False  # (first stage with feedback) the source's end came: drain the feedback to its end
        caches: dict[int, Any] = {}
        lens: dict[int, int] = {}
        while True:
            if loopback and (source_ended or not select.select(socks, [], [], 0)[0]):
                (hdr, buf), looped = loopback.popleft(), True
            else:
                readable = socks if len(socks) == 1 else select.select(socks, [], [])[0]
                sock = insock if insock in readable else readable[0]
                hdr, buf = recv_frame(sock)
                looped = sock is not insock
            if hdr.get("end"):
                if looped:  # the last stage's end on the feedback connection: nothing more can come back
                    break
                send_frame(outsock, {"end": True})
                if loop_out is not None:
                    send_frame(loop_out, {"end": True})
                if loop_in is None:
                    break
                source_ended, socks = True, [loop_in]
                continue
            if "cancel" in hdr:
                cancelled.add(int(hdr["cancel"]))
                continue
            if looped and (source_ended or int(hdr["req"]) in cancelled):
                continue  # a step the pipeline started before the source said no: dropped
            if spec["links"]:
                n = len(buf)  # fed back: the token's path through the source, as the model has it
                link_s = (
                    transfer_s(sc, loop_from, src_dev, n) + transfer_s(sc, src_dev, my_dev, n)
                    if looped
                    else transfer_s(sc, prev_dev, my_dev, n)
                )
                wait = float(hdr["sent"]) + link_s - time.time()
                if wait > 0:
                    time.sleep(wait)
            r, k = int(hdr["req"]), int(hdr["step"])
            x = torch.frombuffer(buf, dtype=getattr(torch, hdr["dtype"])).reshape(hdr["shape"]) if len(buf) else None
            if first == 0:
                x = x.long()
            if k == 0:
                lens[r] = int(x.shape[1])
                caches[r] = DynamicCache(config=model.config)
            q = lens[r] if k == 0 else 1
            pos = 0 if k == 0 else lens[r] + k - 1
            position_ids = torch.arange(pos, pos + q).unsqueeze(0)  # (1, q)
            rope = None
            for i, b in enumerate(blocks):
                if k == 0 and (overlap == "layer" or (overlap == "stage" and i == 0)):
                    for bb in [b] if overlap == "layer" else blocks:
                        wait_resident(bb)
                c0, cpu0 = time.perf_counter(), time.thread_time()
                if rope is None and 1 <= b <= model.n_layers:
                    rope = model.position_embeddings(x, position_ids)
                x = model.run_block(b, x, position_ids, rope, caches[r])
                wall_s, cpu_s = time.perf_counter() - c0, time.thread_time() - cpu0
                target_s = (cpu_s if clock == "cpu" else wall_s) * slowdown if slowdown > 1.0 else 0.0
                if k > 0:
                    target_s = max(target_s, mem_floor[b])
                if target_s > wall_s:
                    time.sleep(target_s - wall_s)
            if is_last:
                tok = samplers[r](x)
                out = torch.tensor([tok], dtype=torch.int32)
            else:
                out = x.contiguous()
            payload = memoryview(out.view(-1).view(torch.uint8).numpy())
            if is_last and loop_to is not None and k + 1 < (budgets[r] if r < len(budgets) else 0) and tok != eos:
                # the next step starts at once (first the first stage's frame: it is on the critical path)
                nxt = {"req": r, "step": k + 1, "sent": time.time(), "shape": [1, 1], "dtype": "int32"}
                if loop_out is None:
                    loopback.append((nxt, bytearray(payload)))
                else:
                    send_frame(loop_out, nxt, payload)
            send_frame(
                outsock,
                {"req": r, "step": k, "sent": time.time(), "shape": list(out.shape), "dtype": str(out.dtype)[6:]},
                payload,
            )
        if loader is not None:
            loader.join()
        if state["failure"] is not None:
            raise state["failure"]
        caches.clear()
        self.last_model = model  # every block of the stage is resident now (or the burst raised above)
        return {"device": self.name, "loaded_bytes": state["bytes"], "load_end_s": state["load_end"]}


def main(name: str, checkpoint: str, conn: Any) -> None:
    """The process's entry point; one error line on stderr and exit code 1 when it cannot go on."""
    try:
        _Worker(name, checkpoint, conn).loop()
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # the server went away or is stopping: nothing to report
    except BaseException as exc:
        print(f"coldpipe: error: serve worker {name}: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)
