"""The fuzz harness: one CLI invocation per case, in a forked child with a memory cap and a timeout.

:func:`run_case` forks; the child caps its address space (``RLIMIT_AS``), sends stdout and stderr to files
and calls the real entry point :func:`coldpipe.cli.main` with the case's argv, catching ``SystemExit``; the
parent waits at most ``timeout_s`` (then kills it: a hang). :func:`verdict` says what is wrong with an
outcome, or ``None``: coldpipe promises exit 0, or exit 2 with exactly one line ``coldpipe: error: ...`` of
at most :data:`coldpipe.errors.MAX_LINE_CHARS` characters; never a traceback, a hang or a memory blow-up.

The corpus (good files to mutate) and the mutations are in :mod:`mutations`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coldpipe.errors import MAX_LINE_CHARS

MEM_CAP_BYTES = 1536 * 2**20  # address space a case may add on top of the parent's
CASE_TIMEOUT_S = 45.0  # a hang detector on a shared machine, not a speed target
MAX_STDOUT_BYTES = 4 * 2**20
_CRASH, _NO_MEMORY = 99, 98  # child exit codes: an uncaught exception, a MemoryError


@dataclass
class Outcome:
    kind: str  # which corpus/mutation family made the case
    argv: list[str]
    code: int | None  # None: killed after the timeout
    stdout_bytes: int
    stderr: str
    elapsed_s: float

    def describe(self) -> str:
        err = self.stderr if len(self.stderr) < 700 else self.stderr[:200] + " ... " + self.stderr[-500:]
        return f"[{self.kind}] coldpipe {' '.join(self.argv)[:300]} -> exit {self.code}: {err!r}"


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class _Running:
    kind: str
    argv: list[str]
    pid: int
    pidfd: int
    out: Any
    err: Any
    t0: float


def _start(argv: list[str], kind: str, cwd: str | None) -> _Running:
    """Fork a child that runs ``coldpipe ARGV`` (memory-capped, output to temporary files)."""
    from coldpipe.cli import main

    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 (closed by _finish)
    sys.stdout.flush()
    sys.stderr.flush()
    cap = _vm_bytes() + MEM_CAP_BYTES
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = _CRASH
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            # pytest's capture (and any other) may have replaced sys.stdout/err by objects that do not write
            # to fds 1 and 2: write to the files for real
            sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            if cwd is not None:
                os.chdir(cwd)
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except MemoryError:
                code = _NO_MEMORY
                sys.stderr.write("MemoryError\n")
            except BaseException:
                traceback.print_exc()
                code = _CRASH
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    return _Running(kind, list(argv), pid, os.pidfd_open(pid), out, err, t0)


def _finish(r: _Running, timeout_s: float) -> Outcome:
    """Wait for the child (killing it after ``timeout_s``: a hang) and read what it printed."""
    try:
        ready, _, _ = select.select([r.pidfd], [], [], max(0.0, timeout_s - (time.perf_counter() - r.t0)))
        if not ready:
            os.kill(r.pid, signal.SIGKILL)
        _, status = os.waitpid(r.pid, 0)
        elapsed = time.perf_counter() - r.t0
        if not ready:
            code: int | None = None
        elif os.WIFSIGNALED(status):
            code = -os.WTERMSIG(status)
        else:
            code = os.WEXITSTATUS(status)
        r.out.seek(0, os.SEEK_END)
        n_out = r.out.tell()
        r.err.seek(0)
        text = r.err.read(64 * 1024 + 1).decode("utf-8", errors="replace")
    finally:
        os.close(r.pidfd)
        r.out.close()
        r.err.close()
    return Outcome(r.kind, r.argv, code, n_out, text, elapsed)


def run_case(argv: list[str], kind: str = "", *, timeout_s: float = CASE_TIMEOUT_S, cwd: str | None = None) -> Outcome:
    """Run ``coldpipe ARGV`` in a forked child (memory-capped, timed); what it printed and how it ended."""
    return _finish(_start(argv, kind, cwd), timeout_s)


def verdict(o: Outcome) -> str | None:
    """What is wrong with ``o`` (a short label), or None when coldpipe kept its promise."""
    if o.code is None:
        return "hang"
    if o.code == _NO_MEMORY or "MemoryError" in o.stderr:
        return "memory"
    if "Traceback (most recent call last)" in o.stderr or o.code == _CRASH:
        return "traceback"
    if o.code < 0:
        return f"killed by signal {-o.code}"
    if o.code not in (0, 2):
        return f"exit {o.code}"
    if o.stdout_bytes > MAX_STDOUT_BYTES:
        return "huge output"
    if o.code == 2:
        lines = o.stderr.splitlines()
        if len(lines) != 1:
            return "multi-line error" if lines else "silent exit 2"
        if not lines[0].startswith("coldpipe: error: "):
            return "unprefixed error"
        if len(lines[0]) > MAX_LINE_CHARS + 200:
            return "huge error line"
    return None


@dataclass
class Tally:
    """Counts per (family, exit code) and every failure, for the suite's summary line and docs/reliability.md."""

    cases: int = 0
    by_kind: collections.Counter[tuple[str, int | None]] = field(default_factory=collections.Counter)
    failures: list[tuple[str, Outcome]] = field(default_factory=list)
    slowest_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the cases' children (user + system)
    wall_s: float = 0.0
    parent_cpu_s: float = 0.0  # making the cases (mutations, files) and waiting for them

    def add(self, o: Outcome) -> None:
        self.cases += 1
        self.by_kind[(o.kind, o.code)] += 1
        self.slowest_s = max(self.slowest_s, o.elapsed_s)
        bad = verdict(o)
        if bad is not None:
            self.failures.append((bad, o))

    def summary(self) -> str:
        kinds = sorted({k for k, _ in self.by_kind})
        parts = []
        for k in kinds:
            ok = self.by_kind[(k, 0)]
            err = self.by_kind[(k, 2)]
            other = sum(n for (kk, c), n in self.by_kind.items() if kk == k and c not in (0, 2))
            parts.append(f"{k}: {ok + err + other} ({ok} exit 0, {err} exit 2, {other} other)")
        head = (
            f"fuzz: {self.cases} cases, {len(self.failures)} failures, slowest {self.slowest_s:.2f} s, "
            f"{self.wall_s:.0f} s wall, {self.cpu_s:.0f} s CPU in the cases + {self.parent_cpu_s:.0f} s making them"
        )
        return "; ".join([head, *parts])

    def report(self, limit: int = 15) -> str:
        return "\n".join(f"{bad}: {o.describe()}" for bad, o in self.failures[:limit])


