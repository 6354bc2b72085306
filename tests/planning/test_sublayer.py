"""The sublayer mechanism (docs/model.md#sublayer): split blocks, simulator semantics, the DP against brute force."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
from tests.random_instances import brute_value, random_scenario
from tests.test_checkpoint_profile import write_checkpoint

from coldpipe.core.architectures import CATALOG, blocks_for
from coldpipe.core.simulator import decode_step_s, objective_s, simulate
from coldpipe.core.types import Block, Plan, PlanTarget, Scenario, Stage, parse_mechanisms
from coldpipe.errors import InputError, InvalidPlan
from coldpipe.planning import Problem, plan
from coldpipe.planning.brute import all_plans, fits
from coldpipe.planning.compare import compare, mechanism_rows
from coldpipe.profiler.checkpoint import profile_checkpoint
from coldpipe.scenario_file import load_scenario

DEMO = Path(__file__).resolve().parents[2] / "src" / "coldpipe" / "data" / "demo.yaml"


def with_attn(sc: Scenario, seed: int, mechanisms: str = "sublayer") -> Scenario:
    """``sc`` with its middle blocks made decoder layers: a seeded share of weights and work in the attention."""
    rng = random.Random(seed)
    blocks = list(sc.blocks)
    for i in range(1, len(blocks) - 1):
        b = blocks[i]
        w, f = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]), rng.choice([0.0, 0.3, 0.5, 1.0])
        blocks[i] = dataclasses.replace(
            b, attn_weight_bytes=w * b.weight_bytes, attn_flops=f * b.flops, attn_decode_flops=f * b.flops / 8
        )
    return sc.replace(blocks=tuple(blocks), mechanisms=parse_mechanisms(mechanisms))


def reference(sc: Scenario, overlap: str, objective: str) -> float:
    """Every plan of the split blocks, timed by the real scenario (sublayer on): the exhaustive optimum."""
    split = sc.planned()
    best = math.inf
    for p in all_plans(split):
        if fits(split, p):
            best = min(best, objective_s(sc, p, overlap, objective))  # type: ignore[arg-type]
    return best


def test_split_blocks_are_exact() -> None:
    """The halves sum to the layer (weights, work, decode work); KV in the attention half; same activation."""
    arch = CATALOG["llama-3.2-1b"]
    layer = blocks_for(arch, prompt_tokens=64, new_tokens=8)[1]
    attn, mlp = layer.halves()
    assert attn.weight_bytes + mlp.weight_bytes == layer.weight_bytes
    assert mlp.weight_bytes == (3 * arch.hidden_size * arch.intermediate_size + arch.hidden_size) * 2
    assert attn.flops + mlp.flops == pytest.approx(layer.flops, rel=1e-12)
    assert attn.decode_flops + mlp.decode_flops == pytest.approx(layer.decode_flops, rel=1e-12)  # type: ignore[operator]
    assert (attn.kv_bytes, mlp.kv_bytes) == (layer.kv_bytes, 0.0)
    assert attn.out_bytes == mlp.out_bytes == layer.out_bytes
    assert (attn.name, mlp.name) == ("layer0.attn", "layer0.mlp")


def test_off_by_default_and_errors() -> None:
    sc = load_scenario(DEMO)
    assert "sublayer" in parse_mechanisms("all") and not sc.mechanisms and sc.planned() is sc
    assert round(plan(Problem(sc)).value_s, 3) == 3.520
    on = sc.replace(mechanisms=frozenset({"sublayer"}))
    assert on.planned().n_blocks == 2 * sc.n_blocks - 2
    small = random_scenario(1, 2, 4, tight=False, source_device=False)
    with pytest.raises(InputError, match="sublayer needs"):
        small.replace(mechanisms=frozenset({"sublayer"}))
    with pytest.raises(InputError, match="attn_"):
        Block("b", 10.0, 1.0, 1.0, attn_weight_bytes=4.0)
    with pytest.raises(InputError, match="exceeds"):
        Block("b", 10.0, 1.0, 1.0, attn_weight_bytes=11.0, attn_flops=0.0, attn_decode_flops=0.0)
    split = with_attn(small, 0)
    with pytest.raises(InvalidPlan, match="ends at block"):
        Plan((Stage("d0", 0, 3),)).validate(split)  # 4 model blocks, 6 planned blocks
    Plan((Stage("d0", 0, 5),)).validate(split)
    assert Scenario.from_dict(json.loads(json.dumps(split.to_dict()))) == split
    assert "attn_flops" not in json.dumps(small.to_dict())  # unchanged files without the fields
    assert PlanTarget.of(split).n_blocks == 6


def test_whole_layers_are_never_slower() -> None:
    """A split plan that keeps every layer whole: the same TTFT or less (the attention half computes before
    the MLP half is loaded); its memory is the unsplit plan's."""
    for seed in range(6):
        base = random_scenario(seed, 3, 5, tight=False, source_device=seed % 2 == 0)
        sc = with_attn(base, seed)
        for p in list(all_plans(base))[:40]:
            index = [0, 1, 3, 5, 7]  # model block -> first planned block (blocks 1..3 are split)
            ends = [index[st.last + 1] - 1 if st.last + 1 < 5 else 7 for st in p.stages]
            q = Plan(tuple(Stage(st.device, index[st.first], e) for st, e in zip(p.stages, ends, strict=True)))
            for overlap in ("layer", "stage", "none"):
                assert simulate(sc, q, overlap).ttft_s <= simulate(base, p, overlap).ttft_s + 1e-12


