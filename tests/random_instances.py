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


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return lo * (hi / lo) ** rng.random()


def hard_scenario(seed: int, *, max_devices: int = 4, max_blocks: int = 10, min_blocks: int = 4) -> Scenario:
    """An instance of the kind that broke SCIP's old settings (issue 12): continuous, spread-out figures.

    Tight memory (each device holds 30-100 % of the model, resampled until the devices hold it in all),
    link rates 20 Mbit/s-1 Gbit/s, load rates 20 MB/s-3 GB/s, start-ups 0-2 s (log-uniform, so the
    figures span orders of magnitude and rarely tie), the source at the AP or on a device, identical
    devices (a profile drawn twice) and, on about a third of the instances, a device that already
    holds a range of blocks (``Device.resident``).
    """
    rng = random.Random(seed)
    n_blocks = rng.randint(min_blocks, max_blocks)
    n_devices = rng.randint(2, max_devices)
    blocks = [
        Block(
            f"b{i}",
            _log_uniform(rng, 5e7, 1e9),
            rng.choice([0.0, _log_uniform(rng, 1e9, 2e12)]),
            rng.choice([0.0, _log_uniform(rng, 1e4, 4e6)]),
            rng.choice([0.0, _log_uniform(rng, 1e6, 1e8)]),
        )
        for i in range(n_blocks)
    ]
    model_bytes = sum(b.memory_bytes for b in blocks)
    n_profiles = rng.randint(1, n_devices)
    while True:
        profiles = [
            {
                "flops": _log_uniform(rng, 1e11, 2e13),
                "load_bandwidth": _log_uniform(rng, 2e7, 3e9),
                "startup": rng.choice([0.0, rng.uniform(0.0, 2.0)]),
                "memory": rng.uniform(0.3, 1.0) * model_bytes,
                "uplink": _log_uniform(rng, 2e7, 1e9),
                "downlink": _log_uniform(rng, 2e7, 1e9),
            }
            for _ in range(n_profiles)
        ]
        chosen = [rng.choice(profiles) for _ in range(n_devices)]
        if sum(p["memory"] for p in chosen) >= 1.2 * model_bytes:
            break
    devices = [Device(f"d{k}", **p) for k, p in enumerate(chosen)]
    if rng.random() < 0.35:  # a warm device: it holds a range of blocks (which may not fit its memory)
        k = rng.randrange(n_devices)
        first = rng.randrange(n_blocks)
        last = rng.randint(first, min(n_blocks - 1, first + rng.randint(0, 3)))
        devices[k] = Device(f"d{k}", **chosen[k], resident=((first, last),))
    workload = Workload(
        rng.choice([8, 128]), prompt_bytes=rng.choice([0.0, 4096.0, 2e5]), token_bytes=rng.choice([0.0, 4.0])
    )
    source = rng.choice([AP, rng.choice([d.name for d in devices])])
    return Scenario(blocks, devices, workload, Network(rng.choice([0.0, _log_uniform(rng, 1e-4, 5e-3)])), source)
