"""One request on a cluster, with recovery: when an agent is lost, re-plan over the survivors and finish.

The re-plan keeps what each survivor already holds resident (its ``status``), so the tail loads only
what is missing; the recovery's extra latency is reported beside the simulator's prediction of the
re-planned tail (``predicted_tail_s``: the new plan's TTFT from the moment it starts).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from coldpipe.cluster.coordinator import AgentLost, Coordinator, ranges_of
from coldpipe.core.simulator import simulate
from coldpipe.core.types import Overlap, Plan, Scenario
from coldpipe.errors import ColdpipeError, Infeasible

__all__ = ["run_request"]


def _survivors(co: Coordinator, sc: Scenario, lost: str, settle_s: float = 10.0) -> Scenario:
    """The scenario over the survivors, each with what it holds resident once its aborted job has ended.

    An aborted loader finishes the block it is reading (it stops between blocks): reading the residency
    before that would miss the block, and the re-plan would load it again in the prediction only.
    """
    devices = []
    for d in sc.devices:
        if d.name == lost:
            continue
        deadline = time.monotonic() + settle_s
        st, _ = co.ch[d.name].request("status", 5.0)
        while st.get("job_threads") and time.monotonic() < deadline:  # (agents before job_threads: no wait)
            time.sleep(0.02)
            st, _ = co.ch[d.name].request("status", 5.0)
        devices.append(dataclasses.replace(d, resident=ranges_of(st["resident"])))
    if not devices:
        raise ColdpipeError(f"agent {lost} was lost and no other agent is left to finish the request")
    return sc.replace(devices=tuple(devices))


def run_request(
    co: Coordinator,
    sc: Scenario,
    plan: Plan,
    overlap: Overlap,
    prompt: tuple[int, ...],
    fingerprint: str,
    *,
    new_tokens: int = 1,
    cold: bool = True,
    recover: bool = True,
    on_event: Any = None,
) -> dict[str, Any]:
    """Run, recover at most once per lost agent; the JSON contract of ``cluster run --json`` (+ ``report``)."""
    from coldpipe.planning import Problem
    from coldpipe.planning import plan as plan_scenario
    from coldpipe.runtime.report import build_report

    predicted = simulate(sc, plan, overlap).ttft_s
    recovery = None
    cur_sc, cur_plan = sc, plan
    t_first = time.time()
    while True:
        try:
            t_start = time.time()
            result = co.run(
                cur_sc, cur_plan, overlap, prompt, fingerprint, new_tokens=new_tokens, cold=cold, on_event=on_event
            )
            break
        except AgentLost as exc:
            if not recover or (recovery is not None and len(cur_sc.devices) <= 1):
                raise
            if on_event:
                on_event(f"{exc}; re-planning over the survivors")
            lost_at = time.time() - t_first  # the survivors have confirmed the abort (Coordinator.abort)
            cur_sc = _survivors(co, cur_sc, exc.name)
            try:
                cur_plan = plan_scenario(Problem(cur_sc, overlap)).plan
            except Infeasible as inf:
                left = ", ".join(d.name for d in cur_sc.devices)
                raise ColdpipeError(
                    f"agent {exc.name} was lost {lost_at:.2f} s after the request and the survivors ({left}) "
                    f"cannot hold the model: {inf}"
                ) from None
            recovery = {
                "lost": exc.name,
                "lost_at_s": lost_at,
                "plan": str(cur_plan),
                "predicted_tail_s": simulate(cur_sc, cur_plan, overlap).ttft_s,
            }
    report = build_report(result, cur_sc, cur_plan, overlap)
    # the request arrived at the first run's t0; a recovered run's TTFT counts from there
    offset_s = (t_start - t_first) if recovery else 0.0
    measured = result["measured_ttft"] + offset_s
    if recovery is not None:
        recovery["measured_tail_s"] = result["measured_ttft"]
    stages = [
        {
            "device": s.device,
            "first": s.first,
            "last": s.last,
            "measured": {
                "load_end": s.m_load_end_s,
                "arrival": s.m_arrival_s,
                "compute": s.m_compute_s,
                "compute_end": s.m_compute_end_s,
                "idle_weights": s.m_idle_weights_s,
            },
            "predicted": {
                "load_end": s.p_load_end_s,
                "arrival": s.p_arrival_s,
                "compute": s.p_compute_s,
                "compute_end": s.p_compute_end_s,
                "idle_weights": s.p_idle_weights_s,
            },
        }
        for s in report.stages
    ]
    return {
        "measured_ttft": measured,
        "predicted_ttft": predicted if recovery is None else report.predicted_ttft_s,
        "plan": cur_plan.to_dict(),
        "plan_text": str(cur_plan),
        "overlap": overlap,
        "scenario": cur_sc.to_dict(),
        "stages": stages,
        "token_ids": result["token_ids"],
        "clock_offsets_s": result["clock_offsets_s"],
        "recovery": recovery,
        "report": report,
        "plan_obj": cur_plan,
    }
