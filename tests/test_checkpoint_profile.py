"""Model profiles from checkpoints: exact bytes from safetensors headers, byte for byte."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from coldpipe.checkpoint_files import read_safetensors_header
from coldpipe.core.architectures import architecture_from_hf_config, blocks_for
from coldpipe.errors import InputError
from coldpipe.profiler.checkpoint import profile_checkpoint
from coldpipe.scenario_file import load_scenario

H, INTER, LAYERS, HEADS, KV, VOCAB = 64, 96, 3, 4, 2, 200
HEAD_DIM = H // HEADS


def tiny_config(tied: bool = False, **extra: object) -> dict:
    return {
        "model_type": "llama",
        "hidden_size": H,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV,
        "vocab_size": VOCAB,
        "tie_word_embeddings": tied,
        "torch_dtype": "float16",
        **extra,
    }


def tiny_tensors(tied: bool = False, layer_dtype: type = np.float16) -> dict[str, np.ndarray]:
    """A Llama checkpoint's tensors; the embedding in float32, layers in ``layer_dtype``, head in float16."""
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": np.zeros((VOCAB, H), np.float32)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes = {
            "self_attn.q_proj.weight": (HEADS * HEAD_DIM, H),
            "self_attn.k_proj.weight": (KV * HEAD_DIM, H),
            "self_attn.v_proj.weight": (KV * HEAD_DIM, H),
            "self_attn.o_proj.weight": (H, HEADS * HEAD_DIM),
            "mlp.gate_proj.weight": (INTER, H),
            "mlp.up_proj.weight": (INTER, H),
            "mlp.down_proj.weight": (H, INTER),
            "input_layernorm.weight": (H,),
            "post_attention_layernorm.weight": (H,),
        }
        for name, shape in shapes.items():
            dt = np.float32 if name.endswith("layernorm.weight") else layer_dtype
            t[p + name] = np.ones(shape, dt)
    t["model.norm.weight"] = np.ones((H,), np.float16)
    if not tied:
        t["lm_head.weight"] = np.zeros((VOCAB, H), np.float16)
    return t


