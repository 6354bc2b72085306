"""Random HF checkpoints, the block -> tensor map, raw reads, and the stage modules in one process."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from coldpipe.core.architectures import blocks_for  # noqa: E402
from coldpipe.errors import InputError  # noqa: E402
from coldpipe.runtime.checkpoint import arch_for, make_checkpoint, open_checkpoint, read_tensor  # noqa: E402
from coldpipe.runtime.emulation import Pacer  # noqa: E402
from coldpipe.runtime.launch import prompt_ids  # noqa: E402
from coldpipe.runtime.reference import reference_generate  # noqa: E402
from coldpipe.runtime.stage_model import StageModel  # noqa: E402

TINY = {"layers": 3, "hidden": 64, "heads": 4, "kv_heads": 2, "vocab": 300}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sharded tiny Llama with tied embeddings (Llama-3.2-1B's shape, shrunk)."""
    arch = arch_for("llama-3.2-1b", **TINY)
    return make_checkpoint(arch, tmp_path_factory.mktemp("ckpt") / "tiny", shard_bytes=100_000, init_std=0.3)


def test_sharded_checkpoint_has_index_and_all_blocks(tiny: Path) -> None:
    index = json.loads((tiny / "model.safetensors.index.json").read_text())
    ck = open_checkpoint(tiny)
    assert len(ck.files) > 1 and set(index["weight_map"]) == set(ck.tensors)
    assert ck.n_blocks == TINY["layers"] + 2
    assert ck.blocks[0] == ("model.embed_tokens.weight",)
    assert ck.blocks[-1] == ("model.norm.weight", "model.embed_tokens.weight")  # tied: the head reads it again
    assert all(name.startswith("model.layers.1.") for name in ck.blocks[2])


def test_block_bytes_match_the_model_of_core(tiny: Path) -> None:
    """What a stage really reads equals the weight_bytes the planner uses."""
    ck = open_checkpoint(tiny)
    blocks = blocks_for(ck.architecture(), prompt_tokens=8, dtype="float32")
    assert [ck.block_bytes(b) for b in range(ck.n_blocks)] == [b.weight_bytes for b in blocks]


def test_raw_reads_equal_safetensors(tiny: Path) -> None:
    import os

    from safetensors import safe_open

    ck = open_checkpoint(tiny)
    paced: list[int] = []
    for f in ck.files:
        fd = os.open(f, os.O_RDONLY)
        with safe_open(str(f), "pt") as st:
            for name in st.keys():  # noqa: SIM118 - safe_open has no __iter__
                got = read_tensor(ck.tensors[name], fd, paced.append)
                assert torch.equal(got, st.get_tensor(name)), name
        os.close(fd)
    assert sum(paced) == sum(e.nbytes for e in ck.tensors.values())


def test_bfloat16_checkpoint_round_trips(tmp_path: Path) -> None:
    arch = arch_for("qwen2.5-0.5b", layers=1, hidden=32, heads=2, kv_heads=1, vocab=50)
    ck = open_checkpoint(make_checkpoint(arch, tmp_path / "q", dtype="bfloat16"))
    assert ck.dtype == "bfloat16" and (tmp_path / "q" / "model.safetensors").is_file()
    assert any(n.endswith("q_proj.bias") for n in ck.blocks[1])  # Qwen2 has q/k/v biases


def test_unknown_config_is_an_input_error() -> None:
    with pytest.raises(InputError, match="--config"):
        arch_for("no-such-model")


def test_pacer_waits_for_bytes_over_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    slept: list[float] = []
    monkeypatch.setattr("coldpipe.runtime.emulation.time.perf_counter", lambda: clock[0])
    monkeypatch.setattr("coldpipe.runtime.emulation.time.sleep", lambda s: slept.append(s))
    p = Pacer(1000.0)
    p.pace(500)
    clock[0] += 0.1  # the read itself took 0.1 s
    p.pace(500)
    assert slept == pytest.approx([0.5, 0.9])
    Pacer(None).pace(10**9)  # uncapped: never sleeps
    assert len(slept) == 2


