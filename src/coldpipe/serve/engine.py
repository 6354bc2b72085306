"""The serving state machine: plans, the bounded queue, bursts, idle unload, predictions and metrics.

**Plans.** At start the engine plans the cold start (``plan(Problem(scenario, overlap))``, nothing resident)
before any request arrives. After a burst has run plan ``P``, every device of ``P`` holds its stage and its
process is up: the next plan is planned for ``scenario.after(P)`` (``coldpipe plan --after`` semantics) right
after the burst, so planning is never on a request's critical path. ``--idle-unload`` frees every device and goes
back to the cold plan. The scenario only holds the devices the backend reports up; when that set changes the
engine re-plans; when no plan fits, generation requests get 503 until one does.

**Bursts.** The engine thread takes every request waiting when the pipeline becomes free (after a gather window
of ``gather_s``, so requests sent together are served together), up to ``max_burst``, in arrival order. The
prompts enter the first stage in that order; every stage serves the jobs (prefills and decode steps) in the
order the first stage received them (the simulator's burst semantics, :func:`~coldpipe.core.simulator.
burst_schedule`). A request that finishes (length, stop, EOS) or whose client went away sends no further decode
step, which frees its place; requests that arrive during a burst wait for the next one. A request without stop
strings ends at its length or the end token, which the backend can tell without the engine (``Burst.budgets``):
its tokens still all come to :meth:`Engine._token`, but the next step does not wait for it.

**Predictions** all come from the simulator: a burst of ``R`` requests is predicted as ``R`` identical requests
of the burst's longest prompt (:func:`~coldpipe.core.simulator.burst_completions_s`), with the blocks rebuilt
for that prompt length when the scenario's blocks are the checkpoint architecture's (else the scenario's own
blocks, planned for its prompt length). A request's predicted TTFT is its measured wait before the burst started
plus the simulator's first-token completion of its place in the burst.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coldpipe.core.architectures import DTYPE_BYTES, Architecture, blocks_for
from coldpipe.core.simulator import burst_completions_s
from coldpipe.core.types import Overlap, Plan, Scenario
from coldpipe.errors import ColdpipeError
from coldpipe.planning import Problem, Solution, plan
from coldpipe.runtime.emulation import emulation_for
from coldpipe.serve import BackendFailed
from coldpipe.serve.metrics import Metrics
from coldpipe.serve.protocol import Backend, Burst, Sampling

__all__ = ["Engine", "NoPlan", "QueueFull", "Request"]

log = logging.getLogger("coldpipe.serve")


class QueueFull(ColdpipeError):
    """The bounded queue is full; ``retry_after_s`` is a guess of when a place frees."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"the queue is full; retry in {retry_after_s:.0f} s")


class NoPlan(ColdpipeError):
    """No plan fits the devices that are up."""


@dataclass
class Request:
    """One generation request inside the server; events go to ``emit`` (called from the engine thread)."""

    prompt_ids: tuple[int, ...]
    max_tokens: int
    sampling: Sampling
    stop: tuple[str, ...] = ()
    emit: Callable[[tuple[Any, ...]], None] = lambda _event: None
    arrived: float = field(default_factory=time.time)
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent_chars: int = 0
    finish_reason: str | None = None
    cold: bool = False
    ttft_measured_s: float | None = None
    ttft_predicted_s: float | None = None

    def cancel(self) -> None:
        """The client went away: no further decode step is sent for it."""
        self.cancelled = True


def _dtype_of(scenario: Scenario, arch: Architecture) -> str | None:
    """The dtype whose analytic blocks are exactly the scenario's (so they can be rebuilt per prompt length)."""
    wl = scenario.workload
    for dtype in DTYPE_BYTES:
        try:
            b = blocks_for(
                arch, prompt_tokens=wl.prompt_tokens, new_tokens=wl.new_tokens, dtype=dtype, token_bytes=wl.token_bytes
            )
        except ColdpipeError:
            continue
        if b == scenario.blocks:
            return dtype
    return None


