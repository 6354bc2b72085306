"""The ``coldpipe`` command line (typer + rich). ``python -m coldpipe`` is the same program.

Every command module registers itself on :data:`app` in :func:`_register`; errors that coldpipe
raises on purpose are printed on one line and exit with code 2 (never a traceback).
"""

from __future__ import annotations

import sys

import typer

# typer >= 0.2x vendors click; its usage errors are caught to keep errors on one line.
from typer._click import exceptions as click_exceptions

from coldpipe.errors import ColdpipeError

app = typer.Typer(
    name="coldpipe",
    help="Plan, simulate and compare cold-start pipeline placements of an LLM across edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from coldpipe.cli import (
        agent_cmd,
        cluster_cmd,
        compare_cmd,
        model_info_cmd,
        plan_cmd,
        profile_cmd,
        report_cmd,
        run_cmd,
        scenario_cmd,
        show_cmd,
        sweep_cmd,
        testbed_cmd,
    )

    for module in (
        plan_cmd,
        compare_cmd,
        sweep_cmd,
        report_cmd,
        show_cmd,
        profile_cmd,
        model_info_cmd,
        scenario_cmd,
        run_cmd,
        agent_cmd,
        cluster_cmd,
        testbed_cmd,
    ):
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning coldpipe's own errors into one line and exit code 2."""
    try:
        code = app(args=argv, prog_name="coldpipe", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click_exceptions.NoArgsIsHelpError as exc:  # bare `coldpipe` or `coldpipe sweep`: show help
        if exc.ctx is not None:
            print(exc.ctx.get_help())
        sys.exit(0)
    except click_exceptions.UsageError as exc:  # a missing argument, an unknown option, a wrongly typed value
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        print(f"coldpipe: error: {exc.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("coldpipe: aborted", file=sys.stderr)
        sys.exit(130)
    except ColdpipeError as exc:
        print(f"coldpipe: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("coldpipe: interrupted", file=sys.stderr)
        sys.exit(130)
