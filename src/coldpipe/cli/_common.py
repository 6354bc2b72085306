"""What every command shares: loading scenarios, printing, and the one-line-error contract."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario, parse_mechanisms
from coldpipe.errors import InputError
from coldpipe.planning.protocol import Objective
from coldpipe.scenario_file import load_scenario, read_structured_file, scenario_from_dict

PIPE_WIDTH = 160
"""Columns of the tables when writing to a pipe or a file and ``COLUMNS`` is not set."""

NARROW_WIDTH = 120
"""Below this many columns, tables switch to their compact layout (device names are never cut)."""

console = Console(highlight=False, width=PIPE_WIDTH)
err_console = Console(highlight=False, stderr=True)
"""Progress and notes for people: stderr, so that ``--json`` stdout stays one JSON object."""


def terminal_width() -> int:
    """``COLUMNS`` when set, else the terminal's width, else :data:`PIPE_WIDTH` (a pipe or a file)."""
    cols = os.environ.get("COLUMNS", "")
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    if sys.stdout.isatty():
        return os.get_terminal_size(sys.stdout.fileno()).columns
    return PIPE_WIDTH


def configure_console() -> None:
    """Size the tables for this run (called by ``main``: the terminal may have changed since import)."""
    console.width = terminal_width()


def is_narrow() -> bool:
    return console.width < NARROW_WIDTH


def new_table(title: str) -> Table:
    """A table in the house style; at narrow widths without vertical rules (two columns more for the data)."""
    if is_narrow():
        return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    return Table(title=title, title_justify="left")


# The options and arguments every command spells the same way.
ScenarioArg = Annotated[
    str, typer.Argument(metavar="SCENARIO", help="Scenario file (YAML/JSON), or 'demo' for the bundled one.")
]
JsonFlag = Annotated[bool, typer.Option("--json", "-j", help="Print one JSON object instead of tables.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the headline figures, no tables.")]
ObjectiveOption = Annotated[
    str,
    typer.Option("--objective", help="ttft | e2e (TTFT + (new_tokens-1) x TPOT) | tpot (time per output token)."),
]

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


def objective_arg(value: str) -> Objective:
    from coldpipe.planning import OBJECTIVES

    if value not in OBJECTIVES:
        raise InputError("--objective", f"unknown objective {value!r}", f"use one of {', '.join(OBJECTIVES)}")
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


def note(message: str) -> None:
    """``coldpipe: note: ...`` on stderr, on one line (never wrapped), so that ``--json`` stdout stays clean."""
    err_console.print(f"coldpipe: note: {message}", markup=False, soft_wrap=True, highlight=False)


@contextmanager
def phase(description: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while a long phase runs (nothing when stderr is no terminal)."""
    if not err_console.is_terminal:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console, transient=True
    ) as progress:
        progress.add_task(description, total=None)
        yield


def check_plan_target(plan: Plan, scenario: Scenario, flag: str, path: str) -> None:
    """Refuse a plan file made for another model or device set, naming the file; note an old file's lack of one."""
    if plan.target is None:
        plan.validate(scenario)  # an invalid plan is one error line, without the note before it
        note(
            f"{path} does not record its model and devices (an older plan file); "
            "only its devices and block ranges are checked"
        )
        return
    why = plan.target.mismatch(scenario)
    if why is not None:
        raise InputError(
            f"{flag} {path}",
            f"the plan was made for {why}",
            "plan this scenario again: coldpipe plan SCENARIO --json > PLAN.json",
        )


def read_plan_file(path: str, flag: str, scenario: Scenario) -> tuple[Plan, dict[str, Any]]:
    """A plan file (``plan --json``'s output, or ``{"stages": [...]}``) checked against ``scenario``."""
    data = read_json_arg(path, flag)
    if not isinstance(data, dict):
        raise InputError(flag, f"{path!r} holds no plan object", "give the JSON that 'coldpipe plan --json' prints")
    plan = Plan.from_dict(data)
    check_plan_target(plan, scenario, flag, path)
    return plan, data


def with_mechanisms(scenario: Scenario, text: str) -> Scenario:
    """``scenario`` with ``--mechanisms TEXT`` on; ``all`` means every mechanism its model supports
    (sparse-embedding and sharded-head need the vocabulary rows of the first and last block, sublayer decoder
    blocks that know their attention part, streamed-weights a device whose weights are not local:
    docs/model.md#mechanisms); a mechanism named explicitly that the
    model cannot support is the scenario's one-line error."""
    names = parse_mechanisms(text)
    if text.strip() == "all" and scenario.blocks:
        first, last = scenario.blocks[0], scenario.blocks[-1]
        unsupported = {
            "sparse-embedding": first.vocab_rows is None,
            "sharded-head": last.vocab_rows is None,
            "sublayer": all(b.attn_weight_bytes is None for b in scenario.blocks),
            "streamed-weights": all(d.weights == "local" for d in scenario.devices),  # nothing to stream
        }
        names -= {m for m, missing in unsupported.items() if missing}
    return scenario.replace(mechanisms=names)
