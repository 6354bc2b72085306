"""Help screens in the usual conventions: ``Usage: coldpipe plan [OPTIONS] SCENARIO``, flags without ``<bool>``.

typer 0.29 writes a required argument as ``{scenario}`` and shows a type after every flag (``--json <bool>``);
:func:`install` makes the argument ``SCENARIO`` (its metavar, or its name in capitals) and drops the type of
on/off flags. Only the help text changes; parsing is typer's own.
"""

from __future__ import annotations

from typer import core as typer_core
from typer._click import Context

_installed = False


def _usage_name(self: typer_core.TyperArgument) -> str:
    name = (self.metavar or self.name or "ARG").upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


def _argument_type(self: typer_core.TyperArgument, ctx: Context) -> str | None:
    return None  # the metavar says what goes there (SCENARIO, TRACE); '<str>' beside it says nothing


def _option_type(self: typer_core.TyperOption, ctx: Context) -> str | None:
    if self.is_flag and self.metavar is None:
        return None  # --json, --local, --emulate/--no-emulate take no value
    return _ORIGINAL_OPTION_TYPE(self, ctx)


_ORIGINAL_OPTION_TYPE = typer_core.TyperOption.display_type_rich


def install() -> None:
    """Patch typer's help rendering once (idempotent)."""
    global _installed
    if _installed:
        return
    typer_core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
    typer_core.TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign]
    typer_core.TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
    _installed = True