@pytest.mark.parametrize(
    ("overlap", "objective"), [("layer", "ttft"), ("stage", "ttft"), ("none", "ttft"), ("layer", "e2e")]
)
def test_dp_equals_brute_force(overlap: str, objective: str) -> None:
    """The DP on the split blocks is exact for the real simulator; its objective equals the simulator's."""
    for seed in range(8):
        base = random_scenario(seed, 3, 4, tight=seed % 2 == 0, source_device=seed % 3 == 0)
        if objective == "e2e":
            base = base.replace(
                devices=tuple(dataclasses.replace(d, mem_bandwidth=2e9) for d in base.devices),
                workload={"new_tokens": 6},
            )
        sc = with_attn(base, seed)
        ref = reference(sc, overlap, objective)
        assert ref == brute_value(sc, overlap, objective)[0]
        if not math.isfinite(ref):
            continue
        sol = plan(Problem(sc, overlap, objective), "dp")  # type: ignore[arg-type]
        assert sol.exact and sol.value_s == pytest.approx(ref, rel=1e-9, abs=1e-12)
        assert sol.solver_value_s == pytest.approx(sol.value_s, rel=1e-9, abs=1e-12)
        assert sol.value_s == pytest.approx(objective_s(sc, sol.plan, overlap, objective), rel=1e-12)  # type: ignore[arg-type]
        if objective == "ttft":  # splitting never hurts the first token
            assert ref <= brute_value(base, overlap, objective)[0] + 1e-12


def test_decode_and_residency() -> None:
    """Decode charges each half its own roofline; Scenario.after keeps a layer resident when both halves ran."""
    base = random_scenario(4, 2, 4, tight=False, source_device=False)
    base = base.replace(devices=tuple(dataclasses.replace(d, mem_bandwidth=1e9) for d in base.devices))
    sc = with_attn(base, 4)
    whole = Plan((Stage("d0", 0, 5),))
    assert decode_step_s(sc, whole) >= decode_step_s(base, Plan((Stage("d0", 0, 3),))) - 1e-15
    cut = Plan((Stage("d0", 0, 3), Stage("d1", 4, 5)))  # the boundary inside model block 2
    nxt = sc.after(cut)
    assert nxt.device("d0").resident == ((0, 0), (1, 1)) and nxt.device("d1").resident == ((3, 3),)
    assert nxt.planned().device("d1").resident == ((5, 5),)
    assert simulate(nxt, cut).ttft_s <= simulate(sc, cut).ttft_s


def test_bundled_scenario_gain() -> None:
    """On the bundled scenario the split blocks give a plan no slower than 3.520 s, its value the simulator's."""
    sc = load_scenario(DEMO).replace(mechanisms=frozenset({"sublayer"}))
    sol = plan(Problem(sc))
    assert sol.exact and sol.value_s <= 3.520
    assert sol.value_s == simulate(sc, sol.plan).ttft_s
    both = plan(Problem(sc.replace(mechanisms=parse_mechanisms("sparse-embedding,sublayer"))))
    assert both.value_s <= sol.value_s + 1e-12


def test_checkpoint_halves_are_its_tensors(tmp_path: Path) -> None:
    """A checkpoint model's attention half weighs exactly its layer's input norm and self_attn tensors."""
    tensors = write_checkpoint(tmp_path)
    prof = profile_checkpoint(tmp_path, prompt_tokens=16)
    for i, b in enumerate(prof.blocks[1:-1]):
        attn, mlp = b.halves()
        own = {n: a.nbytes for n, a in tensors.items() if n.startswith(f"model.layers.{i}.")}
        assert attn.weight_bytes == sum(v for n, v in own.items() if ".self_attn." in n or "input_layernorm" in n)
        assert mlp.weight_bytes == sum(v for n, v in own.items() if ".mlp." in n or "post_attention" in n)


def test_compare_rows_and_baselines() -> None:
    """compare's mechanism rows list sublayer; the baselines plan the split blocks (valid plans, timed)."""
    sc = with_attn(random_scenario(2, 3, 5, tight=False, source_device=False), 2)
    rows = dict(mechanism_rows(sc))
    assert set(rows) == {"none", "sublayer"} and rows["sublayer"].value_s <= rows["none"].value_s + 1e-12
    cmp = compare(sc)
    timed = [b for b in cmp.baselines if b.plan is not None]
    assert timed and all(b.ttft_s == simulate(sc, b.plan, b.overlap).ttft_s for b in timed)
