"""Measured vs predicted: a run's spans against the simulator's timeline of the same scenario and plan.

The prediction always comes from :func:`coldpipe.core.simulator.simulate`; nothing here models time.
Per stage: load end (last ``load`` span), compute (sum of ``compute`` spans of the prefill), idle waiting for
weights (``wait`` spans; the simulator's ``wait_weights``), arrival of the input and end of the compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coldpipe.core.simulator import Timeline
from coldpipe.runtime.trace import Span, chrome_trace

__all__ = ["RunReport", "StageReport", "build_report"]


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
    predicted_e2e_s: float | None = None  # TTFT + (new_tokens - 1) x TPOT from the simulator, if it can time decode

    @property
    def ratio(self) -> float:
        """Measured / predicted TTFT (1.0 = the model was exact)."""
        return self.measured_ttft_s / self.predicted_ttft_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "measured_ttft": self.measured_ttft_s,
            "predicted_ttft": self.predicted_ttft_s,
            "ratio": self.ratio,
            "measured_e2e": self.measured_e2e_s,
            "predicted_e2e": self.predicted_e2e_s,
            "token_ids": self.token_ids,
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


def build_report(
    result: dict[str, Any], timeline: Timeline, scenario_dict: dict[str, Any], *, predicted_e2e_s: float | None = None
) -> RunReport:
    """Combine one job's gathered result with the simulator's ``timeline`` of the same plan and overlap."""
    stages = []
    trace_stages = []
    for st_res, p in zip(result["stages"], timeline.stages, strict=True):
        spans = [Span.from_dict(d) for d in st_res["spans"]]
        trace_stages.append({"device": st_res["device"], "spans": spans})
        loads = [s for s in spans if s.cat == "load"]
        computes = [s for s in spans if s.cat == "compute"]
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
        "scenario": scenario_dict,
        "plan": timeline.plan.to_dict(),
        "overlap": timeline.overlap,
        "measured_ttft": result["measured_ttft"],
        "predicted_ttft": timeline.ttft_s,
        "token_ids": result["token_ids"],
        "measured_e2e": result.get("measured_e2e"),
        "predicted_e2e": predicted_e2e_s,
    }
    return RunReport(
        measured_ttft_s=float(result["measured_ttft"]),
        predicted_ttft_s=timeline.ttft_s,
        measured_e2e_s=result.get("measured_e2e"),
        token_ids=list(result["token_ids"]),
        stages=tuple(stages),
        trace=chrome_trace(trace_stages, meta),
        predicted_e2e_s=predicted_e2e_s,
    )
