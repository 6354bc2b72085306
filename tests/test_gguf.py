"""GGUF models: exact bytes per block for every ggml type, against files written with ``gguf.GGUFWriter``."""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from coldpipe.cli import main
from coldpipe.core.architectures import (
    architecture_from_gguf,
    architecture_from_hf_config,
    blocks_for,
)
from coldpipe.errors import InputError
from coldpipe.profiler.gguf_model import profile_gguf
from coldpipe.scenario_file import load_scenario

H, INTER, LAYERS, HEADS, KV, VOCAB = 256, 512, 3, 4, 2, 300
HEAD_DIM = H // HEADS

# (weights per block, bytes per block) of each ggml type, from ggml's block structs (ggml-common.h), written
# out here so that the expected sizes do not come from the code under test
BLOCKS: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q8_0": (32, 34),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q2_K": (256, 84),
    "Q3_K": (256, 110),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
    "IQ2_XXS": (256, 66),
    "IQ4_NL": (32, 18),
    "IQ4_XS": (256, 136),
}

LAYER_SHAPES = {  # ggml order: ne[0] (a row) first
    "attn_norm": (H,),
    "attn_q": (H, HEADS * HEAD_DIM),
    "attn_k": (H, KV * HEAD_DIM),
    "attn_v": (H, KV * HEAD_DIM),
    "attn_output": (HEADS * HEAD_DIM, H),
    "ffn_norm": (H,),
    "ffn_gate": (H, INTER),
    "ffn_up": (H, INTER),
    "ffn_down": (INTER, H),
}


