"""Model profiles from a Hugging Face checkpoint directory: ``config.json`` + safetensors headers.

Only the headers are read (8-byte little-endian header length, then that many bytes of JSON);
no tensor data, no torch. A tensor's size is the byte span its ``data_offsets`` give, so quantised
and mixed-dtype checkpoints are counted exactly. Tensors map to SPEC.md's blocks by name:

- ``model.embed_tokens.*``  -> block 0 (the embedding)
- ``model.layers.{i}.*``    -> block ``i + 1``
- ``model.norm.*``, ``lm_head.*`` -> the last block (final norm + LM head)

(the ``model.`` prefix is optional). With tied embeddings and no ``lm_head`` tensor in the files,
the embedding's bytes count in both the first and the last block: each stage holding one of them
must load it. FLOPs, activation and KV bytes come from the architecture (:mod:`coldpipe.core.architectures`).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from coldpipe.core.architectures import DTYPE_BYTES, Architecture, architecture_from_hf_config, blocks_for
from coldpipe.core.types import Block
from coldpipe.errors import InputError

__all__ = [
    "CheckpointProfile",
    "TensorInfo",
    "block_weight_bytes",
    "checkpoint_files",
    "profile_checkpoint",
    "read_safetensors_header",
]

_MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format caps headers at 100 MB
_EMBED = re.compile(r"^(?:model\.)?embed_tokens\.")
_LAYER = re.compile(r"^(?:model\.)?layers\.(\d+)\.")
_HEAD = re.compile(r"^(?:(?:model\.)?norm\.|lm_head\.)")
_LM_HEAD = re.compile(r"^lm_head\.")

# safetensors dtype names -> coldpipe's (for picking the activation dtype of a checkpoint)
_ST_TO_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry: its dtype, shape and exact size in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: str


def read_safetensors_header(path: str | Path, field: str = "model.checkpoint") -> dict[str, TensorInfo]:
    """The tensors of one ``.safetensors`` file, from its header only."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError(field, f"{str(p)!r} is too short to be a safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER_BYTES, size - 8):
                raise InputError(
                    field, f"{str(p)!r} declares a {n}-byte header in a {size}-byte file", "is it a safetensors file?"
                )
            raw = f.read(n)
    except OSError as exc:
        raise InputError(field, f"cannot read {str(p)!r}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(field, f"{str(p)!r} has no valid JSON header", "is it a safetensors file?") from None
    if not isinstance(header, dict):
        raise InputError(field, f"{str(p)!r} header is not a JSON object")
    data_bytes = size - 8 - n
    out: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(x) for x in entry["data_offsets"])
            shape = tuple(int(x) for x in entry["shape"])
            dtype = str(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise InputError(field, f"{str(p)!r}: tensor {name!r} has a malformed header entry") from None
        if not 0 <= start <= end <= data_bytes:
            raise InputError(
                field, f"{str(p)!r}: tensor {name!r} spans bytes {start}..{end} of a {data_bytes}-byte data section"
            )
        out[name] = TensorInfo(name, dtype, shape, end - start, p.name)
    return out


def checkpoint_files(directory: str | Path, field: str = "model.checkpoint") -> list[Path]:
    """The safetensors files of a checkpoint: those its index names, else every ``*.safetensors``."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(field, f"{str(d)!r} is not a directory", "give the checkpoint directory (with config.json)")
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise InputError(field, f"{str(index)!r} is not a valid safetensors index (no weight_map)") from None
        files = [d / n for n in names]
        missing = [str(f.name) for f in files if not f.is_file()]
        if missing:
            raise InputError(field, f"the index names missing files {missing}", "download every shard")
        return files
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise InputError(field, f"no *.safetensors files in {str(d)!r}", "convert the checkpoint to safetensors")
    return files


def block_weight_bytes(
    tensors: dict[str, TensorInfo], n_layers: int, tied: bool, field: str = "model.checkpoint"
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
                f"tensor {name!r} ({t.file}) belongs to no block",
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
    tensors: dict[str, TensorInfo]
    blocks: tuple[Block, ...]
    dtype: str

    @property
    def file_bytes(self) -> int:
        """Sum of every tensor's size in the files (each tensor once)."""
        return sum(t.nbytes for t in self.tensors.values())


def _config(directory: Path, field: str) -> dict[str, Any]:
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise InputError(field, f"no config.json in {str(directory)!r}", "a Hugging Face checkpoint directory has one")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(field, f"cannot read {str(cfg_path)!r}: {exc}") from None
    if not isinstance(cfg, dict):
        raise InputError(field, f"{str(cfg_path)!r} does not hold a JSON object")
    return cfg


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
    files = checkpoint_files(d, field)
    cfg = _config(d, field)
    arch = architecture_from_hf_config(cfg, where=f"{field}/config.json")
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        for name, t in read_safetensors_header(f, field).items():
            if name in tensors:
                raise InputError(field, f"tensor {name!r} is in both {tensors[name].file} and {f.name}")
            tensors[name] = t
    if dtype is None:
        dtype = _activation_dtype(cfg, tensors)
    if dtype not in DTYPE_BYTES:
        raise InputError("model.dtype", f"unknown dtype {dtype!r}", f"use one of {list(DTYPE_BYTES)}")
    sizes = block_weight_bytes(tensors, arch.num_hidden_layers, arch.tie_word_embeddings, field)
    shaped = blocks_for(arch, prompt_tokens=prompt_tokens, new_tokens=new_tokens, dtype=dtype, token_bytes=token_bytes)
    blocks = tuple(replace(b, weight_bytes=float(n)) for b, n in zip(shaped, sizes, strict=True))
    return CheckpointProfile(d.resolve().name, arch, tensors, blocks, dtype)


def _activation_dtype(cfg: dict[str, Any], tensors: dict[str, TensorInfo]) -> str:
    declared = cfg.get("torch_dtype") or cfg.get("dtype")
    if isinstance(declared, str) and declared in ("float32", "float16", "bfloat16"):
        return declared
    by_bytes: dict[str, int] = {}
    for t in tensors.values():
        if t.dtype in _ST_TO_DTYPE:
            by_bytes[_ST_TO_DTYPE[t.dtype]] = by_bytes.get(_ST_TO_DTYPE[t.dtype], 0) + t.nbytes
    return max(by_bytes, key=lambda k: by_bytes[k]) if by_bytes else "bfloat16"
