"""``coldpipe scenario random``: write a random scenario of catalog devices around one AP (for experiments)."""

from __future__ import annotations

import math
import random
from typing import Annotated, Any

import typer
import yaml

from coldpipe.atomic import write_text_atomic
from coldpipe.core.architectures import CATALOG
from coldpipe.errors import InputError
from coldpipe.profiler.catalog import load_catalog
from coldpipe.scenario_file import scenario_from_dict

scenario_app = typer.Typer(help="Make scenario files.", no_args_is_help=True)


def parse_mix(text: str) -> dict[str, float]:
    """``"jetson-orin-nx:2,raspberry-pi-5-nvme:1"`` -> weights; ``"all"`` -> every catalog device, weight 1.

    >>> parse_mix("jetson-orin-nx:2, raspberry-pi-5-sd")
    {'jetson-orin-nx': 2.0, 'raspberry-pi-5-sd': 1.0}
    """
    cat = load_catalog()
    if text.strip() == "all":
        return dict.fromkeys(cat, 1.0)
    out: dict[str, float] = {}
    for part in text.split(","):
        key, _, weight = part.strip().partition(":")
        if key not in cat:
            raise InputError("--catalog-mix", f"unknown catalog device {key!r}", f"known: {', '.join(cat)}")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise InputError("--catalog-mix", f"weight {weight!r} of {key!r} is no number", "NAME:WEIGHT") from None
        if not (w > 0 and math.isfinite(w)):
            raise InputError("--catalog-mix", f"weight of {key!r} must be > 0, got {weight!r}")
        out[key] = out.get(key, 0.0) + w
    return out


def random_scenario(
    *,
    n_devices: int,
    mix: dict[str, float],
    radius_m: float,
    seed: int,
    model: str = "llama-3.2-3b",
    prompt_tokens: int = 512,
    bandwidth_hz: float = 80e6,
    sharing: str = "fdma",
    path_loss_exponent: float = 3.0,
    hop_latency_s: float = 0.002,
) -> dict[str, Any]:
    """A scenario document: devices drawn from ``mix``, placed uniformly at random in a disc of ``radius_m``."""
    if n_devices < 1:
        raise InputError("--devices", f"must be >= 1, got {n_devices}")
    if not (radius_m >= 1.0 and math.isfinite(radius_m)):
        raise InputError("--radius-m", f"must be >= 1 m, got {radius_m}")
    if model not in CATALOG:
        raise InputError("--model", f"unknown model {model!r}", f"known: {', '.join(sorted(CATALOG))}")
    rng = random.Random(seed)
    keys = sorted(mix)
    weights = [mix[k] for k in keys]
    devices = []
    for i in range(n_devices):
        key = rng.choices(keys, weights)[0]
        distance = max(1.0, radius_m * math.sqrt(rng.random()))  # uniform over the disc's area
        devices.append({"catalog": key, "name": f"{key}-{i}", "radio": {"distance_m": round(distance, 2)}})
    return {
        "source": "ap",
        "network": {
            "hop_latency": hop_latency_s,
            "bandwidth_hz": bandwidth_hz,
            "path_loss_exponent": path_loss_exponent,
            "sharing": sharing,
        },
        "workload": {"prompt_tokens": prompt_tokens, "new_tokens": 1},
        "model": {"catalog": model},
        "devices": devices,
    }


@scenario_app.command("random")
def random_command(
    devices: Annotated[int, typer.Option(help="Number of devices.")] = 4,
    catalog_mix: Annotated[str, typer.Option(help="NAME:WEIGHT,... of catalog devices, or 'all'.")] = "all",
    radius_m: Annotated[float, typer.Option(help="Devices are placed uniformly in a disc of this radius (m).")] = 30.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same scenario).")] = 0,
    model: Annotated[str, typer.Option(help="Catalog model.")] = "llama-3.2-3b",
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length.")] = 512,
    bandwidth: Annotated[str, typer.Option(help="AP channel bandwidth.")] = "80 MHz",
    sharing: Annotated[str, typer.Option(help="fdma | tdma.")] = "fdma",
    out: Annotated[str | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Write a scenario of random catalog devices at random distances from one AP."""
    from coldpipe.units import parse_quantity

    try:
        bw = parse_quantity(bandwidth, "hertz")
    except ValueError as exc:
        raise InputError("--bandwidth", str(exc)) from None
    if sharing not in ("fdma", "tdma"):
        raise InputError("--sharing", f"unknown scheme {sharing!r}", "use fdma or tdma")
    doc = random_scenario(
        n_devices=devices,
        mix=parse_mix(catalog_mix),
        radius_m=radius_m,
        seed=seed,
        model=model,
        prompt_tokens=prompt_tokens,
        bandwidth_hz=bw,
        sharing=sharing,
    )
    scenario_from_dict(doc)  # never write a scenario that does not load
    header = (
        f"# coldpipe scenario random --devices {devices} --catalog-mix {catalog_mix} --radius-m {radius_m} "
        f"--seed {seed} --model {model}\n"
    )
    text = header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)
    if out is None:
        print(text, end="")
        return
    write_text_atomic(out, text)


def register(app: typer.Typer) -> None:
    app.add_typer(scenario_app, name="scenario")
