"""The metadata and tensors of a GGUF file (llama.cpp's model format), from its header only.

GGUF is what llama.cpp, ollama, prima.cpp and exo users hold. A file is: the magic ``GGUF``, a version
(2 or 3), the tensor and metadata counts, the metadata (key -> typed value: integers, floats, bools,
strings, arrays), one info record per tensor (name, dimensions, ggml type, offset into the data section),
padding to the alignment (``general.alignment``, default 32), then the data section. The format's
definitions come from the ``gguf`` package, llama.cpp's own Python library: the magic, the value types,
the ggml types and their block layouts (``gguf.GGML_QUANT_SIZES``: weights per block, bytes per block).

Only the header is read, and only the part of it that is needed: the file is memory-mapped and walked
with :mod:`struct`. Numeric arrays are skipped in one step; string arrays (the tokenizer's 128k tokens
and 280k merges of a Llama 3 file) are walked by their lengths, never decoded, so a header reads in about
a tenth of a second whatever the size of the weights. ``gguf.GGUFReader`` is not used for reading: it
builds a numpy view per array item, which takes seconds on a Llama 3 tokenizer (the tests compare the two
on every tensor).

A tensor's bytes are exact for every ggml type: ``elements / block_size * type_size``. Checked for every
file: the magic, the version, that the header lies inside the file, known value types and ggml types, at
most 4 dimensions, rows that are whole blocks, data offsets on the alignment, every tensor's bytes inside
the file, no repeated key or tensor name, no two tensors overlapping. A model split by ``gguf-split``
(``NAME-00001-of-00003.gguf``, with ``split.count`` in its metadata) is read from its first part: the
other parts are found beside it by name, and every one must be there.

Every failure is an :class:`~coldpipe.errors.InputError` on ``field`` naming the file (and the key or the
tensor) and what to do: one line, never a traceback.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coldpipe.errors import InputError

__all__ = ["GGUFArray", "GGUFFile", "GGUFTensor", "is_gguf_file", "read_gguf", "read_gguf_header"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # what llama.cpp reads; version 1 (2023) had 32-bit counts
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 8  # arrays of arrays: deeper is a corrupt file, not a model
KEEP_ARRAY_ITEMS = 1024  # numeric arrays up to this length keep their values (per-layer head counts, ...)

# struct format of each scalar GGUF value type, by its name in gguf.GGUFValueType
_SCALAR_FORMATS = {
    "UINT8": "B",
    "INT8": "b",
    "UINT16": "H",
    "INT16": "h",
    "UINT32": "I",
    "INT32": "i",
    "FLOAT32": "f",
    "BOOL": "?",
    "UINT64": "Q",
    "INT64": "q",
    "FLOAT64": "d",
}
_SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_CORRUPT = "the file is corrupt: download or convert it again"
_TRUNCATED = "the file is truncated: download it again"


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array: its item type and length; the values of short numeric arrays only."""

    item_type: str  # a gguf.GGUFValueType name, e.g. "STRING"
    length: int
    values: tuple[Any, ...] | None = None

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF header: its bytes are ``nbytes`` at absolute offset ``offset`` of ``file``."""

    name: str
    file: str
    ggml_type: str  # a gguf.GGMLQuantizationType name, e.g. "Q4_K"
    shape: tuple[int, ...]  # in ggml order: ne[0], the length of a row, first
    offset: int
    nbytes: int


@dataclass(frozen=True)
class GGUFFile:
    """A GGUF model read and checked: its files (several when split), metadata and every tensor."""

    path: Path
    files: tuple[Path, ...]
    version: int
    metadata: dict[str, Any]  # scalars as Python values, arrays as GGUFArray
    tensors: dict[str, GGUFTensor]


def _gguf(field: str) -> Any:
    """llama.cpp's ``gguf`` package, imported when a file is read (coldpipe runs without it otherwise)."""
    try:
        import gguf
    except ImportError:
        raise InputError(
            field, "reading GGUF files needs the gguf package", "pip install gguf; requirements.txt pins it"
        ) from None
    return gguf


