"""``coldpipe catalog models|devices``: what a scenario may name with ``catalog:``, and where each figure comes from."""

from __future__ import annotations

from typing import Annotated

import typer

from coldpipe.cli._common import JsonFlag, console, is_narrow, new_table, print_json
from coldpipe.core.architectures import CATALOG, DTYPE_BYTES
from coldpipe.errors import InputError
from coldpipe.units import format_bytes

catalog_app = typer.Typer(
    help="List the built-in model and device catalogs (scenario files name them with 'catalog:').",
    no_args_is_help=True,
)


@catalog_app.command("models")
def models_command(
    json_out: JsonFlag = False,
    sources: Annotated[bool, typer.Option("--sources", "-s", help="Add the source of each model's figures.")] = False,
) -> None:
    """The catalog models (scenario: model: {catalog: NAME, dtype: ...}), their sizes and sources."""
    rows = []
    for name in sorted(CATALOG):
        a = CATALOG[name]
        rows.append(
            {
                "name": name,
                "model_type": a.model_type,
                "layers": a.num_hidden_layers,
                "blocks": a.num_hidden_layers + 2,
                "hidden_size": a.hidden_size,
                "params": a.n_params,
                "bfloat16_bytes": a.n_params * DTYPE_BYTES["bfloat16"],
                "source": a.source,
            }
        )
    if json_out:
        print_json({"models": rows, "dtypes": DTYPE_BYTES})
        return
    table = new_table("catalog models (model: {catalog: NAME, dtype: DTYPE})")
    for col in ("name", "type", "layers", "hidden", "params", "bfloat16"):
        table.add_column(col, justify="left" if col in ("name", "type") else "right", no_wrap=col == "name")
    if sources:
        table.add_column("source", ratio=1)
    for r in rows:
        cells = [r["name"], r["model_type"], str(r["layers"]), str(r["hidden_size"]), f"{r['params'] / 1e9:.2f} B",
                 format_bytes(r["bfloat16_bytes"])]  # fmt: skip
        table.add_row(*cells, *([r["source"]] if sources else []))
    console.print(table)
    console.print(f"dtypes (bytes per weight): {', '.join(f'{k} {v:.4g}' for k, v in DTYPE_BYTES.items())}")
    if not sources:
        console.print("sources: coldpipe catalog models --sources")


@catalog_app.command("devices")
def devices_command(
    json_out: JsonFlag = False,
    sources: Annotated[bool, typer.Option("--sources", "-s", help="Add the source of every figure.")] = False,
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="Show one device with every source.")] = None,
) -> None:
    """The catalog devices (scenario: devices: [{catalog: NAME, name: ..., ...}]), their figures and sources."""
    from coldpipe.profiler.catalog import load_catalog

    cat = load_catalog()
    if name is not None and name not in cat:
        raise InputError("NAME", f"unknown catalog device {name!r}", f"known: {', '.join(cat)}")
    keys = [name] if name is not None else list(cat)
    if json_out:
        print_json(
            {
                "devices": [
                    {
                        "name": k,
                        "description": cat[k].description,
                        "sustained_flops": cat[k].peak_flops * cat[k].efficiency,
                        "figures": {f: {"value": v.value, "source": v.source} for f, v in cat[k].figures.items()},
                    }
                    for k in keys
                ]
            }
        )
        return
    table = new_table(f"catalog devices ({len(cat)}; devices: [{{catalog: NAME, name: ...}}]; sustained FLOP/s)")
    for col in ("name", "TFLOP/s", "load GB/s", "startup s", "memory GB", "DRAM GB/s"):
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=col == "name")
    if not is_narrow():
        table.add_column("description", ratio=1)
    for k in keys:
        e = cat[k]
        table.add_row(
            k,
            f"{e.peak_flops * e.efficiency / 1e12:.3g}",
            f"{e.value('load_bandwidth') / 1e9:.3g}",
            f"{e.value('startup'):.3g}",
            f"{e.value('memory') / 1e9:.3g}",
            f"{e.value('mem_bandwidth') / 1e9:.3g}",
            *([] if is_narrow() else [e.description]),
        )
    console.print(table)
    if sources or name is not None:
        for k in keys:
            console.print(f"[bold]{k}[/bold]: {cat[k].description}")
            for f, v in cat[k].figures.items():
                console.print(f"  {f}: {v.source}", markup=False)
    else:
        console.print("sources of every figure: coldpipe catalog devices --sources (or: coldpipe catalog devices NAME)")


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")
