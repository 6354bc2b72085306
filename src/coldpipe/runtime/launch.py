"""``coldpipe run --local``: start one process per stage (+ the source, rank 0) on 127.0.0.1 and gather the result.

The launcher writes a run spec (scenario, plans, emulation knobs), starts one rank per process running
:func:`coldpipe.runtime.worker.main`, and watches them. Ranks are forked from a forkserver that has imported
torch and transformers once (a fresh interpreter per rank would import them again, seconds each on a small
machine). When a rank exits with an error, the launcher writes the abort file so every other rank stops with one
line of its own, waits a few seconds, kills what is left, prints every rank's line and raises
:class:`RunFailed`. A peer that never connects makes the others' rendezvous time out after ``timeout_s``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coldpipe.core.types import Scenario
from coldpipe.runtime import RunFailed
from coldpipe.runtime.job import Job

__all__ = ["Job", "make_spec", "prompt_ids", "run_local"]

GRACE_S = 5.0  # after a failure, how long the other ranks get to stop by themselves


def prompt_ids(n_tokens: int, vocab_size: int, seed: int = 0) -> tuple[int, ...]:
    """A reproducible random prompt (the weights are random too, so any ids will do)."""
    rng = random.Random(seed)
    return tuple(rng.randrange(vocab_size) for _ in range(n_tokens))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PRELOAD = [
    "coldpipe.runtime.worker",
    "torch",
    "torch.distributed",
    "transformers",
    "transformers.models.llama.modeling_llama",
    "transformers.models.qwen2.modeling_qwen2",
    "transformers.models.mistral.modeling_mistral",
]


def _context() -> Any:
    """A forkserver that imports torch + transformers once; each rank is then forked from it in milliseconds.

    The forkserver never computes anything, so its children start from a clean torch (no thread pools).
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _error_lines(log: Path) -> list[str]:
    if not log.is_file():
        return []
    return [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("coldpipe: error:")]


def make_spec(
    checkpoint: str | Path,
    scenario: Scenario,
    jobs: list[Job],
    *,
    timeout_s: float = 30.0,
    threads: int = 1,
    cold_cache: bool = True,
) -> dict[str, Any]:
    """The run spec every rank reads (also what ``coldpipe run --write-spec`` writes for torchrun)."""
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "scenario": scenario.to_dict(),
        "jobs": [j.to_dict() for j in jobs],
        "timeout_s": timeout_s,
        "threads": threads,
        "cold_cache": cold_cache,
        "fault": None,
    }


def run_local(
    checkpoint: str | Path,
    scenario: Scenario,
    jobs: list[Job],
    *,
    timeout_s: float = 30.0,
    threads: int = 1,
    cold_cache: bool = True,
    fault: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run ``jobs`` one after another on ``1 + max stages`` local processes; one result dict per job.

    Each rank's stderr goes to a log file; on failure the launcher prints every rank's one-line error (or
    its exit code when it died without one) and raises :class:`RunFailed`.
    ``fault`` (tests only) makes one rank misbehave: ``{"rank": r, "at": "connect" | "load" | "compute" | "hang"}``.
    """
    from coldpipe.runtime import worker

    if not jobs:
        return []
    world = 1 + max(len(j.plan.stages) for j in jobs)
    with tempfile.TemporaryDirectory(prefix="coldpipe-run-") as tmp:
        spec_path, result_path, abort_path = Path(tmp, "spec.json"), Path(tmp, "result.json"), Path(tmp, "abort")
        spec = make_spec(checkpoint, scenario, jobs, timeout_s=timeout_s, threads=threads, cold_cache=cold_cache)
        spec["fault"] = fault
        spec_path.write_text(json.dumps(spec))
        port = _free_port()
        mp = _context()
        procs = []
        logs = [Path(tmp, f"rank{r}.log") for r in range(world)]
        for rank in range(world):
            argv = [
                "--spec",
                str(spec_path),
                "--rank",
                str(rank),
                "--world-size",
                str(world),
                "--master-port",
                str(port),
                "--abort-file",
                str(abort_path),
                "--log",
                str(logs[rank]),
                "--launcher-pid",
                str(os.getpid()),
            ]
            if rank == 0:
                argv += ["--result", str(result_path)]
            p = mp.Process(target=worker.main, args=(argv,), name=f"coldpipe-rank{rank}", daemon=False)
            # Ctrl-C reaches every process of the terminal's group: the ranks ignore it (a process started while
            # SIGINT is ignored keeps ignoring it) and this launcher ends them, so Ctrl-C prints one line, not one
            # traceback per rank.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                p.start()
            finally:
                signal.signal(signal.SIGINT, previous)
            procs.append(p)
        failed = ""
        try:
            while any(p.is_alive() for p in procs):
                bad = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if bad:
                    r, code = bad[0]
                    failed = f"rank {r} ({'source' if r == 0 else f'stage {r - 1}'}) exited with code {code}"
                    abort_path.write_text(failed)
                    deadline = time.monotonic() + GRACE_S
                    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    break
                time.sleep(0.05)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                p.join()
        codes = [p.exitcode for p in procs]
        if not failed and any(codes):
            r = next(i for i, c in enumerate(codes) if c)
            failed = f"rank {r} exited with code {codes[r]}"
        if failed or not result_path.is_file():
            lines = {r: _error_lines(logs[r]) for r in range(world)}
            culprits = _culprits(codes, lines)
            for r in culprits + [r for r in range(world) if r not in culprits]:  # the rank that failed first
                for ln in lines[r] or ([_silent(r, codes[r])] if codes[r] else []):
                    print(ln, file=sys.stderr, flush=True)
            if culprits:
                r = culprits[0]
                why = lines[r][0].removeprefix("coldpipe: error: ") if lines[r] else _silent(r, codes[r])[17:]
            else:
                why = failed or "rank 0 wrote no result"
            raise RunFailed(f"the pipelined run failed: {why}")
        return list(json.loads(result_path.read_text())["jobs"])


# what a rank says when it stopped because of another one (a knock-on failure, not the cause)
_KNOCK_ON = ("lost the connection to a peer", "stopped because", "the launcher died", "timed out", "killed")


def _silent(rank: int, code: int | None) -> str:
    return f"coldpipe: error: rank {rank} ({_role(rank)}): died with exit code {code} without a message"


def _role(rank: int) -> str:
    return "source" if rank == 0 else f"stage {rank - 1}"


def _culprits(codes: list[int | None], lines: dict[int, list[str]]) -> list[int]:
    """The ranks that failed by themselves (their own error, or a crash), before those that only followed.

    A rank that ends with a knock-on line (lost a peer, told to stop, timed out) or was killed by the launcher
    (a negative exit code) is a bystander; a rank whose line names another cause, or that died with a
    positive code and no line (a crash), failed by itself. When every failed rank is a bystander (a peer that
    hangs makes every one of them time out), they are all returned, in rank order.
    """
    failed = [r for r, c in enumerate(codes) if c]
    own = [
        r
        for r in failed
        if (lines[r] and not all(any(k in ln for k in _KNOCK_ON) for ln in lines[r]))
        or (not lines[r] and (codes[r] or 0) > 0)
    ]
    return own or [r for r in failed if lines[r]]
