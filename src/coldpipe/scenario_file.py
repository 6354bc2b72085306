"""Scenario files (YAML or JSON) validated into :class:`coldpipe.core.types.Scenario`.

The field names are a public contract (see ``docs/scenario.md``)::

    source: ap                      # "ap" or a device name
    network: {hop_latency: 3 ms}
    workload: {prompt_tokens: 512, new_tokens: 1, prompt_bytes: 2048, token_bytes: 4}
    model: {catalog: llama-3.1-8b, dtype: bfloat16}   # or {hf_config: config.json} or {blocks: [...]}
    devices:
      - {name: orin-agx, flops: 20 TFLOPS, load_bandwidth: 2 GB/s, startup: 300 ms,
         memory: 24 GiB, uplink: 400 Mbit/s, downlink: 600 Mbit/s}

Extensions (docs/devices.md, docs/channel.md):

- ``model: {checkpoint: DIR}`` reads ``DIR/config.json`` and the safetensors headers: exact bytes per block;
- ``model: {gguf: FILE}`` reads a llama.cpp GGUF file's header: the architecture and exact bytes per block
  (``dtype`` is then the activation and KV-cache dtype, float16 by default);
- a device ``{catalog: jetson-orin-nx, name: cam-3, ...}`` starts from the bundled device catalog and
  overrides what it gives (``efficiency`` scales the catalog's peak FLOP/s);
- a device ``radio: {distance_m: 12, tx_power_dbm: 20}`` instead of ``uplink``/``downlink``: its rates
  follow Shannon's formula on the path loss of the AP described in ``network`` (``bandwidth_hz``,
  ``noise_psd_dbm_hz``, ``path_loss_model``, ``path_loss_exponent``, ``reference_loss_db``,
  ``ap_tx_power_dbm``, ``sharing: fdma | tdma``), computed when the file is loaded.

Plain numbers are SI base units; strings may carry units. Every error names the field by its path
(``devices[2].uplink``) and says how to fix it; the CLI prints it on one line and exits with 2.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from coldpipe.core.architectures import CATALOG, DTYPE_BYTES, architecture_from_hf_config, blocks_for
from coldpipe.core.channel import AccessPoint, PathLoss, Radio, free_space_loss_db, link_rates
from coldpipe.core.limits import (
    MAX_BLOCKS,
    MAX_DEVICES,
    MAX_NEW_TOKENS,
    MAX_PROMPT_TOKENS,
    MAX_REQUESTS,
    MAX_SECONDS,
    MAX_TOKEN_WORK,
    cut,
)
from coldpipe.core.types import AP, Block, Device, Network, Scenario, Workload
from coldpipe.errors import ColdpipeError, InputError
from coldpipe.profiler.catalog import catalog_device_fields, load_catalog
from coldpipe.structured_file import read_structured_file
from coldpipe.units import Kind, parse_quantity

__all__ = ["load_scenario", "read_structured_file", "scenario_from_dict", "with_radio_distance"]


def _unit(kind: Kind) -> BeforeValidator:
    return BeforeValidator(lambda v: parse_quantity(v, kind))


def _describe(v: object) -> str:
    """A short description of an input value (never its whole repr)."""
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, (int, float)):
        return cut(repr(v), 40)
    if isinstance(v, str):
        return f"the string {cut(repr(v), 60)}"
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)} items"
    if isinstance(v, dict):
        return f"a mapping of {len(v)} keys"
    return "null" if v is None else f"a {type(v).__name__}"


def _strict_int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"must be an integer, got {_describe(v)}")
    return v


def _strict_real(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a number, got {_describe(v)}")
    return float(v)


Int = Annotated[int, BeforeValidator(_strict_int)]
Real = Annotated[float, BeforeValidator(_strict_real), Field(allow_inf_nan=False)]


Bytes = Annotated[float, _unit("bytes"), Field(ge=0)]
PositiveBytes = Annotated[float, _unit("bytes"), Field(gt=0)]
ByteRate = Annotated[float, _unit("byte_rate"), Field(gt=0)]
BitRate = Annotated[float, _unit("bit_rate"), Field(gt=0)]
FlopRate = Annotated[float, _unit("flop_rate"), Field(gt=0)]
Flops = Annotated[float, _unit("count"), Field(ge=0)]
Seconds = Annotated[float, _unit("seconds"), Field(ge=0)]
Hertz = Annotated[float, _unit("hertz"), Field(gt=0)]
Decibel = Annotated[Real, Field(allow_inf_nan=False)]
Meters = Annotated[Real, Field(gt=0, allow_inf_nan=False)]


class _FieldError(ValueError):
    """A model-level check that names the sub-field it is about (``_first_error`` appends it to the path)."""

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(problem)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkSpec(_Strict):
    hop_latency: Seconds = 0.0
    # the access point's radio channel, used by devices that give `radio` (docs/channel.md)
    bandwidth_hz: Hertz | None = None
    noise_psd_dbm_hz: Decibel = -174.0
    carrier_hz: Hertz = 5.0e9
    path_loss_model: Literal["log-distance", "free-space"] = "log-distance"
    path_loss_exponent: Real = Field(default=3.0, gt=0)
    reference_distance_m: Meters = 1.0
    reference_loss_db: Decibel | None = None  # default: free-space loss at reference_distance_m, carrier_hz
    ap_tx_power_dbm: Decibel = 20.0
    # how the band is shared (radio rates: tdma, else fdma); with streamed-weights also how transfers contend
    # (docs/model.md#streamed-weights; not given: none, the paper's model)
    sharing: Literal["none", "fdma", "tdma"] | None = None

    @model_validator(mode="after")
    def _free_space(self) -> NetworkSpec:
        if self.path_loss_model == "free-space":
            for key in ("path_loss_exponent", "reference_loss_db"):
                if key in self.model_fields_set:
                    raise _FieldError(key, "is fixed by path_loss_model free-space", "drop it or use log-distance")
        return self

    def access_point(self) -> AccessPoint:
        assert self.bandwidth_hz is not None
        d0 = self.reference_distance_m
        if self.path_loss_model == "free-space":
            pl = PathLoss(2.0, free_space_loss_db(d0, self.carrier_hz), d0)
        else:
            ref = self.reference_loss_db
            pl = PathLoss(self.path_loss_exponent, free_space_loss_db(d0, self.carrier_hz) if ref is None else ref, d0)
        return AccessPoint(
            self.bandwidth_hz,
            pl,
            self.noise_psd_dbm_hz,
            self.ap_tx_power_dbm,
            "tdma" if self.sharing == "tdma" else "fdma",
        )


class WorkloadSpec(_Strict):
    prompt_tokens: Int = Field(ge=1, le=MAX_PROMPT_TOKENS)
    new_tokens: Int = Field(default=1, ge=1, le=MAX_NEW_TOKENS)
    prompt_bytes: Bytes | None = None
    token_bytes: Bytes = 4.0
    requests: Int = Field(default=1, ge=1, le=MAX_REQUESTS)  # a burst of identical requests arriving together
    completion: Literal["max", "mean"] = "max"  # what a burst minimises: the last or the mean first token

    @model_validator(mode="after")
    def _bounded_work(self) -> WorkloadSpec:
        if self.requests * self.new_tokens > MAX_TOKEN_WORK:
            raise _FieldError(
                "new_tokens",
                f"{self.requests} requests x {self.new_tokens} new tokens = {self.requests * self.new_tokens} "
                f"decode steps, more than the {MAX_TOKEN_WORK} coldpipe simulates",
                "fewer requests or tokens (docs/reliability.md#limits)",
            )
        return self


class BlockSpec(_Strict):
    name: str
    weight_bytes: Bytes
    flops: Flops
    out_bytes: Bytes
    kv_bytes: Bytes = 0.0
    decode_flops: Flops | None = None
    decode_out_bytes: Bytes | None = None
    vocab_rows: int | None = None
    vocab_row_bytes: Bytes | None = None
    attn_weight_bytes: Bytes | None = None
    attn_flops: Flops | None = None
    attn_decode_flops: Flops | None = None


_MODEL_SOURCES = ("catalog", "hf_config", "checkpoint", "gguf", "blocks")


class ModelSpec(_Strict):
    catalog: str | None = None
    hf_config: str | None = None
    checkpoint: str | None = None
    gguf: str | None = None
    blocks: list[BlockSpec] | None = Field(default=None, max_length=MAX_BLOCKS)
    name: str | None = None
    dtype: str = "bfloat16"  # a key of DTYPE_BYTES (the activation dtype for checkpoint and gguf models)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in _MODEL_SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_MODEL_SOURCES)} (got {given or 'none'})")
        if self.dtype not in DTYPE_BYTES:
            raise _FieldError("dtype", f"unknown dtype {self.dtype!r}", f"use one of {', '.join(DTYPE_BYTES)}")
        if self.catalog is not None and self.catalog not in CATALOG:
            raise ValueError(f"unknown catalog model {self.catalog!r}; known: {', '.join(sorted(CATALOG))}")
        if self.blocks is not None and not self.blocks:
            raise ValueError("blocks is empty; give at least one block")
        return self


class RadioSpec(_Strict):
    distance_m: Meters
    tx_power_dbm: Decibel = 20.0
    antenna_gain_db: Decibel = 0.0

    def radio(self) -> Radio:
        return Radio(self.distance_m, self.tx_power_dbm, self.antenna_gain_db)


class DeviceSpec(_Strict):
    """A device: every field given, or ``catalog`` plus overrides; ``radio`` or ``uplink`` + ``downlink``."""

    name: str = Field(min_length=1)
    catalog: str | None = None
    flops: FlopRate | None = None
    efficiency: Real | None = Field(default=None, gt=0, le=1)
    load_bandwidth: ByteRate | None = None
    startup: Seconds | None = None
    memory: PositiveBytes | None = None
    uplink: BitRate | None = None
    downlink: BitRate | None = None
    mem_bandwidth: ByteRate | None = None
    radio: RadioSpec | None = None
    resident: list[tuple[Annotated[Int, Field(ge=0)], Annotated[Int, Field(ge=0)]]] = Field(
        default_factory=list, max_length=MAX_BLOCKS
    )
    weights: str = Field(default="local", min_length=1)  # streamed-weights: local, ap or a peer (docs/model.md)

    @model_validator(mode="after")
    def _complete(self) -> DeviceSpec:
        if self.catalog is not None:
            known = load_catalog()
            if self.catalog not in known:
                raise _FieldError("catalog", f"unknown catalog device {self.catalog!r}", f"known: {', '.join(known)}")
            if self.flops is not None and self.efficiency is not None:
                raise _FieldError("efficiency", "give flops or efficiency, not both", "flops overrides the catalog's")
        else:
            if self.efficiency is not None:
                raise _FieldError("efficiency", "only applies to a catalog device", "give flops directly")
            for key in ("flops", "load_bandwidth", "memory"):
                if getattr(self, key) is None:
                    raise _FieldError(key, "is required", "add it to the scenario, or start from catalog: NAME")
        if self.radio is not None:
            if self.uplink is not None or self.downlink is not None:
                raise _FieldError("radio", "give radio or uplink/downlink, not both")
        else:
            for key in ("uplink", "downlink"):
                if getattr(self, key) is None:
                    raise _FieldError(key, "is required", "add it to the scenario, or give radio: {distance_m: ...}")
        return self

    def fields(self) -> dict[str, Any]:
        """Device fields without the link rates: the catalog's, overridden by what the file gives."""
        base: dict[str, Any] = {"startup": 0.0, "mem_bandwidth": None}
        if self.catalog is not None:
            base.update(catalog_device_fields(self.catalog, self.efficiency))
        for key in ("flops", "load_bandwidth", "startup", "memory", "mem_bandwidth"):
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)
        base["resident"] = tuple(self.resident)
        base["weights"] = self.weights
        return {"name": self.name, **base}


