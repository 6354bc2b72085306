"""Quantities with units, as scenario files write them.

A plain number is in SI base units of the field's kind (bytes, bytes/s, bit/s, FLOP/s, seconds).
A string carries its own unit, and the unit must fit the field's kind:

>>> parse_quantity("2 GB/s", "byte_rate")
2000000000.0
>>> parse_quantity("600 Mbit/s", "bit_rate")
600000000.0
>>> parse_quantity("1 GB/s", "bit_rate")    # a byte rate is converted for a bit/s field
8000000000.0
>>> parse_quantity("24 GiB", "bytes")
25769803776.0
>>> parse_quantity("300 ms", "seconds")
0.3
>>> parse_quantity("20 TFLOPS", "flop_rate")
20000000000000.0
>>> parse_quantity("3 GB", "seconds")
Traceback (most recent call last):
...
ValueError: unit 'GB' is a size in bytes, not a duration; write e.g. '300 ms' or '0.3'

Sizes are read whatever the case, and a bare prefix is decimal bytes (``8gb``, ``8 GB``, ``8G``: 8e9 bytes).
Rates must say bytes or bits: ``MB/s`` (bytes) or ``Mbit/s`` / ``Mbps`` (bits); ``MBps`` is refused:

>>> parse_quantity("8gb", "bytes"), parse_quantity("8G", "bytes"), parse_quantity("2 gib", "bytes")
(8000000000.0, 8000000000.0, 2147483648.0)
>>> parse_quantity("600 MBps", "bit_rate")
Traceback (most recent call last):
...
ValueError: unit 'MBps' means megabytes/s (8x Mbit/s); write '600 MB/s' for bytes or '600 Mbit/s' for bits
"""

from __future__ import annotations

import math
import re
from typing import Literal

__all__ = ["Kind", "format_bytes", "format_rate", "format_seconds", "parse_quantity"]

Kind = Literal["bytes", "byte_rate", "bit_rate", "flop_rate", "seconds", "hertz", "count"]

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}

# unit -> (kind, factor to the base unit of that kind)
_UNITS: dict[str, tuple[str, float]] = {}
for _p, _f in _DECIMAL.items():
    _UNITS[f"{_p}B"] = ("bytes", _f)
    _UNITS[f"{_p}B/s"] = ("byte_rate", _f)
    _UNITS[f"{_p}bit/s"] = ("bit_rate", _f)
    _UNITS[f"{_p}bps"] = ("bit_rate", _f)
    _UNITS[f"{_p}b/s"] = ("bit_rate", _f)
    _UNITS[f"{_p}FLOPS"] = ("flop_rate", _f)
    _UNITS[f"{_p}FLOP/s"] = ("flop_rate", _f)
    _UNITS[f"{_p}flops"] = ("flop_rate", _f)
    _UNITS[f"{_p}Hz"] = ("hertz", _f)
for _p, _f in _BINARY.items():
    _UNITS[f"{_p}B"] = ("bytes", _f)
    _UNITS[f"{_p}B/s"] = ("byte_rate", _f)
    _UNITS[f"{_p}bit/s"] = ("bit_rate", _f)
_UNITS.update(
    {
        "s": ("seconds", 1.0),
        "sec": ("seconds", 1.0),
        "ms": ("seconds", 1e-3),
        "us": ("seconds", 1e-6),
        "µs": ("seconds", 1e-6),
        "ns": ("seconds", 1e-9),
        "min": ("seconds", 60.0),
        "bytes": ("bytes", 1.0),
        "": ("count", 1.0),
    }
)

_KIND_WORDS = {
    "bytes": ("a size in bytes", "'24 GiB' or '8e9'"),
    "byte_rate": ("a byte rate", "'2 GB/s' or '2e9'"),
    "bit_rate": ("a bit rate", "'600 Mbit/s' or '6e8'"),
    "flop_rate": ("a compute rate", "'20 TFLOPS' or '2e13'"),
    "seconds": ("a duration", "'300 ms' or '0.3'"),
    "hertz": ("a frequency", "'20 MHz' or '2e7'"),
    "count": ("a plain number", "'512'"),
}

