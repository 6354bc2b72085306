"""The README's commands work on a fresh clone: the cheap ones are run here, the files it names exist.

Every ``coldpipe ...`` line of the README's ``sh`` blocks is extracted; those of the cheap commands
(plan, compare, model-info, catalog, demo, scenario) are run in-process from a scratch folder holding
a copy of ``examples/`` (a ``> FILE`` redirect writes stdout to FILE, as the shell would), and must
exit with 0. The others (make-checkpoint, profile-host, run, show, sweep, report, charts) are covered
by their own tests.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from coldpipe.cli import main
from coldpipe.profiler.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CHEAP = {"plan", "compare", "model-info", "catalog", "demo", "scenario", "--version"}
SLOW_FLAGS = ("--gantt", "--gantt-dir", "--solver")


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("coldpipe "):
                commands.append(line)
    return commands


def cheap(command: str) -> bool:
    words = shlex.split(command)
    return words[1] in CHEAP and not any(w in SLOW_FLAGS for w in words)


def test_readme_has_cheap_commands_to_run() -> None:
    commands = readme_commands()
    assert len([c for c in commands if cheap(c)]) >= 10
    assert all(not re.search(r"\b[A-Z]{3,}\b", c) for c in commands), "placeholders belong in text blocks"


@pytest.mark.parametrize("command", [c for c in readme_commands() if cheap(c)])
def test_readme_command_runs(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    for setup in readme_commands():  # a command that reads a file an earlier README line wrote: write it first
        if ">" in shlex.split(setup) and setup != command and shlex.split(setup)[-1] in shlex.split(command):
            _run(setup, capsys)
    _run(command, capsys)


def _run(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    words = shlex.split(command)[1:]
    target = None
    if ">" in words:
        words, target = words[: words.index(">")], words[words.index(">") + 1]
    with pytest.raises(SystemExit) as info:
        main(words)
    out = capsys.readouterr()
    assert info.value.code == 0, f"{command}: {out.err}"
    if target is not None:
        Path(target).write_text(out.out)


def test_files_the_readme_names_are_shipped() -> None:
    named = set(re.findall(r"\bexamples/[\w./-]+\.(?:yaml|json)", README))
    assert named, "the README names example files"
    for path in named:
        assert (ROOT / path).is_file(), path


def test_readme_counts_match_the_catalog() -> None:
    n = len(load_catalog())
    counts = re.findall(r"(\d+) (?:real edge devices|catalog devices)", README)
    assert counts and all(int(c) == n for c in counts)


def test_readme_says_how_to_reach_the_cli() -> None:
    assert 'export PATH="$PWD/.venv/bin:$PATH"' in README