class ScenarioSpec(_Strict):
    source: str = AP
    network: NetworkSpec = NetworkSpec()
    workload: WorkloadSpec
    model: ModelSpec
    devices: list[DeviceSpec] = Field(min_length=1, max_length=MAX_DEVICES)


def _loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("constrained-float",):
            continue
        else:
            out += ("." if out else "") + part
    return out


_TYPE_WORDS = {
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def _in_our_words(err: Any) -> tuple[str, str]:
    """(problem, fix) of one pydantic error, in coldpipe's words, quoting the input only briefly."""
    kind, ctx, got = err["type"], err.get("ctx") or {}, _describe(err.get("input"))
    if kind == "missing":
        return "is required", "add it to the scenario"
    if kind == "extra_forbidden":
        return "is not a known field", "check its spelling in docs/scenario.md"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, got {got}", "see docs/scenario.md"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        fix = "coldpipe's limit, docs/reliability.md#limits" if kind.startswith("less") else ""
        return f"must be {bounds[kind]} {limit}, got {got}", fix
    if kind == "too_long":
        return (
            f"has {ctx.get('actual_length', 'too many')} items, more than the {ctx.get('max_length')} allowed",
            "coldpipe's limit, docs/reliability.md#limits",
        )
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length', 1)} item(s), got {got}", ""
    if kind == "string_too_short":
        return "must not be empty", ""
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '?')}, got {got}", ""
    if kind == "finite_number":
        return f"must be a finite number, got {got}", ""
    return cut(str(err["msg"]).removeprefix("Value error, "), 300), ""


