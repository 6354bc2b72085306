"""Exact planning for what the user waits for: ``ttft``, ``e2e`` or ``tpot`` (docs/model.md#objectives).

- ``tpot`` (time per output token, warm): one decode step is additive over stages, so it is the
  additive DP of :mod:`coldpipe.core.dp` on decode tables (``_Tables.build(phase="decode")``).
- ``e2e`` = TTFT + (T - 1) * TPOT with ``T = new_tokens``:

  * under ``none`` the TTFT is ``max load end + additive``, so E2E is ``max load end + (prefill +
    (T - 1) * decode)``: the threshold branch-and-bound of the ``none`` DP on combined tables;
  * under ``layer``/``stage`` the TTFT part is a max-plus map and the decode part is additive; one
    scalar per state is no longer enough. :func:`_pareto_kernel` keeps, per state ``(s, i)``, the
    Pareto front of (arrival at the AP, decode time so far): a pair that is later *and* slower to
    decode than another can never lead to a better E2E, since both coordinates only grow through
    non-decreasing maps and E2E is non-decreasing in both. The front of every state is complete when
    the state is expanded ("pull" order: all its predecessors have a smaller usage index), so the
    result is exact; pairs whose partial E2E already reaches an incumbent (the best of the TTFT- and
    TPOT-optimal plans) are pruned.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from coldpipe.core.dp import (
    _MODE_ADDITIVE,
    _MODE_LAYER,
    _MODE_STAGE,
    _check_size,
    _plan_none,
    _raise_infeasible,
    _Tables,
    numba_enabled,
    plan_dp,
)
from coldpipe.core.simulator import OBJECTIVES, objective_s
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario, Stage
from coldpipe.errors import InputError, InvalidPlan

__all__ = ["ObjectiveResult", "plan_for_objective", "replace_workload", "scenario_after"]


try:  # compiled into the kernel when numba is there, a plain function otherwise
    from numba.extending import register_jitable
except ImportError:  # pragma: no cover - numba is a dependency; the kernel also runs interpreted

    def register_jitable(fn):  # type: ignore[no-untyped-def]
        return fn


@register_jitable
def _grow(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` itself if it holds ``size`` items, else a copy with (at least) twice the room."""
    if size <= a.shape[0]:
        return a
    out = np.empty(max(size, 2 * a.shape[0]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@register_jitable
def _stage_terms(
    t: int,
    i: int,
    e: int,
    run: float,
    cf: np.ndarray,
    wpt: np.ndarray,
    nres: np.ndarray,
    startup: np.ndarray,
    inv_bw: np.ndarray,
) -> tuple[float, float, float]:
    """A stage of type ``t`` holding blocks ``i..e``, grown downwards from ``e``: ``(load_end, run, g)``.

    ``load_end``: its last block is resident (0 when every block already is); ``run``: the max over its
    non-resident blocks ``l`` of ``wpt[l + 1] / bw - cf[l]``, updated with block ``i``; ``g``: the
    ``layer`` map's load term, ``fin = max(alpha + compute, g)``.
    """
    load_end = 0.0
    if nres[t, e + 1] > nres[t, i]:
        load_end = startup[t] + (wpt[t, e + 1] - wpt[t, i]) * inv_bw[t]
    h = wpt[t, i + 1] * inv_bw[t] - cf[t, i] if nres[t, i + 1] > nres[t, i] else -np.inf
    if h > run:
        run = h
    g = startup[t] - wpt[t, i] * inv_bw[t] + cf[t, e + 1] + run
    return load_end, run, g


@register_jitable
def _extend_pair(
    mode: int,
    kind: int,
    lam: float,
    at_source: bool,
    pa: float,
    pd: float,
    down_in: float,
    ddown_in: float,
    compute: float,
    load_end: float,
    g: float,
    dec: float,
    out_a: float,
    out_d: float,
) -> tuple[float, float, float]:
    """A pair ``(pa, pd)`` through one stage: the new pair and its partial objective ``(a2, d2, value)``.

    ``at_source``: the stage's input is already on its device (the prompt, and each new token); else it
    comes down the AP link (``down_in``; ``ddown_in`` for a decode step's token).
    """
    if at_source:
        alpha, d_in, q_in = 0.0, 0.0, 0.0
    else:
        alpha, d_in, q_in = pa + down_in, pd + ddown_in, pd + down_in
    if mode == 0:
        fin = max(alpha + compute, g)
    elif mode == 1:
        fin = max(alpha, load_end) + compute
    else:
        fin = alpha + compute
    a2 = fin + out_a
    if kind == 0:
        d2 = d_in + dec + out_d
        return a2, d2, a2 + lam * d2
    # the burst's last request: behind its predecessor on this stage, or behind request 1 by
    # (requests - 1) stage times (a flow shop of identical jobs)
    d2 = max(q_in + compute, fin + lam * compute) + out_a
    return a2, d2, d2


def _pareto_kernel(
    mode: int,  # 0 layer, 1 stage, 2 additive with every stage loaded by tau (the "none" thresholds)
    kind: int,  # second coordinate: 0 decode time so far (e2e), 1 end of the last request of a burst
    lam: float,  # e2e: new_tokens - 1 (weight of the decode time); burst: requests - 1
    tau: float,
    incumbent: float,  # objective of a known plan: anything not strictly better is pruned
    n_states: int,
    strides: np.ndarray,
    counts: np.ndarray,
    cf: np.ndarray,  # prefill tables, as in dp._kernel
    wpt: np.ndarray,
    nres: np.ndarray,
    mp: np.ndarray,
    startup: np.ndarray,
    inv_bw: np.ndarray,
    mem: np.ndarray,
    down: np.ndarray,
    up: np.ndarray,
    ret: np.ndarray,
    src_type: int,
    prompt_at_ap: float,
    dcf: np.ndarray,  # decode tables: per-block decode seconds prefix, token transfers
    ddown: np.ndarray,
    dup: np.ndarray,
    dret: np.ndarray,
    dprompt_at_ap: float,
) -> tuple[float, int, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pareto DP over (arrival at the AP, decode so far); see the module docstring. Pure loops for numba."""
    n_types = strides.shape[0]
    n_blocks = wpt.shape[1] - 1
    # The pool holds every kept pair: (arrival at the AP, decode so far) and how it was reached:
    # the pair it extends (-1 for the root), the type and the block range i..e of the stage that led to it.
    cap = 1024
    p_a = np.empty(cap)
    p_d = np.empty(cap)
    p_from = np.empty(cap, dtype=np.int64)
    p_t = np.empty(cap, dtype=np.int64)
    p_i = np.empty(cap, dtype=np.int64)
    p_e = np.empty(cap, dtype=np.int64)
    start = np.zeros((n_states, n_blocks + 1), dtype=np.int64)  # pairs of state (s, i): start[s, i]..stop[s, i]-1
    stop = np.zeros((n_states, n_blocks + 1), dtype=np.int64)
    p_a[0], p_from[0], p_t[0], p_i[0], p_e[0] = prompt_at_ap, -1, -1, -1, -1
    p_d[0] = dprompt_at_ap if kind == 0 else prompt_at_ap
    size = 1
    stop[0, 0] = 1
    best = incumbent
    best_q, best_t, best_i = -2, -1, -1
    cand_a = np.empty(256)
    cand_d = np.empty(256)
    cand_from = np.empty(256, dtype=np.int64)
    cand_t = np.empty(256, dtype=np.int64)
    cand_i = np.empty(256, dtype=np.int64)
    # rest[i]: a lower bound on what blocks i..B-1 still add to the objective, whoever computes them: each
    # block on its own cheapest type (a decode step is memory- or compute-bound per block, so the type that
    # is cheapest for the whole remainder may not be for every block, and a split can beat it)
    rest = np.zeros(n_blocks + 1)
    for i in range(n_blocks - 1, -1, -1):
        cheapest = np.inf
        for t in range(n_types):
            c = cf[t, i + 1] - cf[t, i]
            if kind == 0:
                c += lam * (dcf[t, i + 1] - dcf[t, i])
            cheapest = min(cheapest, c)
        rest[i] = rest[i + 1] + cheapest
    for s in range(n_states):
        # 1. Complete the fronts of (s, i2) for i2 = 1..B-1 from their predecessors, then
        # 2. close the plan from every front of s with a last stage holding blocks i..B-1.
        for i2 in range(1, n_blocks + 1):
            e = i2 - 1
            n_cand = 0
            for t in range(n_types):
                digit = (s // strides[t]) % (counts[t] + 1)
                if i2 < n_blocks:
                    if digit == 0:
                        continue
                    sp = s - strides[t]  # the usage before this stage
                else:
                    if digit >= counts[t]:
                        continue
                    sp = s  # closing stage: its device is not counted in any state
                run = -np.inf
                for i in range(e, -1, -1):
                    if mp[e + 1] - mp[i] > mem[t]:
                        break
                    load_end, run, g = _stage_terms(t, i, e, run, cf, wpt, nres, startup, inv_bw)
                    if mode == 2 and load_end > tau:
                        break
                    if stop[sp, i] == start[sp, i]:
                        continue
                    compute = cf[t, e + 1] - cf[t, i]
                    dec = dcf[t, e + 1] - dcf[t, i]
                    if i2 < n_blocks:
                        out_a, out_d = up[t, e], dup[t, e]
                    else:
                        out_a, out_d = ret[t], dret[t]
                    at_source = i == 0 and t == src_type
                    for q in range(start[sp, i], stop[sp, i]):
                        a2, d2, value = _extend_pair(
                            mode, kind, lam, at_source, p_a[q], p_d[q], down[t, i], ddown[t, i],
                            compute, load_end, g, dec, out_a, out_d,
                        )  # fmt: skip
                        if value + rest[i2] >= best:
                            continue
                        if i2 == n_blocks:
                            best, best_q, best_t, best_i = value, q, t, i
                            continue
                        if n_cand == cand_a.shape[0]:
                            cand_a = _grow(cand_a, n_cand + 1)
                            cand_d = _grow(cand_d, n_cand + 1)
                            cand_from = _grow(cand_from, n_cand + 1)
                            cand_t = _grow(cand_t, n_cand + 1)
                            cand_i = _grow(cand_i, n_cand + 1)
                        cand_a[n_cand], cand_d[n_cand] = a2, d2
                        cand_from[n_cand], cand_t[n_cand], cand_i[n_cand] = q, t, i
                        n_cand += 1
            if i2 == n_blocks or n_cand == 0:
                continue
            # Keep the Pareto front: sorted by arrival, each kept pair decodes strictly faster than the previous.
            order = np.argsort(cand_a[:n_cand], kind="mergesort")
            start[s, i2] = size
            best_d = np.inf
            last_a = -np.inf
            for k in range(n_cand):
                c = order[k]
                if cand_d[c] < best_d:
                    if size > 0 and cand_a[c] == last_a and size > start[s, i2]:
                        size -= 1  # same arrival, faster decode: replaces the previous pair
                    if size == p_a.shape[0]:
                        p_a = _grow(p_a, size + 1)
                        p_d = _grow(p_d, size + 1)
                        p_from = _grow(p_from, size + 1)
                        p_t = _grow(p_t, size + 1)
                        p_i = _grow(p_i, size + 1)
                        p_e = _grow(p_e, size + 1)
                    p_a[size], p_d[size] = cand_a[c], cand_d[c]
                    p_from[size], p_t[size], p_i[size], p_e[size] = cand_from[c], cand_t[c], cand_i[c], e
                    size += 1
                    best_d = cand_d[c]
                    last_a = cand_a[c]
            stop[s, i2] = size
    return best, best_q, best_t, best_i, p_from[:size], p_t[:size], p_i[:size], p_e[:size]


_compiled = None


def _get_pareto_kernel():  # type: ignore[no-untyped-def]
    global _compiled  # a cache of the compiled function, not state
    if not numba_enabled():
        return _pareto_kernel
    if _compiled is None:
        import numba

        _compiled = numba.njit(cache=True, nogil=True)(_pareto_kernel)
    return _compiled


@dataclass(frozen=True)
class ObjectiveResult:
    """The optimum of ``objective``: the plan and the objective's value (replayed by the simulator)."""

    plan: Plan
    value_s: float
    objective: str
    overlap: Overlap
    details: dict[str, float | int | str] = field(default_factory=dict)


def _pareto_plan(
    pre: _Tables, dec: _Tables, mode: int, lam: float, incumbent: float, *, kind: int = 0, tau: float = math.inf
) -> tuple[float, Plan | None, int]:
    """Run the Pareto kernel; ``(incumbent, None, pairs)`` when nothing strictly beats the incumbent."""
    types = pre.types
    best, q, t, i, p_from, p_t, p_i, p_e = _get_pareto_kernel()(
        {_MODE_LAYER: 0, _MODE_STAGE: 1, _MODE_ADDITIVE: 2}[mode],
        kind,
        lam,
        tau,
        incumbent,
        types.n_usage_vectors,
        types.strides,
        types.counts,
        pre.cf,
        pre.wpt,
        pre.nres,
        pre.mp,
        pre.startup,
        pre.inv_bw,
        pre.mem,
        pre.down,
        pre.up,
        pre.ret,
        types.source_type,
        pre.prompt_at_ap,
        dec.cf,
        dec.down,
        dec.up,
        dec.ret,
        dec.prompt_at_ap,
    )
    if q == -2:  # nothing beat the incumbent
        return incumbent, None, int(p_from.shape[0])
    n = pre.mp.shape[0] - 1
    rev = [(int(t), int(i), n - 1)]
    q = int(q)
    while p_from[q] >= 0:  # the root pair (the prompt at the AP) has no predecessor
        rev.append((int(p_t[q]), int(p_i[q]), int(p_e[q])))
        q = int(p_from[q])
    used = [0] * len(types.members)
    stages = []
    for t_, a, b in reversed(rev):
        stages.append(Stage(types.members[t_][used[t_]], a, b))
        used[t_] += 1
    return float(best), Plan(tuple(stages)), int(p_from.shape[0])


def plan_for_objective(scenario: Scenario, overlap: Overlap = "layer", objective: str = "ttft") -> ObjectiveResult:
    """The optimum of ``objective`` under ``overlap``; the value is the simulator's (:func:`objective_s`).

    Exact for ``ttft``, ``e2e`` and ``tpot``, and for a burst's ``max`` first-token completion; a burst's
    ``mean`` completion uses :func:`_local_search`, and a burst's ``e2e`` (each request's last token)
    :func:`coldpipe.core.burst_plan.plan_burst_e2e` (``details["exact"] == 0``).
    """
    if objective not in OBJECTIVES:
        raise InputError("objective", f"unknown objective {objective!r}", f"use one of {list(OBJECTIVES)}")
    if overlap not in OVERLAPS:
        raise InputError("overlap", f"unknown overlap mode {overlap!r}", f"use one of {list(OVERLAPS)}")
    wl = scenario.workload
    if wl.requests > 1 and objective != "tpot":
        if objective == "e2e" and wl.new_tokens > 1:  # a burst that decodes: local search (core/burst_plan.py)
            from coldpipe.core.burst_plan import plan_burst_e2e

            _check_size(_Tables.build(scenario).types, _BEYOND_RANGE)
            plan, _, details = plan_burst_e2e(scenario, overlap)
            return _result(scenario, plan, overlap, "e2e", details)
        res = _plan_burst(scenario, overlap)
        return res if objective == "ttft" else _result(scenario, res.plan, overlap, "e2e", dict(res.details))
    steps = wl.new_tokens - 1
    if objective == "ttft" or (objective == "e2e" and steps == 0):
        res = plan_dp(scenario, overlap)
        return _result(scenario, res.plan, overlap, objective, {"dp_objective": res.ttft_s})
    dec = _Tables.build(scenario, phase="decode")
    _check_size(dec.types, _BEYOND_RANGE)
    if objective == "tpot":
        best, plan = dec.run(_MODE_ADDITIVE)
        if plan is None:
            _raise_infeasible(scenario)
        assert plan is not None
        return _result(scenario, plan, overlap, "tpot", {"dp_objective": best})
    pre = _Tables.build(scenario)
    if overlap == "none":
        res = _plan_none(scenario, pre.plus(dec, float(steps)))
        details = {"dp_objective": res.ttft_s, "thresholds_evaluated": res.thresholds_evaluated}
        return _result(scenario, res.plan, overlap, "e2e", details)
    # Incumbent: the better of the TTFT-optimal and the TPOT-optimal plans, under E2E.
    seeds = [plan_dp(scenario, overlap).plan]
    _, tpot_plan = dec.run(_MODE_ADDITIVE)
    if tpot_plan is not None:
        seeds.append(tpot_plan)
    plan, best, n_pairs = _improve_on(scenario, seeds, overlap, "e2e", pre, dec, float(steps), kind=0)
    return _result(scenario, plan, overlap, "e2e", {"dp_objective": best, "pareto_pairs": n_pairs})


_BEYOND_RANGE = (
    "e2e, tpot and bursts are planned exactly only within this range: use --solver auto or heuristic for a "
    "good plan (not proven optimal), or plan for ttft, use fewer distinct devices, or group identical ones"
)


def _result(
    scenario: Scenario, plan: Plan, overlap: Overlap, objective: str, details: dict[str, float | int | str]
) -> ObjectiveResult:
    details.setdefault("exact", 1)
    return ObjectiveResult(plan, objective_s(scenario, plan, overlap, objective), objective, overlap, details)


def _improve_on(
    scenario: Scenario,
    seeds: list[Plan],
    overlap: Overlap,
    objective: str,
    pre: _Tables,
    second: _Tables,
    lam: float,
    kind: int,
) -> tuple[Plan, float, int]:
    """The Pareto DP with the best seed as incumbent; returns the seed itself if nothing beats it."""
    values = [objective_s(scenario, p, overlap, objective) for p in seeds]
    k = int(np.argmin(values))
    mode = _MODE_LAYER if overlap == "layer" else _MODE_STAGE
    best, plan, n_pairs = _pareto_plan(pre, second, mode, lam, values[k] * (1 + 1e-12), kind=kind)
    return (seeds[k], values[k], n_pairs) if plan is None else (plan, best, n_pairs)


def _plan_burst(scenario: Scenario, overlap: Overlap) -> ObjectiveResult:
    """A burst of ``requests`` identical requests: exact for ``max`` completion, local search for ``mean``."""
    wl = scenario.workload
    lam = float(wl.requests - 1)
    pre = _Tables.build(scenario)
    _check_size(pre.types, _BEYOND_RANGE)
    sc_max = replace_workload(scenario, completion="max")  # the DP's objective, also for its incumbent
    if overlap == "none":
        # loading gates only the start (t0 = last load end): Pareto DP on the additive timings, every stage
        # restricted to load ends <= tau, inside the threshold branch-and-bound of the "none" DP
        def run(tau: float) -> tuple[float, Plan | None]:
            value, plan, _ = _pareto_plan(pre, pre, _MODE_ADDITIVE, lam, math.inf, kind=1, tau=tau)
            return value, plan

        res = _plan_none(scenario, pre, run)
        max_plan, details = res.plan, {"thresholds_evaluated": res.thresholds_evaluated}
        ttft_plan = None
    else:
        ttft_plan = plan_dp(scenario, overlap).plan
        max_plan, _, n_pairs = _improve_on(sc_max, [ttft_plan], overlap, "ttft", pre, pre, lam, kind=1)
        details = {"pareto_pairs": n_pairs}
    if wl.completion == "max":
        return _result(scenario, max_plan, overlap, "ttft", details)
    seeds = [max_plan, ttft_plan if ttft_plan is not None else plan_dp(scenario, overlap).plan]
    plan, evaluated = _local_search(scenario, seeds, overlap)
    return _result(
        scenario, plan, overlap, "ttft", {"exact": 0, "method": "local search", "plans_evaluated": evaluated}
    )


def replace_workload(scenario: Scenario, **changes: object) -> Scenario:
    """``scenario`` with some workload fields changed (e.g. ``new_tokens=64``)."""
    workload = dataclasses.replace(scenario.workload, **changes)  # type: ignore[arg-type]
    return Scenario(scenario.blocks, scenario.devices, workload, scenario.network, scenario.source, scenario.model_name)


def scenario_after(scenario: Scenario, previous: Plan) -> Scenario:
    """The next request's scenario once ``previous`` has run: warm residency, the step to steady state.

    Every device of ``previous`` now holds its stage's blocks (they cost no loading) and its process is
    running (``startup = 0``); the other devices are unchanged. The next plan may move blocks anywhere:
    a device that takes blocks it does not hold loads them, and memory limits apply as always.
    """
    previous.validate(scenario)
    held = {st.device: (st.first, st.last) for st in previous.stages}
    devices = [
        dataclasses.replace(d, resident=(held[d.name],), startup=0.0) if d.name in held else d for d in scenario.devices
    ]
    return scenario.with_devices(devices)


def _neighbours(scenario: Scenario, plan: Plan, candidates: list[str] | None = None) -> list[Plan]:
    """Plans one move away: shift a boundary, swap two devices, replace, split or merge stages.

    Devices brought in by replace/split: every unused one, or only the unused among ``candidates``.
    """
    st = list(plan.stages)
    used = {s.device for s in st}
    pool = [d.name for d in scenario.devices] if candidates is None else candidates
    unused = [name for name in pool if name not in used]
    out: list[Plan] = []

    def add(stages: list[Stage]) -> None:
        out.append(Plan(tuple(stages)))

    for j in range(len(st) - 1):  # shift the boundary after stage j
        for delta in (-8, -4, -2, -1, 1, 2, 4, 8):
            cut = st[j].last + delta
            if st[j].first <= cut < st[j + 1].last:
                add(
                    [
                        *st[:j],
                        Stage(st[j].device, st[j].first, cut),
                        Stage(st[j + 1].device, cut + 1, st[j + 1].last),
                        *st[j + 2 :],
                    ]
                )
        merged = Stage(st[j].device, st[j].first, st[j + 1].last)  # merge j and j + 1 on either device
        add([*st[:j], merged, *st[j + 2 :]])
        add([*st[:j], Stage(st[j + 1].device, st[j].first, st[j + 1].last), *st[j + 2 :]])
    for j in range(len(st)):
        for k in range(j + 1, len(st)):  # swap the devices of two stages
            swapped = list(st)
            swapped[j] = Stage(st[k].device, st[j].first, st[j].last)
            swapped[k] = Stage(st[j].device, st[k].first, st[k].last)
            add(swapped)
        for name in unused:
            add([*st[:j], Stage(name, st[j].first, st[j].last), *st[j + 1 :]])  # replace
            if st[j].last > st[j].first:  # split in the middle, the new device after or before
                mid = (st[j].first + st[j].last) // 2
                a, b = Stage(st[j].device, st[j].first, mid), Stage(name, mid + 1, st[j].last)
                add([*st[:j], a, b, *st[j + 1 :]])
                add([*st[:j], Stage(name, st[j].first, mid), Stage(st[j].device, mid + 1, st[j].last), *st[j + 1 :]])
    return out


def _local_search(
    scenario: Scenario,
    seeds: list[Plan],
    overlap: Overlap,
    *,
    unused: list[str] | None = None,
    max_evaluations: int | None = None,
    objective: str = "ttft",
) -> tuple[Plan, int]:
    """Best-improvement descent from each seed over :func:`_neighbours`, timed by the simulator.

    ``unused``: the only devices a move may bring in (default: all); ``max_evaluations``: stop the
    descent once that many plans have been timed (default: no limit); ``objective``: what is minimised
    (default ``ttft``: with a burst, its first-token completion).
    """
    best_plan, best_value, evaluated = seeds[0], math.inf, 0
    for seed in seeds:
        cur, cur_value = seed, objective_s(scenario, seed, overlap, objective)
        while max_evaluations is None or evaluated < max_evaluations:
            step, step_value = cur, cur_value
            for cand in _neighbours(scenario, cur, unused):
                if max_evaluations is not None and evaluated >= max_evaluations:
                    break
                try:
                    cand.validate(scenario)
                except InvalidPlan:
                    continue
                evaluated += 1
                value = objective_s(scenario, cand, overlap, objective)
                if value < step_value * (1 - 1e-12):
                    step, step_value = cand, value
            if step is cur:
                break
            cur, cur_value = step, step_value
        if cur_value < best_value:
            best_plan, best_value = cur, cur_value
    return best_plan, evaluated
