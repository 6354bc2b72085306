"""``coldpipe agent``: serve one device of a cluster (docs/cluster.md)."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from coldpipe.errors import InputError


def agent_command(
    name: Annotated[str, typer.Option(help="This device's name (as in the cluster file).")],
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on (e.g. 0.0.0.0:7070).")],
    token_file: Annotated[str, typer.Option(help="The join token (mode 600), the same on every member.")],
    checkpoint: Annotated[str, typer.Option(help="This device's copy of the checkpoint (HF directory).")],
    profile: Annotated[
        str, typer.Option(help="auto (measure at start) or a JSON file of a previous profile.")
    ] = "auto",
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length of the compute measurement.")] = 128,
    max_frame: Annotated[int, typer.Option(help="Largest accepted message frame, bytes.")] = 256 * 2**20,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    log_file: Annotated[str | None, typer.Option(help="Append the log here instead of stderr.")] = None,
    hold_file: Annotated[
        str | None, typer.Option(help="After the imports, wait for this file before measuring (the testbed's limits).")
    ] = None,
    advertise: Annotated[
        bool, typer.Option(help="Advertise this agent by mDNS (_coldpipe._tcp) for `cluster ... --discover`.")
    ] = False,
) -> None:
    """Run a coldpipe agent: cold at start, measures itself, runs the stages a coordinator gives it."""
    from coldpipe.cluster.agent import Agent, AgentOptions
    from coldpipe.cluster.token import read_token
    from coldpipe.cluster.transport import Keys
    from coldpipe.profiler.link import parse_host_port

    host, port = parse_host_port(listen, "--listen")
    if prompt_tokens < 1 or max_frame < 1024 or threads < 1:
        raise InputError("--prompt-tokens/--max-frame/--threads", "must be >= 1 (--max-frame >= 1024)")
    prof = None
    if profile != "auto":
        try:
            prof = json.loads(Path(profile).read_text())
        except (OSError, ValueError) as exc:
            raise InputError("--profile", f"cannot read {profile!r}: {exc}", "use auto or a JSON profile") from None
    keys = Keys(read_token(token_file))
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("coldpipe.cluster")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    if hold_file is not None:
        import importlib
        import time

        import torch  # noqa: F401 -- the imports a cpu quota would make minutes long
        from transformers import DynamicCache  # noqa: F401

        mt = None
        with contextlib.suppress(OSError, ValueError):
            mt = json.loads((Path(checkpoint) / "config.json").read_text()).get("model_type")
        if mt:
            importlib.import_module(f"transformers.models.{mt}.modeling_{mt}")
        print(f"agent {name} imported", flush=True)
        while not Path(hold_file).exists():
            time.sleep(0.05)
    if advertise:
        from coldpipe.cluster.discovery import require_zeroconf

        require_zeroconf()  # not installed: fail now, before measuring
    agent = Agent(keys, AgentOptions(name, host, port, checkpoint, prof, prompt_tokens, max_frame, threads))
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    adv: list[Any] = []

    def ready(p: int) -> None:
        print(f"agent {name} ready on {host}:{p}", flush=True)
        if advertise:
            from coldpipe.cluster.discovery import Advertiser

            adv.append(Advertiser(keys, name, host, p))  # registers in the background (mDNS probing)

    try:
        agent.serve(on_ready=ready)
    except KeyboardInterrupt:
        agent.stop.set()
    finally:
        for a in adv:  # unregister: on SIGTERM (serve returns), Ctrl-C and any error alike
            a.close()


def register(app: typer.Typer) -> None:
    app.command("agent")(agent_command)
