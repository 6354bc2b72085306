"""HF-format checkpoints: write random ones, map blocks to tensors, read a block's bytes for real.

A checkpoint is a directory with ``config.json`` and either ``model.safetensors`` or shards named in
``model.safetensors.index.json`` (the Hugging Face layout, so ``from_pretrained`` reads it too); which files
count, and every check of their headers, is :mod:`coldpipe.checkpoint_files`, the reader the profiler uses.

Blocks follow :mod:`coldpipe.core.architectures`: block 0 = ``model.embed_tokens``, block ``i`` in
``1..n_layers`` = ``model.layers.{i-1}``, block ``n_layers + 1`` = ``model.norm`` + ``lm_head`` (with tied
embeddings the head block reads ``model.embed_tokens.weight`` again, as docs/model.md#blocks counts it).

Reads do not go through safetensors' lazy mmap: :func:`read_tensor` ``pread``s the tensor's bytes into a fresh
buffer in chunks, so the bytes really come from storage inside the timed load and a read-rate cap can pace
every chunk. ``tests/test_checkpoint.py`` checks the result against ``safetensors.safe_open``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coldpipe.atomic import atomic_path, write_text_atomic
from coldpipe.checkpoint_files import TensorEntry, check_architecture_tensors, read_checkpoint_files
from coldpipe.core.architectures import CATALOG, SUPPORTED_MODEL_TYPES, Architecture, architecture_from_hf_config
from coldpipe.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "RUNTIME_DTYPES",
    "Checkpoint",
    "arch_for",
    "block_tensor_names",
    "make_checkpoint",
    "open_checkpoint",
    "read_tensor",
    "torch_dtype",
]

CHUNK_BYTES = 4 << 20  # one read (and one pacing step of the read-rate cap)

RUNTIME_DTYPES = ("F32", "F16", "BF16", "I64", "I32")  # safetensors dtypes the runtime loads


def arch_for(
    config: str,
    *,
    layers: int | None = None,
    hidden: int | None = None,
    vocab: int | None = None,
    intermediate: int | None = None,
    heads: int | None = None,
    kv_heads: int | None = None,
) -> Architecture:
    """A catalog architecture (or the one of a config.json path), optionally shrunk for tests.

    ``hidden`` keeps the head size when ``heads`` is not given (``heads = hidden // head_dim``).
    """
    if config in CATALOG:
        arch = CATALOG[config]
    else:
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise InputError(
                "--config",
                f"{config!r} is neither a catalog model nor a config.json",
                f"use one of {sorted(CATALOG)} or a path",
            )
        from coldpipe.structured_file import read_structured_file

        cfg = read_structured_file(path, "--config")
        if not isinstance(cfg, dict):
            raise InputError("--config", f"{str(path)!r} does not hold a JSON object", "give a config.json")
        arch = architecture_from_hf_config(cfg, "--config")
    fields = arch.to_dict()
    if layers is not None:
        fields["num_hidden_layers"] = layers
    if vocab is not None:
        fields["vocab_size"] = vocab
    if hidden is not None:
        n_h = heads or max(1, hidden // arch.head_dim)
        fields["hidden_size"] = hidden
        fields["num_attention_heads"] = n_h
        fields["head_dim"] = hidden // n_h
        fields["intermediate_size"] = intermediate or max(1, (arch.intermediate_size * hidden) // arch.hidden_size)
        ratio = max(1, arch.num_attention_heads // arch.num_key_value_heads)
        fields["num_key_value_heads"] = kv_heads or max(1, n_h // ratio)
    else:
        if heads is not None:
            fields["num_attention_heads"] = heads
            fields["head_dim"] = fields["hidden_size"] // heads
        if kv_heads is not None:
            fields["num_key_value_heads"] = kv_heads
        if intermediate is not None:
            fields["intermediate_size"] = intermediate
    if fields["num_attention_heads"] % fields["num_key_value_heads"]:
        raise InputError(
            "--kv-heads",
            f"{fields['num_key_value_heads']} does not divide the {fields['num_attention_heads']} attention heads",
            "pick a divisor",
        )
    fields["max_position_embeddings"] = min(fields["max_position_embeddings"], 8192)
    return Architecture(**fields)


def block_tensor_names(cfg: dict[str, Any], names: list[str] | set[str]) -> list[list[str]]:
    """For each block (in block order, docs/model.md#blocks), the checkpoint tensors it reads, in a fixed order."""
    n = int(cfg["num_hidden_layers"])
    blocks: list[list[str]] = [["model.embed_tokens.weight"]]
    for i in range(n):
        prefix = f"model.layers.{i}."
        blocks.append(sorted(k for k in names if k.startswith(prefix)))
    head = "lm_head.weight" if "lm_head.weight" in names else "model.embed_tokens.weight"
    blocks.append(["model.norm.weight", head])
    for b, tensors in enumerate(blocks):
        missing = [t for t in tensors if t not in names]
        if missing or not tensors:
            raise InputError(
                "--checkpoint",
                f"block {b} lacks tensors {missing or '(none found)'}",
                "is this a complete Llama/Qwen2/Mistral checkpoint?",
            )
    return blocks


def torch_dtype(name: str, field: str = "--dtype") -> torch.dtype:
    """The torch dtype called ``name`` (``float32``, ``bfloat16``, ...); an :class:`InputError` on ``field`` if none."""
    import torch

    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise InputError(field, f"unknown dtype {name!r}", "use float32, float16 or bfloat16")
    return dt


def make_checkpoint(
    arch: Architecture,
    out_dir: str | Path,
    *,
    dtype: str = "float32",
    seed: int = 0,
    shard_bytes: float = 2e9,
    init_std: float = 0.02,
) -> Path:
    """Write a random-initialised HF checkpoint of ``arch`` into ``out_dir``; return the directory.

    Weights are N(0, init_std) (norm weights 1 + N(0, init_std), so a stage that skips a norm is caught); tensors are
    written in block order and split into shards of at most ``shard_bytes`` (one file if it all fits).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch.model_type not in SUPPORTED_MODEL_TYPES:
        raise InputError(
            "--config", f"model_type {arch.model_type!r} is not supported", f"use one of {list(SUPPORTED_MODEL_TYPES)}"
        )
    tdtype = torch_dtype(dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = arch.to_hf_config(torch_dtype=dtype)
    write_text_atomic(out / "config.json", json.dumps(cfg, indent=2) + "\n")
    hf_cfg = AutoConfig.from_pretrained(out)
    with torch.device("meta"):
        shapes = {k: (tuple(v.shape)) for k, v in AutoModelForCausalLM.from_config(hf_cfg).state_dict().items()}
    if arch.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    order = [t for blk in block_tensor_names(cfg, set(shapes)) for t in blk]
    order = list(dict.fromkeys(order))  # tied embeddings: write once
    gen = torch.Generator().manual_seed(seed)

    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in order:
        shape = shapes[name]
        t = torch.randn(shape, generator=gen, dtype=torch.float32) * init_std
        if name.endswith("norm.weight"):
            t += 1.0
        t = t.to(tdtype)
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    files = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    total = 0
    for fname, shard in zip(files, shards, strict=True):
        with atomic_path(out / fname) as tmp:  # fsynced: written back, so posix_fadvise(DONTNEED) can evict it
            save_file(shard, str(tmp), metadata={"format": "pt"})
        for k, v in shard.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        write_text_atomic(out / "model.safetensors.index.json", json.dumps(index, indent=2) + "\n")
    return out


@dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint: its config, every tensor's location, and the tensors of each block."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorEntry]
    blocks: tuple[tuple[str, ...], ...]

    @property
    def files(self) -> list[Path]:
        return sorted({Path(e.file) for e in self.tensors.values()})

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def dtype(self) -> str:
        """The first tensor's dtype, as torch names it (``float32``, ``bfloat16``, ...)."""
        return next(iter(self.tensors.values())).dtype_name

    def split_layers(self) -> Checkpoint:
        """The checkpoint with each decoder layer's tensors as two blocks (docs/model.md#sublayer): its input
        norm and ``self_attn`` tensors, then the rest (post-attention norm and MLP)."""
        out: list[tuple[str, ...]] = [self.blocks[0]]
        for names in self.blocks[1:-1]:
            attn = tuple(n for n in names if ".self_attn." in n or ".input_layernorm." in n)
            out += [attn, tuple(n for n in names if n not in attn)]
        return replace(self, blocks=(*out, self.blocks[-1]))

    def block_bytes(self, block: int) -> int:
        return sum(self.tensors[t].nbytes for t in self.blocks[block])

    def architecture(self) -> Architecture:
        return architecture_from_hf_config(self.config, "--checkpoint")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Read ``config.json`` and the safetensors headers (a few KB; no weights) of a checkpoint directory.

    Everything a rank will read is checked here, before any rank starts (:mod:`coldpipe.checkpoint_files`):
    the headers against the files, and every tensor of the architecture present with its shape and nothing
    else, in dtypes the runtime loads.
    """
    ckpt = read_checkpoint_files(path, "--checkpoint")
    arch = architecture_from_hf_config(ckpt.config, "--checkpoint/config.json")
    check_architecture_tensors(ckpt, arch, "--checkpoint")
    for t in ckpt.tensors.values():
        if t.dtype not in RUNTIME_DTYPES:
            raise InputError(
                "--checkpoint",
                f"{t.file!r}: tensor {t.name!r} has dtype {t.dtype}, which the runtime does not load",
                f"the runtime loads {', '.join(RUNTIME_DTYPES)} tensors (float32, float16 or bfloat16 weights)",
            )

    blocks = block_tensor_names(ckpt.config, set(ckpt.tensors))
    return Checkpoint(Path(path), ckpt.config, ckpt.tensors, tuple(tuple(b) for b in blocks))


def read_tensor(entry: TensorEntry, fd: int, pace: Callable[[int], None] | None = None) -> torch.Tensor:
    """Read one tensor's bytes from ``fd`` into fresh memory (``pace(n)`` after each chunk of ``n`` bytes)."""
    import torch

    buf = torch.empty(entry.nbytes, dtype=torch.uint8)
    view = memoryview(buf.numpy())
    done = 0
    while done < entry.nbytes:
        n = os.preadv(fd, [view[done : done + CHUNK_BYTES]], entry.offset + done)
        if n <= 0:
            raise OSError(f"short read in {entry.file} at {entry.offset + done}")
        done += n
        if pace is not None:
            pace(n)
    return buf.view(torch_dtype(entry.dtype_name, "--checkpoint")).reshape(entry.shape)
