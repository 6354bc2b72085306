"""The runtime with the mechanisms (docs/model.md#mechanisms): a device with two stages (reuse), real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from coldpipe.core.architectures import blocks_for  # noqa: E402
from coldpipe.core.simulator import simulate  # noqa: E402
from coldpipe.core.types import Device, Network, Plan, Scenario, Workload  # noqa: E402
from coldpipe.runtime.checkpoint import arch_for, make_checkpoint, open_checkpoint  # noqa: E402
from coldpipe.runtime.emulation import emulation_for  # noqa: E402
from coldpipe.runtime.job import Job  # noqa: E402
from coldpipe.runtime.launch import prompt_ids, run_local  # noqa: E402
from coldpipe.runtime.reference import reference_generate  # noqa: E402

PROMPT, NEW = 10, 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = arch_for("llama-3.1-8b", layers=4, hidden=64, heads=4, kv_heads=2, vocab=256)
    return make_checkpoint(arch, tmp_path_factory.mktemp("rtm") / "tiny", shard_bytes=200_000, init_std=0.3)


@pytest.mark.multiprocess
def test_reuse_plan_equals_from_pretrained(tiny: Path) -> None:
    """A device with two stages: tokens and logits equal transformers'; its second stage starts loading when the
    device's loader is modelled to reach it (each stage is its own process, so the runtime emulates the one loader)."""
    arch = open_checkpoint(tiny).architecture()
    blocks = blocks_for(arch, prompt_tokens=PROMPT, new_tokens=NEW, dtype="float32")
    devs = [
        Device(n, flops=2e9, load_bandwidth=bw, startup=st, memory=1e9, uplink=1e8, downlink=2e8)
        for n, bw, st in [("a", 2e6, 0.01), ("b", 3e6, 0.0)]
    ]
    sc = Scenario(
        blocks, devs, Workload(PROMPT, NEW), Network(0.0005), mechanisms=frozenset({"reuse", "sparse-embedding"})
    )
    plan = Plan.parse("a[0-1] > b[2-3] > a[4-5]")
    ids = prompt_ids(PROMPT, 256, seed=3)
    ref_tokens, ref_logits = reference_generate(tiny, ids, NEW)
    emu = tuple(emulation_for(sc, plan, host_flops=None))
    first_stage_s = (PROMPT * 64 * 4 + blocks[1].weight_bytes) / 2e6  # the model counts every prompt row
    assert emu[2].startup_s == pytest.approx(0.01 + first_stage_s)  # a's loader reaches its second stage
    (res,) = run_local(
        tiny, sc, [Job(plan, "layer", ids, NEW, emu, return_logits=True, sparse_embedding=True)], timeout_s=30
    )
    assert res["token_ids"] == ref_tokens
    assert torch.allclose(torch.tensor(res["stages"][-1]["last_logits"]), torch.tensor(ref_logits), atol=1e-4)
    loads = [[s for s in st["spans"] if s["cat"] == "load"] for st in res["stages"]]
    assert min(s["start"] for s in loads[2]) >= emu[2].startup_s - 0.005  # not before a's loader reaches it
    predicted = simulate(sc, plan).stages[2].load_end_s
    assert max(s["end"] for s in loads[2]) == pytest.approx(predicted, rel=0.25)


@pytest.mark.multiprocess
def test_sharded_head_equals_from_pretrained(tiny: Path) -> None:
    """The LM head split over two devices (one of them also a stage): every token equals transformers'."""
    arch = open_checkpoint(tiny).architecture()
    blocks = blocks_for(arch, prompt_tokens=PROMPT, new_tokens=NEW, dtype="float32")
    devs = [
        Device(n, flops=2e9, load_bandwidth=bw, startup=st, memory=1e9, uplink=1e8, downlink=2e8)
        for n, bw, st in [("a", 2e6, 0.01), ("b", 3e6, 0.0), ("c", 4e6, 0.0)]
    ]
    sc = Scenario(blocks, devs, Workload(PROMPT, NEW), Network(0.0005), mechanisms=frozenset({"sharded-head"}))
    plan = Plan.parse("a[0-1] > b[2-4] | head: b[0-99], c[100-255]")
    ids = prompt_ids(PROMPT, 256, seed=3)
    ref_tokens, _ = reference_generate(tiny, ids, NEW)
    emu = tuple(emulation_for(sc, plan, host_flops=None))
    assert emu[2].startup_s == pytest.approx(sum(b.weight_bytes for b in blocks[2:5]) / 3e6)  # after b's stage
    (res,) = run_local(tiny, sc, [Job(plan, "layer", ids, NEW, emu)], timeout_s=30)
    assert res["token_ids"] == ref_tokens
    predicted = simulate(sc, plan).ttft_s
    assert res["measured_ttft"] == pytest.approx(predicted, rel=0.5)


