"""Files written whole or not at all: a temporary file beside the target, flushed, then renamed over it.

Every result, trace, report, sweep table and checkpoint file coldpipe writes goes through here, so a full
disk, a crash or Ctrl-C never leaves a half-written file under the final name (the old file, if any, stays
as it was). The temporary file is in the target's directory (a rename across file systems is not atomic)
and is removed when the write fails.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_text_atomic(d / "a.json", "{}")
>>> (d / "a.json").read_text(), sorted(p.name for p in d.iterdir())
('{}', ['a.json'])
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | Path, *, mkdir: bool = True) -> Iterator[Path]:
    """A temporary path to write instead of ``path``; renamed to ``path`` when the block ends without error.

    For writers that open the file themselves (``savefig``, ``save_file``): the temporary name keeps the
    suffix, so format detection by extension still works.
    """
    target = Path(path)
    if mkdir:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:80]}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(path: str | Path, data: bytes, *, mkdir: bool = True) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    with atomic_path(path, mkdir=mkdir) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str, *, mkdir: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    write_bytes_atomic(path, text.encode("utf-8"), mkdir=mkdir)