def tensor(shape: tuple[int, ...], ggml_type: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType | None]:
    """An array for ``GGUFWriter.add_tensor`` of ggml ``shape`` and type (quantised types as raw bytes)."""
    np_shape = tuple(reversed(shape))
    if ggml_type == "F32":
        return np.zeros(np_shape, np.float32), None
    if ggml_type == "F16":
        return np.zeros(np_shape, np.float16), None
    block, size = BLOCKS[ggml_type]
    return np.zeros((*np_shape[:-1], shape[0] // block * size), np.uint8), gguf.GGMLQuantizationType[ggml_type]


def model_tensors(weights: str = "F16", *, tied: bool = False, bias: bool = False) -> dict[str, tuple[tuple, str]]:
    """name -> (ggml shape, ggml type): matrices in ``weights`` (a dict role -> type mixes them), norms F32."""
    t: dict[str, tuple[tuple, str]] = {"token_embd.weight": ((H, VOCAB), weights)}
    for i in range(LAYERS):
        for role, shape in LAYER_SHAPES.items():
            t[f"blk.{i}.{role}.weight"] = (shape, "F32" if role.endswith("norm") else weights)
        if bias:
            for role, n in (("attn_q", HEADS), ("attn_k", KV), ("attn_v", KV)):
                t[f"blk.{i}.{role}.bias"] = ((n * HEAD_DIM,), "F32")
    t["output_norm.weight"] = ((H,), "F32")
    if not tied:
        t["output.weight"] = ((H, VOCAB), weights)
    return t


def write_gguf(
    path: Path,
    tensors: dict[str, tuple[tuple, str]] | None = None,
    *,
    arch: str = "llama",
    meta: dict[str, object] | None = None,
    drop_meta: tuple[str, ...] = (),
    endian: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
    split_max_tensors: int = 0,
) -> dict[str, int]:
    """Write a GGUF model of the test's shape with GGUFWriter; return each tensor's data bytes as written."""
    tensors = model_tensors() if tensors is None else tensors
    w = gguf.GGUFWriter(path, arch, endianess=endian, split_max_tensors=split_max_tensors)
    keys: dict[str, object] = {
        f"{arch}.block_count": LAYERS,
        f"{arch}.context_length": 2048,
        f"{arch}.embedding_length": H,
        f"{arch}.feed_forward_length": INTER,
        f"{arch}.attention.head_count": HEADS,
        f"{arch}.attention.head_count_kv": KV,
        f"{arch}.rope.freq_base": 500000.0,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
        **(meta or {}),
    }
    for key, value in keys.items():
        if key in drop_meta:
            continue
        if isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_key_value(key, value, gguf.GGUFValueType.get_type(value))
    w.add_token_list([f"t{i}" for i in range(VOCAB)])
    written: dict[str, int] = {}
    for name, (shape, ggml_type) in tensors.items():
        data, raw = tensor(shape, ggml_type)
        w.add_tensor(name, data, raw_dtype=raw)
        written[name] = data.nbytes
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


def _by_block(written: dict[str, int]) -> list[int]:
    out = [0] * (LAYERS + 2)
    for name, n in written.items():
        if name.startswith("token_embd."):
            out[0] += n
        elif name.startswith("blk."):
            out[int(name.split(".")[1]) + 1] += n
        else:
            out[-1] += n
    return out


@pytest.mark.parametrize("ggml_type", list(BLOCKS))
def test_every_block_has_the_exact_bytes_of_its_tensors(tmp_path: Path, ggml_type: str) -> None:
    path = tmp_path / "m.gguf"
    written = write_gguf(path, model_tensors(ggml_type))
    prof = profile_gguf(path, prompt_tokens=32)
    assert [b.weight_bytes for b in prof.blocks] == _by_block(written)
    block, size = BLOCKS[ggml_type]
    assert written["blk.0.ffn_up.weight"] == H * INTER // block * size
    # gguf's own reader agrees on every tensor: type, bytes and where the bytes are
    ref = {t.name: (t.tensor_type.name, int(t.n_bytes), int(t.data_offset)) for t in gguf.GGUFReader(path).tensors}
    assert {t.name: (t.ggml_type, t.nbytes, t.offset) for t in prof.file.tensors.values()} == ref
    assert prof.file_bytes == sum(written.values())


def test_a_q4_k_m_style_mix_is_counted_per_tensor(tmp_path: Path) -> None:
    tensors = model_tensors("Q4_K")
    for name in tensors:
        if name.endswith(("attn_v.weight", "ffn_down.weight")) and name.split(".")[1] in ("0", "2"):
            tensors[name] = (tensors[name][0], "Q6_K")
    tensors["output.weight"] = ((H, VOCAB), "Q6_K")
    path = tmp_path / "mix-Q4_K_M.gguf"
    written = write_gguf(path, tensors)
    prof = profile_gguf(path, prompt_tokens=16)
    assert [b.weight_bytes for b in prof.blocks] == _by_block(written)
    assert prof.blocks[1].weight_bytes > prof.blocks[2].weight_bytes  # layer 0 has two Q6_K matrices
    by_type = prof.bytes_by_type()
    assert set(by_type) == {"Q4_K", "Q6_K", "F32"}
    assert by_type["F32"] == (2 * LAYERS + 1) * H * 4
    assert prof.name == "mix-Q4_K_M"


def test_flops_and_kv_follow_the_architecture(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, model_tensors("Q8_0"))
    prof = profile_gguf(path, prompt_tokens=64, new_tokens=8)
    cfg = {"model_type": "llama", "hidden_size": H, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
           "num_attention_heads": HEADS, "num_key_value_heads": KV, "vocab_size": VOCAB}  # fmt: skip
    ref = blocks_for(architecture_from_hf_config(cfg), prompt_tokens=64, new_tokens=8, dtype="float16")
    for b, r in zip(prof.blocks, ref, strict=True):
        assert (b.name, b.flops, b.out_bytes, b.kv_bytes, b.decode_flops) == (
            r.name, r.flops, r.out_bytes, r.kv_bytes, r.decode_flops
        )  # fmt: skip
    assert prof.blocks[1].kv_bytes == 2 * (64 + 8) * KV * HEAD_DIM * 2  # an f16 KV cache
    arch = prof.architecture
    assert (arch.model_type, arch.rope_theta, arch.max_position_embeddings, arch.tie_word_embeddings) == (
        "llama", 500000.0, 2048, False
    )  # fmt: skip
    # the activation dtype: float32 doubles activations and KV, never the weights
    wide = profile_gguf(path, prompt_tokens=64, new_tokens=8, dtype="float32")
    assert wide.blocks[1].kv_bytes == 2 * prof.blocks[1].kv_bytes
    assert [b.weight_bytes for b in wide.blocks] == [b.weight_bytes for b in prof.blocks]
    with pytest.raises(InputError, match=r"^model\.dtype: 'q4_k_m' is not an activation dtype"):
        profile_gguf(path, prompt_tokens=8, dtype="q4_k_m")


def test_tied_embedding_counts_in_first_and_last_block(tmp_path: Path) -> None:
    path = tmp_path / "tied.gguf"
    written = write_gguf(path, model_tensors("Q6_K", tied=True))
    prof = profile_gguf(path, prompt_tokens=16)
    emb = written["token_embd.weight"]
    assert prof.architecture.tie_word_embeddings
    assert prof.blocks[0].weight_bytes == emb
    assert prof.blocks[-1].weight_bytes == H * 4 + emb
    assert sum(b.weight_bytes for b in prof.blocks) == sum(written.values()) + emb


def test_qwen2_with_biases_and_shared_rope_factors(tmp_path: Path) -> None:
    tensors = model_tensors("Q4_0", bias=True)
    tensors["rope_freqs.weight"] = ((HEAD_DIM // 2,), "F32")
    path = tmp_path / "q.gguf"
    written = write_gguf(path, tensors, arch="qwen2")
    prof = profile_gguf(path, prompt_tokens=16)
    assert prof.architecture.model_type == "qwen2" and prof.architecture.attention_bias
    rope = HEAD_DIM // 2 * 4
    own = _by_block({n: b for n, b in written.items() if not n.startswith("rope_freqs")})
    assert [b.weight_bytes for b in prof.blocks] == [own[0], *(n + rope for n in own[1:-1]), own[-1]]


def test_big_endian_file_reads_the_same(tmp_path: Path) -> None:
    write_gguf(tmp_path / "le.gguf", model_tensors("Q5_K"))
    write_gguf(tmp_path / "be.gguf", model_tensors("Q5_K"), endian=gguf.GGUFEndian.BIG)
    le, be = (profile_gguf(tmp_path / f, prompt_tokens=16) for f in ("le.gguf", "be.gguf"))
    assert le.blocks == be.blocks
    assert replace(be.architecture, source=le.architecture.source) == le.architecture


def test_split_model_is_read_from_its_first_part(tmp_path: Path) -> None:
    written = write_gguf(tmp_path / "m.gguf", model_tensors("Q4_1"), split_max_tensors=10)
    parts = sorted(tmp_path.glob("m-*-of-*.gguf"))
    n = len(parts)
    assert n == math.ceil(len(written) / 10) >= 3 and not (tmp_path / "m.gguf").exists()
    prof = profile_gguf(parts[0], prompt_tokens=16)
    assert len(prof.file.files) == n and prof.name == "m"
    assert [b.weight_bytes for b in prof.blocks] == _by_block(written)
    with pytest.raises(InputError, match=rf"is part 2 of a {n}-part split model \(give its first part, m-00001-of"):
        profile_gguf(parts[1], prompt_tokens=16)
    parts[2].unlink()
    with pytest.raises(InputError, match=rf"parts of the split model 'm-00001-of-0000{n}\.gguf' are missing.*00003"):
        profile_gguf(parts[0], prompt_tokens=16)


def test_scenario_and_model_info_read_a_gguf_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    written = write_gguf(tmp_path / "tiny-Q8_0.gguf", model_tensors("Q8_0"))
    devices = "devices: [{catalog: raspberry-pi-5-nvme, name: pi, uplink: 1e8, downlink: 1e8}]\n"
    (tmp_path / "s.yaml").write_text("workload: {prompt_tokens: 16}\nmodel: {gguf: tiny-Q8_0.gguf}\n" + devices)
    sc = load_scenario(tmp_path / "s.yaml")
    assert sc.model_name == "tiny-Q8_0"
    assert [b.weight_bytes for b in sc.blocks] == _by_block(written)
    (tmp_path / "s32.yaml").write_text(
        "workload: {prompt_tokens: 16}\nmodel: {gguf: tiny-Q8_0.gguf, dtype: float32}\n" + devices
    )
    assert load_scenario(tmp_path / "s32.yaml").blocks[1].kv_bytes == 2 * sc.blocks[1].kv_bytes
    (tmp_path / "bad.yaml").write_text(
        "workload: {prompt_tokens: 16}\nmodel: {gguf: tiny-Q8_0.gguf, dtype: q8_0}\n" + devices
    )
    with pytest.raises(InputError, match=r"^model\.dtype: 'q8_0' is not an activation dtype"):
        load_scenario(tmp_path / "bad.yaml")

    for argv in (["--gguf", str(tmp_path / "tiny-Q8_0.gguf")], [str(tmp_path / "tiny-Q8_0.gguf")]):
        with pytest.raises(SystemExit) as info:
            main(["model-info", *argv, "--prompt-tokens", "16", "--json"])
        assert info.value.code in (0, None)
        doc = json.loads(capsys.readouterr().out)
        assert set(doc) == {"model", "source", "blocks", "totals"}
        assert [r["weight_bytes"] for r in doc["blocks"]] == _by_block(written)
        assert doc["totals"]["weight_bytes"] == sum(written.values())
        assert doc["blocks"][1]["kv_bytes"] == sc.blocks[1].kv_bytes
    with pytest.raises(SystemExit):
        main(["model-info", "--gguf", str(tmp_path / "tiny-Q8_0.gguf"), "--prompt-tokens", "16"])
    out = capsys.readouterr().out
    assert "Q8_0" in out and "layer2" in out and "exact bytes" in out


def _gguf_error(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's error for ``model-info --gguf path``: exit code 2, one line."""
    with pytest.raises(SystemExit) as info:
        main(["model-info", "--gguf", str(path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_not_a_gguf_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.gguf").write_text("model: {catalog: llama-3.2-1b}\n")
    assert "is not a GGUF file (it starts with b'mode'" in _gguf_error(tmp_path / "x.gguf", capsys)
    (tmp_path / "empty.gguf").write_bytes(b"")
    assert "is not a GGUF file" in _gguf_error(tmp_path / "empty.gguf", capsys)
    assert "no such file" in _gguf_error(tmp_path / "nope.gguf", capsys)
    assert "is a directory (give the .gguf file itself)" in _gguf_error(tmp_path, capsys)
    (tmp_path / "v1.gguf").write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(24))
    assert "is GGUF version 1; versions 2 and 3 are read" in _gguf_error(tmp_path / "v1.gguf", capsys)


@pytest.mark.parametrize(
    ("keep", "match"),
    [
        (10, "too short to be a GGUF file"),
        (100, "the header ends inside metadata"),
        (0.5, "the header ends inside"),  # in the tokenizer's token list
        (-200, "ends past the end of the file"),  # inside the data: a tensor's bytes are cut
    ],
)
def test_truncated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], keep: float, match: str) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path)
    data = path.read_bytes()
    header_end = gguf.GGUFReader(path).data_offset
    n = int(header_end * keep) if isinstance(keep, float) else keep if keep > 0 else len(data) + keep
    path.write_bytes(data[:n])
    err = _gguf_error(path, capsys)
    assert match in err and "m.gguf" in err
    if keep != 10:
        assert "the file is truncated: download it again" in err


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"arch": "gemma"},
            "general.architecture is 'gemma', which coldpipe does not support (coldpipe reads llama and qwen2",
        ),
        ({"meta": {"llama.expert_count": 8}}, "llama.expert_count is 8: a mixture-of-experts model"),
        ({"drop_meta": ("llama.feed_forward_length",)}, "metadata key 'llama.feed_forward_length' is missing"),
        ({"meta": {"llama.attention.head_count": [4, 4, 4]}}, "'llama.attention.head_count' is an array"),
        ({"meta": {"llama.attention.head_count_kv": 4}}, "tensor 'blk.0.attn_k.weight' has shape [256, 128] but"),
    ],
)
def test_bad_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str], kwargs: dict, match: str) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, **kwargs)
    err = _gguf_error(path, capsys)
    assert err.startswith("coldpipe: error: --gguf: ") and str(path) in err and match in err, err


