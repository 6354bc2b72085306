"""The timeline of docs/model.md, checked term by term on hand-computed cases."""

from __future__ import annotations

import pytest
from hypothesis import given

from coldpipe.core.simulator import simulate, transfer_s
from coldpipe.core.types import AP, Block, Device, Network, Plan, Scenario, Workload
from coldpipe.errors import InputError, InvalidPlan
from strategies import scenarios


def _sc(source: str = AP, hop: float = 0.0) -> Scenario:
    # Two devices. Block l: 1e9 bytes, 1e12 FLOP, out 1e6 bytes.
    blocks = [Block(f"b{i}", 1e9, 1e12, 1e6) for i in range(4)]
    a = Device("a", flops=1e12, load_bandwidth=1e9, startup=0.5, memory=1e12, uplink=8e8, downlink=4e8)
    b = Device("b", flops=2e12, load_bandwidth=2e9, startup=3.0, memory=1e12, uplink=8e8, downlink=8e8)
    return Scenario(blocks, (a, b), Workload(prompt_tokens=16, prompt_bytes=1e6, token_bytes=1e5), Network(hop), source)


def test_transfer_through_the_ap() -> None:
    sc = _sc(hop=0.003)
    # a -> b: 8e6 bits / 8e8 up + hop + 8e6 / 8e8 down + hop
    assert transfer_s(sc, "a", "b", 1e6) == pytest.approx(0.01 + 0.003 + 0.01 + 0.003)
    assert transfer_s(sc, AP, "a", 1e6) == pytest.approx(8e6 / 4e8 + 0.003)
    assert transfer_s(sc, "b", AP, 1e6) == pytest.approx(0.01 + 0.003)
    assert transfer_s(sc, "a", "a", 1e9) == 0.0


def test_layer_overlap_by_hand() -> None:
    sc = _sc(hop=0.0)
    tl = simulate(sc, Plan.parse("a[0-1] > b[2-3]"), "layer")
    # prompt: AP -> a: 8e6/4e8 = 0.02. a: block0 resident 1.5, computed 1.5->2.5; block1 resident 2.5 -> 3.5
    a, b = tl.stages
    assert a.arrival_s == pytest.approx(0.02)
    assert [s.load_end_s for s in a.blocks] == pytest.approx([1.5, 2.5])
    assert [x for s in a.blocks for x in (s.compute_start_s, s.compute_end_s)] == pytest.approx([1.5, 2.5, 2.5, 3.5])
    assert a.wait_weights_s == pytest.approx(1.48)
    # a -> b: 0.01 + 0.01 = 0.02 -> 3.52; b: blocks resident at 3.5 and 4.0 (startup 3, 2 GB/s); 0.5 s each
    assert b.arrival_s == pytest.approx(3.52)
    assert [x for s in b.blocks for x in (s.compute_start_s, s.compute_end_s)] == pytest.approx(
        [3.52, 4.02, 4.02, 4.52]
    )
    assert b.wait_weights_s == pytest.approx(0.0)
    assert b.wait_input_s == pytest.approx(0.02)
    # token: 8e5/8e8 = 1 ms back to the AP
    assert tl.ttft_s == pytest.approx(4.521)
    assert tl.warm_ttft_s == pytest.approx(0.02 + 2.0 + 0.02 + 1.0 + 0.001)
    assert [t.what for t in tl.transfers] == ["prompt", "activation", "token"]


def test_stage_overlap_waits_for_the_whole_stage() -> None:
    sc = _sc()
    tl = simulate(sc, Plan.parse("a[0-1] > b[2-3]"), "stage")
    # a starts at 2.5 (both blocks resident), ends 4.5; b gets input at 4.52, resident since 4.0: ends 5.52
    assert tl.stages[0].compute_start_s == pytest.approx(2.5)
    assert tl.stages[0].wait_weights_s == pytest.approx(2.48)
    assert tl.ttft_s == pytest.approx(5.521)