def _first_error(exc: ValidationError) -> InputError:
    errors = exc.errors(include_url=False)
    err = errors[0]
    field = _loc(tuple(err["loc"]))
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        field = f"{field}.{cause.field}" if field else cause.field
        msg, fix = cause.problem, cause.fix
    else:
        msg, fix = _in_our_words(err)
    more = len(errors) - 1
    if more:
        fix = (fix + "; " if fix else "") + f"{more} more error{'s' if more > 1 else ''} after this one"
    return InputError(field, msg, fix)


def _blocks(spec: ModelSpec, wl: WorkloadSpec, base_dir: Path | None) -> tuple[tuple[Block, ...], str]:
    if spec.blocks is not None:
        return tuple(Block(**b.model_dump()) for b in spec.blocks), spec.name or "model"
    if spec.checkpoint is not None:
        from coldpipe.profiler.checkpoint import profile_checkpoint

        ckpt = Path(spec.checkpoint)
        if base_dir is not None and not ckpt.is_absolute():
            ckpt = base_dir / ckpt
        prof = profile_checkpoint(
            ckpt,
            prompt_tokens=wl.prompt_tokens,
            new_tokens=wl.new_tokens,
            dtype=spec.dtype if "dtype" in spec.model_fields_set else None,
            token_bytes=wl.token_bytes,
        )
        return prof.blocks, spec.name or prof.name
    if spec.gguf is not None:
        from coldpipe.profiler.gguf_model import profile_gguf

        path = Path(spec.gguf)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        gprof = profile_gguf(
            path,
            prompt_tokens=wl.prompt_tokens,
            new_tokens=wl.new_tokens,
            dtype=spec.dtype if "dtype" in spec.model_fields_set else None,
            token_bytes=wl.token_bytes,
        )
        return gprof.blocks, spec.name or gprof.name
    if spec.catalog is not None:
        arch, name = CATALOG[spec.catalog], spec.catalog
    else:
        assert spec.hf_config is not None
        cfg_path = Path(spec.hf_config)
        if base_dir is not None and not cfg_path.is_absolute():
            cfg_path = base_dir / cfg_path
        if cfg_path.is_dir():
            cfg_path = cfg_path / "config.json"
        cfg = read_structured_file(cfg_path, "model.hf_config")
        if not isinstance(cfg, dict):
            raise InputError("model.hf_config", f"{str(cfg_path)!r} does not hold a JSON object")
        arch, name = architecture_from_hf_config(cfg), spec.name or cfg_path.parent.name
    assert spec.dtype in DTYPE_BYTES
    blocks = blocks_for(
        arch,
        prompt_tokens=wl.prompt_tokens,
        new_tokens=wl.new_tokens,
        dtype=spec.dtype,
        token_bytes=wl.token_bytes,
    )
    return blocks, spec.name or name