def test_missing_or_unknown_tensors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.gguf"
    tensors = model_tensors()
    del tensors["blk.1.ffn_down.weight"]
    write_gguf(path, tensors)
    err = _gguf_error(path, capsys)
    assert "tensor 'blk.1.ffn_down.weight' (block 2: decoder layer 1) is missing" in err
    tensors = model_tensors()
    del tensors["token_embd.weight"]
    write_gguf(path, tensors)
    assert "tensor 'token_embd.weight' (the embedding, block 0) is missing" in _gguf_error(path, capsys)
    tensors = {**model_tensors(), "v.patch_embd.weight": ((32, 32), "F16")}
    write_gguf(path, tensors)
    assert "tensor 'v.patch_embd.weight' (F16) belongs to no block" in _gguf_error(path, capsys)


def test_architecture_from_plain_values() -> None:
    meta = {
        "general.architecture": "llama",
        "llama.block_count": 1,
        "llama.embedding_length": 8,
        "llama.feed_forward_length": 16,
        "llama.attention.head_count": 2,
    }
    layer = {"attn_norm": (8,), "attn_q": (8, 8), "attn_k": (8, 8), "attn_v": (8, 8), "attn_output": (8, 8),
             "ffn_norm": (8,), "ffn_gate": (8, 16), "ffn_up": (8, 16), "ffn_down": (16, 8)}  # fmt: skip
    shapes = {"token_embd.weight": (8, 10), "output_norm.weight": (8,)}
    shapes.update({f"blk.0.{role}.weight": shape for role, shape in layer.items()})
    arch = architecture_from_gguf(meta, shapes)
    assert (arch.num_key_value_heads, arch.head_dim, arch.vocab_size, arch.tie_word_embeddings) == (2, 4, 10, True)
    bad = [
        ({"tokenizer.ggml.tokens": ["t"] * 9}, "tokenizer.ggml.tokens has 9 tokens but token_embd.weight 10 rows"),
        ({"llama.attention.value_length": 2}, "value_length 2 differs from key_length 4"),
        ({"llama.block_count": "one"}, "'llama.block_count' is 'one', not a positive integer"),
        ({"general.architecture": None}, "metadata key 'general.architecture' is missing"),
    ]
    for change, match in bad:
        with pytest.raises(InputError, match=re.escape(match)):
            architecture_from_gguf({**meta, **change}, shapes)


