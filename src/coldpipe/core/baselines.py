"""The usual ways to split a model, and two lower bounds no cold-start plan can beat.

Partitions (each then timed under every overlap mode by the simulator):

- ``uniform``: equal numbers of blocks over all devices, in file order (the first ``B mod n``
  devices get one more);
- ``memory``: blocks proportional to device memory, in file order (as exo does);
- ``compute``: blocks proportional to device FLOP/s, in file order;
- ``warm-optimal``: the loading-unaware optimum (EdgeShard/PipeEdge's DP, weights assumed resident);
- ``single``: the best single device that holds the whole model (chosen per overlap mode).

Proportional splits use cumulative rounding: device ``k`` ends at block
``round(B * sum(w[:k+1]) / sum(w)) - 1``, so a device whose share rounds to nothing is left out.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> sc = Scenario([Block(f"b{i}", 1.0, 1.0, 1.0) for i in range(10)],
...               [Device(n, 1.0, 1.0, 0.0, m, 1.0, 1.0) for n, m in [("x", 10.0), ("y", 30.0)]], Workload(1))
>>> str(partition("uniform", sc)), str(partition("memory", sc))
('x[0-4] > y[5-9]', 'x[0-2] > y[3-9]')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coldpipe.core.dp import plan_warm
from coldpipe.core.simulator import simulate, transfer_s
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario, Stage
from coldpipe.errors import ColdpipeError, InvalidPlan

__all__ = [
    "PARTITIONS",
    "Baseline",
    "Bounds",
    "evaluate_baselines",
    "lower_bounds",
    "partition",
    "single_device_plans",
]

PARTITIONS = ("uniform", "memory", "compute", "warm-optimal", "single")


def _proportional(scenario: Scenario, weights: list[float]) -> Plan:
    n = scenario.n_blocks
    total = sum(weights)
    stages = []
    first = 0
    acc = 0.0
    for dev, w in zip(scenario.devices, weights, strict=True):
        acc += w
        end = n if acc >= total else min(n, math.floor(n * acc / total + 0.5))
        if end > first:
            stages.append(Stage(dev.name, first, end - 1))
            first = end
    return Plan(tuple(stages))


def partition(name: str, scenario: Scenario) -> Plan:
    """The plan of partition ``name`` (not ``single``, which depends on the overlap mode)."""
    if name == "uniform":
        n, k = scenario.n_blocks, len(scenario.devices)
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
        starts = [sum(sizes[:i]) for i in range(k)]
        return Plan(
            tuple(Stage(d.name, a, a + m - 1) for d, a, m in zip(scenario.devices, starts, sizes, strict=True) if m > 0)
        )
    if name == "memory":
        return _proportional(scenario, [d.memory for d in scenario.devices])
    if name == "compute":
        return _proportional(scenario, [d.flops for d in scenario.devices])
    if name == "warm-optimal":
        return plan_warm(scenario).plan
    raise ValueError(f"unknown partition {name!r}; use one of {PARTITIONS[:-1]}")


def single_device_plans(scenario: Scenario) -> list[Plan]:
    """One plan per device that can hold the whole model."""
    need = sum(b.memory_bytes for b in scenario.blocks)
    last = scenario.n_blocks - 1
    return [Plan((Stage(d.name, 0, last),)) for d in scenario.devices if need <= d.memory]


@dataclass(frozen=True)
class Baseline:
    """A baseline partition timed under one overlap mode; ``ttft_s`` is inf when it cannot run."""

    partition: str
    overlap: Overlap
    plan: Plan | None
    ttft_s: float
    why_not: str = ""  # set when the plan is invalid (e.g. a stage exceeds its device's memory)
    hidden_load_share: float | None = None  # see Timeline.hidden_load_share

    @property
    def name(self) -> str:
        return f"{self.partition}/{self.overlap}"


def evaluate_baselines(scenario: Scenario, overlaps: tuple[Overlap, ...] = OVERLAPS) -> list[Baseline]:
    """Every partition of :data:`PARTITIONS` under every overlap mode, timed by the simulator."""
    out: list[Baseline] = []
    for name in PARTITIONS:
        if name == "single":
            plans = single_device_plans(scenario)
            for ov in overlaps:
                if not plans:
                    out.append(Baseline(name, ov, None, math.inf, "no single device holds the whole model"))
                    continue
                timelines = [simulate(scenario, p, ov) for p in plans]
                best = min(range(len(plans)), key=lambda i: timelines[i].ttft_s)
                tl = timelines[best]
                out.append(Baseline(name, ov, plans[best], tl.ttft_s, hidden_load_share=tl.hidden_load_share))
            continue
        try:
            plan = partition(name, scenario)
        except ColdpipeError as exc:  # warm-optimal on a model that fits nowhere
            out.extend(Baseline(name, ov, None, math.inf, str(exc)) for ov in overlaps)
            continue
        try:
            plan.validate(scenario)
        except InvalidPlan as exc:
            out.extend(Baseline(name, ov, plan, math.inf, str(exc)) for ov in overlaps)
            continue
        for ov in overlaps:
            tl = simulate(scenario, plan, ov)
            out.append(Baseline(name, ov, plan, tl.ttft_s, hidden_load_share=tl.hidden_load_share))
    return out


@dataclass(frozen=True)
class Bounds:
    """Lower bounds on the TTFT of every cold-start plan (SPEC.md, "Useful facts")."""

    warm_s: float  # the warm optimum: every weight resident
    parallel_load_s: float  # every byte must be loaded by some device, then computed and returned

    @property
    def best_s(self) -> float:
        return max(self.warm_s, self.parallel_load_s)


def _earliest_all_loaded_s(scenario: Scenario) -> float:
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
    lo = min(d.startup for d in scenario.devices)
    hi = lo + 1.0
    while loaded(hi) < total:
        hi = lo + 2.0 * (hi - lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if loaded(mid) >= total:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return hi


def lower_bounds(scenario: Scenario) -> Bounds:
    """Both lower bounds of SPEC.md.

    The parallel-loading bound: the bytes of the model can all be resident no earlier than τ*
    (every device loading from its start-up, capped by its memory; blocks resident somewhere excluded).
    The block loaded last must
    still be computed (at least the cheapest block on the fastest device) and the token returned
    (at least the cheapest return). Independently, the last block must be loaded, computed and
    returned by one device. The bound is the larger of the two.
    """
    warm = plan_warm(scenario).ttft_s
    f_max = max(d.flops for d in scenario.devices)
    wl = scenario.workload
    ret = {d.name: transfer_s(scenario, d.name, scenario.source, wl.token_bytes) for d in scenario.devices}
    tau = _earliest_all_loaded_s(scenario)
    by_volume = tau + min(b.flops for b in scenario.blocks) / f_max + min(ret.values())
    n_last = scenario.n_blocks - 1
    last = scenario.blocks[n_last]
    by_last_block = min(
        (0.0 if d.holds(n_last) else d.startup + last.weight_bytes / d.load_bandwidth)
        + last.flops / d.flops
        + ret[d.name]
        for d in scenario.devices
        if last.memory_bytes <= d.memory
    )
    return Bounds(warm, max(by_volume, by_last_block))
