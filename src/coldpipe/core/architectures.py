"""Decoder-only architectures and their blocks (docs/model.md#blocks).

A model of ``n_layers`` decoder layers has ``n_layers + 2`` blocks: block 0 is the token
embedding, blocks ``1..n_layers`` the decoder layers, block ``n_layers + 1`` the final norm + LM head.
Tied embeddings count their bytes in both the first and the last block (each stage that holds one
of them must load it).

Per decoder layer, with ``s`` prompt tokens, hidden size ``h``, ``n_h`` query heads and ``n_kv``
KV heads of size ``d``, MLP width ``I``:

- linear parameters ``P = h*n_h*d + 2*h*n_kv*d + n_h*d*h + 3*h*I`` (q, k, v, o; gate, up, down);
- weights ``(P + biases + 2*h norms) * dtype_bytes``;
- prefill FLOPs ``2*s*P + 4*s^2*n_h*d`` (projections, then QK^T and AV without causal halving);
- activation out ``s*h*act_bytes``; KV cache ``2*(s + T)*n_kv*d*act_bytes`` for ``T`` new tokens;
- one decode step: ``2*P + 4*(s + T)*n_h*d`` FLOPs, ``h*act_bytes`` out.

The head computes logits for the last position only: ``2*h*V`` FLOPs.

>>> blocks = blocks_for(CATALOG["llama-3.1-8b"], prompt_tokens=512, new_tokens=1, dtype="bfloat16")
>>> len(blocks), round(sum(b.weight_bytes for b in blocks) / 1e9, 2)   # 8.03 B parameters
(34, 16.06)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from coldpipe.core.types import Block
from coldpipe.errors import InputError

__all__ = [
    "CATALOG",
    "DTYPE_BYTES",
    "Architecture",
    "architecture_from_hf_config",
    "blocks_for",
]

# Bytes per weight. The llama.cpp names are its quantisation types (``llama-quantize ... Q4_K_M``), lower case.
DTYPE_BYTES: dict[str, float] = {
    "float32": 4.0,
    "float16": 2.0,
    "bfloat16": 2.0,
    "float8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    # One ggml block type for the weight matrices: bytes per block / weights per block, from ggml's block
    # structs (ggml-common.h; the same figures as gguf.GGML_QUANT_SIZES): block_q8_0 is a 2-byte scale and
    # 32 int8, block_q6_K 128 + 64 + 16 bytes of quants and scales and a 2-byte scale per 256 weights, ...
    # Exact for the tensors of that type; a llama.cpp file of it also holds float32 norms and may keep a few
    # tensors (the output matrix) wider, so its average is that or a little more (Llama-3.1-8B: q8_0 8.5008,
    # q6_k 6.5633 bits per weight, against 8.5 and 6.5625 for the blocks).
    "q8_0": 34 / 32,  # 1.0625
    "q6_k": 210 / 256,  # 0.8203125
    "q5_1": 24 / 32,  # 0.75
    "q5_0": 22 / 32,  # 0.6875
    "q4_1": 20 / 32,  # 0.625
    "q4_0": 18 / 32,  # 0.5625
    # llama.cpp's k-quant mixes give different tensors different block types (attn_v and ffn_down of some
    # layers and the output at Q6_K in Q4_K_M, the rest at Q4_K, ...), so no block layout gives their bytes:
    # these are the whole-file bits per weight llama.cpp measured on Llama-3.1-8B (tools/quantize/README.md),
    # / 8: an approximation for other models.
    "q5_k_m": 5.7036 / 8,
    "q5_k_s": 5.5704 / 8,
    "q4_k_m": 4.8944 / 8,
    "q4_k_s": 4.6672 / 8,
    "q3_k_l": 4.2979 / 8,
    "q3_k_s": 3.6429 / 8,
    "q2_k": 3.1593 / 8,
}
_ACT_BYTES: dict[str, float] = {"float32": 4.0}  # activations and KV: fp32 if weights are, else 16-bit

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "mistral")


@dataclass(frozen=True)
class Architecture:
    """The shape of a Llama/Qwen2/Mistral-style decoder (the fields of its HF ``config.json``)."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q, k, v projections have biases (Qwen2)
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 4096
    source: str = ""  # where the numbers come from

    @property
    def linear_params_per_layer(self) -> int:
        h, d = self.hidden_size, self.head_dim
        attn = (
            h * self.num_attention_heads * d + 2 * h * self.num_key_value_heads * d + self.num_attention_heads * d * h
        )
        return attn + 3 * h * self.intermediate_size

    @property
    def params_per_layer(self) -> int:
        bias = (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim if self.attention_bias else 0
        return self.linear_params_per_layer + bias + 2 * self.hidden_size

    @property
    def n_params(self) -> int:
        """Parameters counted once (tied embeddings once), as model cards state them."""
        emb = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else emb
        return emb + self.num_hidden_layers * self.params_per_layer + self.hidden_size + head

    def to_hf_config(self, torch_dtype: str = "float32") -> dict[str, Any]:
        """A ``config.json`` that transformers can build this architecture from."""
        arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
        cfg: dict[str, Any] = {
            "architectures": [arch[self.model_type]],
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "vocab_size": self.vocab_size,
            "head_dim": self.head_dim,
            "tie_word_embeddings": self.tie_word_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_act": "silu",
            "torch_dtype": torch_dtype,
        }
        if self.model_type == "llama":
            cfg["attention_bias"] = self.attention_bias
            cfg["mlp_bias"] = False
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _llama(
    hidden: int,
    inter: int,
    layers: int,
    heads: int,
    kv: int,
    vocab: int,
    tied: bool,
    theta: float,
    source: str,
    model_type: str = "llama",
    bias: bool = False,
    eps: float = 1e-5,
    max_pos: int = 131072,
) -> Architecture:
    return Architecture(
        model_type, hidden, inter, layers, heads, kv, vocab, hidden // heads, tied, bias, theta, eps, max_pos, source
    )


# Published config.json values of each model's Hugging Face repository (named in `source`).
CATALOG: dict[str, Architecture] = {
    "llama-3.2-1b": _llama(2048, 8192, 16, 32, 8, 128256, True, 500000.0, "meta-llama/Llama-3.2-1B"),
    "llama-3.2-3b": _llama(3072, 8192, 28, 24, 8, 128256, True, 500000.0, "meta-llama/Llama-3.2-3B"),
    "llama-3.1-8b": _llama(4096, 14336, 32, 32, 8, 128256, False, 500000.0, "meta-llama/Llama-3.1-8B"),
    "llama-3.1-70b": _llama(8192, 28672, 80, 64, 8, 128256, False, 500000.0, "meta-llama/Llama-3.1-70B"),
    "llama-2-7b": _llama(4096, 11008, 32, 32, 32, 32000, False, 10000.0, "meta-llama/Llama-2-7b-hf", max_pos=4096),
    "qwen2.5-0.5b": _llama(
        896, 4864, 24, 14, 2, 151936, True, 1000000.0, "Qwen/Qwen2.5-0.5B", "qwen2", True, 1e-6, 32768
    ),
    "qwen2.5-1.5b": _llama(
        1536, 8960, 28, 12, 2, 151936, True, 1000000.0, "Qwen/Qwen2.5-1.5B", "qwen2", True, 1e-6, 32768
    ),
    "qwen2.5-3b": _llama(
        2048, 11008, 36, 16, 2, 151936, True, 1000000.0, "Qwen/Qwen2.5-3B", "qwen2", True, 1e-6, 32768
    ),
    "qwen2.5-7b": _llama(
        3584, 18944, 28, 28, 4, 152064, False, 1000000.0, "Qwen/Qwen2.5-7B", "qwen2", True, 1e-6, 131072
    ),
    "qwen2.5-14b": _llama(
        5120, 13824, 48, 40, 8, 152064, False, 1000000.0, "Qwen/Qwen2.5-14B", "qwen2", True, 1e-6, 131072
    ),
    "qwen2.5-32b": _llama(
        5120, 27648, 64, 40, 8, 152064, False, 1000000.0, "Qwen/Qwen2.5-32B", "qwen2", True, 1e-6, 131072
    ),
    "mistral-7b-v0.3": _llama(
        4096, 14336, 32, 32, 8, 32768, False, 1000000.0, "mistralai/Mistral-7B-v0.3", "mistral", max_pos=32768
    ),
}


def _need(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg:
        raise InputError(f"{where}.{key}", "missing from config.json", "is this a Llama/Qwen2/Mistral config?")
    return cfg[key]


def architecture_from_hf_config(cfg: dict[str, Any], where: str = "model.hf_config") -> Architecture:
    """Read a Llama/Qwen2/Mistral-style HF ``config.json`` (already parsed) into an :class:`Architecture`."""
    model_type = str(cfg.get("model_type", ""))
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise InputError(
            f"{where}.model_type", f"{model_type!r} is not supported", f"use one of {list(SUPPORTED_MODEL_TYPES)}"
        )
    hidden = int(_need(cfg, "hidden_size", where))
    heads = int(_need(cfg, "num_attention_heads", where))
    return Architecture(
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=int(_need(cfg, "intermediate_size", where)),
        num_hidden_layers=int(_need(cfg, "num_hidden_layers", where)),
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        vocab_size=int(_need(cfg, "vocab_size", where)),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
    )


def blocks_for(
    arch: Architecture, *, prompt_tokens: int, new_tokens: int = 1, dtype: str = "bfloat16", token_bytes: float = 4.0
) -> tuple[Block, ...]:
    """The ``num_hidden_layers + 2`` blocks of ``arch`` for one workload (formulas in the module docstring)."""
    if dtype not in DTYPE_BYTES:
        raise InputError("model.dtype", f"unknown dtype {dtype!r}", f"use one of {list(DTYPE_BYTES)}")
    wb = DTYPE_BYTES[dtype]
    ab = _ACT_BYTES.get(dtype, 2.0)
    s, ctx = prompt_tokens, prompt_tokens + new_tokens
    h, v = arch.hidden_size, arch.vocab_size
    qd = arch.num_attention_heads * arch.head_dim
    kvd = arch.num_key_value_heads * arch.head_dim
    p_lin = arch.linear_params_per_layer
    emb = Block(
        "embed",
        weight_bytes=v * h * wb,
        flops=0.0,
        out_bytes=s * h * ab,
        kv_bytes=0.0,
        decode_flops=0.0,
        decode_out_bytes=h * ab,
    )
    layers = [
        Block(
            f"layer{i}",
            weight_bytes=arch.params_per_layer * wb,
            flops=2.0 * s * p_lin + 4.0 * s * s * qd,
            out_bytes=s * h * ab,
            kv_bytes=2.0 * ctx * kvd * ab,
            decode_flops=2.0 * p_lin + 4.0 * ctx * qd,
            decode_out_bytes=h * ab,
        )
        for i in range(arch.num_hidden_layers)
    ]
    head = Block(
        "norm+head",
        weight_bytes=(h + v * h) * wb,
        flops=2.0 * h * v,
        out_bytes=token_bytes,
        kv_bytes=0.0,
        decode_flops=2.0 * h * v,
        decode_out_bytes=token_bytes,
    )
    return (emb, *layers, head)
