"""The pure core: the world and its one timeline. Values in, values out; the standard library and numpy only.

- :mod:`.types`: the scenario (blocks, devices, network, workload) and the plan, frozen with JSON round-trips;
- :mod:`.simulator`: the one implementation of the latency model of ``docs/model.md``;
- :mod:`.architectures`: real model architectures -> blocks; :mod:`.channel`: the wireless channel.
"""

from coldpipe.core.simulator import Timeline, simulate, transfer_s
from coldpipe.core.types import AP, OVERLAPS, Block, Device, Network, Overlap, Plan, Scenario, Stage, Workload

__all__ = [
    "AP",
    "OVERLAPS",
    "Block",
    "Device",
    "Network",
    "Overlap",
    "Plan",
    "Scenario",
    "Stage",
    "Timeline",
    "Workload",
    "simulate",
    "transfer_s",
]