@pytest.mark.parametrize("split", [(0, 4), (1, 2, 4), (0, 0, 1, 3, 4)])
def test_stage_models_in_one_process_equal_from_pretrained(tiny: Path, split: tuple[int, ...]) -> None:
    """Blocks split into stages (no processes) reproduce transformers' tokens and logits."""
    _check_split(tiny, split)


@pytest.mark.parametrize("config", ["qwen2.5-0.5b", "mistral-7b-v0.3"])
def test_other_architectures_split_equal_from_pretrained(tmp_path: Path, config: str) -> None:
    arch = arch_for(config, layers=3, hidden=64, heads=4, kv_heads=2, vocab=300)
    _check_split(make_checkpoint(arch, tmp_path / config, init_std=0.3), (1, 3, 4))


def _check_split(tiny: Path, split: tuple[int, ...]) -> None:
    ck = open_checkpoint(tiny)
    ids = prompt_ids(9, 300, seed=1)
    ref_tokens, ref_logits = reference_generate(tiny, ids, 3)
    bounds = [-1, *split]
    stages = []
    for a, b in itertools.pairwise(bounds):
        m = StageModel(ck.config, a + 1, b, torch.float32)
        for blk in range(a + 1, b + 1):
            m.assign(blk, {n: read_tensor(ck.tensors[n], _fd(ck.tensors[n].file)) for n in ck.blocks[blk]})
        stages.append(m)
    from transformers import DynamicCache

    caches = [DynamicCache(config=m.config) for m in stages]
    x = torch.tensor([list(ids)])
    pos, tokens, logits = 0, [], None
    for _ in range(3):
        q = x.shape[1]
        position_ids = torch.arange(pos, pos + q).unsqueeze(0)
        for m, cache in zip(stages, caches, strict=True):
            rope = None
            for blk in range(m.first, m.last + 1):
                if rope is None and 1 <= blk <= m.n_layers:
                    rope = m.position_embeddings(x, position_ids)
                x = m.run_block(blk, x, position_ids, rope, cache)
        logits = x
        tokens.append(int(x.argmax(-1)))
        x = torch.tensor([[tokens[-1]]])
        pos += q
    assert tokens == ref_tokens
    assert len(set(ref_tokens)) > 1  # the random model is not degenerate (else equality would prove little)
    assert torch.allclose(logits[0], torch.tensor(ref_logits), atol=1e-4)


_FDS: dict[str, int] = {}


def _fd(path: str) -> int:
    import os

    if path not in _FDS:
        _FDS[path] = os.open(path, os.O_RDONLY)
    return _FDS[path]


@pytest.mark.parametrize(
    ("model", "bias"),
    [("llama-3.2-1b", False), ("llama-3.1-8b", True), ("qwen2.5-0.5b", True), ("mistral-7b-v0.3", False)],
)
def test_architecture_tensors_are_what_transformers_builds(model: str, bias: bool) -> None:
    """The shapes the one checkpoint reader demands (before any rank starts) are transformers' own."""
    import dataclasses

    from transformers import AutoConfig, AutoModelForCausalLM

    from coldpipe.checkpoint_files import architecture_tensors

    arch = dataclasses.replace(arch_for(model, **TINY), attention_bias=bias)
    cfg = AutoConfig.for_model(**{k: v for k, v in arch.to_hf_config().items() if k != "torch_dtype"})
    if arch.model_type == "llama":
        cfg.attention_bias = bias
    with torch.device("meta"):
        sd = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(cfg).state_dict().items()}
    if arch.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    assert architecture_tensors(arch) == sd


def test_open_checkpoint_rejects_a_tensor_of_another_model(tiny: Path, tmp_path: Path) -> None:
    """Regression (issue 15): wrong shapes passed open_checkpoint and failed in a rank's load_state_dict."""
    import shutil

    d = tmp_path / "c"
    shutil.copytree(tiny, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] += 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"tensor 'model.layers.0.mlp.gate_proj.weight' has shape .* config.json"):
        open_checkpoint(d)
