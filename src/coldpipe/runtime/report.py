"""Measured vs predicted: a run's spans against the simulator's timeline of the same scenario and plan.

:func:`build_report` asks the simulator itself (:func:`~coldpipe.core.simulator.simulate` for the stages and
the TTFT, :func:`~coldpipe.core.simulator.burst_schedule` for the last tokens,
:func:`~coldpipe.core.simulator.burst_completions_s` for a burst's first tokens); nothing here models time.
Per stage: load end (last ``load`` span), compute (sum of ``compute`` spans of the prefill), idle waiting for
weights (``wait`` spans; the simulator's ``wait_weights``), arrival of the input and end of the compute.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from coldpipe.core.simulator import BurstSchedule, burst_completions_s, burst_schedule, simulate
from coldpipe.core.types import Overlap, Plan, Scenario
from coldpipe.runtime.trace import Span, chrome_trace

__all__ = ["RunReport", "StageReport", "build_report", "predicted_tokens", "result_from_trace"]


@dataclass(frozen=True)
class StageReport:
    """One stage, measured (``m_``) and predicted (``p_``); seconds since the request."""

    device: str
    first: int
    last: int
    m_load_end_s: float
    p_load_end_s: float
    m_compute_s: float
    p_compute_s: float
    m_idle_weights_s: float
    p_idle_weights_s: float
    m_arrival_s: float
    p_arrival_s: float
    m_compute_end_s: float
    p_compute_end_s: float


@dataclass(frozen=True)
class RunReport:
    measured_ttft_s: float
    predicted_ttft_s: float
    measured_e2e_s: float | None
    token_ids: list[int]
    stages: tuple[StageReport, ...]
    trace: dict[str, Any]
    # the simulator's time of the run's last token: TTFT + (new_tokens - 1) x TPOT, or a burst's last answer
    predicted_e2e_s: float | None = None
    # a burst: each request's first token at the source, measured and predicted (burst_completions_s)
    measured_completions_s: tuple[float, ...] = ()
    predicted_completions_s: tuple[float, ...] = ()
    first_token_ids: tuple[int, ...] = ()
    # a decoding burst: each request's last token at the source (burst_schedule's last_token_s)
    measured_last_tokens_s: tuple[float, ...] = ()
    predicted_last_tokens_s: tuple[float, ...] = ()

    @property
    def ratio(self) -> float:
        """Measured / predicted TTFT (1.0 = the model was exact)."""
        return self.measured_ttft_s / self.predicted_ttft_s

    @property
    def summary(self) -> list[dict[str, Any]]:
        """The headline figures, measured against predicted, one table: TTFT, then TPOT and E2E of a decoded
        answer (when the simulator can time decode steps), or a burst's first and last token of each request
        with their max and mean."""
        rows = [("TTFT", self.measured_ttft_s, self.predicted_ttft_s)]
        n = len(self.token_ids)
        single = len(self.measured_completions_s) < 2
        if single and n > 1 and self.measured_e2e_s is not None and self.predicted_e2e_s is not None:
            rows.append(
                (
                    f"TPOT (mean of {n - 1} step{'s' if n > 2 else ''})",
                    (self.measured_e2e_s - self.measured_ttft_s) / (n - 1),
                    (self.predicted_e2e_s - self.predicted_ttft_s) / (n - 1),
                )
            )
            rows.append((f"E2E ({n} tokens)", self.measured_e2e_s, self.predicted_e2e_s))
        burst = self.burst
        if burst is not None:
            for r, (m, p) in enumerate(zip(burst["measured"], burst["predicted"], strict=True)):
                rows.append((f"request {r + 1}: first token", m, p))
            rows.append(("burst: last first token (max)", burst["measured_max"], burst["predicted_max"]))
            rows.append(("burst: mean first token", burst["measured_mean"], burst["predicted_mean"]))
            if "measured_answers" in burst:
                for r, (m, p) in enumerate(zip(burst["measured_answers"], burst["predicted_answers"], strict=True)):
                    rows.append((f"request {r + 1}: last token", m, p))
                rows.append(("burst: last answer (max E2E)", burst["measured_e2e_max"], burst["predicted_e2e_max"]))
                rows.append(("burst: mean E2E", burst["measured_e2e_mean"], burst["predicted_e2e_mean"]))
        return [{"what": w, "measured": m, "predicted": p, "ratio": m / p} for w, m, p in rows]

    @property
    def burst(self) -> dict[str, Any] | None:
        """Measured and predicted first-token completions of a burst, with their max and mean (None: 1 request)."""
        m, p = self.measured_completions_s, self.predicted_completions_s
        if len(m) < 2:
            return None
        return {
            "requests": len(m),
            "measured": list(m),
            "predicted": list(p),
            "first_token_ids": list(self.first_token_ids),
            "measured_max": max(m),
            "predicted_max": max(p),
            "ratio_max": max(m) / max(p),
            "measured_mean": sum(m) / len(m),
            "predicted_mean": sum(p) / len(p),
            "ratio_mean": (sum(m) / len(m)) / (sum(p) / len(p)),
        } | self._answers()

    def _answers(self) -> dict[str, Any]:
        """A decoding burst's last tokens, measured and predicted (empty when not decoding or not predicted)."""
        m, p = self.measured_last_tokens_s, self.predicted_last_tokens_s
        if not p:
            return {}
        return {
            "measured_answers": list(m),
            "predicted_answers": list(p),
            "measured_e2e_max": max(m),
            "predicted_e2e_max": max(p),
            "measured_e2e_mean": sum(m) / len(m),
            "predicted_e2e_mean": sum(p) / len(p),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "measured_ttft": self.measured_ttft_s,
            "predicted_ttft": self.predicted_ttft_s,
            "ratio": self.ratio,
            "measured_e2e": self.measured_e2e_s,
            "predicted_e2e": self.predicted_e2e_s,
            "token_ids": self.token_ids,
            "burst": self.burst,
            "summary": self.summary,
            "stages": [
                {
                    "device": s.device,
                    "first": s.first,
                    "last": s.last,
                    "measured": {
                        "load_end": s.m_load_end_s,
                        "compute": s.m_compute_s,
                        "idle_weights": s.m_idle_weights_s,
                        "arrival": s.m_arrival_s,
                        "compute_end": s.m_compute_end_s,
                    },
                    "predicted": {
                        "load_end": s.p_load_end_s,
                        "compute": s.p_compute_s,
                        "idle_weights": s.p_idle_weights_s,
                        "arrival": s.p_arrival_s,
                        "compute_end": s.p_compute_end_s,
                    },
                }
                for s in self.stages
            ],
        }