def test_a_multi_gigabyte_file_reads_in_well_under_a_second(tmp_path: Path) -> None:
    """Llama-3.1-8B's shapes at Q4_K/Q6_K with its 128k-token tokenizer, the data a sparse 4.8 GB."""
    h, inter, layers, vocab = 4096, 14336, 32, 128256
    w = gguf.GGUFWriter(tmp_path / "8b.gguf", "llama")
    keys = {"block_count": layers, "embedding_length": h, "feed_forward_length": inter,
            "attention.head_count": 32, "attention.head_count_kv": 8, "context_length": 131072}  # fmt: skip
    for key, v in keys.items():
        w.add_uint32(f"llama.{key}", v)
    w.add_token_list([f"t{i}" for i in range(vocab)])
    w.add_token_merges([f"a{i} b{i}" for i in range(280147)])
    shapes = {"token_embd.weight": ((h, vocab), "Q4_K"), "output_norm.weight": ((h,), "F32"),
              "output.weight": ((h, vocab), "Q6_K")}  # fmt: skip
    layer = {"attn_norm": (h,), "attn_q": (h, h), "attn_k": (h, 1024), "attn_v": (h, 1024), "attn_output": (h, h),
             "ffn_norm": (h,), "ffn_gate": (h, inter), "ffn_up": (h, inter), "ffn_down": (inter, h)}  # fmt: skip
    for i in range(layers):
        for role, shape in layer.items():
            kind = (
                "F32" if role.endswith("norm") else "Q6_K" if role in ("attn_v", "ffn_down") and i % 3 == 0 else "Q4_K"
            )
            shapes[f"blk.{i}.{role}.weight"] = (shape, kind)
    sizes = []
    for name, (shape, kind) in shapes.items():
        block, size = BLOCKS[kind]
        sizes.append(math.prod(shape) // block * size)
        raw = gguf.GGMLQuantizationType[kind]
        w.add_tensor_info(name, tuple(reversed(shape)), np.dtype(np.float32), sizes[-1], raw_dtype=raw)
    expected = sum(sizes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    path = tmp_path / "8b.gguf"
    data_start = -(-path.stat().st_size // 32) * 32
    os.truncate(path, data_start + sum(-(-n // 32) * 32 for n in sizes))  # the data: a hole, no disk blocks
    assert path.stat().st_size > 4.5e9
    start = time.perf_counter()
    prof = profile_gguf(path, prompt_tokens=512)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{elapsed:.2f} s"
    assert sum(b.weight_bytes for b in prof.blocks) == expected
    assert round(prof.architecture.n_params / 1e9, 2) == 8.03
