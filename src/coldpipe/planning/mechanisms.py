"""Planning with the cold-start mechanisms on (docs/model.md#mechanisms): a capability in front of every planner.

- ``sparse-embedding`` changes only what block 0's loader must read before the first token, so the DP
  sees an **effective scenario**: block 0 weighs its first-token bytes, and its deferred bytes move to its
  KV bytes (memory and decode reads unchanged). Every planner then solves the mechanism's problem exactly
  as it solves the paper's: the exact DP stays exact (``tests/planning/test_mechanisms.py`` checks it
  against brute force on the real, mechanism-aware simulator).
- ``sharded-head`` is planned in two levels: a pipeline for blocks ``0..B-2`` and, for that pipeline, the
  **exact** split of the head's vocabulary rows over the devices (:func:`split_head`, a bisection on the
  TTFT: each device's latest feasible row count is closed-form). Pipelines come from seeds (the DP's
  optimum with the head unsharded, with the head's bytes and work divided by 2, 3, ..., and without the
  head) improved by boundary shifts; the unsharded optimum is always a candidate, so sharding never
  makes a plan worse. Not proven optimal (``exact: false``); its gap to brute force is measured in the tests.
- ``sublayer`` splits each decoder layer into two blocks (:meth:`Scenario.planned`); every planner then
  plans the split blocks, so the exact DP stays exact.

Every value is the simulator's, on the real scenario with its mechanisms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from coldpipe.core.mechanism_names import LOCAL
from coldpipe.core.mechanisms import (
    deferred_bytes,
    first_token_bytes,
    hidden_bytes,
    shard_flops,
    shard_return_bytes,
)
from coldpipe.core.simulator import objective_s, simulate, transfer_s
from coldpipe.core.types import AP, HeadShard, Plan, Scenario, Stage
from coldpipe.errors import ColdpipeError, InvalidPlan
from coldpipe.planning.bounds import (
    Bounds,
    earliest_all_loaded_s,
    least_time,
    lower_bounds,
    parallel_loading_bound_s,
    relaxed_lower_bound_s,
)
from coldpipe.planning.exact import plan_warm
from coldpipe.planning.protocol import Problem, Solution
from coldpipe.planning.streamed import search_streamed, stream_acts, stream_devices, stream_is_exact

__all__ = ["effective_scenario", "mechanism_bounds", "solve_with_mechanisms", "split_head"]


def effective_scenario(scenario: Scenario, *, hops_per_block: float = 0.0, without_streaming: bool = False) -> Scenario:
    """The paper's problem that the DP solves for ``scenario``'s ``sparse-embedding`` (every mechanism off).

    Block 0 weighs what the first token needs; what it defers counts as KV bytes, so memory and the decode
    step's reads (``weight_bytes + kv_bytes``) stay those of the real block. With ``sublayer`` its blocks are
    the split blocks (:meth:`Scenario.planned`). With ``streamed-weights`` every streaming device loads at its
    stream's rate (planning/streamed.py; ``hops_per_block``, ``without_streaming``: its search's seeds).
    """
    scenario = scenario.planned()
    devices = stream_devices(scenario, hops_per_block)
    if without_streaming:
        devices = tuple(d for d, real in zip(devices, scenario.devices, strict=True) if real.weights == LOCAL)
    blocks = list(scenario.blocks)
    if "sparse-embedding" in scenario.mechanisms:
        b0 = blocks[0]
        blocks[0] = dataclasses.replace(
            b0,
            weight_bytes=first_token_bytes(scenario, 0),
            kv_bytes=b0.kv_bytes + deferred_bytes(scenario, 0),
            vocab_rows=None,
            vocab_row_bytes=None,
        )
    network = dataclasses.replace(scenario.network, sharing="none")
    return scenario.replace(blocks=tuple(blocks), devices=devices, network=network, mechanisms=frozenset())


def _pipeline_scenario(scenario: Scenario, head_share: float | None) -> Scenario:
    """The effective scenario with the head's bytes and work times ``head_share`` (None: without the head)."""
    eff = effective_scenario(scenario)
    if head_share is None:
        return eff.replace(blocks=eff.blocks[:-1])
    head = eff.blocks[-1]
    shrunk = dataclasses.replace(
        head,
        weight_bytes=head.weight_bytes * head_share,
        flops=head.flops * head_share,
        vocab_rows=None,
        vocab_row_bytes=None,
    )
    return eff.replace(blocks=(*eff.blocks[:-1], shrunk))


