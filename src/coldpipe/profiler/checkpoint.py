"""Model profiles from a Hugging Face checkpoint directory: ``config.json`` + safetensors headers.

Only the headers are read, by :mod:`coldpipe.checkpoint_files` (the same reader and the same rule for which
files make a checkpoint as the runtime's); no tensor data, no torch. A tensor's size is the byte span its
``data_offsets`` give, so quantised and mixed-dtype checkpoints are counted exactly. Tensors map to
the blocks of docs/model.md#blocks by name:

- ``model.embed_tokens.*``  -> block 0 (the embedding)
- ``model.layers.{i}.*``    -> block ``i + 1``
- ``model.norm.*``, ``lm_head.*`` -> the last block (final norm + LM head)

(the ``model.`` prefix is optional). With tied embeddings and no ``lm_head`` tensor in the files,
the embedding's bytes count in both the first and the last block: each stage holding one of them
must load it. FLOPs, activation and KV bytes come from the architecture (:mod:`coldpipe.core.architectures`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coldpipe.checkpoint_files import TensorEntry, check_architecture_tensors, read_checkpoint_files
from coldpipe.core.architectures import DTYPE_BYTES, Architecture, architecture_from_hf_config, blocks_for
from coldpipe.core.types import Block
from coldpipe.errors import InputError

__all__ = [
    "CheckpointProfile",
    "block_weight_bytes",
    "profile_checkpoint",
]

_EMBED = re.compile(r"^(?:model\.)?embed_tokens\.")
_LAYER = re.compile(r"^(?:model\.)?layers\.(\d+)\.")
_HEAD = re.compile(r"^(?:(?:model\.)?norm\.|lm_head\.)")
_LM_HEAD = re.compile(r"^lm_head\.")
_FLOATS = ("float32", "float16", "bfloat16")  # the activation dtypes a checkpoint's tensors can suggest


def block_weight_bytes(
    tensors: dict[str, TensorEntry], n_layers: int, tied: bool, field: str = "model.checkpoint"
) -> list[int]:
    """Exact weight bytes of each of the ``n_layers + 2`` blocks (index = block)."""
    out = [0] * (n_layers + 2)
    has_lm_head = False
    for name, t in tensors.items():
        if _EMBED.match(name):
            out[0] += t.nbytes
        elif m := _LAYER.match(name):
            i = int(m.group(1))
            if i >= n_layers:
                raise InputError(
                    field, f"tensor {name!r} is in layer {i} but config.json has {n_layers} layers", "check config.json"
                )
            out[i + 1] += t.nbytes
        elif _HEAD.match(name):
            out[-1] += t.nbytes
            has_lm_head = has_lm_head or bool(_LM_HEAD.match(name))
        else:
            raise InputError(
                field,
                f"tensor {name!r} ({Path(t.file).name}) belongs to no block",
                "only Llama/Qwen2/Mistral-style names (embed_tokens, layers.N, norm, lm_head) are understood",
            )
    if out[0] == 0:
        raise InputError(field, "the checkpoint has no embed_tokens tensor")
    empty = [i for i in range(n_layers) if out[i + 1] == 0]
    if empty:
        raise InputError(field, f"no tensors for layers {empty[:5]}", "are all shards present?")
    if not has_lm_head:
        if not tied:
            raise InputError(field, "no lm_head tensor and tie_word_embeddings is false", "are all shards present?")
        out[-1] += out[0]  # the tied head is the embedding matrix: its stage loads it too
    return out


@dataclass(frozen=True)
class CheckpointProfile:
    """A checkpoint read into blocks: the architecture, its tensors and the activation dtype used."""

    name: str
    architecture: Architecture
    tensors: dict[str, TensorEntry]
    blocks: tuple[Block, ...]
    dtype: str

    @property
    def file_bytes(self) -> int:
        """Sum of every tensor's size in the files (each tensor once)."""
        return sum(t.nbytes for t in self.tensors.values())


def profile_checkpoint(
    directory: str | Path,
    *,
    prompt_tokens: int,
    new_tokens: int = 1,
    dtype: str | None = None,
    token_bytes: float = 4.0,
    field: str = "model.checkpoint",
) -> CheckpointProfile:
    """Blocks of the checkpoint in ``directory`` for one workload, weight bytes read from the files.

    ``dtype`` sets the activation and KV width as in :func:`coldpipe.core.architectures.blocks_for`; by
    default the config's ``torch_dtype`` (or the most common float dtype of the tensors).
    """
    d = Path(directory)
    ckpt = read_checkpoint_files(d, field)
    cfg, tensors = ckpt.config, ckpt.tensors
    arch = architecture_from_hf_config(cfg, where=f"{field}/config.json")
    check_architecture_tensors(ckpt, arch, field, allow_extra=True)  # the same check as the runtime's
    if dtype is None:
        dtype = _activation_dtype(cfg, tensors)
    if dtype not in DTYPE_BYTES:
        raise InputError("model.dtype", f"unknown dtype {dtype!r}", f"use one of {list(DTYPE_BYTES)}")
    sizes = block_weight_bytes(tensors, arch.num_hidden_layers, arch.tie_word_embeddings, field)
    shaped = blocks_for(arch, prompt_tokens=prompt_tokens, new_tokens=new_tokens, dtype=dtype, token_bytes=token_bytes)
    attn = [0] * len(sizes)  # sublayer's attention half: the layer's input norm and self_attn tensors, exact
    for name, t in tensors.items():
        if (m := _LAYER.match(name)) and name[m.end() :].startswith(("self_attn.", "input_layernorm.")):
            attn[int(m.group(1)) + 1] += t.nbytes
    blocks = tuple(
        replace(b, weight_bytes=float(n), attn_weight_bytes=float(a) if b.attn_weight_bytes is not None else None)
        for b, n, a in zip(shaped, sizes, attn, strict=True)
    )
    return CheckpointProfile(d.resolve().name, arch, tensors, blocks, dtype)


def _activation_dtype(cfg: dict[str, Any], tensors: dict[str, TensorEntry]) -> str:
    declared = cfg.get("torch_dtype") or cfg.get("dtype")
    if isinstance(declared, str) and declared in _FLOATS:
        return declared
    by_bytes: dict[str, int] = {}
    for t in tensors.values():
        if t.dtype_name in _FLOATS:
            by_bytes[t.dtype_name] = by_bytes.get(t.dtype_name, 0) + t.nbytes
    return max(by_bytes, key=lambda k: by_bytes[k]) if by_bytes else "bfloat16"
