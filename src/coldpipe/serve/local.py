"""``coldpipe serve --local``: one persistent process per device of the scenario, on this host (127.0.0.1).

The backend forks the workers (:mod:`.stage_worker`) from a forkserver that imported torch and transformers once,
waits for each to warm up and report its listening port, and sends everyone the ports and the scenario. The
source -- where prompts leave and tokens come back -- is this process: it listens too, the last stage of a
burst connects to it. A burst (:meth:`LocalBackend.run_burst`) tells each stage's worker its blocks, neighbours
and emulation, sends every prompt to the first stage in the burst's order, and then hands each token that comes
back to ``on_token``. A request with a budget (``Burst.budgets``: no stop strings) is fed back by the last stage
itself, straight to the first stage, so its decode steps cross three processes' wake-ups per token on a
3-stage plan instead of four and never wait for this process (HTTP, the tokenizer, the engine); when
``on_token`` says no before the budget ends, the source sends the first stage a ``cancel`` and drops the token
of the step already under way. Other requests' steps are sent by the source after ``on_token``, as before.
When a worker dies or reports an error the burst raises :class:`~coldpipe.serve.BackendFailed` and the backend
restarts every worker (all cold again).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coldpipe.core.types import Plan
from coldpipe.serve import BackendFailed
from coldpipe.serve.protocol import Burst, BurstOutcome
from coldpipe.serve.wire import Peers, listener, recv_frame, send_frame

__all__ = ["LocalBackend"]

SOURCE = "source"  # the peer name of the server in hello frames
_PRELOAD = ["coldpipe.serve.stage_worker", "torch", "transformers", "transformers.models.llama.modeling_llama"]
POLL_S = 0.2


class LocalBackend:
    """Persistent workers for ``devices`` serving ``checkpoint`` (see the module docstring)."""

    def __init__(
        self,
        checkpoint: str | Path,
        devices: tuple[str, ...],
        scenario: Any,
        *,
        timeout_s: float = 60.0,
        wait: bool = True,
    ) -> None:
        """``wait=False`` starts the workers in a background thread; :meth:`wait_ready` joins it."""
        self.checkpoint = str(Path(checkpoint).resolve())
        self.devices = tuple(devices)
        self.scenario = scenario
        self.timeout_s = timeout_s
        self.procs: dict[str, Any] = {}
        self.conns: dict[str, Any] = {}
        self.listener: socket.socket | None = None
        self.peers: Any = None
        self.out: dict[str, socket.socket] = {}
        self.ports: dict[str, int] = {}
        self.cache_dropped = False
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(_PRELOAD)
        self.start_error: BaseException | None = None
        self.starting: threading.Thread | None = None
        if wait:
            self.start()
        else:
            self.starting = threading.Thread(target=self._start_in_background, name="coldpipe-start", daemon=True)
            self.starting.start()

    def _start_in_background(self) -> None:
        try:
            self.start()
        except BaseException as exc:
            self.start_error = exc

    def wait_ready(self) -> None:
        """Every worker warmed up and listening (raises what starting them raised)."""
        if self.starting is not None:
            self.starting.join()
            self.starting = None
        if self.start_error is not None:
            raise self.start_error

    def start(self) -> None:
        import torch  # noqa: F401  (the source handles tensors; not on the first request's critical path)

        from coldpipe.serve import stage_worker

        self.listener = listener()
        self.peers = Peers(self.listener)
        for d in self.devices:
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(target=stage_worker.main, args=(d, self.checkpoint, child), name=f"coldpipe-{d}")
            p.start()
            child.close()
            self.procs[d], self.conns[d] = p, parent
        ports = {SOURCE: int(self.listener.getsockname()[1])}
        for d in self.devices:
            ports[d] = int(self._expect(d, "ready", self.timeout_s))
        self.ports = ports
        for d in self.devices:
            self.conns[d].send(("init", ports, self.scenario.to_dict()))

    def _expect(self, device: str, what: str, timeout_s: float) -> Any:
        conn, proc = self.conns[device], self.procs[device]
        deadline = time.monotonic() + timeout_s
        while not conn.poll(POLL_S):
            if not proc.is_alive():
                raise BackendFailed(f"device {device}'s process died (exit code {proc.exitcode})")
            if time.monotonic() > deadline:
                raise BackendFailed(f"device {device} did not answer within {timeout_s} s")
        try:
            msg = conn.recv()
        except EOFError as exc:
            raise BackendFailed(f"device {device}'s process died") from exc
        if msg[0] == "error":
            raise BackendFailed(f"device {msg[1]}")
        if msg[0] != what:
            raise BackendFailed(f"device {device} said {msg[0]!r}, expected {what!r}")
        return msg[1]

    def devices_up(self) -> tuple[str, ...]:
        return tuple(d for d in self.devices if self.procs.get(d) is not None and self.procs[d].is_alive())

    def prepare(self, plan: Plan, cold: bool) -> None:
        """Each stage's worker builds its stage model now; a cold plan drops the page cache now."""
        from coldpipe.runtime.checkpoint import open_checkpoint
        from coldpipe.runtime.emulation import drop_page_cache

        for st in plan.stages:
            with contextlib.suppress(OSError):  # a worker that just died: the burst will fail and restart them
                self.conns[st.device].send(("prepare", st.first, st.last))
        if cold:
            drop_page_cache(open_checkpoint(self.checkpoint).files)
            self.cache_dropped = True

    def run_burst(self, burst: Burst, on_token: Callable[[int, int], bool]) -> BurstOutcome:
        try:
            return self._run(burst, on_token)
        except BackendFailed:
            self.restart()
            raise
        except (OSError, ConnectionError) as exc:
            self.restart()
            raise BackendFailed(f"the pipeline lost a connection: {exc}") from exc

    def _run(self, burst: Burst, on_token: Callable[[int, int], bool]) -> BurstOutcome:
        import torch

        from coldpipe.core.simulator import transfer_s
        from coldpipe.runtime.checkpoint import open_checkpoint
        from coldpipe.runtime.emulation import drop_page_cache
        from coldpipe.serve.wire import connect

        plan, sc = burst.plan, burst.scenario
        stages = plan.stages
        if burst.drop_cache and not self.cache_dropped:
            drop_page_cache(open_checkpoint(self.checkpoint).files)
        self.cache_dropped = False
        t0 = time.time()
        names = [st.device for st in stages]
        n_req = len(burst.prompts)
        budgets = (tuple(burst.budgets) + (0,) * n_req)[:n_req]
        feedback = any(b > 1 for b in budgets)  # the last stage feeds tokens straight back to the first stage
        for j, st in enumerate(stages):
            spec = {
                "t0": t0,
                "first": st.first,
                "last": st.last,
                "overlap": burst.overlap,
                "emu": burst.emulation[j].to_dict(),
                "links": burst.links,
                "prev": names[j - 1] if j else SOURCE,
                "next": names[j + 1] if j + 1 < len(stages) else SOURCE,
                "prev_dev": names[j - 1] if j else sc.source,
                "next_dev": names[j + 1] if j + 1 < len(stages) else sc.source,
                "sampling": [s.to_dict() for s in burst.sampling],
                "source_dev": sc.source,
                "budgets": list(budgets),
                "eos": burst.eos_id,
                "loop_to": names[0] if feedback and j == len(stages) - 1 else None,
                "loop_from": names[-1] if feedback and j == 0 else None,
            }
            self.conns[st.device].send(("burst", spec))
        if burst.overlap == "none":
            for d in names:
                self._expect(d, "loaded", self.timeout_s)
        if names[0] not in self.out:
            self.out[names[0]] = connect(self.ports[names[0]], SOURCE)
        out = self.out[names[0]]
        for r, p in enumerate(burst.prompts):
            ids = torch.tensor([p], dtype=torch.int32)
            send_frame(
                out,
                {"req": r, "step": 0, "sent": time.time(), "shape": [1, len(p)], "dtype": "int32"},
                memoryview(ids.view(torch.uint8).numpy().reshape(-1)),
            )
        active = set(range(len(burst.prompts)))
        insock = self.peers.get(names[-1], self.timeout_s)
        idle_since = time.monotonic()
        while active:
            if not select.select([insock], [], [], POLL_S)[0]:
                self._check_alive(names)
                if time.monotonic() - idle_since > self.timeout_s:
                    raise BackendFailed(f"no token for {self.timeout_s} s")
                continue
            hdr, buf = recv_frame(insock)
            idle_since = time.monotonic()
            r, k = int(hdr["req"]), int(hdr["step"])
            if r not in active:
                continue  # a step the pipeline had started before on_token said no
            if burst.links:
                wait = float(hdr["sent"]) + transfer_s(sc, names[-1], sc.source, len(buf)) - time.time()
                if wait > 0:
                    time.sleep(wait)
            tok = int.from_bytes(buf[:4], sys.byteorder, signed=True)  # the int32 token id
            fed_back = feedback and k + 1 < budgets[r] and tok != burst.eos_id  # the last stage's rule
            if on_token(r, tok):
                if not fed_back:
                    send_frame(
                        out,
                        {"req": r, "step": k + 1, "sent": time.time(), "shape": [1, 1], "dtype": "int32"},
                        buf[:4],
                    )
            else:
                active.discard(r)
                if fed_back:  # its next step is already on its way: the first stage drops it
                    send_frame(out, {"cancel": r})
        send_frame(out, {"end": True})
        while True:
            if not select.select([insock], [], [], POLL_S)[0]:
                self._check_alive(names)
                continue
            hdr, _ = recv_frame(insock)
            if hdr.get("end"):
                break
        outcome = BurstOutcome(t0)
        for d in names:
            info = self._expect(d, "done", self.timeout_s)
            outcome.loaded_bytes[d] = int(info["loaded_bytes"])
            if info["load_end_s"] is not None:
                outcome.load_end_s[d] = float(info["load_end_s"])
        return outcome

    def _check_alive(self, names: list[str]) -> None:
        for d in names:
            if not self.procs[d].is_alive():
                raise BackendFailed(f"device {d}'s process died (exit code {self.procs[d].exitcode})")
            if self.conns[d].poll():
                msg = self.conns[d].recv()
                if msg[0] == "error":
                    raise BackendFailed(f"device {msg[1]}")

    def unload(self) -> dict[str, int]:
        for d in self.devices:
            self.conns[d].send(("unload",))
        return {d: int(self._expect(d, "unloaded", self.timeout_s)) for d in self.devices}

    def restart(self) -> None:
        """Stop every worker and start fresh ones (nothing resident)."""
        self.close()
        self.start()

    def close(self) -> None:
        if self.starting is not None:
            self.starting.join()
            self.starting = None
        for conn in self.conns.values():
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
        deadline = time.monotonic() + 5.0
        for p in self.procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        for conn in self.conns.values():
            conn.close()
        for sock in [*self.out.values(), *(self.peers.socks.values() if self.peers else ()), self.listener]:
            if sock is not None:
                sock.close()
        self.procs, self.conns, self.out = {}, {}, {}
        self.listener = self.peers = None
