"""Planning with streamed-weights (docs/model.md#streamed-weights): part of the mechanisms capability.

A streaming device's blocks arrive at its stream's rate instead of its storage's, so the DP plans the
**effective scenario** in which every streaming device loads at :func:`~coldpipe.core.streamed.stream_bytes_per_s`
(``1 / (8/down + 8/up_peer)``) from ``max(startup, startup_peer)``. Without hop latency and with
``network.sharing: none`` that is the mechanism's timeline exactly (each device's stream is its own loader), so
the DP stays exact. A per-block hop latency, or a shared channel (``tdma``, ``fdma``: streams and the request's
transfers wait for each other), is not in the DP's state: the planner then re-times candidates with the real
simulator and improves them by local search (:func:`search_streamed`), marked ``exact: false``; its gap to
brute force is measured in ``tests/planning/test_streamed.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from coldpipe.core.mechanism_names import LOCAL
from coldpipe.core.simulator import objective_s, simulate
from coldpipe.core.streamed import MECHANISM, stream_bytes_per_s
from coldpipe.core.types import AP, Device, Plan, Scenario, Stage
from coldpipe.errors import ColdpipeError
from coldpipe.planning.protocol import Problem, Solution

__all__ = ["STREAMED_MAX_EVALUATIONS", "search_streamed", "stream_acts", "stream_devices", "stream_is_exact"]

STREAMED_MAX_EVALUATIONS = 2000
"""The streamed-weights search stops after this many timed candidate plans (it bounds its planning time)."""


def stream_acts(scenario: Scenario) -> bool:
    """streamed-weights is on and some device streams its weights."""
    return MECHANISM in scenario.mechanisms and any(d.weights != LOCAL for d in scenario.devices)


def stream_is_exact(scenario: Scenario) -> bool:
    """The effective scenario's timeline is the mechanism's for every plan (no hop latency, no sharing)."""
    return not stream_acts(scenario) or (scenario.network.hop_latency == 0.0 and scenario.network.sharing == "none")


def stream_devices(scenario: Scenario, hops_per_block: float = 0.0) -> tuple[Device, ...]:
    """The devices with each streaming device's storage replaced by its stream (the rest unchanged).

    ``hops_per_block > 0`` spreads each block's hop latency over its bytes (the mean block): a seed only."""
    if not stream_acts(scenario):
        return scenario.devices
    mean_bytes = sum(b.weight_bytes for b in scenario.blocks) / len(scenario.blocks)
    out = []
    for d in scenario.devices:
        if d.weights == LOCAL:
            out.append(d)
            continue
        rate = stream_bytes_per_s(scenario, d.name)
        n_hops = 1 if d.weights == AP else 2
        if hops_per_block > 0 and mean_bytes > 0 and math.isfinite(rate):
            rate = mean_bytes / (mean_bytes / rate + n_hops * hops_per_block * scenario.network.hop_latency)
        peer_up = scenario.device(d.weights).startup if d.weights != AP else 0.0
        out.append(dataclasses.replace(d, load_bandwidth=rate, startup=max(d.startup, peer_up), weights=LOCAL))
    return tuple(out)


def _value_s(problem: Problem, p: Plan) -> float:
    try:
        return objective_s(problem.scenario, p, problem.overlap, problem.objective)
    except ColdpipeError:
        return math.inf


def _moves(stages: tuple[Stage, ...], names: list[str]) -> list[tuple[Stage, ...]]:
    """Pipelines one move away: a boundary shifted by one block, two stages' devices swapped, a stage given to an
    unused device, a stage split in two onto an unused device, two neighbouring stages merged."""
    out: list[tuple[Stage, ...]] = []
    used = {st.device for st in stages}
    for j in range(len(stages) - 1):
        a, b = stages[j], stages[j + 1]
        for cut in (a.last - 1, a.last + 1):
            if a.first <= cut < b.last:
                out.append(
                    (*stages[:j], Stage(a.device, a.first, cut), Stage(b.device, cut + 1, b.last), *stages[j + 2 :])
                )
        for keep in (a.device, b.device):
            out.append((*stages[:j], Stage(keep, a.first, b.last), *stages[j + 2 :]))
    for j in range(len(stages)):
        for k in range(j + 1, len(stages)):
            sw = list(stages)
            sw[j], sw[k] = (
                Stage(stages[k].device, stages[j].first, stages[j].last),
                Stage(stages[j].device, stages[k].first, stages[k].last),
            )
            out.append(tuple(sw))
        st = stages[j]
        for d in names:
            if d in used:
                continue
            out.append((*stages[:j], Stage(d, st.first, st.last), *stages[j + 1 :]))
            if st.first < st.last:
                mid = (st.first + st.last) // 2
                out.append((*stages[:j], Stage(st.device, st.first, mid), Stage(d, mid + 1, st.last), *stages[j + 1 :]))
                out.append((*stages[:j], Stage(d, st.first, mid), Stage(st.device, mid + 1, st.last), *stages[j + 1 :]))
    return out


def search_streamed(
    problem: Problem, start: Solution, inner: Callable[[Problem], Solution], variants: list[Scenario]
) -> Solution:
    """First-improvement local search over one-stage-per-device pipelines (:func:`_moves`), every candidate timed
    by the simulator, from ``start`` (the DP's plan on the effective scenario) and from the DP's plans on
    ``variants`` (planning/mechanisms.py: each block's hop latency spread over its bytes; without the streaming
    devices).
    At most :data:`STREAMED_MAX_EVALUATIONS` candidates; never worse than ``start``."""
    sc, ov = problem.scenario, problem.overlap
    names = [d.name for d in sc.devices]
    seeds: list[Plan] = [start.plan]
    for v in variants:
        try:
            p = inner(problem.replace(scenario=v)).plan
        except ColdpipeError:
            continue
        if p not in seeds:
            seeds.append(p)
    best, best_v, evaluations = start.plan, _value_s(problem, start.plan), 0
    budget = STREAMED_MAX_EVALUATIONS // len(seeds)
    for seed in seeds:
        cur, cur_v, used, improved = seed, _value_s(problem, seed), 0, True
        while improved and used < budget and math.isfinite(cur_v):
            improved = False
            for stages in _moves(cur.stages, names):
                used += 1
                cand = Plan(stages)
                v = _value_s(problem, cand)
                if v < cur_v - 1e-12:
                    cur, cur_v, improved = cand, v, True
                    break
                if used >= budget:
                    break
        evaluations += used + 1
        if cur_v < best_v - 1e-12:
            best, best_v = cur, cur_v
    return dataclasses.replace(
        start,
        plan=best,
        value_s=best_v,
        exact=False,
        method=f"{start.method}+streamed-weights",
        solver_value_s=None,
        details={**start.details, "streamed_weights": {"seeds": len(seeds), "evaluations": evaluations}},
        timeline=simulate(sc, best, ov),
    )
