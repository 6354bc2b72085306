"""``coldpipe serve``: the OpenAI-compatible endpoint over a cold-starting pipeline (docs/serve.md).

``--local SCENARIO --checkpoint DIR`` runs one persistent process per device of the scenario on this host;
``--demo`` makes a small random checkpoint (with its tokenizer) and a three-device scenario on first use, under
``--workdir`` (default ``~/.cache/coldpipe/demo``), and serves them. ``--cluster CLUSTER --token-file F
--checkpoint DIR`` serves over running ``coldpipe agent``s (:mod:`coldpipe.serve.cluster`), on the scenario measured
as ``cluster plan`` measures it (or ``--scenario``, one ``cluster plan --scenario-out`` wrote).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from coldpipe.cli._common import overlap_arg, read_json_arg, scenario_arg
from coldpipe.errors import InputError

__all__ = ["DEMO_MODEL", "demo_files", "register"]

DEMO_MODEL = {"layers": 4, "hidden": 256, "heads": 4, "kv_heads": 2, "vocab": 2048, "intermediate": 688}
DEMO_SCENARIO = """\
# coldpipe serve --demo: three emulated devices on this host serving a small random Llama-shaped checkpoint.
# Loading is paced to each device's read rate, so the first request waits for a cold start (~1 s) while
# later ones find the blocks resident.
network: {{hop_latency: 2 ms}}
workload: {{prompt_tokens: 32, new_tokens: 16}}
model: {{hf_config: {checkpoint}/config.json, dtype: float32}}
devices:
  - {{name: phone,  flops: 5 GFLOPS, load_bandwidth: 10 MB/s, startup: 300 ms, memory: 1 GB,
     uplink: 100 Mbit/s, downlink: 200 Mbit/s, mem_bandwidth: 4 GB/s}}
  - {{name: tablet, flops: 5 GFLOPS, load_bandwidth: 14 MB/s, startup: 500 ms, memory: 1 GB,
     uplink: 150 Mbit/s, downlink: 250 Mbit/s, mem_bandwidth: 6 GB/s}}
  - {{name: laptop, flops: 5 GFLOPS, load_bandwidth: 20 MB/s, startup: 800 ms, memory: 1 GB,
     uplink: 300 Mbit/s, downlink: 400 Mbit/s, mem_bandwidth: 8 GB/s}}
"""


def demo_files(workdir: Path) -> tuple[Path, Path]:
    """The demo's checkpoint and scenario under ``workdir``, made on first use: (checkpoint, scenario)."""
    from coldpipe.runtime.checkpoint import arch_for, make_checkpoint
    from coldpipe.runtime.tokenizer import write_tokenizer

    ckpt, scenario = workdir / "checkpoint", workdir / "scenario.yaml"
    if not (ckpt / "tokenizer.json").is_file():
        print(f"coldpipe serve: making the demo checkpoint in {ckpt} (first use)", file=sys.stderr)
        arch = arch_for("llama-3.1-8b", **DEMO_MODEL)
        make_checkpoint(arch, ckpt, init_std=0.3)
        write_tokenizer(ckpt, arch.vocab_size)
    if not scenario.is_file():
        scenario.write_text(DEMO_SCENARIO.format(checkpoint=ckpt.resolve()))
    return ckpt, scenario


def _default_workdir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coldpipe" / "demo"


def build(
    scenario_path: str,
    checkpoint: str,
    *,
    overlap: str = "layer",
    host_profile: str | None = None,
    emulate: bool = True,
    max_queue: int = 64,
    max_burst: int = 8,
    idle_unload_s: float | None = None,
    api_key: str | None = None,
    max_context: int | None = None,
    model_name: str | None = None,
) -> tuple[Any, Any, Any]:
    """(app, engine, backend) for a local pipeline; the caller serves ``app`` and closes the other two."""
    from coldpipe.cli.run_cmd import check_scenario_matches
    from coldpipe.runtime.checkpoint import open_checkpoint
    from coldpipe.runtime.profile_host import HostProfile
    from coldpipe.runtime.tokenizer import load_tokenizer
    from coldpipe.serve.engine import Engine
    from coldpipe.serve.local import LocalBackend

    ov = overlap_arg(overlap)
    sc = scenario_arg(scenario_path)
    ckpt = open_checkpoint(checkpoint)
    check_scenario_matches(sc, ckpt.n_blocks)
    if not (Path(checkpoint) / "tokenizer.json").is_file():
        load_tokenizer(checkpoint)  # the one-line error and its fix
    host_flops = None
    if host_profile is not None:
        host_flops = HostProfile.from_dict(read_json_arg(host_profile, "--host-profile")).host_flops
    # the device processes start (torch imports, kernel warm-up) while this process loads the tokenizer
    backend = LocalBackend(checkpoint, tuple(d.name for d in sc.devices), sc, wait=False)
    try:
        tok = load_tokenizer(checkpoint)
        backend.wait_ready()
        engine = Engine(
            backend,
            sc,
            tok,
            ckpt.architecture(),
            overlap=ov,
            host_flops=host_flops,
            emulate=emulate,
            max_queue=max_queue,
            max_burst=max_burst,
            idle_unload_s=idle_unload_s,
        )
    except BaseException:
        backend.close()
        raise
    return _app(engine, tok, ckpt, checkpoint, model_name, api_key, max_context), engine, backend


