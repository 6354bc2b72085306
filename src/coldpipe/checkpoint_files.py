"""The files of a Hugging Face checkpoint directory, and the tensors their safetensors headers declare.

One reader for every part of coldpipe that opens a checkpoint: the profiler (``coldpipe model-info``, a
scenario's ``model: {checkpoint: DIR}``) and the runtime (``coldpipe run``, ``profile-host``, the workers).
It reads ``config.json``, the index and the headers, never tensor data, and needs only the standard library
(no torch, no numpy).

Which files make a checkpoint is what ``transformers``' ``from_pretrained`` loads from a local directory
(``use_safetensors`` left at its default), so that coldpipe plans and runs exactly the bytes the reference
model reads:

1. ``model.safetensors`` when it is there (an index beside it is ignored, as transformers ignores it);
2. else ``model.safetensors.index.json``: the shards its ``weight_map`` names, every one present;
3. else nothing: other ``*.safetensors`` names (``consolidated.safetensors``, one renamed shard, ...) are not
   loaded by transformers, and here they are an error that names them and says how to fix the directory.

A safetensors file is an 8-byte little-endian header length ``N``, ``N`` bytes of UTF-8 JSON (tensor name ->
``{dtype, shape, data_offsets}``, plus an optional ``__metadata__``), then the data section that the
``data_offsets`` index. Checked for every file: the header fits in the file (and in the format's 100 MB
cap), it is a well-formed JSON object without repeated names, every entry has a known dtype, a shape of
non-negative integers and two offsets, ``elements x dtype size`` equals the entry's byte range, every range
lies inside the data section and no two overlap. Checked for an index: it is JSON with a ``weight_map`` of
tensor name -> shard file inside the directory, every shard is present, the index and the headers name the
same tensors in the same shards, and no tensor is in two shards. ``__metadata__``, when there, is an object of
strings. ``config.json`` and the index are read by :mod:`coldpipe.structured_file` (strict, bounded).
:func:`check_architecture_tensors` then checks that every tensor the architecture needs is there with the shape
``transformers`` gives it (both the runtime and the profiler call it, before any rank starts).

Every failure is an :class:`~coldpipe.errors.InputError` on ``field`` naming the file (and the tensor) and
what to do: one line, never a traceback.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from coldpipe.core.architectures import Architecture
from coldpipe.core.limits import MAX_FILE_BYTES, cut
from coldpipe.errors import InputError
from coldpipe.structured_file import parse_json_text, read_text_limited

__all__ = [
    "DTYPE_BITS",
    "DTYPE_NAMES",
    "INDEX_FILE",
    "SINGLE_FILE",
    "CheckpointFiles",
    "TensorEntry",
    "architecture_tensors",
    "check_architecture_tensors",
    "checkpoint_files",
    "read_checkpoint_files",
    "read_config",
    "read_safetensors_header",
]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format caps headers at 100 MB

# bits per element of every dtype the safetensors format defines
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

# safetensors dtype -> its name in torch (``getattr(torch, name)``) and in coldpipe's models; the sub-byte
# floats, which torch has no element type for, get a descriptive name of the same style
DTYPE_NAMES: dict[str, str] = {
    "BOOL": "bool",
    "F4": "float4_e2m1",
    "F6_E2M3": "float6_e2m3",
    "F6_E3M2": "float6_e3m2",
    "U8": "uint8",
    "I8": "int8",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "C64": "complex64",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
}

_CORRUPT = "the file is truncated or corrupt: download or convert it again"


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: its bytes are ``nbytes`` at absolute offset ``offset`` of ``file``."""

    name: str
    file: str  # the file's path (the checkpoint directory joined with the file name)
    dtype: str  # the safetensors dtype, e.g. "BF16" (see DTYPE_BITS)
    shape: tuple[int, ...]
    offset: int  # from the start of the file: 8 + header length + the entry's first data offset
    nbytes: int

    @property
    def dtype_name(self) -> str:
        """The dtype as torch and coldpipe's models name it, e.g. ``bfloat16``."""
        return DTYPE_NAMES[self.dtype]


