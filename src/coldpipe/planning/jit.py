"""The one jit helper: the kernels compiled by numba (cached on disk), or run interpreted.

:func:`jit` makes a kernel, :func:`inline` a helper of the kernels' inner loops; with
``COLDPIPE_NO_NUMBA`` set the identical code runs interpreted, every helper too (the differential tests
compare both). numba's disk cache is keyed on each kernel's own file: a kernel whose inlined helpers
changed in another file keeps its stale cache until that cache is deleted.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any

__all__ = ["Kernel", "inline", "jit", "numba_enabled"]


def inline(fn: Callable[..., Any]) -> Any:
    """A helper of the kernels' inner loops, inlined into them in numba's IR.

    A call that passes arrays in costs a reference-count update per array, which in a loop over every
    state costs more than the state's work; inlined, it costs nothing. Returns a numba dispatcher (its
    ``py_func`` is ``fn``); :class:`Kernel` runs the kernels interpreted with ``fn`` itself.
    """
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        return fn
    return numba.njit(inline="always")(fn)


def _interpreted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every inlined helper it names (and they name) replaced by its plain Python function."""
    names = fn.__code__.co_names
    swapped = {n: _interpreted(fn.__globals__[n].py_func) for n in names if hasattr(fn.__globals__.get(n), "py_func")}
    if not swapped:
        return fn
    out = types.FunctionType(fn.__code__, {**fn.__globals__, **swapped}, fn.__name__, fn.__defaults__)
    out.__doc__ = fn.__doc__
    return out


def numba_enabled() -> bool:
    """Whether the kernels run compiled (numba importable and ``COLDPIPE_NO_NUMBA`` unset)."""
    if os.environ.get("COLDPIPE_NO_NUMBA"):
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class Kernel:
    """A kernel that runs compiled when :func:`numba_enabled`, else as the plain function ``py``.

    The compiled function is cached on the object (and on disk by numba): it is the same function.
    """

    def __init__(self, py: Callable[..., Any]) -> None:
        self.py = _interpreted(py)  # the same code, every helper interpreted too
        self._source = py
        self._compiled: Callable[..., Any] | None = None
        self.__doc__ = py.__doc__
        self.__name__ = py.__name__

    def current(self) -> Callable[..., Any]:
        """The function a call runs now: compiled, or ``py`` itself when numba is off."""
        if not numba_enabled():
            return self.py
        if self._compiled is None:
            import numba

            self._compiled = numba.njit(cache=True, nogil=True)(self._source)
        return self._compiled

    def __call__(self, *args: Any) -> Any:
        return self.current()(*args)


def jit(fn: Callable[..., Any]) -> Kernel:
    """Decorator: ``fn`` compiled by numba on first call (cached), or interpreted with ``COLDPIPE_NO_NUMBA``."""
    return Kernel(fn)