def _app(
    engine: Any,
    tok: Any,
    ckpt: Any,
    checkpoint: str,
    model_name: str | None,
    api_key: str | None,
    max_context: int | None,
) -> Any:
    """The HTTP app over ``engine``: the context defaults to the model's positions, at most 2048."""
    from coldpipe.serve.api import make_app

    context = max_context or min(int(ckpt.config.get("max_position_embeddings", 2048)), 2048)
    name = model_name or Path(checkpoint).resolve().name
    return make_app(engine, tok, name, api_key=api_key, max_context=context)


def build_cluster(
    cluster: str,
    token_file: str,
    checkpoint: str,
    *,
    scenario_path: str | None = None,
    overlap: str = "layer",
    max_queue: int = 64,
    max_burst: int = 8,
    idle_unload_s: float | None = None,
    api_key: str | None = None,
    max_context: int | None = None,
    model_name: str | None = None,
) -> tuple[Any, Any, Any]:
    """(app, engine, backend) over the agents of ``cluster``; the caller serves ``app`` and closes the others."""
    from coldpipe.cli.run_cmd import check_scenario_matches
    from coldpipe.cluster.coordinator import Coordinator, load_cluster
    from coldpipe.cluster.measure import fingerprint
    from coldpipe.cluster.token import read_token
    from coldpipe.cluster.transport import Keys
    from coldpipe.runtime.checkpoint import open_checkpoint
    from coldpipe.runtime.tokenizer import load_tokenizer
    from coldpipe.serve.cluster import ClusterBackend
    from coldpipe.serve.engine import Engine

    ov = overlap_arg(overlap)
    keys = Keys(read_token(token_file))
    agents = load_cluster(cluster)
    ckpt = open_checkpoint(checkpoint)
    tok = load_tokenizer(checkpoint)  # the one-line error and its fix when there is none
    sc = None
    if scenario_path is not None:
        sc = scenario_arg(scenario_path)
        check_scenario_matches(sc, ckpt.n_blocks)
        unknown = sorted({d.name for d in sc.devices} - {a.name for a in agents})
        if unknown:
            raise InputError(
                "--scenario", f"devices {unknown} are not agents of {cluster!r}", "use its measured scenario"
            )
    fp = fingerprint(ckpt)
    co = Coordinator(keys, agents)
    try:
        if sc is None:  # as `cluster plan` measures (its defaults: 128 prompt tokens, 4 MiB each way per link)
            from coldpipe.core.types import Workload

            down = [r["name"] for r in co.status() if not r["reachable"]]
            if down:
                raise InputError("--cluster", f"agents {down} do not answer", "start them, or pass --scenario")
            say = lambda msg: print(f"coldpipe serve: {msg}", file=sys.stderr, flush=True)  # noqa: E731
            sc, _ = co.measured_scenario(checkpoint, fp, ckpt.dtype, Workload(128, 16), progress=say)
        block_bytes = [sum(ckpt.tensors[n].nbytes for n in ckpt.blocks[b]) for b in range(ckpt.n_blocks)]
        backend = ClusterBackend(co, fp, block_bytes, ov)
    except BaseException:
        co.close()
        raise
    try:
        engine = Engine(
            backend,
            sc,
            tok,
            ckpt.architecture(),
            overlap=ov,
            max_queue=max_queue,
            max_burst=max_burst,
            idle_unload_s=idle_unload_s,
        )
        backend.on_change = engine.devices_changed
    except BaseException:
        backend.close()
        raise
    return _app(engine, tok, ckpt, checkpoint, model_name, api_key, max_context), engine, backend


