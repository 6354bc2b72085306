"""The data of the problem (docs/model.md#the-world) and of a solution (docs/model.md#a-plan).

Everything here is a frozen dataclass: values in, values out, with a JSON round-trip
(``to_dict`` / ``from_dict``) and a readable ``__str__``. Units are SI base units and are
written in the field names: ``_bytes``, ``_s`` (seconds), ``_bps`` (bit/s), ``_Bps`` (byte/s),
``flops`` (FLOP for work, FLOP/s for a device's rate).

Block ranges are **inclusive** everywhere in coldpipe, as in docs/model.md: a stage ``(d, first, last)``
holds blocks ``first..last``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from coldpipe.core.limits import MAX_DEVICES, cut
from coldpipe.errors import InputError, InvalidPlan

__all__ = [
    "AP",
    "OVERLAPS",
    "Block",
    "Device",
    "Network",
    "Overlap",
    "Plan",
    "PlanTarget",
    "Scenario",
    "Stage",
    "Workload",
]

AP = "ap"
"""Name of the access point as a ``source``: the hub every transfer goes through."""

Overlap = Literal["layer", "stage", "none"]
OVERLAPS: tuple[Overlap, ...] = ("layer", "stage", "none")


def _check_number(owner: str, name: str, value: float, *, positive: bool, allow_inf: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{owner}.{name}", f"must be a number, got {value!r}")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise InputError(f"{owner}.{name}", f"must be finite, got {value!r}")
    if positive and not value > 0:
        raise InputError(f"{owner}.{name}", f"must be > 0, got {value!r}")
    if not positive and value < 0:
        raise InputError(f"{owner}.{name}", f"must be >= 0, got {value!r}")


@dataclass(frozen=True)
class Block:
    """One block of the model, for one workload (docs/model.md#blocks).

    ``flops`` is the prefill work of the whole prompt; ``out_bytes`` the activation sent when a
    stage boundary follows this block; ``kv_bytes`` the KV cache reserved for the whole context.
    """

    name: str
    weight_bytes: float
    flops: float
    out_bytes: float
    kv_bytes: float = 0.0
    decode_flops: float | None = None  # work of one decode step (one token; docs/model.md#decode)
    decode_out_bytes: float | None = None  # one token's activation

    def __post_init__(self) -> None:
        for name in ("weight_bytes", "flops", "out_bytes", "kv_bytes"):
            _check_number(f"block {self.name!r}", name, getattr(self, name), positive=False)

    @property
    def memory_bytes(self) -> float:
        """What the block occupies on a device: weights + KV cache."""
        return self.weight_bytes + self.kv_bytes


@dataclass(frozen=True)
class Device:
    """An edge device (docs/model.md#devices). Rates are sustained, not peak."""

    name: str
    flops: float  # FLOP/s sustained for prefill
    load_bandwidth: float  # bytes/s from storage into memory
    startup: float  # s from the request until loading can start
    memory: float  # bytes for weights + KV
    uplink: float  # bit/s to the AP
    downlink: float  # bit/s from the AP
    mem_bandwidth: float | None = None  # bytes/s, for decode steps
    resident: tuple[tuple[int, int], ...] = ()  # block ranges first..last already in memory (a warm device)

    def __post_init__(self) -> None:
        owner = f"device {self.name!r}"
        try:
            ranges = tuple((int(a), int(b)) for a, b in self.resident)
        except (TypeError, ValueError):
            raise InputError(
                f"{owner}.resident",
                f"must be a list of [first, last] block ranges, got {self.resident!r}",
                "write e.g. 'resident: [[0, 9]]'",
            ) from None
        for a, b in ranges:
            if not 0 <= a <= b:
                raise InputError(
                    f"{owner}.resident", f"range [{a}, {b}] is not a block range", "need 0 <= first <= last"
                )
        object.__setattr__(self, "resident", ranges)
        if not self.name or self.name == AP:
            raise InputError("devices[].name", f"{self.name!r} is not a usable device name", "'ap' is reserved")
        _check_number(owner, "flops", self.flops, positive=True)
        _check_number(owner, "load_bandwidth", self.load_bandwidth, positive=True, allow_inf=True)
        _check_number(owner, "startup", self.startup, positive=False)
        _check_number(owner, "memory", self.memory, positive=True, allow_inf=True)
        _check_number(owner, "uplink", self.uplink, positive=True, allow_inf=True)
        _check_number(owner, "downlink", self.downlink, positive=True, allow_inf=True)
        if self.mem_bandwidth is not None:
            _check_number(owner, "mem_bandwidth", self.mem_bandwidth, positive=True)

    def profile(self) -> tuple[float, ...]:
        """Every field but the name: devices with equal profiles are interchangeable."""
        return (
            self.flops,
            self.load_bandwidth,
            self.startup,
            self.memory,
            self.uplink,
            self.downlink,
            -1.0 if self.mem_bandwidth is None else self.mem_bandwidth,
            self.resident,
        )

    def holds(self, block: int) -> bool:
        """Whether ``block`` is already resident on this device (it costs no loading)."""
        return any(a <= block <= b for a, b in self.resident)


@dataclass(frozen=True)
class Network:
    """The access point: every transfer between two devices takes two hops through it."""

    hop_latency: float = 0.0  # s per AP hop

    def __post_init__(self) -> None:
        _check_number("network", "hop_latency", self.hop_latency, positive=False)


@dataclass(frozen=True)
class Workload:
    """One request. ``prompt_bytes`` reaches the first stage; ``token_bytes`` returns to the source."""

    prompt_tokens: int
    new_tokens: int = 1
    prompt_bytes: float | None = None  # default 4 * prompt_tokens
    token_bytes: float = 4.0
    requests: int = 1  # a burst: this many identical requests arrive together at t = 0
    completion: str = "max"  # with a burst: minimise the "max" or the "mean" first-token completion

    def __post_init__(self) -> None:
        if isinstance(self.prompt_tokens, bool) or not isinstance(self.prompt_tokens, int) or self.prompt_tokens < 1:
            raise InputError("workload.prompt_tokens", f"must be an integer >= 1, got {self.prompt_tokens!r}")
        if isinstance(self.new_tokens, bool) or not isinstance(self.new_tokens, int) or self.new_tokens < 1:
            raise InputError("workload.new_tokens", f"must be an integer >= 1, got {self.new_tokens!r}")
        if isinstance(self.requests, bool) or not isinstance(self.requests, int) or self.requests < 1:
            raise InputError("workload.requests", f"must be an integer >= 1, got {self.requests!r}")
        if self.completion not in ("max", "mean"):
            raise InputError("workload.completion", f"must be 'max' or 'mean', got {self.completion!r}")
        if self.prompt_bytes is None:
            object.__setattr__(self, "prompt_bytes", 4.0 * self.prompt_tokens)
        _check_number("workload", "prompt_bytes", self.prompt_bytes, positive=False)
        _check_number("workload", "token_bytes", self.token_bytes, positive=False)

    @property
    def prompt_bytes_value(self) -> float:
        assert self.prompt_bytes is not None
        return float(self.prompt_bytes)


@dataclass(frozen=True)
class Scenario:
    """A whole planning problem: model blocks, devices, network, workload and the source."""

    blocks: tuple[Block, ...]
    devices: tuple[Device, ...]
    workload: Workload
    network: Network = field(default_factory=Network)
    source: str = AP
    model_name: str = "model"

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "devices", tuple(self.devices))
        if not self.blocks:
            raise InputError("model.blocks", "the model has no blocks", "give at least one block")
        if not self.devices:
            raise InputError("devices", "no devices given", "list at least one device")
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError("devices[].name", f"duplicate device names {dupes}", "give every device its own name")
        for d in self.devices:
            for a, b in d.resident:
                if b >= len(self.blocks):
                    raise InputError(
                        f"device {d.name!r}.resident",
                        f"range [{a}, {b}] goes past the last block {len(self.blocks) - 1}",
                        "resident ranges are block indices of this model",
                    )
        if self.source != AP and self.source not in names:
            raise InputError("source", f"{self.source!r} is neither 'ap' nor a device", f"use 'ap' or one of {names}")

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise InvalidPlan(f"unknown device {name!r}; the scenario has {[d.name for d in self.devices]}")

    def replace(self, *, workload: Workload | Mapping[str, Any] | None = None, **changes: Any) -> Scenario:
        """This scenario with some fields changed, validated again (the one way to change a scenario).

        ``workload`` may be a :class:`Workload` or a mapping of the workload fields to change:

        >>> sc = Scenario([Block("b", 1.0, 1.0, 1.0)], [Device("x", 1.0, 1.0, 0.0, 10.0, 1.0, 1.0)], Workload(1))
        >>> sc.replace(workload={"new_tokens": 8}).workload.new_tokens, sc.workload.new_tokens
        (8, 1)
        """
        if workload is not None:
            changes["workload"] = (
                workload if isinstance(workload, Workload) else dataclasses.replace(self.workload, **workload)
            )
        return dataclasses.replace(self, **changes)

    def after(self, previous: Plan) -> Scenario:
        """The next request's scenario once ``previous`` has run: warm residency, the step to steady state.

        Every device of ``previous`` now holds its stage's blocks (they cost no loading) and its process is
        running (``startup = 0``); the other devices are unchanged. The next plan may move blocks anywhere:
        a device that takes blocks it does not hold loads them, and memory limits apply as always.
        """
        previous.validate(self)
        held = {st.device: (st.first, st.last) for st in previous.stages}
        devices = [
            dataclasses.replace(d, resident=(held[d.name],), startup=0.0) if d.name in held else d for d in self.devices
        ]
        return self.replace(devices=tuple(devices))

    def to_dict(self) -> dict[str, Any]:
        """The scenario as a JSON-ready dict in the scenario-file format (explicit blocks)."""
        return {
            "source": self.source,
            "network": asdict(self.network),
            "workload": asdict(self.workload),
            "model": {"name": self.model_name, "blocks": [asdict(b) for b in self.blocks]},
            "devices": [asdict(d) for d in self.devices],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Scenario:
        """Inverse of :meth:`to_dict` (no unit strings; the shell's loader handles those)."""
        return Scenario(
            blocks=tuple(Block(**b) for b in data["model"]["blocks"]),
            devices=tuple(Device(**d) for d in data["devices"]),
            workload=Workload(**data["workload"]),
            network=Network(**data.get("network", {})),
            source=data.get("source", AP),
            model_name=data["model"].get("name", "model"),
        )


@dataclass(frozen=True)
class Stage:
    """Device ``device`` holds blocks ``first..last`` (inclusive)."""

    device: str
    first: int
    last: int

    @property
    def n_blocks(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.device}[{self.first}-{self.last}]"


@dataclass(frozen=True)
class PlanTarget:
    """What a plan was made for: the model's fingerprint (name, block count, each block's weight bytes) and
    the scenario's device set. A plan file carries it so that a plan is never replayed on another model.

    >>> sc = Scenario([Block("b", 8.0, 1.0, 1.0)], [Device("x", 1.0, 1.0, 0.0, 10.0, 1.0, 1.0)], Workload(1))
    >>> t = PlanTarget.of(sc)
    >>> PlanTarget.from_dict(t.to_dict()) == t, t.mismatch(sc)
    (True, None)
    >>> t.mismatch(sc.replace(model_name="other"))
    "model 'model' (1 blocks), not 'other' (1 blocks)"
    """

    model: str
    block_weight_bytes: tuple[float, ...]
    devices: tuple[str, ...]

    @property
    def n_blocks(self) -> int:
        return len(self.block_weight_bytes)

    @staticmethod
    def of(scenario: Scenario) -> PlanTarget:
        return PlanTarget(
            scenario.model_name,
            tuple(float(b.weight_bytes) for b in scenario.blocks),
            tuple(sorted(d.name for d in scenario.devices)),
        )

    def mismatch(self, scenario: Scenario) -> str | None:
        """Why a plan made for this target does not belong to ``scenario`` (None: it does)."""
        other = PlanTarget.of(scenario)
        if self.model != other.model or self.n_blocks != other.n_blocks:
            return f"model {self.model!r} ({self.n_blocks} blocks), not {other.model!r} ({other.n_blocks} blocks)"
        diff = [
            i
            for i, (a, b) in enumerate(zip(self.block_weight_bytes, other.block_weight_bytes, strict=True))
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=0.5)
        ]
        if diff:
            i = diff[0]
            return (
                f"model {self.model!r} with other weights: block {i} holds {self.block_weight_bytes[i]:.0f} bytes "
                f"in the plan's model and {other.block_weight_bytes[i]:.0f} here ({len(diff)} blocks differ)"
            )
        if self.devices != other.devices:
            return f"devices {list(self.devices)}, not {list(other.devices)}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "block_weight_bytes": list(self.block_weight_bytes), "devices": list(self.devices)}

    @staticmethod
    def from_dict(data: Any) -> PlanTarget:
        try:
            return PlanTarget(
                str(data["model"]),
                tuple(float(x) for x in data["block_weight_bytes"]),
                tuple(str(d) for d in data["devices"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                "plan.target",
                f"cannot read what the plan was made for: {cut(repr(exc), 80)}",
                "write {model: NAME, block_weight_bytes: [...], devices: [...]}, or drop 'target'",
            ) from None


@dataclass(frozen=True)
class Plan:
    """An ordered list of stages; the data the simulator replays and the runtime interprets.

    The compact string form round-trips:

    >>> p = Plan.parse("orin[0-9] > pi5[10-33]")
    >>> str(p)
    'orin[0-9] > pi5[10-33]'
    >>> Plan.from_dict(p.to_dict()) == p
    True

    ``target`` (optional, not compared) is what the plan was made for; plan files carry it, and files
    written before it existed load without it.
    """

    stages: tuple[Stage, ...]
    target: PlanTarget | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

    def __str__(self) -> str:
        return " > ".join(str(s) for s in self.stages)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(s.device for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stages": [{"device": s.device, "first": s.first, "last": s.last} for s in self.stages]}
        if self.target is not None:
            out["target"] = self.target.to_dict()
        return out

    def for_target(self, scenario: Scenario) -> Plan:
        """This plan, recording that it was made for ``scenario``."""
        return dataclasses.replace(self, target=PlanTarget.of(scenario))

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Plan:
        """Read ``{"stages": [{"device": NAME, "first": 0, "last": 9}, ...]}``: names strings, indices integers."""
        fix = 'write {"stages": [{"device": NAME, "first": 0, "last": 9}, ...]}'
        target = PlanTarget.from_dict(data["target"]) if isinstance(data, dict) and "target" in data else None
        stages = data.get("stages") if isinstance(data, dict) else None
        if not isinstance(stages, list):
            raise InputError("plan.stages", "is missing or not a list", fix)
        if len(stages) > MAX_DEVICES:
            raise InputError(
                "plan.stages", f"has {len(stages)} stages, more than the {MAX_DEVICES} devices allowed", fix
            )
        out = []
        for j, s in enumerate(stages):
            if not isinstance(s, dict) or set(s) - {"device", "first", "last"} or len(s) != 3:
                raise InputError(f"plan.stages[{j}]", "must be a mapping of exactly device, first and last", fix)
            if not isinstance(s["device"], str) or not s["device"]:
                raise InputError(f"plan.stages[{j}].device", "must be a device name (a non-empty string)", fix)
            for key in ("first", "last"):
                v = s[key]
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise InputError(
                        f"plan.stages[{j}].{key}",
                        f"must be a block index (an integer >= 0), got {cut(repr(v), 40)}",
                        fix,
                    )
            out.append(Stage(s["device"], s["first"], s["last"]))
        return Plan(tuple(out), target)

    @staticmethod
    def parse(text: str) -> Plan:
        """Read the compact form ``dev[a-b] > dev[c-d]``."""
        stages = []
        parts = text.split(">")
        if len(parts) > MAX_DEVICES:
            raise InputError("plan", f"has {len(parts)} stages, more than the {MAX_DEVICES} devices allowed")
        for part in parts:
            part = part.strip()
            try:
                if not part.endswith("]"):
                    raise ValueError(part)
                name, rng = part[:-1].split("[")
                first, last = rng.split("-")
                if not (first.strip().isascii() and first.strip().isdigit() and last.strip().isascii()
                        and last.strip().isdigit() and name.strip()):  # fmt: skip
                    raise ValueError(part)
                stages.append(Stage(name.strip(), int(first), int(last)))
            except ValueError:
                raise InputError(
                    "plan", f"cannot read stage {cut(repr(part), 80)}", "write e.g. 'orin[0-9] > pi5[10-33]'"
                ) from None
        return Plan(tuple(stages))

    def validate(self, scenario: Scenario) -> None:
        """Raise :class:`InvalidPlan` unless the plan is valid for ``scenario`` (docs/model.md#a-plan)."""
        if not self.stages:
            raise InvalidPlan("the plan has no stages")
        n = scenario.n_blocks
        seen: set[str] = set()
        expected_first = 0
        for j, st in enumerate(self.stages):
            dev = scenario.device(st.device)
            if st.device in seen:
                raise InvalidPlan(f"stage {j}: device {st.device!r} is used twice")
            seen.add(st.device)
            if st.first != expected_first:
                raise InvalidPlan(f"stage {j} ({st}): first block must be {expected_first}, got {st.first}")
            if st.last < st.first:
                raise InvalidPlan(f"stage {j} ({st}): last block {st.last} < first block {st.first}")
            if st.last >= n:
                raise InvalidPlan(f"stage {j} ({st}): last block {st.last} >= number of blocks {n}")
            need = sum(b.memory_bytes for b in scenario.blocks[st.first : st.last + 1])
            if need > dev.memory * (1 + 1e-12):
                raise InvalidPlan(
                    f"stage {j} ({st}): needs {need:.6g} bytes (weights + KV) but {st.device!r} has "
                    f"{dev.memory:.6g}; short by {need - dev.memory:.6g} bytes"
                )
            expected_first = st.last + 1
        if expected_first != n:
            raise InvalidPlan(f"the plan ends at block {expected_first - 1} but the model has blocks 0..{n - 1}")


def dataclass_fields(cls: type) -> tuple[str, ...]:
    """Names of a dataclass's fields (used by the file loader to reject unknown keys)."""
    return tuple(f.name for f in fields(cls))
