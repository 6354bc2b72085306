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
    "ColdpipeError",
    "Infeasible",
    "InputError",
    "InvalidPlan",
    "SolverUnavailable",
]


class ColdpipeError(Exception):
    """Base class of every error coldpipe raises on purpose."""


class InputError(ColdpipeError):
    """A user-supplied value is wrong. ``field`` is its dotted path in the input."""

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
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
