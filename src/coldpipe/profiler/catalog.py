"""The device catalog: ``src/coldpipe/data/devices.yaml`` (docs/devices.md).

Every figure is ``{value, source}``; a scenario device ``{catalog: NAME, name: ...}`` starts from
:func:`catalog_device_fields` and overrides what it gives. Sustained compute is
``flops = peak_flops * efficiency``.

>>> cat = load_catalog()
>>> len(cat) >= 10
True
>>> f = catalog_device_fields("jetson-orin-nx")
>>> f["flops"] == cat["jetson-orin-nx"].peak_flops * cat["jetson-orin-nx"].efficiency
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from coldpipe.errors import InputError
from coldpipe.units import Kind, parse_quantity

__all__ = ["CatalogEntry", "Figure", "catalog_device_fields", "load_catalog", "parse_catalog"]

# field -> unit kind; every one must be present in every entry, each with a source
FIGURES: dict[str, Kind] = {
    "peak_flops": "flop_rate",
    "efficiency": "count",
    "load_bandwidth": "byte_rate",
    "startup": "seconds",
    "memory": "bytes",
    "mem_bandwidth": "byte_rate",
}


@dataclass(frozen=True)
class Figure:
    value: float
    source: str


@dataclass(frozen=True)
class CatalogEntry:
    """One catalog device: figures in SI base units, each with where it comes from."""

    key: str
    description: str
    figures: dict[str, Figure]

    @property
    def peak_flops(self) -> float:
        return self.figures["peak_flops"].value

    @property
    def efficiency(self) -> float:
        return self.figures["efficiency"].value

    def value(self, name: str) -> float:
        return self.figures[name].value


def _entry(key: str, raw: Any, where: str) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise InputError(f"{where}.{key}", "must be a mapping of figures")
    unknown = sorted(set(raw) - set(FIGURES) - {"description"})
    if unknown:
        raise InputError(f"{where}.{key}.{unknown[0]}", "is not a known catalog field", f"use {sorted(FIGURES)}")
    figures: dict[str, Figure] = {}
    for name, kind in FIGURES.items():
        path = f"{where}.{key}.{name}"
        fig = raw.get(name)
        if not isinstance(fig, dict) or set(fig) != {"value", "source"}:
            raise InputError(path, "must be {value: ..., source: ...}", "every figure needs its source")
        source = fig["source"]
        if not isinstance(source, str) or not source.strip():
            raise InputError(f"{path}.source", "is empty", "name the spec sheet or benchmark, or say 'estimate', why")
        try:
            value = parse_quantity(fig["value"], kind)
        except ValueError as exc:
            raise InputError(f"{path}.value", str(exc)) from None
        if not value > 0:
            raise InputError(f"{path}.value", f"must be > 0, got {fig['value']!r}")
        figures[name] = Figure(value, " ".join(source.split()))
    if figures["efficiency"].value > 1:
        raise InputError(f"{where}.{key}.efficiency.value", "must be <= 1 (a share of the peak)")
    return CatalogEntry(key, str(raw.get("description", "")), figures)


def parse_catalog(doc: Any, where: str = "devices.yaml") -> dict[str, CatalogEntry]:
    """Validate a parsed catalog document ``{devices: {NAME: {figure: {value, source}}}}``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), dict) or not doc["devices"]:
        raise InputError(where, "expected a mapping 'devices: {NAME: {...}}'")
    return {str(k): _entry(str(k), v, f"{where}:devices") for k, v in doc["devices"].items()}


@cache
def load_catalog() -> dict[str, CatalogEntry]:
    """The bundled catalog (read once)."""
    text = resources.files("coldpipe").joinpath("data/devices.yaml").read_text(encoding="utf-8")
    return parse_catalog(yaml.safe_load(text))


def catalog_device_fields(key: str, efficiency: float | None = None) -> dict[str, float]:
    """Device fields (docs/model.md#devices, SI units) of catalog entry ``key``; ``efficiency`` overrides its own."""
    cat = load_catalog()
    if key not in cat:
        raise InputError("catalog", f"unknown catalog device {key!r}", f"known: {', '.join(sorted(cat))}")
    e = cat[key]
    eff = e.efficiency if efficiency is None else efficiency
    return {
        "flops": e.peak_flops * eff,
        "load_bandwidth": e.value("load_bandwidth"),
        "startup": e.value("startup"),
        "memory": e.value("memory"),
        "mem_bandwidth": e.value("mem_bandwidth"),
    }


def catalog_markdown() -> str:
    """The catalog as markdown tables (docs/devices.md is this output): figures, then their sources."""
    from coldpipe.units import format_bytes, format_seconds

    cat = load_catalog()
    rows = [
        "| device | peak FLOP/s | efficiency | sustained FLOP/s | load | startup | memory | DRAM |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, e in cat.items():
        rows.append(
            f"| `{k}` | {e.peak_flops / 1e12:.3g} T | {e.efficiency:.2f} | {e.peak_flops * e.efficiency / 1e12:.3g} T "
            f"| {format_bytes(e.value('load_bandwidth'))}/s | {format_seconds(e.value('startup'))} "
            f"| {format_bytes(e.value('memory'))} | {format_bytes(e.value('mem_bandwidth'))}/s |"
        )
    out = ["\n".join(rows)]
    for k, e in cat.items():
        lines = [f"### `{k}`", "", e.description, ""]
        lines += [f"- **{name}**: {fig.source}" for name, fig in e.figures.items()]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"