@pytest.mark.multiprocess
def test_sublayer_plan_equals_from_pretrained(tiny: Path) -> None:
    """Stage boundaries inside decoder layers 1 and 3 (sublayer): every token and the last logits equal
    transformers'; the run's time is the simulator's prediction for the split blocks."""
    arch = open_checkpoint(tiny).architecture()
    blocks = blocks_for(arch, prompt_tokens=PROMPT, new_tokens=NEW, dtype="float32")
    devs = [
        Device(n, flops=2e9, load_bandwidth=bw, startup=0.0, memory=1e9, uplink=1e8, downlink=2e8)
        for n, bw in [("a", 2e6), ("b", 3e6), ("c", 4e6)]
    ]
    sc = Scenario(blocks, devs, Workload(PROMPT, NEW), Network(0.0005), mechanisms=frozenset({"sublayer"}))
    plan = Plan.parse("a[0-3] > b[4-7] > c[8-9]")  # a ends with layer1.attn, b with layer3.attn
    plan.validate(sc)
    ids = prompt_ids(PROMPT, 256, seed=3)
    ref_tokens, ref_logits = reference_generate(tiny, ids, NEW)
    emu = tuple(emulation_for(sc, plan, host_flops=None))
    (res,) = run_local(tiny, sc, [Job(plan, "layer", ids, NEW, emu, return_logits=True, sublayer=True)], timeout_s=30)
    assert res["token_ids"] == ref_tokens
    assert torch.allclose(torch.tensor(res["stages"][-1]["last_logits"]), torch.tensor(ref_logits), atol=1e-4)
    assert res["measured_ttft"] == pytest.approx(simulate(sc, plan).ttft_s, rel=0.5)


@pytest.mark.multiprocess
def test_streamed_weights_equal_from_pretrained(tiny: Path) -> None:
    """streamed-weights: b's storage is 20x too slow, so it receives its blocks from rank 0 (the AP) over the
    emulated 8 Mbit/s downlink; every token and the logits equal transformers', and b's blocks arrive when the
    model says (each ``8n/down + hop`` after the previous one)."""
    from dataclasses import replace

    arch = open_checkpoint(tiny).architecture()
    blocks = blocks_for(arch, prompt_tokens=PROMPT, new_tokens=NEW, dtype="float32")
    devs = [
        Device("a", flops=2e9, load_bandwidth=2e6, startup=0.01, memory=1e9, uplink=1e8, downlink=2e8),
        Device("b", flops=2e9, load_bandwidth=5e4, startup=0.0, memory=1e9, uplink=1e8, downlink=8e6, weights="ap"),
    ]
    sc = Scenario(blocks, devs, Workload(PROMPT, NEW), Network(0.0005), mechanisms=frozenset({"streamed-weights"}))
    plan = Plan.parse("a[0-2] > b[3-5]")
    ids = prompt_ids(PROMPT, 256, seed=3)
    ref_tokens, ref_logits = reference_generate(tiny, ids, NEW)
    emu = tuple(emulation_for(sc, plan, host_flops=None))
    assert emu[1].stream_hops == (("", pytest.approx(1e-6), 0.0005),) and emu[1].read_bytes_per_s is None
    (res,) = run_local(tiny, sc, [Job(plan, "layer", ids, NEW, emu, return_logits=True)], timeout_s=60)
    assert res["token_ids"] == ref_tokens
    assert torch.allclose(torch.tensor(res["stages"][-1]["last_logits"]), torch.tensor(ref_logits), atol=1e-4)
    tl = simulate(sc, plan)
    loads = sorted((s for s in res["stages"][1]["spans"] if s["cat"] == "load"), key=lambda s: s["start"])
    assert [s["name"] for s in loads] == ["stream b3", "stream b4", "stream b5"]
    for span, predicted in zip(loads, tl.stages[1].blocks, strict=True):  # each block's transfer time, then when
        took = predicted.load_end_s - predicted.load_start_s
        assert span["end"] - span["start"] == pytest.approx(took, rel=0.1, abs=0.01)
        assert span["end"] == pytest.approx(predicted.load_end_s, abs=0.08)  # the loader thread starts late
    off = simulate(replace(sc, mechanisms=frozenset()), plan).ttft_s
    assert res["measured_ttft"] == pytest.approx(tl.ttft_s, rel=0.25) and res["measured_ttft"] < off / 3


