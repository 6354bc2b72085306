"""Seeded small random scenarios for the differential tests (MINLP, heuristic), on ``strategies.py``'s grids."""

from __future__ import annotations

import math
import random

from coldpipe.core.types import AP, Block, Device, Network, Plan, Scenario, Workload


def random_scenario(seed: int, n_devices: int, n_blocks: int, *, tight: bool, source_device: bool) -> Scenario:
    """A small instance on the same value grids as ``strategies.py`` (ties and identical devices are common)."""
    rng = random.Random(seed)
    blocks = [
        Block(
            f"b{i}",
            rng.choice([1e8, 2e8, 3e8, 5e8, 8e8]),
            rng.choice([0.0, 1e10, 5e10, 2e11, 1e12]),
            rng.choice([0.0, 1e5, 1e6, 4e6]),
            rng.choice([0.0, 0.0, 1e7, 5e7]),
        )
        for i in range(n_blocks)
    ]
    model_bytes = sum(b.memory_bytes for b in blocks)
    profiles = [
        {
            "flops": rng.choice([1e11, 5e11, 2e12, 1e13]),
            "load_bandwidth": rng.choice([1e8, 5e8, 1e9, 3e9]),
            "startup": rng.choice([0.0, 0.1, 0.5, 2.0]),
            "memory": (rng.choice([0.25, 0.4, 0.6, 0.8, 1.5]) if tight else 100.0) * model_bytes,
            "uplink": rng.choice([1e7, 1e8, 6e8]),
            "downlink": rng.choice([1e7, 1e8, 8e8]),
        }
        for _ in range(rng.randint(1, n_devices))
    ]
    devices = [Device(f"d{k}", **rng.choice(profiles)) for k in range(n_devices)]
    workload = Workload(8, prompt_bytes=rng.choice([0.0, 2048.0, 1e6]), token_bytes=rng.choice([0.0, 4.0]))
    source = rng.choice([d.name for d in devices]) if source_device else AP
    return Scenario(blocks, devices, workload, Network(rng.choice([0.0, 0.003])), source)


def brute_value(scenario: Scenario, overlap: str = "layer", objective: str = "ttft") -> tuple[float, Plan | None]:
    """The exhaustive optimum as ``(value, plan)``, ``(inf, None)`` when no plan fits: the tests' reference."""
    from coldpipe.errors import Infeasible
    from coldpipe.planning import Problem
    from coldpipe.planning.brute import brute_force

    try:
        sol = brute_force(Problem(scenario, overlap, objective))  # type: ignore[arg-type]
    except Infeasible:
        return math.inf, None
    return sol.value_s, sol.plan
