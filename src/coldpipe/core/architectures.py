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

An architecture comes from the catalog, from a parsed HF ``config.json`` (:func:`architecture_from_hf_config`)
or from the metadata and tensor shapes of a GGUF file (:func:`architecture_from_gguf`, given as plain values:
the file is read by :mod:`coldpipe.gguf_files`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from coldpipe.core.limits import MAX_CONFIG_INT, MAX_LAYERS, cut
from coldpipe.core.types import Block
from coldpipe.errors import InputError

__all__ = [
    "CATALOG",
    "DTYPE_BYTES",
    "GGUF_ARCHITECTURES",
    "Architecture",
    "architecture_from_gguf",
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
    # / 8. An approximation for other models; a GGUF file (model: {gguf: FILE}) gives every tensor's exact bytes.
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
# GGUF ``general.architecture`` -> model type. llama.cpp writes Llama and Mistral models as "llama";
# its other families (gemma, phi3, qwen2moe, mistral3, ...) have layers these blocks do not describe.
GGUF_ARCHITECTURES: dict[str, str] = {"llama": "llama", "qwen2": "qwen2"}


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
    if key not in cfg or cfg[key] is None:
        raise InputError(f"{where}.{key}", "missing from config.json", "is this a Llama/Qwen2/Mistral config?")
    return cfg[key]


def _cfg_int(cfg: dict[str, Any], key: str, where: str, default: int | None = None, limit: int = MAX_CONFIG_INT) -> int:
    """A positive integer of config.json, at most ``limit`` (docs/reliability.md#limits)."""
    v = cfg.get(key) if default is not None else _need(cfg, key, where)
    if v is None:
        assert default is not None
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InputError(
            f"{where}.{key}",
            f"must be a positive integer, got {cut(repr(v), 40)}",
            "fix config.json or download it again",
        )
    if v > limit:
        raise InputError(
            f"{where}.{key}",
            f"is {v}, more than the {limit} coldpipe handles",
            "is config.json corrupt? (docs/reliability.md#limits)",
        )
    return v


def _cfg_float(cfg: dict[str, Any], key: str, where: str, default: float) -> float:
    v = cfg.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise InputError(
            f"{where}.{key}", f"must be a positive finite number, got {cut(repr(v), 40)}", "fix config.json"
        )
    return float(v)


def _cfg_bool(cfg: dict[str, Any], key: str, where: str, default: bool) -> bool:
    v = cfg.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise InputError(f"{where}.{key}", f"must be true or false, got {cut(repr(v), 40)}", "fix config.json")
    return v


def architecture_from_hf_config(cfg: dict[str, Any], where: str = "model.hf_config") -> Architecture:
    """Read a Llama/Qwen2/Mistral-style HF ``config.json`` (already parsed) into an :class:`Architecture`.

    Sizes must be positive integers within docs/reliability.md#limits; heads must divide as the model needs.
    """
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise InputError(
            f"{where}.model_type",
            f"{cut(repr(model_type), 60)} is not supported",
            f"use one of {list(SUPPORTED_MODEL_TYPES)}",
        )
    hidden = _cfg_int(cfg, "hidden_size", where)
    heads = _cfg_int(cfg, "num_attention_heads", where)
    kv = _cfg_int(cfg, "num_key_value_heads", where, default=heads)
    if heads % kv:
        raise InputError(
            f"{where}.num_key_value_heads", f"{kv} does not divide num_attention_heads {heads}", "fix config.json"
        )
    head_dim = _cfg_int(cfg, "head_dim", where, default=max(1, hidden // heads))
    if heads * head_dim > MAX_CONFIG_INT:
        raise InputError(
            f"{where}.head_dim", f"{heads} heads x {head_dim} is more than {MAX_CONFIG_INT}", "fix config.json"
        )
    return Architecture(
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=_cfg_int(cfg, "intermediate_size", where),
        num_hidden_layers=_cfg_int(cfg, "num_hidden_layers", where, limit=MAX_LAYERS),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=_cfg_int(cfg, "vocab_size", where),
        head_dim=head_dim,
        tie_word_embeddings=_cfg_bool(cfg, "tie_word_embeddings", where, False),
        attention_bias=_cfg_bool(cfg, "attention_bias", where, model_type == "qwen2"),
        rope_theta=_cfg_float(cfg, "rope_theta", where, 10000.0),
        rms_norm_eps=_cfg_float(cfg, "rms_norm_eps", where, 1e-5),
        max_position_embeddings=_cfg_int(cfg, "max_position_embeddings", where, default=4096),
    )


_GGUF_FIX = "convert the model again with a current llama.cpp convert_hf_to_gguf.py"


def _gguf_int(meta: Mapping[str, Any], key: str, field: str, file: str, default: int | None = None) -> int:
    """A positive integer of GGUF metadata, or ``default`` when absent (required when there is none)."""
    if key not in meta:
        if default is not None:
            return default
        raise InputError(field, f"{file!r}: metadata key {key!r} is missing", _GGUF_FIX)
    v = meta[key]
    if hasattr(v, "__len__") and not isinstance(v, str):
        raise InputError(
            field,
            f"{file!r}: metadata key {key!r} is an array (one value per layer)",
            "coldpipe's blocks need the same value in every layer",
        )
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise InputError(field, f"{file!r}: metadata key {key!r} is {v!r}, not a positive integer", _GGUF_FIX)
    return v


def _gguf_float(meta: Mapping[str, Any], key: str, default: float) -> float:
    v = meta.get(key, default)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else default


def architecture_from_gguf(
    metadata: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    field: str = "model.gguf",
    file: str = "model.gguf",
) -> Architecture:
    """The architecture of a GGUF model from its metadata and its tensors' shapes (ggml order, ``ne[0]`` first).

    Keys of a llama.cpp file for ``{arch}`` = ``general.architecture`` (llama or qwen2, see
    ``GGUF_ARCHITECTURES``): ``{arch}.block_count``, ``.embedding_length``, ``.feed_forward_length``,
    ``.attention.head_count``, ``.attention.head_count_kv`` (default: the head count),
    ``.attention.key_length`` (default: embedding / heads), ``.context_length``, ``.rope.freq_base``,
    ``.attention.layer_norm_rms_epsilon``. The vocabulary is the rows of ``token_embd.weight``; embeddings are
    tied when there is no ``output.weight`` (llama.cpp then reuses the embedding as the head), and the q, k, v
    projections have biases when ``blk.0.attn_q.bias`` is there. Every weight matrix's shape is checked
    against these numbers, so the FLOPs and the KV bytes are those of the tensors in the file.
    """
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise InputError(field, f"{file!r}: metadata key 'general.architecture' is missing", _GGUF_FIX)
    if arch not in GGUF_ARCHITECTURES:
        raise InputError(
            field,
            f"{file!r}: general.architecture is {arch!r}, which coldpipe does not support",
            f"coldpipe reads {' and '.join(GGUF_ARCHITECTURES)} files, Llama-, Mistral- and Qwen2-style decoders; "
            "for another model give its blocks: model: {blocks: [...]}",
        )
    experts = metadata.get(f"{arch}.expert_count", 0)
    if isinstance(experts, int) and experts > 0:
        raise InputError(
            field,
            f"{file!r}: {arch}.expert_count is {experts}: a mixture-of-experts model, such as Mixtral",
            "coldpipe's blocks describe dense decoders only; give the blocks directly: model: {blocks: [...]}",
        )
    layers = _gguf_int(metadata, f"{arch}.block_count", field, file)
    hidden = _gguf_int(metadata, f"{arch}.embedding_length", field, file)
    inter = _gguf_int(metadata, f"{arch}.feed_forward_length", field, file)
    heads = _gguf_int(metadata, f"{arch}.attention.head_count", field, file)
    kv = _gguf_int(metadata, f"{arch}.attention.head_count_kv", field, file, default=heads)
    head_dim = _gguf_int(metadata, f"{arch}.attention.key_length", field, file, default=hidden // heads)
    value_dim = _gguf_int(metadata, f"{arch}.attention.value_length", field, file, default=head_dim)
    if value_dim != head_dim:
        raise InputError(
            field,
            f"{file!r}: {arch}.attention.value_length {value_dim} differs from key_length {head_dim}",
            "coldpipe's blocks need keys and values of one head size",
        )
    embd = shapes.get("token_embd.weight")
    if embd is None:
        raise InputError(field, f"{file!r}: tensor 'token_embd.weight' (the embedding, block 0) is missing", _GGUF_FIX)
    if len(embd) != 2:
        raise InputError(field, f"{file!r}: tensor 'token_embd.weight' has shape {list(embd)}, not 2-D", _GGUF_FIX)
    out = Architecture(
        model_type=GGUF_ARCHITECTURES[arch],
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=embd[1],
        head_dim=head_dim,
        tie_word_embeddings="output.weight" not in shapes,
        attention_bias="blk.0.attn_q.bias" in shapes,
        rope_theta=_gguf_float(metadata, f"{arch}.rope.freq_base", 10000.0),
        rms_norm_eps=_gguf_float(metadata, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        max_position_embeddings=_gguf_int(metadata, f"{arch}.context_length", field, file, default=4096),
        source=f"GGUF {file}",
    )
    tokens = metadata.get("tokenizer.ggml.tokens")
    if tokens is not None and hasattr(tokens, "__len__") and len(tokens) != out.vocab_size:
        raise InputError(
            field,
            f"{file!r}: tokenizer.ggml.tokens has {len(tokens)} tokens but token_embd.weight {out.vocab_size} rows",
            _GGUF_FIX,
        )
    _check_gguf_shapes(out, shapes, field, file)
    return out


def _check_gguf_shapes(arch: Architecture, shapes: Mapping[str, tuple[int, ...]], field: str, file: str) -> None:
    """Every tensor the blocks' formulas count is in the file with the shape the architecture gives it."""
    h, i_, v = arch.hidden_size, arch.intermediate_size, arch.vocab_size
    qd, kvd = arch.num_attention_heads * arch.head_dim, arch.num_key_value_heads * arch.head_dim
    layer = {
        "attn_norm": (h,),
        "attn_q": (h, qd),
        "attn_k": (h, kvd),
        "attn_v": (h, kvd),
        "attn_output": (qd, h),
        "ffn_norm": (h,),
        "ffn_gate": (h, i_),
        "ffn_up": (h, i_),
        "ffn_down": (i_, h),
    }
    want: dict[str, tuple[int, ...]] = {"token_embd.weight": (h, v), "output_norm.weight": (h,)}
    if not arch.tie_word_embeddings:
        want["output.weight"] = (h, v)
    for n in range(arch.num_hidden_layers):
        want.update({f"blk.{n}.{role}.weight": shape for role, shape in layer.items()})
    meaning = (
        f"embedding_length {h}, feed_forward_length {i_}, {arch.num_attention_heads} heads and "
        f"{arch.num_key_value_heads} KV heads of {arch.head_dim}, {v} tokens"
    )
    for name, shape in want.items():
        got = shapes.get(name)
        if got is None:
            if name.startswith("blk."):
                where = f"block {int(name.split('.')[1]) + 1}: decoder layer {name.split('.')[1]}"
            else:
                where = "block 0: the embedding" if name.startswith("token_embd") else "the last block: norm + head"
            raise InputError(field, f"{file!r}: tensor {name!r} ({where}) is missing", _GGUF_FIX)
        if tuple(got) != shape:
            raise InputError(
                field,
                f"{file!r}: tensor {name!r} has shape {list(got)} but the metadata ({meaning}) gives {list(shape)}",
                "the metadata and the tensors disagree: " + _GGUF_FIX,
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
    p_attn = p_lin - 3 * h * arch.intermediate_size  # q, k, v, o projections (sublayer's attention half)
    emb = Block(
        "embed",
        weight_bytes=v * h * wb,
        flops=0.0,
        out_bytes=s * h * ab,
        kv_bytes=0.0,
        decode_flops=0.0,
        decode_out_bytes=h * ab,
        vocab_rows=v,
        vocab_row_bytes=h * wb,
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
            attn_weight_bytes=(p_attn + arch.params_per_layer - p_lin - 2 * h + h) * wb,
            attn_flops=2.0 * s * p_attn + 4.0 * s * s * qd,
            attn_decode_flops=2.0 * p_attn + 4.0 * ctx * qd,
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
        vocab_rows=v,
        vocab_row_bytes=h * wb,
    )
    return (emb, *layers, head)
