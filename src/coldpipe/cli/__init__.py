"""The ``coldpipe`` command line (typer + rich). ``python -m coldpipe`` is the same program.

Every command module registers itself on :data:`app` in :func:`_register`; errors that coldpipe
raises on purpose are printed on one line and exit with code 2 (never a traceback).
"""

from __future__ import annotations

import sys

import typer

from coldpipe.errors import ColdpipeError

app = typer.Typer(
    name="coldpipe",
    help="Plan, simulate and compare cold-start pipeline placements of an LLM across edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from coldpipe.cli import compare_cmd, plan_cmd, report_cmd, show_cmd, sweep_cmd
    from coldpipe.cli import run_cmd

    for module in (plan_cmd, compare_cmd, sweep_cmd, report_cmd, show_cmd, run_cmd):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning coldpipe's own errors into one line and exit code 2."""
    try:
        app(args=argv, prog_name="coldpipe")
    except ColdpipeError as exc:
        print(f"coldpipe: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("coldpipe: interrupted", file=sys.stderr)
        sys.exit(130)