def split_head(scenario: Scenario, stages: tuple[Stage, ...], overlap: str = "layer") -> Plan | None:
    """The TTFT-optimal split of the head's rows over the devices, for the pipeline ``stages`` (blocks 0..B-2).

    Device ``k`` with ``r`` rows returns its candidates at
    ``max(arrival_k, free_k + shard_bytes(r) / B_k) + r·c_k + back_k`` (docs/model.md#sharded-head:
    ``free_k`` its loader's end of its stage's first-token bytes, or its start-up; under ``none`` the shards
    wait for no weights of their own and this is only a heuristic), non-decreasing in ``r``; the least
    ``T`` whose feasible row counts sum to the vocabulary is found by bisection. None if nothing fits.
    """
    scenario = scenario.planned()  # sublayer: the stages index the split blocks
    head = scenario.blocks[-1]
    assert head.vocab_rows is not None
    n_rows, n_last = head.vocab_rows, len(scenario.blocks) - 1
    probe = Plan(stages, (HeadShard(stages[-1].device, 0, n_rows - 1),))
    try:
        tl = simulate(scenario, probe, overlap, validate=False)
    except (InvalidPlan, ColdpipeError):
        return None
    t_end = tl.stages[-1].compute_end_s
    rows_of: list[Callable[[float], int]] = []
    for dev in stream_devices(scenario):  # streamed-weights: a streaming device's shard arrives at its stream rate
        mine = [st for st in stages if st.device == dev.name]  # several with reuse
        held = [l for st in mine for l in range(st.first, st.last + 1)]
        used = sum(scenario.blocks[l].memory_bytes for l in held)
        room = dev.memory - used - head.vocab_fixed_bytes
        if room < 0 or head.row_bytes <= 0:
            rows_of.append(lambda _t: 0)
            continue
        max_rows = min(n_rows, math.floor(room / head.row_bytes * (1 + 1e-12))) if math.isfinite(room) else n_rows
        free = dev.startup + sum(first_token_bytes(scenario, l) for l in held if not dev.holds(l)) / dev.load_bandwidth
        holds = dev.holds(n_last)
        fixed_s = 0.0 if holds else head.vocab_fixed_bytes / dev.load_bandwidth
        row_load_s = 0.0 if holds else head.row_bytes / dev.load_bandwidth
        row_s = shard_flops(scenario, 1) / dev.flops
        arrival = t_end + transfer_s(scenario, stages[-1].device, dev.name, hidden_bytes(scenario))
        back = transfer_s(scenario, dev.name, scenario.source, shard_return_bytes(scenario))
        gate = -math.inf if overlap == "none" else free + fixed_s

        def rows(t: float, a=arrival, b=back, g=gate, rl=row_load_s, rs=row_s, cap=max_rows) -> int:
            slack = t - b
            if slack < a or slack < g:
                return 0
            r = (slack - a) / rs if rs > 0 else math.inf
            if rl + rs > 0 and g > -math.inf:
                r = min(r, (slack - g) / (rl + rs))
            return int(min(cap, math.floor(r * (1 + 1e-12) + 1e-9)))

        rows_of.append(rows)

    def total(t: float) -> int:
        return sum(f(t) for f in rows_of)

    hi = least_time(lambda t: total(t) >= n_rows, t_end, cap=1e12)
    if hi is None:
        return None
    counts = [f(hi) for f in rows_of]
    excess = sum(counts) - n_rows
    for k in sorted(range(len(counts)), key=lambda k: counts[k]):  # trim the smallest shards first
        cut = min(excess, counts[k])
        counts[k] -= cut
        excess -= cut
    shards, row = [], 0
    for dev, c in zip(scenario.devices, counts, strict=True):
        if c > 0:
            shards.append(HeadShard(dev.name, row, row + c - 1))
            row += c
    return Plan(stages, tuple(shards))


