"""Scenario files (YAML or JSON) validated into :class:`coldpipe.core.types.Scenario`.

The field names are a public contract (see ``docs/scenario.md``)::

    source: ap                      # "ap" or a device name
    network: {hop_latency: 3 ms}
    workload: {prompt_tokens: 512, new_tokens: 1, prompt_bytes: 2048, token_bytes: 4}
    model: {catalog: llama-3.1-8b, dtype: bfloat16}   # or {hf_config: config.json} or {blocks: [...]}
    devices:
      - {name: orin-agx, flops: 20 TFLOPS, load_bandwidth: 2 GB/s, startup: 300 ms,
         memory: 24 GiB, uplink: 400 Mbit/s, downlink: 600 Mbit/s}

Plain numbers are SI base units; strings may carry units. Every error names the field by its path
(``devices[2].uplink``) and says how to fix it; the CLI prints it on one line and exits with 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from coldpipe.core.models import CATALOG, DTYPE_BYTES, architecture_from_hf_config, blocks_for
from coldpipe.core.types import AP, Block, Device, Network, Scenario, Workload
from coldpipe.errors import ColdpipeError, InputError
from coldpipe.units import Kind, parse_quantity

__all__ = ["load_scenario", "read_structured_file", "scenario_from_dict"]


def _unit(kind: Kind) -> BeforeValidator:
    return BeforeValidator(lambda v: parse_quantity(v, kind))


Bytes = Annotated[float, _unit("bytes"), Field(ge=0)]
PositiveBytes = Annotated[float, _unit("bytes"), Field(gt=0)]
ByteRate = Annotated[float, _unit("byte_rate"), Field(gt=0)]
BitRate = Annotated[float, _unit("bit_rate"), Field(gt=0)]
FlopRate = Annotated[float, _unit("flop_rate"), Field(gt=0)]
Flops = Annotated[float, _unit("count"), Field(ge=0)]
Seconds = Annotated[float, _unit("seconds"), Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkSpec(_Strict):
    hop_latency: Seconds = 0.0


class WorkloadSpec(_Strict):
    prompt_tokens: int = Field(ge=1)
    new_tokens: int = Field(default=1, ge=1)
    prompt_bytes: Bytes | None = None
    token_bytes: Bytes = 4.0


class BlockSpec(_Strict):
    name: str
    weight_bytes: Bytes
    flops: Flops
    out_bytes: Bytes
    kv_bytes: Bytes = 0.0
    decode_flops: Flops | None = None
    decode_out_bytes: Bytes | None = None


class ModelSpec(_Strict):
    catalog: str | None = None
    hf_config: str | None = None
    blocks: list[BlockSpec] | None = None
    name: str | None = None
    dtype: Literal["float32", "float16", "bfloat16", "float8", "int8", "int4"] = "bfloat16"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in ("catalog", "hf_config", "blocks") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of catalog, hf_config, blocks (got {given or 'none'})")
        if self.catalog is not None and self.catalog not in CATALOG:
            raise ValueError(f"unknown catalog model {self.catalog!r}; known: {', '.join(sorted(CATALOG))}")
        if self.blocks is not None and not self.blocks:
            raise ValueError("blocks is empty; give at least one block")
        return self


class DeviceSpec(_Strict):
    name: str = Field(min_length=1)
    flops: FlopRate
    load_bandwidth: ByteRate
    startup: Seconds = 0.0
    memory: PositiveBytes
    uplink: BitRate
    downlink: BitRate
    mem_bandwidth: ByteRate | None = None


class ScenarioSpec(_Strict):
    source: str = AP
    network: NetworkSpec = NetworkSpec()
    workload: WorkloadSpec
    model: ModelSpec
    devices: list[DeviceSpec] = Field(min_length=1)


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


def _first_error(exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    field = _loc(tuple(err["loc"]))
    msg = str(err["msg"]).removeprefix("Value error, ")
    fix = ""
    if err["type"] == "missing":
        msg, fix = "is required", "add it to the scenario"
    elif err["type"] == "extra_forbidden":
        msg, fix = "is not a known field", "check its spelling in docs/scenario.md"
    more = len(exc.errors()) - 1
    if more:
        fix = (fix + "; " if fix else "") + f"{more} more error{'s' if more > 1 else ''} after this one"
    return InputError(field, msg, fix)


def read_structured_file(path: str | Path, what: str = "scenario") -> Any:
    """Parse a YAML or JSON file (YAML accepts JSON); errors become one-line :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(what, f"no such file {str(p)!r}", "check the path")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(what, f"cannot read {str(p)!r}: {exc}") from None
    try:
        if p.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        first_line = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first_line[:3])
        raise InputError(what, f"{str(p)!r} is not valid YAML/JSON: {detail}", "fix the syntax") from None


def _blocks(spec: ModelSpec, wl: WorkloadSpec, base_dir: Path | None) -> tuple[tuple[Block, ...], str]:
    if spec.blocks is not None:
        return tuple(Block(**b.model_dump()) for b in spec.blocks), spec.name or "model"
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
    try:
        return Scenario(
            blocks=blocks,
            devices=tuple(Device(**d.model_dump()) for d in spec.devices),
            workload=Workload(**spec.workload.model_dump()),
            network=Network(**spec.network.model_dump()),
            source=spec.source,
            model_name=name,
        )
    except ColdpipeError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - pydantic already checked types
        raise InputError("scenario", str(exc)) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    return scenario_from_dict(read_structured_file(p), base_dir=p.parent)
