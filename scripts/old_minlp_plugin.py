"""A pytest plugin that puts the MINLP of before issue 12 under today's agreement suite, to show the suite fails on it.

It loads ``src/coldpipe/planning/minlp.py`` as it was at commit ``fef3b57`` (unscaled model in bytes and
seconds, ``Device.resident`` ignored, ``numerics/feastol`` 1e-7, SCIP's strong dual reductions on) and
makes it the ``plan_minlp`` that ``tests/planning/test_agreement.py`` imports; its result fields are
mapped onto today's (``solver_status``; ``optimal`` whenever SCIP said so). Run from the repository root:

    PYTHONPATH=src:scripts .venv/bin/python -m pytest -p old_minlp_plugin tests/planning/test_agreement.py \\
        -m "not slow" -k agree -q

``OLD_MINLP=params`` keeps today's formulation and only restores the old SCIP settings instead;
``OLD_MINLP=model`` runs the old formulation with SCIP's default feasibility tolerance (1e-6).
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import coldpipe.planning.minlp as current

OLD_COMMIT = "fef3b57"
ROOT = Path(__file__).resolve().parents[1]


def old_module(*, default_tolerances: bool = False) -> types.ModuleType:
    """``minlp.py`` of :data:`OLD_COMMIT` as a module (``default_tolerances``: without its feastol 1e-7)."""
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:src/coldpipe/planning/minlp.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if default_tolerances:
        source = source.replace('scip.setParam("numerics/feastol", 1e-7)', "pass")
    module = types.ModuleType("coldpipe_old_minlp")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, "old_minlp.py", "exec"), module.__dict__)  # the repository's own history
    return module


def _wrap(old_plan: Any) -> Any:
    """The old ``plan_minlp`` with today's ``solver_status`` field."""

    def plan_minlp(problem: Any, **kwargs: Any) -> Any:
        res = old_plan(problem, **kwargs)
        res.details["solver_status"] = res.details["status"]
        return res

    return plan_minlp


def pytest_configure(config: Any) -> None:
    """Swap ``plan_minlp`` before the test modules import it (``OLD_MINLP`` chooses what is old)."""
    what = os.environ.get("OLD_MINLP", "all")
    if what == "params":
        today = current.plan_minlp

        def old_params(problem: Any, **kwargs: Any) -> Any:
            return today(problem, params={"numerics/feastol": 1e-7, "misc/allowstrongdualreds": True}, **kwargs)

        current.plan_minlp = old_params
    else:
        current.plan_minlp = _wrap(old_module(default_tolerances=what == "model").plan_minlp)
    print(f"old_minlp_plugin: plan_minlp is the old one ({what})", file=sys.stderr)
