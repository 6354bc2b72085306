"""``coldpipe model-info``: the block table of a model (bytes, FLOPs at a prompt length, KV bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coldpipe.cli._common import DEMO_SCENARIO, console, print_json, scenario_arg
from coldpipe.core.architectures import CATALOG, DTYPE_BYTES, architecture_from_hf_config, blocks_for
from coldpipe.core.types import Block
from coldpipe.errors import InputError
from coldpipe.gguf_files import is_gguf_file
from coldpipe.scenario_file import read_structured_file
from coldpipe.units import format_bytes


def model_blocks(
    target: str | None,
    *,
    catalog: str | None,
    checkpoint: str | None,
    hf_config: str | None,
    prompt_tokens: int,
    new_tokens: int,
    dtype: str | None,
    gguf: str | None = None,
) -> tuple[str, tuple[Block, ...], str]:
    """(model name, blocks, where they come from) for exactly one of the five ways to name a model."""
    given = [k for k, v in (("SCENARIO_OR_MODEL", target), ("--catalog", catalog), ("--checkpoint", checkpoint),
                            ("--gguf", gguf), ("--hf-config", hf_config)) if v is not None]  # fmt: skip
    if len(given) != 1:
        raise InputError(
            "model-info",
            "give exactly one of SCENARIO_OR_MODEL, --catalog, --checkpoint, --gguf, --hf-config "
            f"(got {given or 'none'})",
        )
    if prompt_tokens < 1 or new_tokens < 1:
        raise InputError("--prompt-tokens", "prompt and new tokens must be >= 1")
    if dtype is not None and dtype not in DTYPE_BYTES:
        raise InputError("--dtype", f"unknown dtype {dtype!r}", f"use one of {list(DTYPE_BYTES)}")
    if target is not None:  # a catalog model name, a checkpoint directory, a GGUF file, or a scenario file
        p = Path(target)
        by_lower = {k.lower(): k for k in CATALOG}
        if target.lower() in by_lower and not p.exists():  # model names are read whatever their case
            catalog = by_lower[target.lower()]
        elif not p.exists() and target != DEMO_SCENARIO and not any(c in target for c in "/\\."):
            close = [k for k in CATALOG if target.lower().split("-")[0] in k]
            raise InputError(
                "SCENARIO|MODEL",
                f"{target!r} is neither a file nor a catalog model",
                f"catalog models: {', '.join(close or sorted(CATALOG))} (coldpipe catalog models)",
            )
        elif p.is_dir():
            checkpoint = target
        elif is_gguf_file(p):
            gguf = target
        else:
            sc = scenario_arg(target)
            return sc.model_name, sc.blocks, f"scenario {target} (its own workload: {sc.workload.prompt_tokens} tokens)"
    if checkpoint is not None:
        from coldpipe.profiler.checkpoint import profile_checkpoint

        prof = profile_checkpoint(
            checkpoint, prompt_tokens=prompt_tokens, new_tokens=new_tokens, dtype=dtype, field="--checkpoint"
        )
        return prof.name, prof.blocks, f"checkpoint {checkpoint}: {len(prof.tensors)} tensors, exact bytes"
    if gguf is not None:
        from coldpipe.profiler.gguf_model import profile_gguf

        gp = profile_gguf(
            gguf, prompt_tokens=prompt_tokens, new_tokens=new_tokens, dtype=dtype, field="--gguf", dtype_field="--dtype"
        )
        types = ", ".join(f"{k} {format_bytes(v)}" for k, v in gp.bytes_by_type().items())
        parts = f" in {len(gp.file.files)} parts" if len(gp.file.files) > 1 else ""
        return (
            gp.name,
            gp.blocks,
            f"gguf {gguf}{parts}: {gp.architecture.model_type}, {len(gp.file.tensors)} tensors ({types}), exact "
            f"bytes; activations and KV {gp.dtype}",
        )
    if catalog is not None:
        if catalog not in CATALOG:
            raise InputError("--catalog", f"unknown model {catalog!r}", f"known: {', '.join(sorted(CATALOG))}")
        arch, name, src = CATALOG[catalog], catalog, f"catalog {catalog} ({CATALOG[catalog].source})"
    else:
        assert hf_config is not None
        cfg_path = Path(hf_config)
        if cfg_path.is_dir():
            cfg_path = cfg_path / "config.json"
        cfg = read_structured_file(cfg_path, "--hf-config")
        if not isinstance(cfg, dict):
            raise InputError("--hf-config", f"{str(cfg_path)!r} does not hold a JSON object")
        arch, name, src = architecture_from_hf_config(cfg, where="--hf-config"), cfg_path.parent.name, str(cfg_path)
    blocks = blocks_for(arch, prompt_tokens=prompt_tokens, new_tokens=new_tokens, dtype=dtype or "bfloat16")
    return name, blocks, f"{src}, {dtype or 'bfloat16'}"


def model_info_command(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="SCENARIO|MODEL",
            help="A scenario file, a catalog model (coldpipe catalog models), a checkpoint directory or a GGUF file.",
        ),
    ] = None,
    catalog: Annotated[str | None, typer.Option(help="A model of the built-in catalog, e.g. llama-3.2-1b.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="A checkpoint directory (config.json + safetensors).")] = None,
    gguf: Annotated[str | None, typer.Option(help="A GGUF file (llama.cpp's format; the first part if split).")] = None,
    hf_config: Annotated[str | None, typer.Option(help="A Hugging Face config.json (or its directory).")] = None,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length for FLOPs, activations and KV.")] = 512,
    new_tokens: Annotated[int, typer.Option(help="Generated tokens (KV cache size).")] = 1,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Weight dtype (catalog/config; default bfloat16, or q4_k_m, q8_0, ...) or activation dtype "
            "(checkpoint; GGUF: default float16)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", "-j", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the block table: weight bytes, prefill FLOPs, activation out bytes and KV bytes of every block."""
    name, blocks, src = model_blocks(
        target,
        catalog=catalog,
        checkpoint=checkpoint,
        hf_config=hf_config,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        dtype=dtype,
        gguf=gguf,
    )
    totals = {
        "weight_bytes": sum(b.weight_bytes for b in blocks),
        "flops": sum(b.flops for b in blocks),
        "kv_bytes": sum(b.kv_bytes for b in blocks),
    }
    if json_out:
        rows = [
            {"block": i, "name": b.name, "weight_bytes": b.weight_bytes, "flops": b.flops, "out_bytes": b.out_bytes,
             "kv_bytes": b.kv_bytes}
            for i, b in enumerate(blocks)
        ]  # fmt: skip
        print_json({"model": name, "source": src, "blocks": rows, "totals": totals})
        return
    table = Table(title=f"{name}: {len(blocks)} blocks  ({src})", title_justify="left")
    for col in ("#", "block", "weights", "weight bytes", "prefill GFLOP", "out", "KV"):
        table.add_column(col, justify="left" if col == "block" else "right")
    for i, b in enumerate(blocks):
        table.add_row(
            str(i),
            b.name,
            format_bytes(b.weight_bytes),
            f"{b.weight_bytes:.0f}",
            f"{b.flops / 1e9:.3f}",
            format_bytes(b.out_bytes),
            format_bytes(b.kv_bytes),
        )
    table.add_row(
        "",
        "total",
        format_bytes(totals["weight_bytes"]),
        f"{totals['weight_bytes']:.0f}",
        f"{totals['flops'] / 1e9:.3f}",
        "",
        format_bytes(totals["kv_bytes"]),
    )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("model-info")(model_info_command)