def predicted_tokens(scenario: Scenario, plan: Plan, overlap: Overlap, new_tokens: int) -> BurstSchedule | None:
    """The simulator's first and last token of every request for ``new_tokens`` (one request: TTFT and
    TTFT + (new_tokens - 1) x TPOT); None when decoding and a device of the plan has no ``mem_bandwidth``."""
    if new_tokens > 1 and any(scenario.device(name).mem_bandwidth is None for name in plan.devices):
        return None
    return burst_schedule(replace(scenario, workload=replace(scenario.workload, new_tokens=new_tokens)), plan, overlap)


def build_report(result: dict[str, Any], scenario: Scenario, plan: Plan, overlap: Overlap) -> RunReport:
    """Compare one job's gathered result with the simulator's prediction of ``plan`` under ``overlap``.

    The prediction is for what ran: the result's number of tokens per request (the scenario's
    ``new_tokens`` may have been overridden) and the scenario's requests. The per-stage figures are the
    first request's (a burst's later requests never change it); a burst's completions are compared with
    :func:`~coldpipe.core.simulator.burst_completions_s`, its last tokens (when decoding) with
    :func:`predicted_tokens`.
    """
    timeline = simulate(scenario, plan, overlap)
    n_new = len(result["token_ids"])
    tokens = predicted_tokens(scenario, plan, overlap, n_new)
    predicted_e2e_s = max(tokens.last_token_s) if tokens is not None else None
    burst = scenario.workload.requests > 1
    predicted_completions_s = burst_completions_s(scenario, plan, overlap) if burst else ()
    predicted_last_tokens_s = tokens.last_token_s if tokens is not None and burst and n_new > 1 else ()
    measured_completions = tuple(float(t) for t in result.get("completions") or [result["measured_ttft"]])
    if len(measured_completions) > 1 and len(predicted_completions_s) != len(measured_completions):
        raise ValueError(f"{len(measured_completions)} requests ran but {len(predicted_completions_s)} were predicted")
    stages = []
    trace_stages = []
    for st_res, p in zip(result["stages"], timeline.stages, strict=True):
        spans = [Span.from_dict(d) for d in st_res["spans"]]
        trace_stages.append({"device": st_res["device"], "spans": spans})
        loads = [s for s in spans if s.cat == "load"]
        computes = [s for s in spans if s.cat == "compute" and s.request == 0]
        recvs = [s for s in spans if s.cat == "recv"]
        stages.append(
            StageReport(
                device=p.device,
                first=p.first,
                last=p.last,
                m_load_end_s=max((s.end_s for s in loads), default=0.0),  # warm jobs load nothing
                p_load_end_s=p.load_end_s,
                m_compute_s=sum(s.end_s - s.start_s for s in computes),
                p_compute_s=p.compute_s,
                m_idle_weights_s=sum(s.end_s - s.start_s for s in spans if s.cat == "wait"),
                p_idle_weights_s=p.wait_weights_s,
                m_arrival_s=recvs[0].end_s,
                p_arrival_s=p.arrival_s,
                m_compute_end_s=max(s.end_s for s in computes),
                p_compute_end_s=p.compute_end_s,
            )
        )
    meta = {
        "scenario": scenario.to_dict(),
        "plan": timeline.plan.to_dict(),
        "overlap": timeline.overlap,
        "measured_ttft": result["measured_ttft"],
        "predicted_ttft": timeline.ttft_s,
        "token_ids": result["token_ids"],
        "measured_e2e": result.get("measured_e2e"),
        "predicted_e2e": predicted_e2e_s,
    }
    if len(measured_completions) > 1:
        meta["measured_completions"] = list(measured_completions)
        meta["predicted_completions"] = list(predicted_completions_s)
        meta["measured_last_tokens"] = list(result.get("last_token_s") or ())
        meta["predicted_last_tokens"] = list(predicted_last_tokens_s)
    return RunReport(
        measured_ttft_s=float(result["measured_ttft"]),
        predicted_ttft_s=timeline.ttft_s,
        measured_e2e_s=result.get("measured_e2e"),
        token_ids=list(result["token_ids"]),
        stages=tuple(stages),
        trace=chrome_trace(trace_stages, meta),
        predicted_e2e_s=predicted_e2e_s,
        measured_completions_s=measured_completions,
        predicted_completions_s=tuple(predicted_completions_s) if len(measured_completions) > 1 else (),
        first_token_ids=tuple(result.get("first_token_ids") or result["token_ids"][:1]),
        measured_last_tokens_s=tuple(result.get("last_token_s") or ()) if len(measured_completions) > 1 else (),
        predicted_last_tokens_s=tuple(predicted_last_tokens_s) if len(measured_completions) > 1 else (),
    )


def result_from_trace(stage_spans: list[tuple[str, list[Span]]], meta: dict[str, Any]) -> dict[str, Any]:
    """A job's result, as :func:`build_report` takes it, rebuilt from the trace a run wrote (its spans per
    stage and its ``coldpipe`` object): ``coldpipe show`` reports a trace exactly as ``coldpipe run`` did."""
    burst = meta.get("measured_completions") or []
    return {
        "measured_ttft": meta["measured_ttft"],
        "measured_e2e": meta.get("measured_e2e"),
        "token_ids": list(meta.get("token_ids") or []),
        "completions": list(burst) if len(burst) > 1 else None,
        "last_token_s": list(meta.get("measured_last_tokens") or []) or None,
        "stages": [{"device": device, "spans": [s.to_dict() for s in spans]} for device, spans in stage_spans],
    }