def is_gguf_file(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts with the GGUF magic."""
    try:
        with Path(path).open("rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


class _Header:
    """A cursor over the header bytes of one mapped file; every read checks that it stays inside the file."""

    def __init__(self, buf: mmap.mmap, size: int, endian: str, path: str, field: str) -> None:
        self.buf, self.size, self.endian, self.path, self.field = buf, size, endian, path, field
        self.pos = 0
        self.u32 = struct.Struct(endian + "I")
        self.u64 = struct.Struct(endian + "Q")

    def fail(self, problem: str, fix: str = _CORRUPT) -> InputError:
        return InputError(self.field, f"{self.path!r}: {problem}", fix)

    def truncated(self, what: str) -> InputError:
        return self.fail(f"the header ends inside {what} ({self.size}-byte file)", _TRUNCATED)

    def need(self, n: int, what: str) -> int:
        start = self.pos
        if start + n > self.size:
            raise self.truncated(what)
        self.pos = start + n
        return start

    def uint32(self, what: str) -> int:
        return int(self.u32.unpack_from(self.buf, self.need(4, what))[0])

    def uint64(self, what: str) -> int:
        return int(self.u64.unpack_from(self.buf, self.need(8, what))[0])

    def raw_string(self, what: str) -> bytes:
        n = self.uint64(what)
        start = self.need(n, what)
        return self.buf[start : start + n]

    def string(self, what: str) -> str:
        raw = self.raw_string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8 ({raw[:40]!r})") from None

    def skip_strings(self, count: int, what: str) -> None:
        """Skip ``count`` strings without decoding them (each is an 8-byte length, then its bytes)."""
        unpack, buf, last, pos = self.u64.unpack_from, self.buf, self.size - 8, self.pos
        for _ in range(count):
            if pos > last:
                raise self.truncated(what)
            pos += 8 + unpack(buf, pos)[0]
        if pos > self.size:
            raise self.truncated(what)
        self.pos = pos

    def value(self, vtype: int, what: str, types: Any, depth: int = 0) -> Any:
        """One metadata value of type ``vtype`` (a ``gguf.GGUFValueType`` number)."""
        try:
            name = types(vtype).name
        except ValueError:
            raise self.fail(f"{what} has unknown value type {vtype}") from None
        if name in _SCALAR_FORMATS:
            fmt = struct.Struct(self.endian + _SCALAR_FORMATS[name])
            return fmt.unpack_from(self.buf, self.need(fmt.size, what))[0]
        if name == "STRING":
            return self.raw_string(what).decode("utf-8", errors="replace")
        if depth > MAX_NESTING:
            raise self.fail(f"{what} nests arrays more than {MAX_NESTING} deep")
        item, n = self.uint32(what), self.uint64(what)
        try:
            item_name = types(item).name
        except ValueError:
            raise self.fail(f"{what} is an array of unknown value type {item}") from None
        if item_name in _SCALAR_FORMATS:
            fmt = _SCALAR_FORMATS[item_name]
            start = self.need(n * struct.calcsize(fmt), what)
            kept = struct.unpack_from(f"{self.endian}{n}{fmt}", self.buf, start) if n <= KEEP_ARRAY_ITEMS else None
            return GGUFArray(item_name, n, kept)
        if item_name == "STRING":
            self.skip_strings(n, what)
        else:  # an array of arrays: walked, not kept
            for _ in range(n):
                self.value(item, what, types, depth + 1)
        return GGUFArray(item_name, n)


def read_gguf_header(path: str | Path, field: str = "model.gguf") -> tuple[int, dict[str, Any], dict[str, GGUFTensor]]:
    """The version, metadata and tensors of one ``.gguf`` file, from its header only, checked against its size."""
    gguf = _gguf(field)
    p = Path(path)
    try:
        with p.open("rb") as f:
            size = p.stat().st_size
            head = f.read(4)
            if head != MAGIC:
                raise InputError(
                    field,
                    f"{str(p)!r} is not a GGUF file (it starts with {head!r}, not {MAGIC!r})",
                    "give a .gguf file as llama.cpp's convert_hf_to_gguf.py writes it; a safetensors checkpoint "
                    "directory is model: {checkpoint: DIR}",
                )
            if size < 24:
                raise InputError(field, f"{str(p)!r} is too short to be a GGUF file ({size} bytes)", _TRUNCATED)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf, size, str(p), field, gguf)
    except OSError as exc:
        raise InputError(
            field, f"cannot read {str(p)!r}: {exc.strerror or exc}", "check the path and permissions"
        ) from None


def _parse(buf: mmap.mmap, size: int, path: str, field: str, gguf: Any) -> tuple[int, dict[str, Any], dict]:
    (version,) = struct.unpack_from("<I", buf, 4)
    endian = "<"
    if version & 0xFFFF == 0:  # written for the other byte order: gguf's own reader makes the same test
        endian, (version,) = ">", struct.unpack_from(">I", buf, 4)
    if version not in VERSIONS:
        raise InputError(
            field,
            f"{path!r} is GGUF version {version}; versions {' and '.join(map(str, VERSIONS))} are read",
            "convert the model again with a current llama.cpp",
        )
    h = _Header(buf, size, endian, path, field)
    h.pos = 8
    n_tensors = h.uint64("the tensor count")
    n_kv = h.uint64("the metadata count")
    types = gguf.GGUFValueType
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = h.string(f"metadata key {i} of {n_kv}")
        if key in metadata:
            raise h.fail(f"metadata key {key!r} appears twice")
        metadata[key] = h.value(h.uint32(f"metadata {key!r}"), f"metadata {key!r}", types)
    infos = []
    for i in range(n_tensors):
        name = h.string(f"the name of tensor {i} of {n_tensors}")
        what = f"the info of tensor {name!r}"
        n_dims = h.uint32(what)
        if n_dims > MAX_DIMS:
            raise h.fail(f"tensor {name!r} has {n_dims} dimensions (ggml has at most {MAX_DIMS})")
        shape = tuple(h.uint64(what) for _ in range(n_dims))
        infos.append((name, shape, h.uint32(what), h.uint64(what)))
    align = metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
        raise h.fail(f"general.alignment is {align!r}, not a power of two")
    data_start = -(-h.pos // align) * align
    return version, metadata, _tensors(infos, data_start, align, h, gguf)


def _tensors(
    infos: list[tuple[str, tuple[int, ...], int, int]], data_start: int, align: int, h: _Header, gguf: Any
) -> dict[str, GGUFTensor]:
    """Each tensor's exact bytes from its ggml type's block layout, checked to lie inside the file."""
    out: dict[str, GGUFTensor] = {}
    for name, shape, type_id, offset in infos:
        if name in out:
            raise h.fail(f"tensor {name!r} appears twice")
        try:
            qtype = gguf.GGMLQuantizationType(type_id)
        except ValueError:
            raise h.fail(
                f"tensor {name!r} has ggml type {type_id}, which the installed gguf package does not know",
                "requantize the model with a current llama-quantize (repacked types such as Q4_0_4_4 are gone), "
                "or upgrade gguf",
            ) from None
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if shape and shape[0] % block:
            raise h.fail(f"tensor {name!r} has rows of {shape[0]} elements, not whole {qtype.name} blocks of {block}")
        if offset % align:
            raise h.fail(f"tensor {name!r} starts at data offset {offset}, off the {align}-byte alignment")
        nbytes = math.prod(shape) // block * type_size
        start = data_start + offset
        if start + nbytes > h.size:
            raise h.fail(
                f"tensor {name!r} ({qtype.name}, {nbytes} bytes from byte {start}) ends past the end of the file "
                f"({h.size} bytes)",
                _TRUNCATED,
            )
        out[name] = GGUFTensor(name, h.path, qtype.name, shape, start, nbytes)
    reach, last = 0, ""
    for t in sorted((t for t in out.values() if t.nbytes), key=lambda t: t.offset):
        if t.offset < reach:
            raise h.fail(f"tensors {last!r} and {t.name!r} overlap (from byte {t.offset})")
        reach, last = t.offset + t.nbytes, t.name
    return out


def read_gguf(path: str | Path, field: str = "model.gguf") -> GGUFFile:
    """Read and check a GGUF model: one file, or every part of a ``gguf-split`` model from its first part."""
    p = Path(path)
    if p.is_dir():
        raise InputError(field, f"{str(p)!r} is a directory", "give the .gguf file itself")
    if not p.is_file():
        raise InputError(field, f"no such file {str(p)!r}", "check the path")
    version, metadata, tensors = read_gguf_header(p, field)
    count = metadata.get("split.count", 1)
    if not isinstance(count, int) or count <= 1:
        return GGUFFile(p, (p,), version, metadata, tensors)
    files = _split_parts(p, metadata, count, field)
    for no, part in enumerate(files[1:], start=1):
        _, meta, more = read_gguf_header(part, field)
        if meta.get("split.no") != no or meta.get("split.count") != count:
            raise InputError(
                field,
                f"{str(part)!r} says it is part {meta.get('split.no')} of {meta.get('split.count')}, not {no} of "
                f"{count}",
                "the parts come from different splits: download them again",
            )
        for name in more:
            if name in tensors:
                raise InputError(
                    field,
                    f"tensor {name!r} is in both {Path(tensors[name].file).name!r} and {part.name!r}",
                    "a part is stale or duplicated: download the parts again",
                )
        tensors.update(more)
    expected = metadata.get("split.tensors.count")
    if isinstance(expected, int) and expected != len(tensors):
        raise InputError(
            field,
            f"{str(p)!r}: split.tensors.count is {expected} but its {count} parts hold {len(tensors)} tensors",
            "the parts come from different splits: download them again",
        )
    return GGUFFile(p, tuple(files), version, metadata, tensors)


def _split_parts(first: Path, metadata: dict[str, Any], count: int, field: str) -> list[Path]:
    """The paths of the ``count`` parts of the split model whose first part is ``first``, all present."""
    m = _SPLIT_NAME.match(first.name)
    no = metadata.get("split.no", 0)
    if m is None or int(m["count"]) != count:
        raise InputError(
            field,
            f"{str(first)!r} is part {no + 1 if isinstance(no, int) else no} of a {count}-part split model, but its "
            "name does not say so",
            f"keep gguf-split's names: NAME-00001-of-{count:05d}.gguf and the other parts beside it",
        )
    if no != 0:
        raise InputError(
            field,
            f"{str(first)!r} is part {no + 1} of a {count}-part split model",
            f"give its first part, {m['stem']}-00001-of-{count:05d}.gguf",
        )
    parts = [first.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [q.name for q in parts if not q.is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(
            field,
            f"parts of the split model {first.name!r} are missing from {str(first.parent)!r}: {missing[:5]}{more}",
            "download every part",
        )
    return parts
