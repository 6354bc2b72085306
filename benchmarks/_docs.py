"""Where benchmark scripts write their tables: between two marker lines of a markdown file."""

from __future__ import annotations

import re
from pathlib import Path


def write_between(doc: Path, begin: str, end: str, table: str) -> bool:
    """Replace what lies between ``begin`` and ``end`` in ``doc`` by ``table`` (markers kept).

    Returns False, and changes nothing, when the file or a marker is missing.
    """
    if not doc.exists():
        return False
    text = doc.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return False
    body = table.removeprefix(begin).removesuffix(end).strip("\n")
    pattern = re.escape(begin) + ".*?" + re.escape(end)
    doc.write_text(re.sub(pattern, lambda _: f"{begin}\n{body}\n{end}", text, flags=re.S), encoding="utf-8")
    return True
