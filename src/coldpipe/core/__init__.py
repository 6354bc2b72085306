"""The pure core: values in, values out. Imports only the standard library, numpy and numba."""

from coldpipe.core.dp import DPResult, plan_dp, plan_warm
from coldpipe.core.simulator import Timeline, simulate, transfer_s
from coldpipe.core.types import AP, OVERLAPS, Block, Device, Network, Overlap, Plan, Scenario, Stage, Workload

__all__ = [
    "AP",
    "OVERLAPS",
    "Block",
    "DPResult",
    "Device",
    "Network",
    "Overlap",
    "Plan",
    "Scenario",
    "Stage",
    "Timeline",
    "Workload",
    "plan_dp",
    "plan_warm",
    "simulate",
    "transfer_s",
]
