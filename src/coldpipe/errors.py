"""coldpipe's exception tree, in one place.

Callers catch exactly what they can handle::

    ColdpipeError
    ├── InputError          bad scenario / plan / flag: names the field and the fix (CLI exit 2)
    ├── Infeasible          no valid plan exists: says by how many bytes it is short (CLI exit 2)
    ├── InvalidPlan         a given plan is not valid (docs/model.md#a-plan: contiguity, memory, device)
    └── SolverUnavailable   an optional solver (SCIP, numba) cannot be imported

Messages carry the quantities involved, never just "invalid".
"""

from __future__ import annotations

__all__ = [
    "MAX_LINE_CHARS",
    "ColdpipeError",
    "Infeasible",
    "InputError",
    "InvalidPlan",
    "SolverUnavailable",
    "error_line",
    "os_error_line",
]

MAX_LINE_CHARS = 2000  # an error line is never longer (quoted input is cut first, see core/limits.py)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else f"{flat[:limit]}... ({len(flat) - limit} more characters cut)"


def error_line(exc: BaseException) -> str:
    """``exc``'s message on one line of at most :data:`MAX_LINE_CHARS` characters (saying how much was cut).

    >>> error_line(ValueError("a\\nb"))
    'a b'
    """
    return _one_line(str(exc), MAX_LINE_CHARS)


class ColdpipeError(Exception):
    """Base class of every error coldpipe raises on purpose."""


class InputError(ColdpipeError):
    """A user-supplied value is wrong. ``field`` is its dotted path in the input."""

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = _one_line(field, 200)
        self.problem = _one_line(problem, MAX_LINE_CHARS // 2)
        self.fix = _one_line(fix, MAX_LINE_CHARS // 4)
        field, problem, fix = self.field, self.problem, self.fix
        message = f"{field}: {problem}" if field else problem
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class Infeasible(ColdpipeError):
    """No plan satisfies the memory limits.

    ``shortfall_bytes`` is how many more bytes of device memory would be needed at least.
    """

    def __init__(self, message: str, shortfall_bytes: float) -> None:
        self.shortfall_bytes = float(shortfall_bytes)
        super().__init__(message)


class InvalidPlan(ColdpipeError):
    """A plan is not valid (docs/model.md#a-plan): non-contiguous, device reused or unknown, memory exceeded."""


class SolverUnavailable(ColdpipeError):
    """An optional solver backend is not installed."""


def os_error_line(exc: OSError) -> str:
    """An :class:`OSError` as one short line: the file (cut) and the system's reason, with what to do.

    >>> os_error_line(OSError(28, "No space left on device", "out/trace.json"))
    "'out/trace.json': No space left on device (check the path, the permissions and the free space)"
    """
    name = exc.filename if exc.filename is not None else ""
    where = _one_line(repr(str(name)), 160) + ": " if name != "" else ""
    return _one_line(
        f"{where}{exc.strerror or exc} (check the path, the permissions and the free space)", MAX_LINE_CHARS
    )