def _without_head(plan: Plan, n_blocks: int) -> tuple[Stage, ...] | None:
    """``plan``'s stages for blocks ``0..B-2`` (its last stage loses the head; a head-only stage goes)."""
    stages = list(plan.stages[:-1])
    last = plan.stages[-1]
    if last.first <= n_blocks - 2:
        stages.append(Stage(last.device, last.first, n_blocks - 2))
    return tuple(stages) or None


def _shifts(stages: tuple[Stage, ...]) -> list[tuple[Stage, ...]]:
    """Every pipeline one boundary shift (by one block) away."""
    out = []
    for j in range(len(stages) - 1):
        a, b = stages[j], stages[j + 1]
        for d in (-1, 1):
            cut = a.last + d
            if a.first <= cut < b.last:
                out.append(
                    (*stages[:j], Stage(a.device, a.first, cut), Stage(b.device, cut + 1, b.last), *stages[j + 2 :])
                )
    return out


def _value_s(problem: Problem, p: Plan | None) -> float:
    """The simulator's value of a candidate plan for ``problem``; inf for none or one that does not fit."""
    if p is None:
        return math.inf
    try:
        return objective_s(problem.scenario, p, problem.overlap, problem.objective)
    except ColdpipeError:
        return math.inf


def _sharded(problem: Problem, inner: Callable[[Problem], Solution], unsharded: Solution) -> Solution:
    sc, ov, obj = problem.scenario, problem.overlap, problem.objective
    n = len(sc.blocks)

    seeds: list[tuple[Stage, ...]] = []
    first = _without_head(unsharded.plan, n)
    if first is not None:
        seeds.append(first)
    for share in [1.0 / k for k in range(2, len(sc.devices) + 1)] + [None]:
        try:
            sol = inner(problem.replace(scenario=_pipeline_scenario(sc, share)))
        except ColdpipeError:
            continue
        cut = sol.plan.stages if share is None else _without_head(sol.plan, n)
        if cut is not None and cut not in seeds:
            seeds.append(cut)
    best_plan, best = unsharded.plan, _value_s(problem, unsharded.plan)
    tried = 0
    for seed in seeds:
        cur = split_head(sc, seed, ov)
        cur_v = _value_s(problem, cur)
        tried += 1
        improved = True
        while improved and cur is not None:
            improved = False
            for nxt in _shifts(cur.stages):
                cand = split_head(sc, nxt, ov)
                tried += 1
                v = _value_s(problem, cand)
                if v < cur_v - 1e-12:
                    cur, cur_v, improved = cand, v, True
                    break
        if cur is not None and cur_v < best - 1e-12:
            best_plan, best = cur, cur_v
    details = {**unsharded.details, "sharded_head": {"seeds": len(seeds), "pipelines_tried": tried}}
    return Solution(
        best_plan,
        best,
        False,
        f"{unsharded.method}+sharded-head",
        obj,
        ov,
        solver_value_s=None,
        lower_bound_s=unsharded.lower_bound_s,
        details=details,
        timeline=simulate(sc, best_plan, ov),
    )


REUSE_MAX_EVALUATIONS = 1500
"""The reuse search stops after this many timed candidate plans (it bounds its planning time)."""


def _reuse_moves(stages: tuple[Stage, ...], names: list[str]) -> list[tuple[Stage, ...]]:
    """Plans one move away: blocks ``x..y`` (any interval) given to device ``d`` (any, used or not), the
    stages regrouped (consecutive blocks on one device form one stage). Covers shifting a boundary, moving,
    splitting and merging stages, and a device taking a second stage."""
    owner = [st.device for st in stages for _ in range(st.first, st.last + 1)]
    n = len(owner)
    seen: set[tuple[Stage, ...]] = {stages}
    out = []
    for x in range(n):
        for y in range(x, n):
            for d in names:
                if all(o == d for o in owner[x : y + 1]):
                    continue
                new = owner[:x] + [d] * (y - x + 1) + owner[y + 1 :]
                regrouped, first = [], 0
                for l in range(1, n + 1):
                    if l == n or new[l] != new[first]:
                        regrouped.append(Stage(new[first], first, l - 1))
                        first = l
                cand = tuple(regrouped)
                if cand not in seen:
                    seen.add(cand)
                    out.append(cand)
    return out


