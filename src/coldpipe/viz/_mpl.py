"""matplotlib plumbing shared by the charts: lazy import, no pyplot, reproducible files.

Figures are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so nothing
here changes a global backend or leaks figures; SVG keeps text as text and carries no date, so a
regenerated figure only differs from the committed one when the data does.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coldpipe.atomic import atomic_path
from coldpipe.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg")

_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: small, searchable files
    "svg.hashsalt": "coldpipe",  # stable element ids
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def check_paths(paths: str | Path | Sequence[str | Path], option: str) -> list[Path]:
    """The output paths as :class:`Path`; each must end in ``.png`` or ``.svg``."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out = []
    for p in items:
        path = Path(p)
        if path.suffix.lower() not in FORMATS:
            raise InputError(option, f"cannot tell the image format of {str(path)!r}", "end the name in .png or .svg")
        out.append(path)
    return out


def new_figure(width_in: float, height_in: float) -> Figure:
    """A pyplot-free figure (the Agg canvas is attached when it is saved)."""
    import matplotlib

    matplotlib.rcParams.update(_RC)
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def save(fig: Figure, paths: Sequence[Path], dpi: int = 100) -> list[Path]:
    """Write ``fig`` to every path (format from the suffix); parent folders are created."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = path.suffix.lower().lstrip(".")
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        with atomic_path(path) as tmp:  # whole or not at all
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
    return list(paths)


def to_bytes(fig: Figure, fmt: str, dpi: int = 100) -> bytes:
    """``fig`` rendered in memory as ``png`` or ``svg`` (for reports that embed their figures)."""
    buf = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()
