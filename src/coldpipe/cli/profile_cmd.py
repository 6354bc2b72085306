"""``coldpipe profile``: measure this machine and print a scenario device entry (docs/profiling.md)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from coldpipe.errors import InputError
from coldpipe.profiler import link, measure
from coldpipe.units import format_rate, parse_quantity

_err = Console(stderr=True, highlight=False)


@contextmanager
def _progress() -> Iterator[Callable[[str], Callable[[float], None]]]:
    """``step(description)`` returns a ``tick(fraction)`` that drives one bar on stderr (stdout stays YAML)."""
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=not _err.is_terminal,
    ) as prog:

        def step(description: str) -> Callable[[float], None]:
            task = prog.add_task(description, total=1.0)
            return lambda fraction: prog.update(task, completed=min(1.0, fraction))

        yield step


LINK_PLACEHOLDER = "100 Mbit/s"
"""uplink/downlink written when no link was measured (said so in a comment): the entry stays complete."""


def entry_yaml(prof: measure.Profile) -> str:
    """The device entry with units on every figure (``1.23 TFLOPS``, ``2.1 GB/s``), complete (link rates are
    placeholders, said so, when no peer was measured), as one YAML list item to paste under ``devices:``."""
    from coldpipe.units import format_bytes, format_seconds

    e = prof.device_entry()
    fields = {
        "name": e["name"],
        "flops": f"{e['flops'] / 1e12:.4g} TFLOPS",
        "load_bandwidth": f"{format_bytes(e['load_bandwidth'])}/s",
        "startup": format_seconds(e["startup"]).replace("µs", "us"),
        "memory": format_bytes(e["memory"]),
        "mem_bandwidth": f"{format_bytes(e['mem_bandwidth'])}/s",
        "uplink": format_rate(e["uplink"]) if "uplink" in e else LINK_PLACEHOLDER,
        "downlink": format_rate(e["downlink"]) if "downlink" in e else LINK_PLACEHOLDER,
    }
    lines = ["# coldpipe profile of this machine (docs/profiling.md); paste under `devices:`"]
    figures = [("flops", prof.flops), ("load_bandwidth", prof.load_bandwidth), ("startup", prof.startup),
               ("memory", prof.memory), ("mem_bandwidth", prof.mem_bandwidth), *sorted(prof.link.items())]  # fmt: skip
    for key, m in figures:
        lines.append(f"#   {key}: {m.how}")
    lines.extend(f"#   {note}" for note in prof.notes)
    if "uplink" not in e:
        lines.append(
            f"#   uplink/downlink: NOT MEASURED, placeholders of {LINK_PLACEHOLDER}: replace them, measure them with "
            "--peer HOST:PORT, or give radio: {distance_m: ...} instead"
        )
    if "rtt" in prof.link:
        lines.append(f"#   network.hop_latency ~ rtt / 2 = {format_seconds(prof.link['rtt'].value / 2)}")
    body = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return "\n".join(lines) + f"\n- {{{body}}}\n"


def _size(text: str, flag: str) -> int:
    try:
        n = int(parse_quantity(text, "bytes"))
    except ValueError as exc:
        raise InputError(flag, str(exc)) from None
    if n < 8 * 2**20:
        raise InputError(flag, f"must be at least 8 MiB, got {text!r}")
    return n


def profile_command(
    name: Annotated[str | None, typer.Option(help="Device name in the entry (default: the host name).")] = None,
    dtype: Annotated[str, typer.Option(help="Matmul dtype: float32 | bfloat16 | float16.")] = "float32",
    path: Annotated[str, typer.Option(help="Directory to write a test file in, or a big file to read.")] = ".",
    file_size: Annotated[str, typer.Option(help="Size of the storage test file.")] = "2 GiB",
    direct: Annotated[bool, typer.Option("--direct", help="Read with O_DIRECT instead of fadvise.")] = False,
    hidden: Annotated[int, typer.Option(help="Hidden size of the decoder layer timed.")] = 2048,
    tokens: Annotated[int, typer.Option(help="Prompt length (rows) of the prefill matmuls.")] = 512,
    flops_from: Annotated[
        str, typer.Option(help="`flops` from a timed transformers decoder layer (layer) or its matmuls only (matmul).")
    ] = "layer",
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's choice).")] = None,
    peer: Annotated[str | None, typer.Option(help="HOST:PORT of a `coldpipe profile --listen` peer.")] = None,
    listen: Annotated[str | None, typer.Option(help="Serve link measurements on HOST:PORT and exit.")] = None,
    sessions: Annotated[int, typer.Option(help="With --listen: clients to answer before exiting.")] = 1,
    link_size: Annotated[str, typer.Option(help="Bytes sent each way when measuring a link.")] = "64 MiB",
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes, few repeats: a few seconds (CI).")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", "-j", help="Print JSON: the entry and how it was measured.")
    ] = False,
) -> None:
    """Measure compute, memory and storage rates, free memory and start-up time; print a device entry (YAML)."""
    if listen is not None:
        host, port = link.parse_host_port(listen, "--listen")
        if sessions < 1:
            raise InputError("--sessions", f"must be >= 1, got {sessions}")
        link.serve(host, port, sessions=sessions, on_ready=lambda p: _err.print(f"listening on {host}:{p}"))
        return
    if tokens < 1:
        raise InputError("--tokens", f"must be >= 1, got {tokens}")
    measure.decoder_layer_architecture(hidden)  # checks --hidden before anything is measured
    if flops_from not in ("layer", "matmul"):
        raise InputError("--flops-from", f"unknown source {flops_from!r}", "use layer or matmul")
    if threads is not None:
        if threads < 1:
            raise InputError("--threads", f"must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    peer_addr = link.parse_host_port(peer, "--peer") if peer is not None else None
    if not Path(path).exists():  # fail before minutes of measuring, not after
        raise InputError("--path", f"{path!r} does not exist", "give a directory on the disk to test, or a big file")
    size = _size("32 MiB" if quick and file_size == "2 GiB" else file_size, "--file-size")
    lsize = _size("8 MiB" if quick and link_size == "64 MiB" else link_size, "--link-size")
    if quick:
        hidden, tokens = min(hidden, 512), min(tokens, 128)
    reps = 2 if quick else 5
    with _progress() as step:
        matmul = measure.measure_matmul_flops(
            dtype=dtype, hidden=hidden, tokens=tokens, repeats=reps, tick=step("compute (matmuls)")
        )
        layer = None
        if flops_from == "layer" and not quick:
            layer = measure.measure_decoder_layer(
                dtype=dtype, hidden=hidden, tokens=tokens, repeats=3, tick=step("compute (decoder layer)")
            )
        mem_bw = measure.measure_mem_bandwidth(
            size_bytes=(32 if quick else 256) * 2**20, repeats=reps, tick=step("memory bandwidth")
        )
        storage = measure.measure_storage_read(path, size_bytes=size, direct=direct, tick=step("storage read (cold)"))
        memory = measure.available_memory_bytes()
        startup = measure.measure_startup(
            code=measure.STARTUP_QUICK if quick else measure.STARTUP_FULL,
            repeats=1 if quick else 3,
            tick=step("start-up + imports"),
        )
        links = {}
        if peer_addr is not None:
            links = link.measure_link(*peer_addr, size_bytes=lsize, tick=step(f"link to {peer}"))
    notes = []
    if layer is not None:  # a real block is what the planner's `flops` must predict (docs/profiling.md)
        flops = layer
        notes.append(
            f"matmuls only: {matmul.value / 1e9:.1f} GFLOP/s ({matmul.how}); "
            f"the layer reaches {100 * layer.value / matmul.value:.0f}% of it"
        )
    else:
        flops = matmul
        if quick:
            notes.append("--quick: small matmuls, few repeats; rerun without --quick for planning figures")
    prof = measure.Profile(
        name=name or socket.gethostname() or "this-machine",
        flops=flops,
        mem_bandwidth=mem_bw,
        load_bandwidth=storage,
        memory=memory,
        startup=startup,
        link=links,
        notes=notes,
    )
    if json_out:
        how = {k: m.how for k, m in (("flops", flops), ("load_bandwidth", storage), ("memory", memory))}
        how |= {"startup": startup.how, "mem_bandwidth": mem_bw.how} | {k: m.how for k, m in links.items()}
        extra = {"matmul_flops": matmul.value, "rtt": links["rtt"].value if links else None}
        print(json.dumps({"device": prof.device_entry(), "how": how, **extra}, indent=2))
        return
    print(entry_yaml(prof), end="")
    if links:
        _err.print(
            f"link: up {format_rate(links['uplink'].value)}, down {format_rate(links['downlink'].value)}, "
            f"rtt {links['rtt'].value * 1e3:.2f} ms"
        )


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_command)