def _regroup(stages: list[Stage]) -> tuple[Stage, ...]:
    """Adjacent stages on one device merged into one."""
    out: list[Stage] = []
    for st in stages:
        if out and out[-1].device == st.device:
            out[-1] = Stage(st.device, out[-1].first, st.last)
        else:
            out.append(st)
    return tuple(out)


def _reuse_seeds(problem: Problem, inner: Callable[[Problem], Solution], sharded: bool) -> list[tuple[Stage, ...]]:
    """Pipelines where a device may hold two stages: the paper's optimum on a cluster where every device is
    two devices (each loading on its own: optimistic, hence only seeds) of half or all its memory, mapped back."""
    sc = problem.scenario
    seeds = []
    for share in (0.5, 1.0):  # half: the two stages fit together; whole: they may not (then the seed is invalid)
        copies = [
            dataclasses.replace(d, name=f"{d.name}#{k}", memory=d.memory * share)
            for d in stream_devices(sc)
            for k in (1, 2)
        ]
        virtual = _pipeline_scenario(sc, None) if sharded else effective_scenario(sc)
        source = sc.source if sc.source == "ap" else f"{sc.source}#1"
        virtual = virtual.replace(devices=tuple(copies), source=source)
        try:
            found = inner(problem.replace(scenario=virtual, objective="ttft")).plan
        except ColdpipeError:
            continue
        seeds.append(_regroup([Stage(st.device.rsplit("#", 1)[0], st.first, st.last) for st in found.stages]))
    return seeds


def _reuse(problem: Problem, start: Solution, inner: Callable[[Problem], Solution]) -> Solution:
    """First-improvement local search over plans whose devices may hold several stages (reuse), from the
    plan found so far and from :func:`_reuse_seeds`."""
    sc, ov = problem.scenario, problem.overlap
    names = [d.name for d in sc.devices]
    sharded = bool(start.plan.head_shards)

    def realise(stages: tuple[Stage, ...]) -> Plan | None:
        return split_head(sc, stages, ov) if sharded else Plan(stages)

    starts = [(start.plan, start.value_s)]
    for seed in _reuse_seeds(problem, inner, sharded):
        cand = realise(seed)
        starts.append((cand, _value_s(problem, cand)))  # type: ignore[arg-type]
    best, best_v, evaluations = start.plan, start.value_s, 0
    budget = REUSE_MAX_EVALUATIONS // len(starts)
    for cur, cur_v in starts:
        if cur is None:  # an invalid seed (a device's stages exceed its memory) is repaired by the moves
            continue
        used, improved = 0, True
        if not math.isfinite(cur_v):  # repair an invalid seed by its best valid neighbour
            moves = _reuse_moves(cur.stages, names)[:budget]
            used = len(moves)
            valued = [(_value_s(problem, c), c) for c in (realise(m) for m in moves)]
            v, c = min(valued, key=lambda vc: vc[0], default=(math.inf, None))
            if c is None or not math.isfinite(v):
                evaluations += used
                continue
            cur, cur_v = c, v
        while improved and used < budget:
            improved = False
            for stages in _reuse_moves(cur.stages, names):
                used += 1
                cand = realise(stages)
                v = _value_s(problem, cand)
                if v < cur_v - 1e-12:
                    assert cand is not None
                    cur, cur_v, improved = cand, v, True
                    break
                if used >= budget:
                    break
        evaluations += used
        if cur_v < best_v - 1e-12:
            best, best_v = cur, cur_v
    cur, cur_v = best, best_v
    details = {**start.details, "reuse": {"evaluations": evaluations}}
    method = start.method if start.method.endswith("+reuse") else f"{start.method}+reuse"
    return dataclasses.replace(
        start,
        plan=cur,
        value_s=cur_v,
        exact=False,
        method=method,
        solver_value_s=None,
        details=details,
        timeline=simulate(sc, cur, ov),
    )


