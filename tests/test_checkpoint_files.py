"""The one safetensors reader: which files make a checkpoint, every check of a header and an index, and the
profiler and the runtime agreeing on what a checkpoint is."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from coldpipe.checkpoint_files import (
    INDEX_FILE,
    SINGLE_FILE,
    checkpoint_files,
    read_checkpoint_files,
    read_safetensors_header,
)
from coldpipe.errors import InputError
from coldpipe.profiler.checkpoint import profile_checkpoint
from coldpipe.runtime.checkpoint import open_checkpoint
from test_checkpoint_profile import tiny_tensors, write_checkpoint


def _raw(header: object, data_bytes: int = 0) -> bytes:
    """A safetensors file with this header (a JSON value, or bytes as they are) and ``data_bytes`` zeros."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"\0" * data_bytes


def _f32(n: int, start: int) -> dict[str, object]:
    return {"dtype": "F32", "shape": [n], "data_offsets": [start, start + 4 * n]}


def _single(raw: bytes) -> Callable[[Path], None]:
    """A valid one-file checkpoint whose model.safetensors is then replaced by ``raw``."""

    def make(d: Path) -> None:
        write_checkpoint(d)
        (d / SINGLE_FILE).write_bytes(raw)

    return make


def _sharded(edit: Callable[[Path, dict[str, str]], None]) -> Callable[[Path], None]:
    """A valid 2-shard checkpoint; ``edit(directory, weight_map)`` breaks it, and the index is rewritten."""

    def make(d: Path) -> None:
        write_checkpoint(d, shards=2)
        wm = json.loads((d / INDEX_FILE).read_text())["weight_map"]
        edit(d, wm)
        (d / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": wm}))

    return make


SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def _missing_shard(d: Path, wm: dict[str, str]) -> None:
    (d / SHARD2).unlink()


def _escaping_shard(d: Path, wm: dict[str, str]) -> None:
    wm["lm_head.weight"] = "../elsewhere.safetensors"


def _listed_not_held(d: Path, wm: dict[str, str]) -> None:
    wm["model.layers.0.extra.weight"] = SHARD1


def _held_not_listed(d: Path, wm: dict[str, str]) -> None:
    del wm["model.norm.weight"]


def _wrong_shard(d: Path, wm: dict[str, str]) -> None:
    wm["model.norm.weight"] = SHARD1 if wm["model.norm.weight"] == SHARD2 else SHARD2


def _in_two_shards(d: Path, wm: dict[str, str]) -> None:
    t = tiny_tensors()
    for shard in (SHARD1, SHARD2):
        part = {n: t[n] for n, s in wm.items() if s == shard}
        save_file({**part, "model.norm.weight": t["model.norm.weight"]}, str(d / shard))


def _index_text(text: str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        write_checkpoint(d, shards=2)
        (d / INDEX_FILE).write_text(text)

    return make


def _other_names(d: Path) -> None:
    write_checkpoint(d)
    (d / SINGLE_FILE).rename(d / "consolidated.safetensors")


def _not_a_directory(d: Path) -> None:
    d.write_text("a file")


# (id, how to make the bad directory, what the one-line message must name)
BAD = [
    ("short", _single(b"\x01\x02"), [SINGLE_FILE, "too short"]),
    ("header-over-cap", _single(struct.pack("<Q", 10**12) + b"{}"), [SINGLE_FILE, "header"]),
    ("header-past-the-end", _single(struct.pack("<Q", 100) + b"{}"), [SINGLE_FILE, "100-byte header"]),
    ("not-json", _single(struct.pack("<Q", 4) + b"abcd"), [SINGLE_FILE, "JSON"]),
    ("not-utf8", _single(struct.pack("<Q", 2) + b"\xff\xfe"), [SINGLE_FILE, "JSON"]),
    ("not-an-object", _single(_raw([1, 2])), [SINGLE_FILE, "not a JSON object"]),
    (
        "repeated-name",
        _single(_raw(b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "t": {}}', 4)),
        [SINGLE_FILE, "'t' twice"],
    ),
    (
        "no-dtype",
        _single(_raw({"t": {"shape": [4], "data_offsets": [0, 16]}}, 16)),
        [SINGLE_FILE, "'t'", "malformed"],
    ),
    (
        "negative-shape",
        _single(_raw({"t": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, 16)),
        [SINGLE_FILE, "'t'", "malformed"],
    ),
    (
        "one-offset",
        _single(_raw({"t": {"dtype": "F32", "shape": [4], "data_offsets": [16]}}, 16)),
        [SINGLE_FILE, "'t'", "malformed"],
    ),
    (
        "unknown-dtype",
        _single(_raw({"t": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, 16)),
        [SINGLE_FILE, "'t'", "unknown dtype 'F128'"],
    ),
    (
        "shape-vs-bytes",
        _single(_raw({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, 16)),
        [SINGLE_FILE, "'t'", "needs 12 bytes", "span 16"],
    ),
    (
        "sub-byte",
        _single(_raw({"t": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, 2)),
        [SINGLE_FILE, "'t'", "needs 1.5 bytes"],
    ),
    ("past-the-data", _single(_raw({"t": _f32(4, 0)}, 8)), [SINGLE_FILE, "'t'", "spans bytes 0..16 of a 8-byte"]),
    (
        "overlap",
        _single(_raw({"a": _f32(4, 0), "b": _f32(4, 8), "c": _f32(1, 24)}, 28)),
        [SINGLE_FILE, "'a'", "'b'", "overlap"],
    ),
    ("index-not-json", _index_text("{weight_map"), [INDEX_FILE, "not valid JSON"]),
    ("index-no-weight-map", _index_text('{"metadata": {}}'), [INDEX_FILE, "no weight_map"]),
    ("shard-missing", _sharded(_missing_shard), [INDEX_FILE, SHARD2, "missing"]),
    ("shard-outside", _sharded(_escaping_shard), [INDEX_FILE, "../elsewhere.safetensors"]),
    ("listed-not-held", _sharded(_listed_not_held), [INDEX_FILE, SHARD1, "'model.layers.0.extra.weight'"]),
    ("held-not-listed", _sharded(_held_not_listed), [INDEX_FILE, "'model.norm.weight'", "does not list"]),
    ("wrong-shard", _sharded(_wrong_shard), [INDEX_FILE, "'model.norm.weight'", "holds it"]),
    ("in-two-shards", _sharded(_in_two_shards), [SHARD1, SHARD2, "'model.norm.weight'"]),
    ("not-a-directory", _not_a_directory, ["ckpt", "not a directory"]),
    ("no-safetensors", lambda d: d.mkdir(), ["ckpt", "no *.safetensors files"]),
    ("other-names", _other_names, ["ckpt", "consolidated.safetensors", SINGLE_FILE, INDEX_FILE]),
]


@pytest.mark.parametrize(("make", "names"), [pytest.param(m, n, id=i) for i, m, n in BAD])
def test_every_failure_is_one_line_naming_the_file_and_the_fix(
    tmp_path: Path, make: Callable[[Path], None], names: list[str]
) -> None:
    d = tmp_path / "ckpt"
    make(d)
    with pytest.raises(InputError) as info:
        read_checkpoint_files(d)
    err = info.value
    text = str(err)
    assert text.startswith("model.checkpoint: ") and "\n" not in text and "Traceback" not in text
    for name in names:
        assert name in text, (name, text)
    assert err.fix and text.endswith(f"({err.fix})")  # says what to do
    # the profiler and the runtime stop on the very same check, each on its own field
    with pytest.raises(InputError) as prof:
        profile_checkpoint(d, prompt_tokens=8)
    with pytest.raises(InputError) as run:
        open_checkpoint(d)
    assert (prof.value.field, run.value.field) == ("model.checkpoint", "--checkpoint")
    assert prof.value.problem == run.value.problem == err.problem and prof.value.fix == run.value.fix == err.fix


def test_a_header_entry_has_its_absolute_offset(tmp_path: Path) -> None:
    save_file({"a": np.arange(3, dtype=np.float32), "b": np.zeros((2, 2), np.int8)}, str(tmp_path / "x.safetensors"))
    raw = (tmp_path / "x.safetensors").read_bytes()
    info = read_safetensors_header(tmp_path / "x.safetensors")
    a = info["a"]
    assert (a.dtype, a.dtype_name, a.shape, a.nbytes) == ("F32", "float32", (3,), 12)
    assert np.frombuffer(raw[a.offset : a.offset + a.nbytes], np.float32).tolist() == [0.0, 1.0, 2.0]
    assert (info["b"].dtype_name, info["b"].nbytes) == ("int8", 4)


def _layout(d: Path, layout: str) -> list[str] | None:
    """Write a checkpoint in ``layout``; the files that make it (None: it is no checkpoint)."""
    shards = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    if layout == "sharded":
        write_checkpoint(d, shards=3)
        return shards
    if layout == "single":
        write_checkpoint(d)
        return [SINGLE_FILE]
    if layout == "single-beside-a-stale-index":  # model.safetensors wins, as in transformers: the index is not read
        write_checkpoint(d, shards=3)
        save_file(tiny_tensors(), str(d / SINGLE_FILE))
        (d / shards[1]).unlink()
        return [SINGLE_FILE]
    if layout == "renamed-file":
        _other_names(d)
        return None
    if layout == "shards-without-index":
        write_checkpoint(d, shards=3)
        (d / INDEX_FILE).unlink()
        return None
    raise AssertionError(layout)


LAYOUTS = ["sharded", "single", "single-beside-a-stale-index", "renamed-file", "shards-without-index"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_profiler_and_runtime_accept_the_same_directories(tmp_path: Path, layout: str) -> None:
    """A sharded index, one model.safetensors, or other names: both sides read the same files, or both refuse."""
    d = tmp_path / "ckpt"
    files = _layout(d, layout)
    if files is None:
        with pytest.raises(InputError) as prof:
            profile_checkpoint(d, prompt_tokens=8)
        with pytest.raises(InputError) as run:
            open_checkpoint(d)
        assert prof.value.problem == run.value.problem and "transformers does not load" in run.value.problem
        return
    assert [f.name for f in checkpoint_files(d)] == files
    prof = profile_checkpoint(d, prompt_tokens=8)
    ck = open_checkpoint(d)
    assert prof.tensors == ck.tensors  # the same entries: file, dtype, shape, offset and size of every tensor
    assert sorted(Path(f).name for f in ck.files) == files
    assert [b.weight_bytes for b in prof.blocks] == [ck.block_bytes(b) for b in range(ck.n_blocks)]
    assert sum(b.weight_bytes for b in prof.blocks) == sum(a.nbytes for a in tiny_tensors().values())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_rule_is_the_one_of_transformers(tmp_path: Path, layout: str) -> None:
    """``from_pretrained`` loads exactly the directories coldpipe accepts (and refuses the others)."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = tmp_path / "ckpt"
    files = _layout(d, layout)
    if files is None:
        with pytest.raises(OSError, match=SINGLE_FILE):
            transformers.AutoModelForCausalLM.from_pretrained(d)
        return
    model = transformers.AutoModelForCausalLM.from_pretrained(d)
    assert set(model.state_dict()) >= set(read_checkpoint_files(d).tensors)