class Engine:
    """See the module docstring. ``tokenizer`` decodes the tokens; ``backend`` runs the bursts."""

    def __init__(
        self,
        backend: Backend,
        scenario: Scenario,
        tokenizer: Any,
        arch: Architecture,
        *,
        overlap: Overlap = "layer",
        host_flops: float | None = None,
        emulate: bool = True,
        max_queue: int = 64,
        max_burst: int = 8,
        idle_unload_s: float | None = None,
        gather_s: float = 0.002,
    ) -> None:
        self.backend, self.base, self.tok, self.arch = backend, scenario, tokenizer, arch
        self.overlap: Overlap = overlap
        self.host_flops, self.emulate = host_flops, emulate
        self.max_queue, self.max_burst, self.idle_unload_s, self.gather_s = (
            max_queue,
            max_burst,
            idle_unload_s,
            gather_s,
        )
        self.dtype = _dtype_of(scenario, arch)
        self.eos_id = getattr(tokenizer, "eos_token_id", None)
        self.metrics = Metrics([d.name for d in scenario.devices])
        self.queue: deque[Request] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.devices_changed_flag = False  # set by the backend's thread (devices_changed): re-plan when idle
        self.resident: Plan | None = None  # the plan whose stages the devices hold (None: cold)
        self.up: tuple[str, ...] = ()
        self.solution: Solution | None = None
        self.no_plan: str = ""
        self.last_active = time.monotonic()
        self.last_burst_s = 1.0
        self.bursts = 0
        self.said: tuple[str, str] = ("", "")
        self.running: list[Request] = []  # the burst in the pipeline now
        self.replan()
        self.thread = threading.Thread(target=self._loop, name="coldpipe-engine", daemon=True)

    # -- planning ---------------------------------------------------------------------------------------------
    def scenario_now(self) -> Scenario:
        """The base scenario with the devices that are up, after the resident plan (if any)."""
        sc = self.base.replace(devices=tuple(d for d in self.base.devices if d.name in self.up))
        if self.resident is not None and all(st.device in self.up for st in self.resident.stages):
            return sc.after(self.resident)
        return sc

    def replan(self) -> None:
        self.up = self.backend.devices_up()
        if self.resident is not None and any(st.device not in self.up for st in self.resident.stages):
            self.resident = None
        try:
            if not self.up:
                raise NoPlan("no device is up")
            sc = self.scenario_now()
            self.solution = plan(Problem(sc, self.overlap))
            self.no_plan = ""
            self.backend.prepare(self.solution.plan, all(not d.resident for d in sc.devices))
            said = ("cold" if self.resident is None else "warm", str(self.solution.plan))
            if said != self.said:  # log a plan when it changes, not after every burst
                self.said = said
                log.info(
                    "coldpipe serve: %s plan %s, predicted TTFT %.3f s (%s)",
                    *said,
                    self.solution.value_s,
                    self.solution.method,
                )
        except ColdpipeError as exc:
            self.solution, self.no_plan = None, str(exc)
            log.warning("coldpipe serve: no plan fits the devices that are up: %s", exc)

    def plan_info(self) -> dict[str, Any]:
        """``GET /v1/coldpipe/plan``: the current plan, its simulated timeline, the state."""
        sol = self.solution
        return {
            "state": "cold" if self.resident is None else "warm",
            "devices_up": list(self.up),
            "overlap": self.overlap,
            "plan": None if sol is None else str(sol.plan),
            "stages": None if sol is None else sol.plan.to_dict(),
            "predicted_ttft_s": None if sol is None else sol.value_s,
            "method": None if sol is None else sol.method,
            "timeline": None if sol is None or sol.timeline is None else sol.timeline.to_dict(),
            "resident_plan": None if self.resident is None else str(self.resident),
            "no_plan": self.no_plan or None,
            "queue_length": len(self.queue),
            "bursts": self.bursts,
            "predictions_rebuild_blocks": self.dtype is not None,
        }

    def burst_scenario(self, sc: Scenario, prompt_tokens: int, requests: int) -> Scenario:
        wl = {
            "prompt_tokens": prompt_tokens,
            "new_tokens": 1,
            "requests": requests,
            "prompt_bytes": 4.0 * prompt_tokens,
        }
        if self.dtype is None:
            return sc.replace(workload={"requests": requests})
        blocks = blocks_for(
            self.arch, prompt_tokens=prompt_tokens, new_tokens=1, dtype=self.dtype, token_bytes=sc.workload.token_bytes
        )
        return sc.replace(blocks=blocks, workload=wl)

    # -- requests ---------------------------------------------------------------------------------------------
    def submit(self, req: Request) -> None:
        """Queue ``req`` (raises :class:`QueueFull` or :class:`NoPlan`)."""
        with self.cond:
            if self.solution is None:
                raise NoPlan(self.no_plan or "no plan fits the devices that are up")
            if len(self.queue) >= self.max_queue:
                self.metrics.error("queue_full")
                raise QueueFull(max(1.0, self.last_burst_s * (1 + len(self.queue) // self.max_burst)))
            self.queue.append(req)
            self.metrics.queue_length = len(self.queue)
            self.cond.notify_all()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            for r in self.queue:
                r.emit(("error", 503, "the server is shutting down", "server_error"))
            self.queue.clear()
            for r in self.running:  # the burst ends at each request's next token
                if r.finish_reason is None:
                    r.emit(("error", 503, "the server is shutting down", "server_error"))
                r.cancel()
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self.cond:
                timeout = None
                if self.idle_unload_s is not None and self.resident is not None:
                    timeout = max(0.0, self.last_active + self.idle_unload_s - time.monotonic())
                self.cond.wait_for(
                    lambda: self.stopping or bool(self.queue) or self.devices_changed_flag, timeout=timeout
                )
                if self.stopping:
                    return
                changed, self.devices_changed_flag = self.devices_changed_flag, False
                replan_now = changed and not self.queue
                if not self.queue and not replan_now:
                    self._idle_unload()
                    continue
            if replan_now:  # outside the lock: requests keep arriving while the backend prepares
                self.replan()
                continue
            time.sleep(self.gather_s)  # requests sent together arrive within this window
            with self.cond:
                burst: list[Request] = []
                while self.queue and len(burst) < self.max_burst:
                    r = self.queue.popleft()
                    if not r.cancelled:
                        burst.append(r)
                self.metrics.queue_length = len(self.queue)
            if burst:
                self.running = burst
                try:
                    self._run(burst)
                except Exception as exc:  # never let the engine thread die: fail this burst, go on cold
                    log.exception("coldpipe serve: internal error in a burst")
                    self.metrics.error("internal")
                    for r in burst:
                        if r.finish_reason is None:
                            r.emit(("error", 500, f"internal error: {type(exc).__name__}: {exc}", "server_error"))
                    self.resident = None
                    with contextlib.suppress(Exception):
                        self.replan()
                self.running = []
            self.last_active = time.monotonic()

    def devices_changed(self) -> None:
        """The backend's set of devices up changed (from any thread): the engine re-plans while idle, so the
        next request does not plan on its critical path (a burst that finds it changed re-plans first)."""
        with self.cond:
            self.devices_changed_flag = True
            self.cond.notify_all()

    def _idle_unload(self) -> None:
        freed = self.backend.unload()
        log.info("coldpipe serve: idle for %.1f s: unloaded %s bytes; cold again", self.idle_unload_s, freed)
        self.metrics.unloads += 1
        self.resident = None
        self.replan()

    def _run(self, burst: list[Request]) -> None:
        if self.solution is None or self.backend.devices_up() != self.up:
            self.replan()
        if self.solution is None:
            for r in burst:
                r.emit(("error", 503, f"no plan fits the devices that are up: {self.no_plan}", "server_error"))
            return
        the_plan = self.solution.plan
        sc = self.scenario_now()
        cold = any(not sc.device(st.device).holds(b) for st in the_plan.stages for b in range(st.first, st.last + 1))
        prompts = tuple(r.prompt_ids for r in burst)
        t_start = time.time()
        try:
            pred = burst_completions_s(
                self.burst_scenario(sc, max(len(p) for p in prompts), len(burst)), the_plan, self.overlap
            )
        except ColdpipeError:
            pred = None
        for i, r in enumerate(burst):
            r.cold = cold
            r.ttft_predicted_s = None if pred is None else (t_start - r.arrived) + pred[i]
        emu = tuple(emulation_for(sc, the_plan, self.host_flops, enabled=self.emulate))
        job = Burst(
            the_plan,
            self.overlap,
            sc,
            emu,
            prompts,
            tuple(r.sampling for r in burst),
            links=self.emulate,
            drop_cache=cold and self.emulate,
            # without stop strings a request ends at its length or the end token, which the last stage can
            # tell by itself: it feeds such tokens straight back to the first stage (the engine is off the
            # decode steps' path); a stop string needs the text, so each of those steps waits for on_token
            budgets=tuple(0 if r.stop else r.max_tokens for r in burst),
            eos_id=self.eos_id,
        )

        def on_token(i: int, tok: int) -> bool:
            return self._token(burst[i], tok)

        log.info(
            "coldpipe serve: burst of %d request(s), %s, plan %s, %.1f ms after the first arrived",
            len(burst),
            "cold" if cold else "warm",
            the_plan,
            1e3 * (time.time() - burst[0].arrived),
        )
        t0 = time.monotonic()
        try:
            outcome = self.backend.run_burst(job, on_token)
        except BackendFailed as exc:
            log.error("coldpipe serve: the burst failed: %s", exc)
            self.metrics.error("device_failed")
            for r in burst:
                if r.finish_reason is None:
                    r.emit(("error", 503, f"a device failed during the request: {exc}", "server_error"))
            self.resident = None
            self.replan()
            return
        self.last_burst_s = time.monotonic() - t0
        self.bursts += 1
        for d, n in outcome.loaded_bytes.items():
            self.metrics.loaded_bytes[d] = self.metrics.loaded_bytes.get(d, 0) + n
        for r in burst:
            if r.finish_reason is None:  # cancelled by its client
                r.finish_reason = "cancelled"
                self.metrics.error("client_disconnected")
        self.resident = the_plan
        self.replan()

    def _token(self, r: Request, tok: int) -> bool:
        """A token of ``r`` came back: decode, check stops, emit the new text; whether it wants another."""
        now = time.time()
        if not r.tokens:
            r.ttft_measured_s = now - r.arrived
            self.metrics.observe_ttft(r.cold, r.ttft_measured_s, r.ttft_predicted_s)
            r.emit(("first",))
        if r.cancelled:
            return False
        r.tokens.append(tok)
        if tok == self.eos_id:
            r.tokens.pop()
            return self._finish(r, "stop")
        text = self.tok.decode(r.tokens, skip_special_tokens=True)
        for s in r.stop:
            k = text.find(s, max(0, len(r.text) - len(s)))
            if k >= 0:
                r.text = text[:k]
                return self._finish(r, "stop")
        r.text = text
        if len(r.tokens) >= r.max_tokens:
            return self._finish(r, "length")
        hold = max((len(s) - 1 for s in r.stop), default=0)  # a stop string may still be forming
        end = len(text) - hold
        while end > r.sent_chars and text[end - 1] == "\ufffd":  # an incomplete UTF-8 sequence
            end -= 1
        if end > r.sent_chars:
            r.emit(("text", text[r.sent_chars : end]))
            r.sent_chars = end
        return True

    def _finish(self, r: Request, reason: str) -> bool:
        if len(r.text) > r.sent_chars:
            r.emit(("text", r.text[r.sent_chars :]))
            r.sent_chars = len(r.text)
        r.finish_reason = reason
        self.metrics.completed += 1
        self.metrics.completion_tokens += len(r.tokens)
        r.emit(("done", reason))
        return False
