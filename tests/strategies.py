"""Hypothesis strategies: small random scenarios with tight memory, identical devices and any source."""

from __future__ import annotations

from hypothesis import strategies as st

from coldpipe.core.types import AP, Block, Device, Network, Scenario, Workload

# Values drawn from small grids: ties and identical devices happen often, which is where DPs go wrong.
_weights = st.sampled_from([1e8, 2e8, 3e8, 5e8, 8e8])
_flops = st.sampled_from([0.0, 1e10, 5e10, 2e11, 1e12])
_out = st.sampled_from([0.0, 1e5, 1e6, 4e6])
_kv = st.sampled_from([0.0, 0.0, 1e7, 5e7])


@st.composite
def blocks(draw: st.DrawFn, min_blocks: int = 1, max_blocks: int = 8) -> list[Block]:
    n = draw(st.integers(min_blocks, max_blocks))
    return [Block(f"b{i}", draw(_weights), draw(_flops), draw(_out), draw(_kv)) for i in range(n)]


@st.composite
def device_profile(draw: st.DrawFn, model_bytes: float, tight: bool) -> dict[str, float]:
    mem_share = draw(st.sampled_from([0.25, 0.4, 0.6, 0.8, 1.5])) if tight else 100.0
    return {
        "flops": draw(st.sampled_from([1e11, 5e11, 2e12, 1e13])),
        "load_bandwidth": draw(st.sampled_from([1e8, 5e8, 1e9, 3e9])),
        "startup": draw(st.sampled_from([0.0, 0.1, 0.5, 2.0])),
        "memory": mem_share * model_bytes,
        "uplink": draw(st.sampled_from([1e7, 1e8, 6e8])),
        "downlink": draw(st.sampled_from([1e7, 1e8, 8e8])),
        "mem_bandwidth": draw(st.sampled_from([1e9, 1e10, 1e11])),
    }


@st.composite
def scenarios(
    draw: st.DrawFn, min_devices: int = 1, max_devices: int = 4, min_blocks: int = 1, max_blocks: int = 8
) -> Scenario:
    bl = draw(blocks(min_blocks, max_blocks))
    model_bytes = sum(b.memory_bytes for b in bl)
    tight = draw(st.booleans())
    n_dev = draw(st.integers(min_devices, max_devices))
    profiles = [draw(device_profile(model_bytes, tight)) for _ in range(draw(st.integers(1, n_dev)))]
    devices = []
    for k in range(n_dev):
        resident: list[tuple[int, int]] = []
        if draw(st.integers(0, 9)) < 3:  # a warm device holding some blocks from an earlier request
            a = draw(st.integers(0, len(bl) - 1))
            resident.append((a, draw(st.integers(a, len(bl) - 1))))
        devices.append(Device(f"d{k}", **profiles[draw(st.integers(0, len(profiles) - 1))], resident=tuple(resident)))
    source = draw(st.sampled_from([AP] + [d.name for d in devices]))
    workload = Workload(
        prompt_tokens=draw(st.integers(1, 64)),
        new_tokens=draw(st.sampled_from([1, 2, 16, 256])),
        prompt_bytes=draw(st.sampled_from([0.0, 2048.0, 1e6])),
        token_bytes=draw(st.sampled_from([0.0, 4.0])),
    )
    network = Network(hop_latency=draw(st.sampled_from([0.0, 0.003])))
    return Scenario(bl, devices, workload, network, source)