def run_all(
    cases: Iterable[tuple[str, list[str]]],
    tally: Tally | None = None,
    cwd: str | None = None,
    jobs: int = 2,
    timeout_s: float = CASE_TIMEOUT_S,
) -> Tally:
    """Every case, up to ``jobs`` children at once (cases are independent: each writes its own files)."""
    tally = tally or Tally()
    t0, cpu0 = time.perf_counter(), os.times()
    running: list[_Running] = []
    for kind, argv in cases:
        if len(running) >= jobs:
            tally.add(_finish(running.pop(0), timeout_s))
        running.append(_start(argv, kind, cwd))
    for r in running:
        tally.add(_finish(r, timeout_s))
    cpu1 = os.times()
    tally.cpu_s += (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
    tally.parent_cpu_s += (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    tally.wall_s += time.perf_counter() - t0
    return tally


def write_summary(tally: Tally, name: str) -> None:
    """Print the summary (pytest -s shows it) and append it to ``$COLDPIPE_FUZZ_LOG`` when set."""
    line = f"{name}: {tally.summary()}"
    print(line)
    log = os.environ.get("COLDPIPE_FUZZ_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def ensure_dir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def warm_up(argvs: Iterable[list[str]]) -> None:
    """Run each argv once in this process (output discarded) so that every forked case starts warm:
    imports done, numba kernels compiled, typer's command tree built."""
    import typer.main

    from coldpipe.cli import main

    # typer rebuilds the click command tree from the annotations on every call (~0.1 s); build it once here
    # (the same tree, reused by every case: click commands keep no state between invocations)
    if not getattr(typer.main.get_command, "_coldpipe_cached", False):
        built: dict[int, Any] = {}
        original = typer.main.get_command

        def cached(app: Any) -> Any:
            if id(app) not in built:
                built[id(app)] = original(app)
            return built[id(app)]

        cached._coldpipe_cached = True  # type: ignore[attr-defined]
        typer.main.get_command = cached
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        for argv in argvs:
            with contextlib.suppress(SystemExit, Exception):
                main(argv)
