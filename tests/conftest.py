"""Shared fixtures and hypothesis strategies for coldpipe's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# CI runs a fixed, derandomised profile so a red build is reproducible; locally `HYPOTHESIS_PROFILE=dev`
# explores new examples each run.
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Never collect a ``conftest.py`` as a doctest module: several directories have one (tests/serve,
    tests/cluster), and ``--doctest-modules`` would import them all under the one name ``conftest``."""
    return True if collection_path.name == "conftest.py" else None