def write_checkpoint(
    directory: Path, tied: bool = False, shards: int = 1, layer_dtype: type = np.float16
) -> dict[str, np.ndarray]:
    """Write config.json + safetensors (sharded with an index when ``shards > 1``); return the tensors."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(tiny_config(tied)))
    tensors = tiny_tensors(tied, layer_dtype)
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"))
        return tensors
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, str(directory / fname))
        weight_map.update(dict.fromkeys(part, fname))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return tensors


def _data_section_bytes(directory: Path) -> int:
    """Sum over files of (file size - 8 - header length): every byte of tensor data, read independently."""
    total = 0
    for f in directory.glob("*.safetensors"):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
        total += f.stat().st_size - 8 - n
    return total


@pytest.mark.parametrize("shards", [1, 3])
def test_profile_equals_sum_of_tensor_bytes_in_files(tmp_path: Path, shards: int) -> None:
    tensors = write_checkpoint(tmp_path, shards=shards, layer_dtype=np.int8)
    prof = profile_checkpoint(tmp_path, prompt_tokens=32)
    total = sum(b.weight_bytes for b in prof.blocks)
    assert total == sum(a.nbytes for a in tensors.values())
    assert total == _data_section_bytes(tmp_path)
    assert prof.file_bytes == total


def test_every_block_gets_exactly_its_tensors(tmp_path: Path) -> None:
    tensors = write_checkpoint(tmp_path)
    prof = profile_checkpoint(tmp_path, prompt_tokens=32)
    assert len(prof.blocks) == LAYERS + 2
    assert prof.blocks[0].weight_bytes == VOCAB * H * 4  # float32 embedding
    for i in range(LAYERS):
        own = sum(a.nbytes for n, a in tensors.items() if n.startswith(f"model.layers.{i}."))
        assert prof.blocks[i + 1].weight_bytes == own
    assert prof.blocks[-1].weight_bytes == (H + VOCAB * H) * 2  # float16 norm + head


def test_tied_embedding_counts_in_first_and_last_block(tmp_path: Path) -> None:
    tensors = write_checkpoint(tmp_path, tied=True)
    prof = profile_checkpoint(tmp_path, prompt_tokens=32)
    emb = VOCAB * H * 4
    assert prof.blocks[0].weight_bytes == emb
    assert prof.blocks[-1].weight_bytes == H * 2 + emb
    assert sum(b.weight_bytes for b in prof.blocks) == sum(a.nbytes for a in tensors.values()) + emb


def test_uniform_checkpoint_matches_the_architecture_formula(tmp_path: Path) -> None:
    # all-float16 layers with float16 norms would match blocks_for exactly; our norms are float32,
    # so the layer blocks differ from the formula by exactly 2 norms * H * (4 - 2) bytes
    write_checkpoint(tmp_path)
    prof = profile_checkpoint(tmp_path, prompt_tokens=32, new_tokens=4)
    ref = blocks_for(architecture_from_hf_config(tiny_config()), prompt_tokens=32, new_tokens=4, dtype="float16")
    for b, r in zip(prof.blocks[1:-1], ref[1:-1], strict=True):
        assert b.weight_bytes == r.weight_bytes + 2 * H * 2
        assert (b.flops, b.out_bytes, b.kv_bytes) == (r.flops, r.out_bytes, r.kv_bytes)
    assert prof.blocks[-1].weight_bytes == ref[-1].weight_bytes
    assert prof.dtype == "float16"


def test_scenario_with_checkpoint_model(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "ckpt", shards=2)
    (tmp_path / "s.yaml").write_text(
        "workload: {prompt_tokens: 16}\nmodel: {checkpoint: ckpt}\n"
        "devices: [{catalog: raspberry-pi-5-nvme, name: pi, uplink: 1e8, downlink: 1e8}]\n"
    )
    sc = load_scenario(tmp_path / "s.yaml")
    assert sc.model_name == "ckpt"
    assert sum(b.weight_bytes for b in sc.blocks) == _data_section_bytes(tmp_path / "ckpt")


def test_header_reader_ignores_metadata(tmp_path: Path) -> None:
    save_file({"a": np.zeros((3, 5), np.float16)}, str(tmp_path / "x.safetensors"), metadata={"format": "pt"})
    info = read_safetensors_header(tmp_path / "x.safetensors")
    assert list(info) == ["a"]
    assert (info["a"].dtype, info["a"].shape, info["a"].nbytes) == ("F16", (3, 5), 30)


def _corrupt(path: Path, kind: str) -> None:
    if kind == "short":
        path.write_bytes(b"\x01\x02")
    elif kind == "huge-header":
        path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    elif kind == "not-json":
        path.write_bytes(struct.pack("<Q", 4) + b"abcd")
    elif kind == "offsets":
        header = json.dumps({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1000]}}).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


@pytest.mark.parametrize("kind", ["short", "huge-header", "not-json", "offsets"])
def test_corrupt_files_give_one_line_errors(tmp_path: Path, kind: str) -> None:
    write_checkpoint(tmp_path)
    _corrupt(tmp_path / "model.safetensors", kind)
    with pytest.raises(InputError, match=r"^model\.checkpoint: ") as info:
        profile_checkpoint(tmp_path, prompt_tokens=8)
    assert "\n" not in str(info.value)


def test_unknown_tensor_names_the_tensor(tmp_path: Path) -> None:
    write_checkpoint(tmp_path)
    tensors = tiny_tensors()
    tensors["vision_tower.proj.weight"] = np.zeros((2, 2), np.float16)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(InputError, match=r"vision_tower\.proj\.weight"):
        profile_checkpoint(tmp_path, prompt_tokens=8)


def test_missing_layer_or_head_is_reported(tmp_path: Path) -> None:
    write_checkpoint(tmp_path)
    tensors = {n: a for n, a in tiny_tensors().items() if not n.startswith("model.layers.1.")}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(InputError, match=r"no tensor 'model.layers.1.input_layernorm.weight'"):
        profile_checkpoint(tmp_path, prompt_tokens=8)
    tensors = {n: a for n, a in tiny_tensors().items() if n != "lm_head.weight"}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(InputError, match=r"no tensor 'lm_head\.weight'"):
        profile_checkpoint(tmp_path, prompt_tokens=8)


def test_one_missing_tensor_is_an_error_not_an_undercount(tmp_path: Path) -> None:
    """Regression (issue 15): a layer missing one tensor made model-info count fewer bytes, silently."""
    write_checkpoint(tmp_path)
    tensors = {n: a for n, a in tiny_tensors().items() if n != "model.layers.0.mlp.down_proj.weight"}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(InputError, match=r"no tensor 'model.layers.0.mlp.down_proj.weight'.*download"):
        profile_checkpoint(tmp_path, prompt_tokens=8)


def test_a_wrong_shape_is_named_with_its_file(tmp_path: Path) -> None:
    write_checkpoint(tmp_path)
    tensors = tiny_tensors()
    tensors["model.layers.1.mlp.up_proj.weight"] = np.ones((3, 5), np.float16)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(InputError, match=r"model.safetensors': tensor 'model.layers.1.mlp.up_proj.weight' has shape"):
        profile_checkpoint(tmp_path, prompt_tokens=8)


def test_missing_config_or_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a directory"):
        profile_checkpoint(tmp_path / "nope", prompt_tokens=8)
    with pytest.raises(InputError, match=r"no \*\.safetensors files"):
        profile_checkpoint(tmp_path, prompt_tokens=8)
    write_checkpoint(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(InputError, match=r"no config\.json"):
        profile_checkpoint(tmp_path, prompt_tokens=8)
