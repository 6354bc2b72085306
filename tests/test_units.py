from __future__ import annotations

import pytest

from coldpipe.units import parse_quantity


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (2e9, "byte_rate", 2e9),
        ("2 GB/s", "byte_rate", 2e9),
        ("800 Mbit/s", "byte_rate", 1e8),
        ("600 Mbit/s", "bit_rate", 6e8),
        ("600Mbps", "bit_rate", 6e8),
        ("1 GB/s", "bit_rate", 8e9),
        ("24 GiB", "bytes", 24 * 2**30),
        ("16 GB", "bytes", 16e9),
        ("300 ms", "seconds", 0.3),
        ("2 s", "seconds", 2.0),
        ("20 TFLOPS", "flop_rate", 2e13),
        ("1.5e3 GFLOP/s", "flop_rate", 1.5e12),
        ("20 MHz", "hertz", 2e7),
        ("5e9", "bytes", 5e9),
    ],
)
def test_parse_quantity(value: object, kind: str, expected: float) -> None:
    assert parse_quantity(value, kind) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "kind", "match"),
    [
        ("3 GB", "seconds", "is a size in bytes, not a duration"),
        ("2 parsecs", "bytes", "unknown unit 'parsecs'"),
        ("fast", "flop_rate", "cannot read 'fast'"),
        (True, "bytes", "boolean"),
        ([1], "bytes", "got list"),
        (float("inf"), "bytes", "finite"),
    ],
)
def test_bad_quantities_say_how_to_fix(value: object, kind: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_quantity(value, kind)  # type: ignore[arg-type]