def solve_with_mechanisms(problem: Problem, inner: Callable[[Problem], Solution]) -> Solution:
    """Solve ``problem`` (its scenario has mechanisms on) with ``inner``, the planner of the paper's problem."""
    problem = problem.replace(scenario=problem.scenario.planned())  # sublayer: the split blocks, exactly
    sc = problem.scenario
    sol = inner(problem.replace(scenario=effective_scenario(sc)))
    value = objective_s(sc, sol.plan, problem.overlap, problem.objective)
    sol = dataclasses.replace(sol, value_s=value, timeline=simulate(sc, sol.plan, problem.overlap))
    if stream_acts(sc) and not stream_is_exact(sc) and not problem.is_burst:
        variants = [effective_scenario(sc, hops_per_block=1.0)]
        local = [d for d in sc.devices if d.weights == LOCAL]
        if local and (sc.source == AP or sc.source in {d.name for d in local}):
            variants.append(effective_scenario(sc, without_streaming=True))
        sol = search_streamed(problem, sol, inner, variants)
    if "gap_to_lower_bound" in sol.details and sol.lower_bound_s:  # the inner planner's gap was its effective value's
        sol = dataclasses.replace(
            sol, details={**sol.details, "gap_to_lower_bound": sol.value_s / sol.lower_bound_s - 1}
        )
    if "sharded-head" in sc.mechanisms and len(sc.blocks) >= 2 and not problem.is_burst:
        sol = _sharded(problem, inner, sol)
    if "reuse" in sc.mechanisms and not problem.is_burst:
        sol = _reuse(problem, sol, inner)
    if sol.lower_bound_s is not None and ("sharded-head" in sc.mechanisms or "reuse" in sc.mechanisms):
        # the inner planner's bound is the effective (unsharded, one-stage-per-device) problem's: not valid here
        details = {
            k: v for k, v in sol.details.items() if not k.startswith("lower_bound") and k != "gap_to_lower_bound"
        }
        lb = None
        if problem.is_first_token:
            try:
                lb = mechanism_bounds(sc).best_s
            except ColdpipeError:  # beyond the warm DP's range
                lb = None
        if lb is not None:
            details.update(lower_bound=lb, lower_bound_kind="mechanisms", gap_to_lower_bound=sol.value_s / lb - 1.0)
        sol = dataclasses.replace(sol, lower_bound_s=lb, details=details)
    return sol


def mechanism_bounds(scenario: Scenario) -> Bounds:
    """Lower bounds that hold with ``scenario``'s mechanisms on (docs/model.md#mechanisms).

    sparse-embedding: the bounds of the effective scenario. sharded-head: the last block need not be loaded
    by one device, so only the volume part of the parallel-loading bound holds, and the warm bound is the
    warm optimum with a free head (no bytes, no work: every sharded plan's head part costs at least the
    token's return it replaces). sublayer: those of the split blocks.
    """
    scenario = scenario.planned()
    eff = effective_scenario(scenario)
    if "sharded-head" not in scenario.mechanisms and "reuse" not in scenario.mechanisms:
        return lower_bounds(eff)
    if "sharded-head" not in scenario.mechanisms:  # reuse: a device's stages load one after another
        return Bounds(relaxed_lower_bound_s(eff), parallel_loading_bound_s(eff))
    free_head = dataclasses.replace(eff.blocks[-1], weight_bytes=0.0, kv_bytes=0.0, flops=0.0)
    free = eff.replace(blocks=(*eff.blocks[:-1], free_head))
    warm = relaxed_lower_bound_s(free) if "reuse" in scenario.mechanisms else plan_warm(free).value_s
    ret = min(transfer_s(eff, d.name, eff.source, eff.workload.token_bytes) for d in eff.devices)
    volume = earliest_all_loaded_s(eff) + ret  # the byte loaded last may be a shard's: no compute term
    return Bounds(warm, volume)
