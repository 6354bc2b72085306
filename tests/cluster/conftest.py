"""Fixtures of the cluster tests: a tiny checkpoint, a join token, a log collector."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("zmq")
pytest.importorskip("torch")

from cluster_helpers import LogLines

from coldpipe.runtime.checkpoint import arch_for, make_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch = arch_for("llama-3.1-8b", layers=4, hidden=64, heads=4, kv_heads=2, vocab=256)
    return make_checkpoint(arch, tmp_path_factory.mktemp("cl") / "tiny", init_std=0.3)


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("tok") / "token"
    p.write_text("s3cr3t-join-token-for-tests-0123456789")
    p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def log_lines() -> Iterator[LogLines]:
    h = LogLines()
    lg = logging.getLogger("coldpipe.cluster")
    lg.addHandler(h)
    lg.setLevel(logging.DEBUG)
    yield h
    lg.removeHandler(h)
