"""The ``coldpipe`` command line (typer + rich). ``python -m coldpipe`` is the same program.

Every command module registers itself on :data:`app` in :func:`_register`; errors that coldpipe
raises on purpose are printed on one line and exit with code 2 (never a traceback).
"""

from __future__ import annotations

import sys

import typer

# typer >= 0.2x vendors click; its usage errors are caught to keep errors on one line.
from typer._click import exceptions as click_exceptions

from coldpipe.errors import ColdpipeError, error_line, os_error_line

app = typer.Typer(
    name="coldpipe",
    help="Plan, simulate and compare cold-start pipeline placements of an LLM across edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from coldpipe.cli import (
        compare_cmd,
        model_info_cmd,
        plan_cmd,
        profile_cmd,
        report_cmd,
        run_cmd,
        scenario_cmd,
        show_cmd,
        sweep_cmd,
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
    ):
        module.register(app)


_register()


class _Signalled(BaseException):
    """SIGTERM or SIGINT arrived: unwinds every ``finally`` (ranks stopped, temporary files removed)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> None:
    raise _Signalled(signum)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning coldpipe's own errors into one line and exit code 2.

    SIGTERM and SIGINT end the command by unwinding it (a local run stops its ranks and removes its
    temporary files on the way out), then one line and exit code 143 or 130.
    """
    import signal
    import threading

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        _main(argv)
    except _Signalled as exc:
        name = signal.Signals(exc.signum).name
        print(
            f"coldpipe: {'terminated' if exc.signum == signal.SIGTERM else 'interrupted'} by {name}: stopped, "
            "child processes ended and temporary files removed",
            file=sys.stderr,
        )
        sys.exit(128 + exc.signum)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> None:
    try:
        code = app(args=argv, prog_name="coldpipe", standalone_mode=False)
        if code == 130:  # typer turns a KeyboardInterrupt into exit code 130 without a word: say it below
            raise KeyboardInterrupt
        sys.exit(code if isinstance(code, int) else 0)
    except click_exceptions.NoArgsIsHelpError as exc:  # bare `coldpipe` or `coldpipe sweep`: show help
        if exc.ctx is not None:
            print(exc.ctx.get_help())
        sys.exit(0)
    except click_exceptions.UsageError as exc:  # a missing argument, an unknown option, a wrongly typed value
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        print(f"coldpipe: error: {error_line(Exception(exc.format_message()))}{hint}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("coldpipe: aborted", file=sys.stderr)
        sys.exit(130)
    except ColdpipeError as exc:
        print(f"coldpipe: error: {error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the file system refused: a name too long, a full disk, no permission
        print(f"coldpipe: error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("coldpipe: interrupted", file=sys.stderr)
        sys.exit(130)