def _devices(spec: ScenarioSpec) -> tuple[Device, ...]:
    """Core devices: catalog figures merged with overrides, radios turned into uplink/downlink bit/s.

    Every device with a ``radio`` shares the AP's channel (``fdma`` divides the band among them).
    """
    on_air = [i for i, d in enumerate(spec.devices) if d.radio is not None]
    rates: dict[int, tuple[float, float]] = {}
    if on_air:
        if spec.network.bandwidth_hz is None:
            first = spec.devices[on_air[0]].name
            raise InputError(
                "network.bandwidth_hz",
                f"is required: device {first!r} gives a radio",
                "describe the AP's channel, e.g. network: {bandwidth_hz: 80 MHz}",
            )
        ap = spec.network.access_point()
        radios = [spec.devices[i].radio.radio() for i in on_air]  # type: ignore[union-attr]
        rates = dict(zip(on_air, link_rates(ap, radios), strict=True))
    out = []
    for i, d in enumerate(spec.devices):
        up, down = rates.get(i, (d.uplink, d.downlink))
        if not (up and up > 0 and down and down > 0):
            raise InputError(
                f"devices[{i}].radio",
                f"the link of {d.name!r} has no capacity (uplink {up}, downlink {down} bit/s)",
                "move it closer or raise tx_power_dbm",
            )
        out.append(Device(**d.fields(), uplink=float(up), downlink=float(down)))
    return tuple(out)


