"""The model catalog against the parameter counts the model cards publish."""

from __future__ import annotations

import gguf
import pytest

from coldpipe.core.architectures import CATALOG, DTYPE_BYTES, architecture_from_hf_config, blocks_for
from coldpipe.errors import InputError


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("llama-3.2-1b", 1.24),
        ("llama-3.2-3b", 3.21),
        ("llama-3.1-8b", 8.03),
        ("llama-3.1-70b", 70.55),
        ("llama-2-7b", 6.74),
        ("qwen2.5-0.5b", 0.49),
        ("qwen2.5-1.5b", 1.54),
        ("qwen2.5-3b", 3.09),
        ("qwen2.5-7b", 7.62),
        ("qwen2.5-14b", 14.77),
        ("qwen2.5-32b", 32.76),
        ("mistral-7b-v0.3", 7.25),
    ],
)
def test_catalog_parameter_counts_match_model_cards(name: str, billions: float) -> None:
    assert CATALOG[name].n_params / 1e9 == pytest.approx(billions, abs=0.01)


def test_blocks_follow_spec_layout_and_formulas() -> None:
    arch = CATALOG["llama-3.1-8b"]
    s = 512
    blocks = blocks_for(arch, prompt_tokens=s, new_tokens=8, dtype="bfloat16")
    assert len(blocks) == arch.num_hidden_layers + 2
    emb, layer, head = blocks[0], blocks[1], blocks[-1]
    assert emb.weight_bytes == 128256 * 4096 * 2
    assert emb.flops == 0.0
    p_lin = 4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14336
    assert layer.flops == 2 * s * p_lin + 4 * s * s * 32 * 128
    assert layer.kv_bytes == 2 * (s + 8) * 8 * 128 * 2
    assert layer.out_bytes == s * 4096 * 2
    assert head.flops == 2 * 4096 * 128256  # last position only
    assert head.weight_bytes == (4096 + 128256 * 4096) * 2


def test_tied_embeddings_are_counted_in_both_end_blocks() -> None:
    arch = CATALOG["llama-3.2-1b"]
    blocks = blocks_for(arch, prompt_tokens=16)
    assert arch.tie_word_embeddings
    assert blocks[-1].weight_bytes == pytest.approx(blocks[0].weight_bytes + 2048 * 2)


def test_hf_config_round_trip() -> None:
    for arch in CATALOG.values():
        again = architecture_from_hf_config(arch.to_hf_config())
        assert again.n_params == arch.n_params


def test_unsupported_config_is_named() -> None:
    with pytest.raises(InputError, match="model_type"):
        architecture_from_hf_config({"model_type": "gpt2"})
    with pytest.raises(InputError, match="hidden_size"):
        architecture_from_hf_config({"model_type": "llama"})


# (weights, bytes) per block of ggml's block structs (ggml-common.h), written out independently of the code
GGML_BLOCKS = {"q8_0": (32, 34), "q6_k": (256, 210), "q5_1": (32, 24), "q5_0": (32, 22), "q4_1": (32, 20),
               "q4_0": (32, 18)}  # fmt: skip


def test_llama_cpp_quantisations() -> None:
    for name, (weights, nbytes) in GGML_BLOCKS.items():
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name.upper()]]
        assert DTYPE_BYTES[name] == nbytes / weights == size / block
    # the k-quant mixes: llama.cpp's measured bits per weight (Llama-3.1-8B), between their block types
    assert 144 / 256 < DTYPE_BYTES["q4_k_s"] < DTYPE_BYTES["q4_k_m"] < 210 / 256
    assert DTYPE_BYTES["q4_k_m"] < DTYPE_BYTES["q5_k_s"] < DTYPE_BYTES["q5_k_m"] < DTYPE_BYTES["q6_k"]
    blocks = blocks_for(CATALOG["llama-3.1-8b"], prompt_tokens=16, dtype="q4_k_m")
    assert round(sum(b.weight_bytes for b in blocks) / 2**30, 2) == 4.58  # the size llama.cpp lists
    ref = blocks_for(CATALOG["llama-3.1-8b"], prompt_tokens=16, dtype="bfloat16")
    assert [b.kv_bytes for b in blocks] == [b.kv_bytes for b in ref]  # the KV cache is not quantised
