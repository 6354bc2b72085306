"""Lower bounds no plan can beat, for every objective (``docs/model.md``, "Lower bounds").

- the **warm optimum**: the best plan with every weight already resident (the exact warm DP);
- the **parallel-loading bound**: every byte must be loaded by some device, then at least one block
  computed and the token returned; independently the last block must be loaded, computed and returned
  by one device;
- the **relaxed warm bound**, for clusters beyond the exact DP's range: every block computed on the
  fastest device that can hold it, plus the cheapest deliveries;
- the **Lagrangian bound** (:mod:`coldpipe.planning.lagrange`), for any cluster size and objective: the
  exact DP with "each device at most once" priced instead of enforced (the heuristic's certificate).

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> sc = Scenario([Block(f"b{i}", 1.0, 1.0, 0.0) for i in range(4)],
...               [Device("x", 1.0, 1.0, 0.0, 10.0, 1e9, 1e9)], Workload(1, prompt_bytes=0, token_bytes=0))
>>> b = lower_bounds(sc)   # one device: loads end at 1..4 s, each block computes 1 s after its load
>>> b.warm_s, b.parallel_load_s
(4.0, 5.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from coldpipe.core.simulator import block_decode_s, transfer_s
from coldpipe.core.types import Scenario
from coldpipe.planning.exact import plan_warm
from coldpipe.planning.kernels import KIND_BURST, Mode
from coldpipe.planning.lagrange import burst_none_bound, lagrangian_bound, pareto_bound
from coldpipe.planning.tables import MAX_USAGE_VECTORS, DeviceTypes, StageTables

__all__ = [
    "Bounds",
    "dual_bound",
    "earliest_all_loaded_s",
    "lower_bounds",
    "objective_lower_bound",
    "parallel_loading_bound_s",
    "relaxed_lower_bound_s",
    "ttft_lower_bound",
]


@dataclass(frozen=True)
class Bounds:
    """Lower bounds on the TTFT of every cold-start plan."""

    warm_s: float  # the warm optimum: every weight resident
    parallel_load_s: float  # every byte must be loaded by some device, then computed and returned

    @property
    def best_s(self) -> float:
        return max(self.warm_s, self.parallel_load_s)


def earliest_all_loaded_s(scenario: Scenario) -> float:
    """Least τ with sum_k min(memory_k, max(0, τ - startup_k) * bandwidth_k) >= the bytes someone must load.

    A block already resident on some device (``Device.resident``) may cost no loading at all.
    """
    total = sum(b.weight_bytes for l, b in enumerate(scenario.blocks) if not any(d.holds(l) for d in scenario.devices))
    if total == 0:
        return -math.inf

    def loaded(tau: float) -> float:
        return sum(min(d.memory, max(0.0, tau - d.startup) * d.load_bandwidth) for d in scenario.devices)

    if loaded(math.inf) < total:
        return math.inf
    least = least_time(lambda t: loaded(t) >= total, min(d.startup for d in scenario.devices))
    assert least is not None  # everything fits by t = inf, checked above
    return least


def least_time(reached: Callable[[float], bool], lo: float, cap: float = math.inf) -> float | None:
    """The least ``t >= lo`` with ``reached(t)`` (``reached`` monotone), to a relative 1e-12: the window
    ``[lo, lo + 1]`` doubles until it holds such a ``t``, then bisects; None once the window passes ``cap``."""
    hi = lo + 1.0
    while not reached(hi):
        hi = lo + 2.0 * (hi - lo)
        if hi > cap:
            return None
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if reached(mid):
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return hi


def parallel_loading_bound_s(scenario: Scenario) -> float:
    """The parallel-loading bound on the TTFT.

    The bytes of the model can all be resident no earlier than τ* (:func:`earliest_all_loaded_s`); the
    block loaded last must still be computed (at least the cheapest block on the fastest device) and the
    token returned (at least the cheapest return). Independently, the last block must be loaded, computed
    and returned by one device. The bound is the larger of the two.
    """
    f_max = max(d.flops for d in scenario.devices)
    wl = scenario.workload
    ret = [transfer_s(scenario, d.name, scenario.source, wl.token_bytes) for d in scenario.devices]
    by_volume = earliest_all_loaded_s(scenario) + min(b.flops for b in scenario.blocks) / f_max + min(ret)
    n_last = scenario.n_blocks - 1
    last = scenario.blocks[n_last]
    by_last_block = min(
        (
            (0.0 if d.holds(n_last) else d.startup + last.weight_bytes / d.load_bandwidth) + last.flops / d.flops + r
            for d, r in zip(scenario.devices, ret, strict=True)
            if last.memory_bytes <= d.memory
        ),
        default=math.inf,
    )
    return max(by_volume, by_last_block)


def lower_bounds(scenario: Scenario) -> Bounds:
    """The warm optimum (exact DP, within its range) and the parallel-loading bound."""
    return Bounds(plan_warm(scenario).value_s, parallel_loading_bound_s(scenario))


def relaxed_lower_bound_s(scenario: Scenario) -> float:
    """A warm lower bound that scales to any cluster (no DP): used instead of the warm optimum.

    Every plan computes every block on some device that can hold it, one block after another, so
    TTFT >= sum_l min_{k: mem_l <= M_k} flops_l / F_k, plus the cheapest prompt delivery, plus the
    cheapest token return, plus, when no single device holds the whole model, the cheapest stage
    boundary (some block's output crosses the AP).
    """
    blocks, devs, wl = scenario.blocks, scenario.devices, scenario.workload
    compute = 0.0
    for b in blocks:
        rates = [d.flops for d in devs if b.memory_bytes <= d.memory]
        if not rates:
            return math.inf
        compute += b.flops / max(rates)
    src = scenario.source
    prompt = min(transfer_s(scenario, src, d.name, wl.prompt_bytes_value) for d in devs)
    token = min(transfer_s(scenario, d.name, src, wl.token_bytes) for d in devs)
    need = sum(b.memory_bytes for b in blocks)
    boundary = 0.0
    if not any(need <= d.memory for d in devs) and len(blocks) > 1:
        hop = scenario.network.hop_latency
        boundary = (
            min(
                min(8.0 * b.out_bytes / d.uplink for d in devs) + min(8.0 * b.out_bytes / d.downlink for d in devs)
                for b in blocks[:-1]
            )
            + 2 * hop
        )
    return compute + prompt + token + boundary


def ttft_lower_bound(scenario: Scenario) -> tuple[float, str]:
    """The best TTFT lower bound available at this size, and its kind: the warm DP within range, else relaxed."""
    if DeviceTypes.of(scenario).n_usage_vectors <= MAX_USAGE_VECTORS:
        return lower_bounds(scenario).best_s, "warm optimum / parallel loading"
    return (
        max(relaxed_lower_bound_s(scenario), parallel_loading_bound_s(scenario)),
        "relaxed warm / parallel loading",
    )


def dual_bound(scenario: Scenario, objective: str, overlap: str, upper: float = math.inf) -> float:
    """The Lagrangian bound (:func:`~coldpipe.planning.lagrange.lagrangian_bound`) on one request's ``objective``.

    ``tpot`` on the decode tables, ``e2e`` on ``prefill + (T - 1) x decode``, else the TTFT (a burst's
    first request). ``upper``: a plan's value, the target of the subgradient ascent.
    """
    wl = scenario.workload
    none = overlap == "none"
    if objective == "tpot":
        return lagrangian_bound(StageTables.build(scenario, phase="decode"), Mode.ADDITIVE, upper).value_s
    pre = StageTables.build(scenario)
    if objective == "e2e" and wl.new_tokens > 1:
        pre = pre.plus(StageTables.build(scenario, phase="decode"), float(wl.new_tokens - 1))
    return lagrangian_bound(pre, Mode.of(overlap), upper, none=none).value_s


def objective_lower_bound(
    scenario: Scenario, objective: str, overlap: str | None = None, upper: float = math.inf
) -> tuple[float, str]:
    """A lower bound on ``objective``: the TTFT bound plus what decoding or the burst adds at least.

    With ``overlap``, also the Lagrangian bound of that overlap (:func:`dual_bound`, ``upper`` its
    target), and the larger of the two is returned.

    TPOT >= the cheapest token delivery + sum over blocks of the cheapest decode of the block + the
    cheapest token return; E2E >= TTFT bound + (T - 1) x that; a burst's request ``r`` ends at least
    ``(r - 1)`` times the last block's cheapest compute after the first (the last stage serves them in
    turn), so max completion >= TTFT bound + (R - 1) x that, mean >= TTFT bound + (R - 1) / 2 x that.
    """
    wl = scenario.workload
    if objective == "e2e" and wl.requests > 1:
        # every request's last token: at least one request's e2e alone; and each request's first token
        # (the burst's completions) plus its T - 1 decode steps, each at least the least TPOT
        one = scenario.replace(workload={"requests": 1})
        alone, alone_kind = objective_lower_bound(one, "e2e", overlap, upper)
        if overlap is None or wl.new_tokens == 1:
            return alone, alone_kind
        tpot, _ = objective_lower_bound(one, "tpot", overlap)
        # the ascent's target: the plan's value less its decode steps (at least the least TPOT each)
        first, _ = objective_lower_bound(scenario, "ttft", overlap, upper - (wl.new_tokens - 1) * tpot)
        queued = first + (wl.new_tokens - 1) * tpot
        return (queued, "burst first tokens + (T-1) x least TPOT") if queued > alone else (alone, alone_kind)
    simple, kind = _simple_bound(scenario, objective)
    if overlap is None:
        return simple, kind
    one = scenario.replace(workload={"requests": 1}) if wl.requests > 1 else scenario
    if objective == "ttft" and wl.requests > 1 and overlap == "none":
        first = lagrangian_bound(StageTables.build(one), Mode.ADDITIVE, upper, none=True)
        dual = first.value_s
    else:
        dual = dual_bound(one, objective, overlap, upper)
    dual_kind = "Lagrangian (device reuse priced)"
    if objective == "ttft" and wl.requests > 1:  # the burst's queue term on top of its first request
        share = (1.0 if wl.completion == "max" else 0.5) * (wl.requests - 1)
        dual += share * _last_block_s(scenario)
        dual_kind += " + burst queue"
        if overlap == "none" and first.untracked_price is not None:
            # the burst's pair DP inside the threshold search, at the first request's prices
            burst = burst_none_bound(StageTables.build(scenario), share, first.untracked_price)
            if burst > dual:
                dual, dual_kind = burst, "Lagrangian burst pairs at thresholds (device reuse priced)"
        if overlap != "none":  # the burst's own pair DP, reuse priced
            # request r ends at the burst recurrence's value for lam = r - 1, convex in lam: the mean over
            # r is at least its value at the mean lam (Jensen), the max its value at lam = R - 1
            pre = StageTables.build(scenario)
            lam = float(wl.requests - 1) * (1.0 if wl.completion == "max" else 0.5)
            burst = pareto_bound(pre, pre, Mode.of(overlap), KIND_BURST, lam, upper).value_s
            if burst > dual:
                dual, dual_kind = burst, "Lagrangian burst pairs (device reuse priced)"
    if dual > simple:
        return dual, dual_kind
    return simple, kind


def _last_block_s(scenario: Scenario) -> float:
    """The last block's cheapest compute (the last stage serves a burst's requests in turn)."""
    return scenario.blocks[-1].flops / max(d.flops for d in scenario.devices)


def _simple_bound(scenario: Scenario, objective: str) -> tuple[float, str]:
    """The closed-form bounds of :func:`objective_lower_bound` (and the warm DP within its range)."""
    wl = scenario.workload
    if objective == "tpot" or (objective == "e2e" and wl.new_tokens > 1):
        src, devs = scenario.source, scenario.devices
        tpot = (
            min(transfer_s(scenario, src, d.name, wl.token_bytes) for d in devs)
            + sum(
                min(block_decode_s(scenario, l, d.name) for d in devs if b.memory_bytes <= d.memory)
                for l, b in enumerate(scenario.blocks)
            )
            + min(transfer_s(scenario, d.name, src, wl.token_bytes) for d in devs)
        )
        if objective == "tpot":
            return tpot, "cheapest decode per block"
        ttft, kind = ttft_lower_bound(scenario)
        return ttft + (wl.new_tokens - 1) * tpot, kind + " + (T-1) x cheapest decode"
    ttft, kind = ttft_lower_bound(scenario)
    if wl.requests == 1:
        return ttft, kind
    share = (wl.requests - 1) * (1.0 if wl.completion == "max" else 0.5)
    return ttft + share * _last_block_s(scenario), kind + " + burst queue"
