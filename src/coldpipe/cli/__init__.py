"""The ``coldpipe`` command line (typer + rich). ``python -m coldpipe`` is the same program.

Every command module registers itself on :data:`app` in :func:`_register`; errors that coldpipe
raises on purpose are printed on one line and exit with code 2 (never a traceback); Ctrl-C prints
one line and exits with code 130.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

# typer >= 0.2x vendors click; its usage errors are caught to keep errors on one line.
from typer._click import exceptions as click_exceptions

import coldpipe
from coldpipe.cli import _help
from coldpipe.cli._common import configure_console
from coldpipe.errors import ColdpipeError, error_line, os_error_line

app = typer.Typer(
    name="coldpipe",
    help="Plan, simulate and compare cold-start pipeline placements of an LLM across edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"coldpipe {coldpipe.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Plan, simulate and compare cold-start pipeline placements of an LLM across edge devices."""


def _register() -> None:
    from coldpipe.cli import (
        catalog_cmd,
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
        catalog_cmd,
        scenario_cmd,
        run_cmd,
    ):
        module.register(app)


_register()
_help.install()


class _Signalled(BaseException):
    """SIGTERM or SIGINT arrived: unwinds every ``finally`` (ranks stopped, temporary files removed)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second signal during the clean-up changes nothing
    raise _Signalled(signum)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning coldpipe's own errors into one line and exit code 2.

    SIGTERM and SIGINT end the command by unwinding it (a local run stops its ranks and removes its
    temporary files on the way out), then one line and exit code 143 or 130. Handlers are installed
    only where the caller (a test, a host program) has not installed its own.
    """
    import threading

    configure_console()
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
            if signal.getsignal(sig) is default:
                previous[sig] = signal.signal(sig, _on_signal)
    try:
        _main(argv)
    except _Signalled as exc:
        if exc.signum == signal.SIGINT:
            print("coldpipe: interrupted", file=sys.stderr)
        else:
            print(
                f"coldpipe: terminated by {signal.Signals(exc.signum).name}: stopped, "
                "child processes ended and temporary files removed",
                file=sys.stderr,
            )
        sys.exit(128 + exc.signum)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


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
    except (typer.Abort, KeyboardInterrupt):
        print("coldpipe: interrupted", file=sys.stderr)
        sys.exit(130)
    except ColdpipeError as exc:
        print(f"coldpipe: error: {error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # the file system refused: a name too long, a full disk, no permission
        print(f"coldpipe: error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(2)