def _check_times(blocks: tuple[Block, ...], devices: tuple[Device, ...], wl: WorkloadSpec, hop_s: float) -> None:
    """Every time the model can derive is at most MAX_SECONDS: no rate so small (or size so big) that a load,
    a computation or a transfer would take forever (an infinite time breaks every planner's arithmetic)."""
    n_tokens = wl.requests * (wl.prompt_tokens + wl.new_tokens)
    work = {
        "flops": sum(b.flops + (b.decode_flops or 0.0) * wl.new_tokens for b in blocks) * wl.requests,
        "load_bandwidth": sum(b.weight_bytes for b in blocks),
        "uplink": 8 * (max(b.out_bytes for b in blocks) + (wl.prompt_bytes or 0.0) + wl.token_bytes * n_tokens),
        "mem_bandwidth": sum(b.weight_bytes + b.kv_bytes for b in blocks) * wl.new_tokens * wl.requests,
    }
    work["downlink"] = work["uplink"]
    streamed = 8 * sum(b.weight_bytes for b in blocks)  # streamed-weights: the model over a link, at most
    peers = {d.weights for d in devices}
    for i, d in enumerate(devices):
        extra = {"downlink": streamed if d.weights != "local" else 0.0, "uplink": streamed if d.name in peers else 0.0}
        for key, amount in work.items():
            amount += extra.get(key, 0.0)
            rate = getattr(d, key)
            if rate is None:
                continue
            t = amount / rate if math.isfinite(amount) else math.inf
            if not t <= MAX_SECONDS:
                raise InputError(
                    f"devices[{i}].{key}",
                    f"{d.name!r} would take {t:.3g} s for this model and workload, more than the {MAX_SECONDS:.0e} s "
                    "coldpipe computes with",
                    "check the rate and the model's sizes (docs/reliability.md#limits)",
                )
        if not d.startup + hop_s <= MAX_SECONDS:
            raise InputError(f"devices[{i}].startup", f"is more than {MAX_SECONDS:.0e} s", "check the value")


def scenario_from_dict(data: Any, base_dir: Path | None = None) -> Scenario:
    """Validate a parsed scenario document; relative paths inside it are taken from ``base_dir``."""
    if not isinstance(data, dict):
        raise InputError(
            "scenario",
            f"expected a mapping at the top level, got {type(data).__name__}",
            "see docs/scenario.md for the format",
        )
    try:
        spec = ScenarioSpec.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    blocks, name = _blocks(spec.model, spec.workload, base_dir)
    devices = _devices(spec)
    _check_times(blocks, devices, spec.workload, spec.network.hop_latency)
    try:
        return Scenario(
            blocks=blocks,
            devices=devices,
            workload=Workload(**spec.workload.model_dump()),
            network=Network(hop_latency=spec.network.hop_latency, sharing=spec.network.sharing or "none"),
            source=spec.source,
            model_name=name,
        )
    except ColdpipeError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - pydantic already checked types
        raise InputError("scenario", str(exc)) from None


def with_radio_distance(data: dict[str, Any], distance_m: float, devices: list[str] | None = None) -> dict[str, Any]:
    """A copy of a scenario document with ``radio.distance_m`` set for its radio devices (a sweep axis).

    ``devices`` limits the change to the named devices; without it every device with a radio moves.

    >>> doc = {"devices": [{"name": "a", "radio": {"distance_m": 5}}, {"name": "b", "uplink": 1, "downlink": 1}]}
    >>> with_radio_distance(doc, 20.0)["devices"][0]["radio"]
    {'distance_m': 20.0}
    >>> doc["devices"][0]["radio"]["distance_m"]   # the input is not changed
    5
    """
    import copy

    out = copy.deepcopy(data)
    moved = 0
    for d in out.get("devices") or []:
        if isinstance(d, dict) and isinstance(d.get("radio"), dict) and (devices is None or d.get("name") in devices):
            d["radio"]["distance_m"] = float(distance_m)
            moved += 1
    if moved == 0:
        raise InputError("devices[].radio", "no device with a radio to move", "give devices radio: {distance_m: ...}")
    return out


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    return scenario_from_dict(read_structured_file(p), base_dir=p.parent)
