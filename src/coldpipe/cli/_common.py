"""What every command shares: loading scenarios, printing, and the one-line-error contract."""

from __future__ import annotations

import json
import math
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from coldpipe.core.types import OVERLAPS, Overlap, Scenario
from coldpipe.errors import InputError
from coldpipe.scenario_file import load_scenario, read_structured_file, scenario_from_dict

# Tables are wide: when writing to a pipe or file (not a terminal) do not wrap them at 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

DEMO_SCENARIO = "demo"
"""Pass ``demo`` wherever a scenario path goes to use the bundled scenario."""


def demo_scenario_text() -> str:
    return resources.files("coldpipe").joinpath("data/demo.yaml").read_text(encoding="utf-8")


def scenario_arg(path: str) -> Scenario:
    """A scenario from a file path, or the bundled one for ``demo``."""
    if path == DEMO_SCENARIO and not Path(path).exists():
        import yaml

        return scenario_from_dict(yaml.safe_load(demo_scenario_text()))
    return load_scenario(path)


def overlap_arg(value: str) -> Overlap:
    if value not in OVERLAPS:
        raise InputError("--overlap", f"unknown mode {value!r}", f"use one of {', '.join(OVERLAPS)}")
    return value  # type: ignore[return-value]


def json_safe(value: Any) -> Any:
    """Replace inf/nan by None so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def read_json_arg(path: str, what: str) -> Any:
    return read_structured_file(path, what)