def test_none_overlap_starts_after_every_load() -> None:
    sc = _sc()
    tl = simulate(sc, Plan.parse("a[0-1] > b[2-3]"), "none")
    # last load end: max(2.5, 4.0) = 4.0, then the warm timeline
    assert tl.ttft_s == pytest.approx(4.0 + tl.warm_ttft_s)
    assert tl.hidden_load_share == pytest.approx(0.0)
    assert tl.transfers[0].start_s == pytest.approx(4.0)


def test_source_on_a_device() -> None:
    sc = _sc(source="a", hop=0.001)
    tl = simulate(sc, Plan.parse("a[0-3]"), "layer")
    # prompt and token stay on a: no transfer time at all
    assert tl.transfers[0].end_s == tl.transfers[0].start_s == 0.0
    assert tl.ttft_s == pytest.approx(0.5 + 4.0 + 1.0)  # loads gate every block: 1.5, 2.5, 3.5, 4.5 -> end 5.5
    tl2 = simulate(sc, Plan.parse("b[0-3]"), "layer")
    prompt = 8e6 / 8e8 + 0.001 + 8e6 / 8e8 + 0.001
    assert tl2.transfers[0].end_s == pytest.approx(prompt)
    assert tl2.transfers[-1].end_s - tl2.transfers[-1].start_s == pytest.approx(8e5 / 8e8 + 0.001 + 8e5 / 4e8 + 0.001)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a[0-1] > b[3-3]", "first block must be 2"),
        ("a[0-1] > a[2-3]", "used twice"),
        ("a[0-2]", "ends at block 2"),
        ("a[0-1] > c[2-3]", "unknown device 'c'"),
        ("a[0-5]", "last block 5 >= number of blocks 4"),
    ],
)
def test_invalid_plans_are_rejected(text: str, match: str) -> None:
    with pytest.raises(InvalidPlan, match=match):
        simulate(_sc(), Plan.parse(text))


def test_memory_is_checked() -> None:
    sc = _sc().replace(
        devices=[Device("a", 1e12, 1e9, 0.0, 1.5e9, 1e9, 1e9), Device("b", 1e12, 1e9, 0.0, 9e9, 1e9, 1e9)]
    )
    with pytest.raises(InvalidPlan, match="short by 5e\\+08 bytes"):
        simulate(sc, Plan.parse("a[0-1] > b[2-3]"))


def test_unknown_overlap_is_an_input_error() -> None:
    with pytest.raises(InputError, match="overlap"):
        simulate(_sc(), Plan.parse("a[0-3]"), "eager")  # type: ignore[arg-type]


@given(sc=scenarios(min_devices=1, max_devices=3, min_blocks=1, max_blocks=6))
def test_timeline_invariants(sc: Scenario) -> None:
    """Blocks compute after they are resident and after their input; the TTFT follows the last transfer."""
    from coldpipe.planning.brute import all_plans, fits

    for plan in list(all_plans(sc))[:20]:
        if not fits(sc, plan):
            continue
        for ov in ("layer", "stage", "none"):
            tl = simulate(sc, plan, ov)
            prev_end = tl.transfers[0].end_s
            for j, st in enumerate(tl.stages):
                if j:
                    prev_end = tl.transfers[j].end_s
                assert st.arrival_s == pytest.approx(prev_end)
                for span in st.blocks:
                    assert span.compute_start_s >= span.load_end_s - 1e-9
                    assert span.compute_start_s >= st.arrival_s - 1e-9
                    assert span.compute_end_s >= span.compute_start_s
            assert tl.ttft_s == tl.transfers[-1].end_s
            assert tl.ttft_s >= tl.warm_ttft_s - 1e-9
            assert 0.0 <= tl.hidden_load_share <= 1.0


def test_timeline_to_dict_is_json_ready() -> None:
    import json

    d = simulate(_sc(), Plan.parse("a[0-1] > b[2-3]")).to_dict()
    assert json.loads(json.dumps(d))["stages"][1]["blocks"][0]["block"] == 2
