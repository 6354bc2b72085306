"""Fixtures of the serving tests: the tiny checkpoint and one running server per module."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("openai")

from serve_server import IDLE_UNLOAD_S, MAX_QUEUE, Server, make_tiny, start_server


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    ckpt, sc = make_tiny(root)
    return root, ckpt, sc


@pytest.fixture(scope="module")
def server(tiny_files: tuple[Path, Path, Path]) -> Iterator[Server]:
    root, ckpt, sc = tiny_files
    srv = start_server(root, ckpt, sc, "--idle-unload", str(IDLE_UNLOAD_S), "--max-queue", str(MAX_QUEUE))
    yield srv
    if srv.proc.poll() is None:
        srv.proc.terminate()
        try:
            srv.proc.wait(30)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait()