# sizes, whatever their case: "gb", "Gb", "GB" and a bare "G" are all gigabytes (decimal); "gib" is 2**30
_SIZES_ANY_CASE: dict[str, float] = {"b": 1.0, "byte": 1.0, "bytes": 1.0}
for _p, _f in _DECIMAL.items():
    if _p:
        _SIZES_ANY_CASE[f"{_p.lower()}b"] = _f
        _SIZES_ANY_CASE[_p.lower()] = _f
for _p, _f in _BINARY.items():
    _SIZES_ANY_CASE[f"{_p.lower()}b"] = _f
    _SIZES_ANY_CASE[_p.lower()] = _f

_PREFIX_WORDS = {"": "", "k": "kilo", "K": "kilo", "M": "mega", "G": "giga", "T": "tera", "P": "peta"}
_BYTES_PER_SECOND_AMBIGUOUS = re.compile(r"^([kKMGTP]?)Bps$")

_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def parse_quantity(value: object, kind: Kind) -> float:
    """Return ``value`` in the base unit of ``kind``; raise ``ValueError`` with the fix otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected {_KIND_WORDS[kind][0]}, got a boolean; write e.g. {_KIND_WORDS[kind][1]}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _NUMBER.match(value)
        if match is None:
            raise ValueError(f"cannot read {value!r} as {_KIND_WORDS[kind][0]}; write e.g. {_KIND_WORDS[kind][1]}")
        number_text, unit = match.groups()
        ambiguous = _BYTES_PER_SECOND_AMBIGUOUS.match(unit)
        if ambiguous is not None:
            p = ambiguous.group(1)
            raise ValueError(
                f"unit {unit!r} means {_PREFIX_WORDS[p]}bytes/s (8x {p}bit/s); "
                f"write '{number_text} {p}B/s' for bytes or '{number_text} {p}bit/s' for bits"
            )
        if unit not in _UNITS and kind == "bytes" and unit.lower() in _SIZES_ANY_CASE:
            return _finite(float(number_text) * _SIZES_ANY_CASE[unit.lower()], value)
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in {value!r}; write e.g. {_KIND_WORDS[kind][1]}")
        unit_kind, factor = _UNITS[unit]
        if unit_kind != kind:
            if unit_kind == "count":  # a bare number in a string: base units
                factor = 1.0
            elif kind == "bit_rate" and unit_kind == "byte_rate":
                factor *= 8.0
            elif kind == "byte_rate" and unit_kind == "bit_rate":
                factor /= 8.0
            else:
                raise ValueError(
                    f"unit {unit!r} is {_KIND_WORDS[unit_kind][0]}, not {_KIND_WORDS[kind][0]}; "
                    f"write e.g. {_KIND_WORDS[kind][1]}"
                )
        number = float(number_text) * factor
    else:
        raise ValueError(
            f"expected {_KIND_WORDS[kind][0]}, got {type(value).__name__}; write e.g. {_KIND_WORDS[kind][1]}"
        )
    return _finite(number, value)


def _finite(number: float, value: object) -> float:
    if not math.isfinite(number):
        raise ValueError(f"must be finite, got {value!r}")
    return number


def _scaled(value: float, steps: list[tuple[float, str]], fmt: str = "{:.3g}") -> str:
    for factor, unit in steps:
        if abs(value) >= factor:
            return f"{fmt.format(value / factor)} {unit}"
    factor, unit = steps[-1]
    return f"{fmt.format(value / factor)} {unit}"


def format_bytes(n_bytes: float) -> str:
    """Human-readable decimal size.

    >>> format_bytes(16.06e9)
    '16.1 GB'
    """
    return _scaled(n_bytes, [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B")])


def format_seconds(seconds: float) -> str:
    """Human-readable duration.

    >>> format_seconds(0.0123)
    '12.3 ms'
    >>> format_seconds(4.5)
    '4.5 s'
    """
    if seconds == 0:
        return "0 s"
    return _scaled(seconds, [(1.0, "s"), (1e-3, "ms"), (1e-6, "µs")])


def format_rate(bits_per_s: float) -> str:
    """Human-readable bit rate.

    >>> format_rate(6e8)
    '600 Mbit/s'
    """
    return _scaled(bits_per_s, [(1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s"), (1.0, "bit/s")])
