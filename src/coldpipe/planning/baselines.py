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

from coldpipe.core.simulator import Timeline, simulate
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario, Stage
from coldpipe.errors import ColdpipeError, InvalidPlan
from coldpipe.planning.exact import plan_warm

__all__ = [
    "PARTITIONS",
    "Baseline",
    "evaluate_baselines",
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
    """A baseline partition timed under one overlap mode; its TTFT is inf when it cannot run."""

    partition: str
    overlap: Overlap
    plan: Plan | None
    timeline: Timeline | None = None  # the simulator's, when the plan is valid
    why_not: str = ""  # set when the plan is invalid (e.g. a stage exceeds its device's memory)

    @property
    def name(self) -> str:
        return f"{self.partition}/{self.overlap}"

    @property
    def ttft_s(self) -> float:
        return self.timeline.ttft_s if self.timeline is not None else math.inf

    @property
    def hidden_load_share(self) -> float | None:
        """See :attr:`~coldpipe.core.simulator.Timeline.hidden_load_share`."""
        return self.timeline.hidden_load_share if self.timeline is not None else None


def evaluate_baselines(scenario: Scenario, overlaps: tuple[Overlap, ...] = OVERLAPS) -> list[Baseline]:
    """Every partition of :data:`PARTITIONS` under every overlap mode, each simulated once."""
    out: list[Baseline] = []
    for name in PARTITIONS:
        if name == "single":
            plans = single_device_plans(scenario)
            for ov in overlaps:
                if not plans:
                    out.append(Baseline(name, ov, None, None, "no single device holds the whole model"))
                    continue
                timelines = [simulate(scenario, p, ov) for p in plans]
                best = min(range(len(plans)), key=lambda i: timelines[i].ttft_s)
                out.append(Baseline(name, ov, plans[best], timelines[best]))
            continue
        try:
            plan = partition(name, scenario)
        except ColdpipeError as exc:  # warm-optimal on a model that fits nowhere
            out.extend(Baseline(name, ov, None, None, str(exc)) for ov in overlaps)
            continue
        try:
            plan.validate(scenario)
        except InvalidPlan as exc:
            out.extend(Baseline(name, ov, plan, None, str(exc)) for ov in overlaps)
            continue
        out.extend(Baseline(name, ov, plan, simulate(scenario, plan, ov)) for ov in overlaps)
    return out