@dataclass(frozen=True)
class CheckpointFiles:
    """A checkpoint directory read and checked: its config, the files that make it, and every tensor in them."""

    directory: Path
    config: dict[str, Any]
    files: tuple[Path, ...]
    tensors: dict[str, TensorEntry]


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def read_safetensors_header(path: str | Path, field: str = "model.checkpoint") -> dict[str, TensorEntry]:
    """The tensors of one ``.safetensors`` file, from its header only, checked against the file's size."""
    p = Path(path)
    where = cut(repr(str(p)), 200)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError(field, f"{where} is too short to be a safetensors file ({size} bytes)", _CORRUPT)
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise InputError(
                    field,
                    f"{where} declares a {n}-byte header in a {size}-byte file",
                    f"is it a safetensors file? if so, {_CORRUPT}",
                )
            raw = f.read(n)
    except OSError as exc:
        raise InputError(
            field, f"cannot read {where}: {exc.strerror or exc}", "check the path and permissions"
        ) from None
    try:
        header = parse_json_text(raw.decode("utf-8"), where, field)
    except UnicodeDecodeError:
        raise InputError(
            field, f"{where} has no valid JSON header (not UTF-8)", f"is it a safetensors file? if so, {_CORRUPT}"
        ) from None
    except InputError as exc:
        raise InputError(
            field,
            f"{where} has no valid JSON header: {exc.problem.removeprefix(where).lstrip(': ')}",
            f"is it a safetensors file? if so, {_CORRUPT}",
        ) from None
    if not isinstance(header, dict):
        raise InputError(field, f"{where}: the header is not a JSON object", _CORRUPT)
    base, data_bytes = 8 + n, size - 8 - n
    out: dict[str, TensorEntry] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise InputError(
                    field, f"{where}: __metadata__ is not an object of strings (the format's rule)", _CORRUPT
                )
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(dtype, str)
            or not isinstance(shape, list)
            or not all(_is_count(x) for x in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(x) for x in offsets)
        ):
            raise InputError(
                field,
                f"{where}: tensor {name!r} has a malformed header entry {json.dumps(entry)[:120]}",
                "each tensor needs dtype, shape (non-negative integers) and data_offsets [start, end]; " + _CORRUPT,
            )
        if dtype not in DTYPE_BITS:
            raise InputError(
                field,
                f"{where}: tensor {name!r} has unknown dtype {dtype!r}",
                f"safetensors defines {', '.join(DTYPE_BITS)}: convert the tensor to one of them",
            )
        start, end = offsets
        if not start <= end <= data_bytes:
            raise InputError(
                field,
                f"{where}: tensor {name!r} spans bytes {start}..{end} of a {data_bytes}-byte data section",
                _CORRUPT,
            )
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - start:
            raise InputError(
                field,
                f"{where}: tensor {name!r} of shape {list(shape)} x {dtype} needs {bits / 8:g} bytes but its "
                f"data_offsets span {end - start}",
                _CORRUPT,
            )
        out[name] = TensorEntry(name, str(p), dtype, tuple(shape), base + start, end - start)
        spans.append((start, end, name))
    reach, last = 0, ""  # the furthest end so far, and whose
    for start, end, name in sorted(s for s in spans if s[0] < s[1]):  # an empty tensor overlaps nothing
        if start < reach:
            raise InputError(
                field, f"{where}: tensors {last!r} and {name!r} overlap (bytes {start}..{min(reach, end)})", _CORRUPT
            )
        reach, last = end, name
    return out


def _is_file(p: Path) -> bool:
    """``p.is_file()``, False for names the OS refuses (too long, a NUL byte) instead of raising."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False


def _weight_map(directory: Path, field: str) -> dict[str, str]:
    """The index's tensor -> shard map, checked: JSON, an object of strings, shards inside ``directory``."""
    index = directory / INDEX_FILE
    where = repr(str(index))
    fix = "download the index and its shards again"
    data = parse_json_text(read_text_limited(index, field, MAX_FILE_BYTES), where, field)
    wm = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) for v in wm.values()):
        raise InputError(field, f"{where} has no weight_map of tensor names to shard files", fix)
    for shard in sorted(set(wm.values())):
        parts = PurePosixPath(shard).parts
        if not parts or PurePosixPath(shard).is_absolute() or ".." in parts:
            raise InputError(
                field, f"{where} names shard {cut(repr(shard), 100)}, which is not a file of {str(directory)!r}", fix
            )
    missing = sorted(s for s in set(wm.values()) if not _is_file(directory / s))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(
            field,
            f"{where} names shards missing from {str(directory)!r}: {cut(repr(missing[:5]), 300)}{more}",
            "download every shard",
        )
    return wm


