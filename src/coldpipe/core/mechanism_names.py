"""The names a scenario uses for mechanisms, weight sources and channel sharing, and their checks.

Kept out of ``core/types.py`` (its size limit); ``types`` re-exports :data:`MECHANISMS` and
:func:`parse_mechanisms`. Nothing here imports ``types``: the checks take plain values.

>>> sorted(parse_mechanisms("all"))
['reuse', 'sharded-head', 'sparse-embedding', 'streamed-weights', 'sublayer']
>>> parse_mechanisms("sparse-embedding")
frozenset({'sparse-embedding'})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, Protocol

from coldpipe.errors import InputError

__all__ = [
    "LOCAL",
    "MECHANISMS",
    "SHARINGS",
    "check_sharing",
    "check_weight_sources",
    "check_weights",
    "device_dict",
    "network_dict",
    "parse_mechanisms",
]

MECHANISMS: tuple[str, ...] = ("sparse-embedding", "sharded-head", "reuse", "sublayer", "streamed-weights")
"""Cold-start mechanisms beyond the paper's model, each off by default (docs/model.md#mechanisms)."""

LOCAL = "local"
"""``devices[].weights`` of a device that reads its weights from its own storage (the default)."""

SHARINGS: tuple[str, ...] = ("none", "tdma", "fdma")
"""``network.sharing`` as the streamed-weights timeline uses it (docs/model.md#streamed-weights): ``none`` (the
paper's: no transfer ever waits for another), ``tdma`` (one channel: one transfer hop at a time), ``fdma`` (each
device's link its own: the hops that use one device's link one at a time)."""


def parse_mechanisms(text: str) -> frozenset[str]:
    """``"all"``, ``""``/``"none"`` or a comma-separated list of :data:`MECHANISMS`."""
    text = text.strip()
    if text in ("", "none"):
        return frozenset()
    if text == "all":
        return frozenset(MECHANISMS)
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(MECHANISMS))
    if unknown:
        raise InputError("--mechanisms", f"unknown mechanism(s) {unknown}", f"use 'all' or some of {list(MECHANISMS)}")
    return names


def check_weights(owner: str, value: object) -> None:
    """``devices[].weights`` is ``local``, ``ap`` or a device name (checked against the devices later)."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{owner}.weights", f"must be 'local', 'ap' or a device name, got {value!r}")


def check_sharing(value: object) -> None:
    if value not in SHARINGS:
        raise InputError("network.sharing", f"unknown sharing {value!r}", f"use one of {list(SHARINGS)}")


class _Named(Protocol):
    name: str
    weights: str


def check_weight_sources(devices: Iterable[_Named]) -> None:
    """Every ``weights`` names ``local``, ``ap`` or another device that reads its own (local) weights."""
    by_name = {d.name: d for d in devices}
    for d in by_name.values():
        w = d.weights
        if w in (LOCAL, "ap"):
            continue
        field = f"device {d.name!r}.weights"
        if w == d.name:
            raise InputError(field, "names the device itself", "use 'local' for the device's own storage")
        if w not in by_name:
            raise InputError(field, f"{w!r} is neither 'local', 'ap' nor a device", f"use one of {sorted(by_name)}")
        if by_name[w].weights != LOCAL:
            problem = f"peer {w!r} does not hold the weights itself (its weights: {by_name[w].weights!r})"
            raise InputError(field, problem, "a peer source must have weights: local")


def device_dict(device: Any) -> dict[str, Any]:
    """A device as the scenario file writes it (``weights`` only when not local)."""
    out = asdict(device)
    if out.get("weights") == LOCAL:
        del out["weights"]
    return out


def network_dict(network: Any) -> dict[str, Any]:
    """The network as the scenario file writes it (``sharing`` only when not ``none``)."""
    out = asdict(network)
    if out.get("sharing") == "none":
        del out["sharing"]
    return out