def serve_command(
    local: Annotated[str | None, typer.Option("--local", help="Scenario whose devices run on this host.")] = None,
    cluster: Annotated[str | None, typer.Option(help="Cluster file of remote agents (needs the agents).")] = None,
    token_file: Annotated[str | None, typer.Option(help="The cluster's join token (with --cluster).")] = None,
    scenario: Annotated[
        str | None, typer.Option(help="With --cluster: a scenario `cluster plan --scenario-out` wrote (no measuring).")
    ] = None,
    checkpoint: Annotated[str | None, typer.Option(help="HF model directory with tokenizer.json.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Serve a small random model on three emulated devices.")] = False,
    workdir: Annotated[str | None, typer.Option(help="Where --demo keeps its checkpoint.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind (beyond 127.0.0.1 needs --api-key-file).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key_file: Annotated[str | None, typer.Option(help="File holding the Bearer API key clients must send.")] = None,
    idle_unload: Annotated[float | None, typer.Option(help="Seconds idle before every device unloads.")] = None,
    max_queue: Annotated[int, typer.Option(help="Requests waiting at most (more get 429).")] = 64,
    max_burst: Annotated[int, typer.Option(help="Requests served together at most.")] = 8,
    overlap: Annotated[str, typer.Option(help="layer | stage | none.")] = "layer",
    host_profile: Annotated[str | None, typer.Option(help="`coldpipe profile-host` JSON (compute slowdown).")] = None,
    emulate: Annotated[bool, typer.Option(help="Emulate the devices' start-ups, read rates and links.")] = True,
    max_context: Annotated[
        int | None, typer.Option(help="Prompt + max_tokens limit (default min(model, 2048)).")
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="The model id clients use (default: checkpoint dir name).")
    ] = None,
) -> None:
    """Serve the OpenAI API from a pipeline that starts cold and stays warm (docs/serve.md)."""
    import uvicorn

    if demo + (local is not None) + (cluster is not None) != 1:
        raise InputError(
            "--local/--cluster/--demo", "give exactly one of --local SCENARIO, --cluster CLUSTER and --demo"
        )
    if (local is not None or cluster is not None) and checkpoint is None:
        raise InputError("--checkpoint", "--local and --cluster need the checkpoint served", "pass --checkpoint DIR")
    if (cluster is None) != (token_file is None):
        raise InputError("--token-file", "--cluster and --token-file go together", "pass both (the agents' join token)")
    if cluster is None and scenario is not None:
        raise InputError("--scenario", "only with --cluster (--local takes the scenario itself)")
    if cluster is not None and (host_profile is not None or not emulate):
        raise InputError("--host-profile/--no-emulate", "with --cluster the devices are real: nothing is emulated")
    for flag, v in (("--max-queue", max_queue), ("--max-burst", max_burst), ("--port", port)):
        if v < (0 if flag == "--port" else 1):
            raise InputError(flag, f"must be >= 1, got {v}")
    if idle_unload is not None and idle_unload <= 0:
        raise InputError("--idle-unload", f"must be > 0 seconds, got {idle_unload}")
    api_key = None
    if api_key_file is not None:
        try:
            api_key = Path(api_key_file).read_text().strip()
        except OSError as exc:
            raise InputError("--api-key-file", f"cannot read {api_key_file!r}: {exc.strerror}") from None
        if not api_key:
            raise InputError("--api-key-file", f"{api_key_file!r} is empty", "write the key into it")
    elif host not in ("127.0.0.1", "localhost"):
        raise InputError("--host", f"binding {host!r} without authentication", "pass --api-key-file, or keep 127.0.0.1")
    with socket.socket() as probe:  # a port in use is a one-line error, before any process starts
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
        except OSError as exc:
            raise InputError(
                "--port", f"cannot listen on {host}:{port}: {exc.strerror}", "pick another --port"
            ) from None
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if demo:
        ckpt_dir, scenario_file = demo_files(Path(workdir) if workdir else _default_workdir())
        checkpoint, local = str(ckpt_dir), str(scenario_file)
    assert checkpoint is not None
    if cluster is not None:
        assert token_file is not None
        app, engine, backend = build_cluster(
            cluster,
            token_file,
            checkpoint,
            scenario_path=scenario,
            overlap=overlap,
            max_queue=max_queue,
            max_burst=max_burst,
            idle_unload_s=idle_unload,
            api_key=api_key,
            max_context=max_context,
            model_name=model_name,
        )
    else:
        assert local is not None
        app, engine, backend = build(
            local,
            checkpoint,
            overlap=overlap,
            host_profile=host_profile,
            emulate=emulate,
            max_queue=max_queue,
            max_burst=max_burst,
            idle_unload_s=idle_unload,
            api_key=api_key,
            max_context=max_context,
            model_name=model_name or ("coldpipe-demo" if demo else None),
        )
    if api_key is None:
        print("coldpipe serve: no --api-key-file: listening on 127.0.0.1 only, without authentication", file=sys.stderr)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # uvicorn re-raises it after its own shutdown
    code = 0
    try:
        engine.start()
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
        )
        line = f"coldpipe serve: http://{host}:{port}/v1 (model {app.state.model_name}), cold; Ctrl-C stops"
        threading.Thread(target=_announce_when_bound, args=(server, line), daemon=True).start()
        server.run()
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        engine.stop()
        backend.close()
        what = "freed every agent (they keep running)" if cluster is not None else "stopped every device"
        print(f"coldpipe serve: {what}", file=sys.stderr, flush=True)
    # every process and thread of ours has stopped; skip the interpreter's slow teardown of torch and tokenizers,
    # but not what it would have removed: multiprocessing's temp dir (the forkserver's listener socket)
    import multiprocessing.util
    import shutil

    shutil.rmtree(multiprocessing.util.get_temp_dir(), ignore_errors=True)
    sys.stdout.flush()
    os._exit(code)


def _announce_when_bound(server: Any, line: str) -> None:
    """Say where the server listens once uvicorn has bound its socket (a client told earlier is refused)."""
    while not server.started and not server.should_exit:
        time.sleep(0.01)
    if server.started:
        print(line, file=sys.stderr, flush=True)


def _stop_on_sigterm(_sig: int, _frame: Any) -> None:
    raise SystemExit(0)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