def _layout(d: Path, field: str) -> tuple[list[Path], dict[str, str] | None]:
    """The files that make the checkpoint in ``d`` by the module's rule, and the index's map when it is used."""
    try:
        is_dir = d.is_dir()
    except (OSError, ValueError):
        is_dir = False
    if not is_dir:
        raise InputError(
            field, f"{cut(repr(str(d)), 200)} is not a directory", "give the checkpoint directory (with config.json)"
        )
    if _is_file(d / SINGLE_FILE):
        return [d / SINGLE_FILE], None
    if _is_file(d / INDEX_FILE):
        wm = _weight_map(d, field)
        return [d / s for s in sorted(set(wm.values()))], wm
    others = sorted(f.name for f in d.glob("*.safetensors"))
    if not others:
        raise InputError(
            field,
            f"{str(d)!r} has no {SINGLE_FILE} or {INDEX_FILE} (no *.safetensors files at all)",
            "give a Hugging Face checkpoint directory with safetensors weights (save_pretrained writes them)",
        )
    more = f" and {len(others) - 5} more" if len(others) > 5 else ""
    raise InputError(
        field,
        f"{str(d)!r} has no {SINGLE_FILE} or {INDEX_FILE}, only {others[:5]}{more}, which transformers does not load",
        f"rename a single file to {SINGLE_FILE}, or write a {INDEX_FILE} whose weight_map names the shards",
    )


def checkpoint_files(directory: str | Path, field: str = "model.checkpoint") -> list[Path]:
    """The safetensors files that make the checkpoint in ``directory`` (the module's rule), every one present."""
    return _layout(Path(directory), field)[0]


def read_config(directory: str | Path, field: str = "model.checkpoint") -> dict[str, Any]:
    """``config.json`` of a checkpoint directory, as a JSON object."""
    cfg_path = Path(directory) / "config.json"
    if not _is_file(cfg_path):
        raise InputError(
            field,
            f"no config.json in {str(directory)!r}",
            "a Hugging Face checkpoint directory has one; `coldpipe make-checkpoint` writes a random checkpoint",
        )
    cfg = parse_json_text(read_text_limited(cfg_path, field), cut(repr(str(cfg_path)), 200), field)
    if not isinstance(cfg, dict):
        raise InputError(field, f"{str(cfg_path)!r} does not hold a JSON object", "fix or download it again")
    return cfg


def read_checkpoint_files(directory: str | Path, field: str = "model.checkpoint") -> CheckpointFiles:
    """Read and check a checkpoint directory: which files, ``config.json``, and every tensor's header entry."""
    d = Path(directory)
    files, weight_map = _layout(d, field)
    cfg = read_config(d, field)
    tensors: dict[str, TensorEntry] = {}
    for f in files:
        for name, t in read_safetensors_header(f, field).items():
            if name in tensors:
                raise InputError(
                    field,
                    f"tensor {name!r} is in both {Path(tensors[name].file).name!r} and {f.name!r} of {str(d)!r}",
                    "a shard is stale or duplicated: download the checkpoint again",
                )
            tensors[name] = t
    if weight_map is not None:
        _check_index(d, weight_map, tensors, field)
    return CheckpointFiles(d, cfg, tuple(files), tensors)


def _check_index(directory: Path, weight_map: dict[str, str], tensors: dict[str, TensorEntry], field: str) -> None:
    """The index and the shards' headers name the same tensors in the same shards."""
    where = repr(str(directory / INDEX_FILE))
    fix = "the index and the shards come from different downloads: download them again"
    shard_of = {str(directory / s): s for s in set(weight_map.values())}  # a tensor's file -> its name in the index
    for name, shard in weight_map.items():
        if name not in tensors:
            raise InputError(field, f"{where} puts tensor {name!r} in {shard!r}, whose header does not have it", fix)
        held = shard_of[tensors[name].file]
        if held != shard:
            raise InputError(field, f"{where} puts tensor {name!r} in {shard!r}, but {held!r} holds it", fix)
    for name, t in tensors.items():
        if name not in weight_map:
            raise InputError(field, f"{shard_of[t.file]!r} holds tensor {name!r}, which {where} does not list", fix)