@pytest.mark.multiprocess
def test_streamed_weights_tdma_share_the_air(tiny: Path) -> None:
    """streamed-weights under tdma: b's blocks and a's activation share one emulated channel (rank 0's arbiter);
    the activation waits for the block on the air (0-0.44 s), then goes before the next block. Tokens equal
    transformers'; the measured TTFT is tdma's prediction, not the unshared one (0.11 s less)."""
    from dataclasses import replace

    arch = open_checkpoint(tiny).architecture()
    blocks = blocks_for(arch, prompt_tokens=PROMPT, new_tokens=NEW, dtype="float32")
    devs = [
        Device("a", flops=2e9, load_bandwidth=2e6, startup=0.01, memory=1e9, uplink=2e5, downlink=2e8),
        Device("b", flops=2e9, load_bandwidth=5e4, startup=0.0, memory=1e9, uplink=1e8, downlink=4e6, weights="ap"),
    ]
    sc = Scenario(
        blocks, devs, Workload(PROMPT, NEW), Network(0.0005, "tdma"), mechanisms=frozenset({"streamed-weights"})
    )
    plan = Plan.parse("a[0-1] > b[2-5]")
    ids = prompt_ids(PROMPT, 256, seed=3)
    ref_tokens, _ = reference_generate(tiny, ids, NEW)
    emu = tuple(emulation_for(sc, plan, host_flops=None))
    assert [c for c, _r, _h in emu[1].stream_hops] == ["air"]
    (res,) = run_local(tiny, sc, [Job(plan, "layer", ids, NEW, emu, sharing="tdma")], timeout_s=60)
    assert res["token_ids"] == ref_tokens
    tdma = simulate(sc, plan)
    free = simulate(replace(sc, network=Network(0.0005, "none")), plan).ttft_s
    assert tdma.ttft_s - free > 0.1
    assert res["measured_ttft"] == pytest.approx(tdma.ttft_s, rel=0.1)  # late, if at all, by the host's noise
    recv = [s for s in res["stages"][1]["spans"] if s["cat"] == "recv" and "activation" in s["name"]]
    first_block = min(b.load_end_s for b in tdma.stages[1].blocks)
    assert recv and recv[0]["end"] >= first_block  # the activation waited for the block on the air


@pytest.mark.multiprocess
def test_streamed_weights_from_a_peer_fdma(tiny: Path) -> None:
    """b streams from the peer a under fdma: each block takes a's uplink then b's downlink (the bytes from rank 0's
    file), a's activation shares a's link with them. Tokens equal transformers'; the TTFT is fdma's prediction."""
    arch = open_checkpoint(tiny).architecture()
    blocks = blocks_for(arch, prompt_tokens=PROMPT, new_tokens=NEW, dtype="float32")
    devs = [
        Device("a", flops=2e9, load_bandwidth=2e6, startup=0.01, memory=1e9, uplink=4e6, downlink=2e8),
        Device("b", flops=2e9, load_bandwidth=5e4, startup=0.0, memory=1e9, uplink=1e8, downlink=8e6, weights="a"),
    ]
    sc = Scenario(
        blocks, devs, Workload(PROMPT, NEW), Network(0.0005, "fdma"), mechanisms=frozenset({"streamed-weights"})
    )
    plan = Plan.parse("a[0-1] > b[2-5]")
    ids = prompt_ids(PROMPT, 256, seed=3)
    ref_tokens, _ = reference_generate(tiny, ids, NEW)
    emu = tuple(emulation_for(sc, plan, host_flops=None))
    assert [c for c, _r, _h in emu[1].stream_hops] == ["a", "b"] and emu[1].startup_s == 0.01
    (res,) = run_local(tiny, sc, [Job(plan, "layer", ids, NEW, emu, sharing="fdma")], timeout_s=60)
    assert res["token_ids"] == ref_tokens
    assert res["measured_ttft"] == pytest.approx(simulate(sc, plan).ttft_s, rel=0.1)