def architecture_tensors(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every tensor ``transformers`` builds for ``arch`` (Llama/Qwen2/Mistral), name -> shape, in block order.

    With tied embeddings ``lm_head.weight`` is left out (the head reads the embedding; a file may still hold it).
    ``tests/test_checkpoint.py`` checks this against ``AutoModelForCausalLM.from_config(...).state_dict()``.
    """
    h, inter, d = arch.hidden_size, arch.intermediate_size, arch.head_dim
    q, kv = arch.num_attention_heads * d, arch.num_key_value_heads * d
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (arch.vocab_size, h)}
    for i in range(arch.num_hidden_layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (h,)
        out[p + "self_attn.q_proj.weight"] = (q, h)
        out[p + "self_attn.k_proj.weight"] = (kv, h)
        out[p + "self_attn.v_proj.weight"] = (kv, h)
        out[p + "self_attn.o_proj.weight"] = (h, q)
        if arch.attention_bias:
            out[p + "self_attn.q_proj.bias"] = (q,)
            out[p + "self_attn.k_proj.bias"] = (kv,)
            out[p + "self_attn.v_proj.bias"] = (kv,)
            if arch.model_type == "llama":  # Llama's attention_bias also gives o_proj a bias; Qwen2's does not
                out[p + "self_attn.o_proj.bias"] = (h,)
        out[p + "post_attention_layernorm.weight"] = (h,)
        out[p + "mlp.gate_proj.weight"] = (inter, h)
        out[p + "mlp.up_proj.weight"] = (inter, h)
        out[p + "mlp.down_proj.weight"] = (h, inter)
    out["model.norm.weight"] = (h,)
    if not arch.tie_word_embeddings:
        out["lm_head.weight"] = (arch.vocab_size, h)
    return out


def check_architecture_tensors(
    ckpt: CheckpointFiles, arch: Architecture, field: str = "model.checkpoint", allow_extra: bool = False
) -> None:
    """Every tensor ``arch`` needs is in the files with its shape; without ``allow_extra``, no other tensor is.

    A tied ``lm_head.weight`` may be in the files (with the embedding's shape). Each failure names the file,
    the tensor and the fix.
    """
    want = architecture_tensors(arch)
    where = repr(str(ckpt.directory))
    for name, shape in want.items():
        t = ckpt.tensors.get(name)
        if t is None:
            raise InputError(
                field,
                f"{where} has no tensor {name!r}, which a {arch.model_type} of config.json's shape needs "
                f"({len(want)} tensors)",
                "a shard is missing or config.json belongs to another model: download the checkpoint again",
            )
        if t.shape != shape:
            raise InputError(
                field,
                f"{cut(repr(t.file), 200)}: tensor {name!r} has shape {list(t.shape)}, "
                f"config.json implies {list(shape)}",
                "config.json and the weights come from different models: download the checkpoint again",
            )
    if arch.tie_word_embeddings and "lm_head.weight" in ckpt.tensors:
        t = ckpt.tensors["lm_head.weight"]
        if t.shape != want["model.embed_tokens.weight"]:
            raise InputError(
                field,
                f"{cut(repr(t.file), 200)}: tensor 'lm_head.weight' has shape {list(t.shape)}, config.json implies "
                f"{list(want['model.embed_tokens.weight'])}",
                "config.json and the weights come from different models: download the checkpoint again",
            )
        want = {**want, "lm_head.weight": t.shape}
    if not allow_extra:
        extra = [n for n in ckpt.tensors if n not in want]
        if extra:
            t = ckpt.tensors[extra[0]]
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise InputError(
                field,
                f"{cut(repr(t.file), 200)}: tensor {cut(repr(extra[0]), 120)}{more} is not part of a "
                f"{arch.model_type} of config.json's shape",
                "the runtime loads exactly the model's tensors: remove it, or fix config.json",
            )
