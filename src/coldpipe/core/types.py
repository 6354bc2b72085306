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
import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from coldpipe.core.limits import MAX_DEVICES, cut
from coldpipe.core.mechanism_names import (
    LOCAL,
    MECHANISMS,
    check_sharing,
    check_weight_sources,
    check_weights,
    device_dict,
    network_dict,
    parse_mechanisms,
)
from coldpipe.errors import InputError, InvalidPlan

__all__ = [
    "AP",
    "MECHANISMS",
    "OVERLAPS",
    "Block",
    "Device",
    "HeadShard",
    "Network",
    "Overlap",
    "Plan",
    "PlanTarget",
    "Scenario",
    "Stage",
    "Workload",
    "parse_mechanisms",
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
    vocab_rows: int | None = None  # embedding / LM head: its weights hold this many vocabulary rows
    vocab_row_bytes: float | None = None  # bytes of one such row (docs/model.md#mechanisms)
    attn_weight_bytes: float | None = None  # a decoder layer: its input norm + attention (docs/model.md#sublayer)
    attn_flops: float | None = None  # ... their prefill work
    attn_decode_flops: float | None = None  # ... their work of one decode step

    def __post_init__(self) -> None:
        for name in ("weight_bytes", "flops", "out_bytes", "kv_bytes"):
            _check_number(f"block {self.name!r}", name, getattr(self, name), positive=False)
        if (self.vocab_rows is None) != (self.vocab_row_bytes is None):
            raise InputError(
                f"block {self.name!r}.vocab_rows", "vocab_rows and vocab_row_bytes go together", "give both or neither"
            )
        if self.vocab_rows is not None:
            if isinstance(self.vocab_rows, bool) or not isinstance(self.vocab_rows, int) or self.vocab_rows < 1:
                raise InputError(f"block {self.name!r}.vocab_rows", f"must be an integer >= 1, got {self.vocab_rows!r}")
            assert self.vocab_row_bytes is not None
            _check_number(f"block {self.name!r}", "vocab_row_bytes", self.vocab_row_bytes, positive=True)
        attn = (self.attn_weight_bytes, self.attn_flops, self.attn_decode_flops)
        if any(x is not None for x in attn):
            if any(x is None for x in attn):
                raise InputError(f"block {self.name!r}.attn_weight_bytes", "attn_* go together", "give all three")
            for name, whole in (("attn_weight_bytes", self.weight_bytes), ("attn_flops", self.flops)):
                _check_number(f"block {self.name!r}", name, getattr(self, name), positive=False)
                if getattr(self, name) > whole:
                    raise InputError(f"block {self.name!r}.{name}", f"exceeds the block's {whole!r}", "give its part")
            _check_number(f"block {self.name!r}", "attn_decode_flops", self.attn_decode_flops, positive=False)

    def halves(self) -> tuple[Block, Block]:
        """A decoder layer as (input norm + attention, post-attention norm + MLP) (docs/model.md#sublayer)."""
        assert self.attn_weight_bytes is not None and self.attn_flops is not None
        assert self.attn_decode_flops is not None
        dec = None if self.decode_flops is None else max(0.0, self.decode_flops - self.attn_decode_flops)
        attn = Block(f"{self.name}.attn", self.attn_weight_bytes, self.attn_flops, self.out_bytes, self.kv_bytes,
                     self.attn_decode_flops, self.decode_out_bytes)  # fmt: skip
        mlp = Block(f"{self.name}.mlp", self.weight_bytes - self.attn_weight_bytes, self.flops - self.attn_flops,
                    self.out_bytes, 0.0, dec, self.decode_out_bytes)  # fmt: skip
        return attn, mlp

    @property
    def row_bytes(self) -> float:
        """Bytes of one vocabulary row, at most ``weight_bytes / vocab_rows`` (0 without rows)."""
        if self.vocab_rows is None or self.vocab_row_bytes is None:
            return 0.0
        return min(self.vocab_row_bytes, self.weight_bytes / self.vocab_rows)

    @property
    def vocab_fixed_bytes(self) -> float:
        """The block's weight bytes outside its vocabulary rows (the final norm of an LM head; 0 if none)."""
        return max(0.0, self.weight_bytes - (self.vocab_rows or 0) * self.row_bytes)

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
    weights: str = LOCAL  # streamed-weights: where its weights come from, "local", "ap" or a peer device's name

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
        check_weights(owner, self.weights)
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
            self.weights,
        )

    def holds(self, block: int) -> bool:
        """Whether ``block`` is already resident on this device (it costs no loading)."""
        return any(a <= block <= b for a, b in self.resident)


@dataclass(frozen=True)
class Network:
    """The access point: every transfer between two devices takes two hops through it."""

    hop_latency: float = 0.0  # s per AP hop
    sharing: str = "none"  # streamed-weights: how transfers share the air (none | tdma | fdma)

    def __post_init__(self) -> None:
        _check_number("network", "hop_latency", self.hop_latency, positive=False)
        check_sharing(self.sharing)


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
    mechanisms: frozenset[str] = frozenset()  # cold-start mechanisms beyond the paper's model (MECHANISMS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "mechanisms", frozenset(self.mechanisms))
        unknown = sorted(self.mechanisms - set(MECHANISMS))
        if unknown:
            raise InputError(
                "mechanisms", f"unknown mechanism(s) {unknown}", f"use some of {list(MECHANISMS)} or 'all'"
            )
        for mech, l in (("sparse-embedding", 0), ("sharded-head", len(self.blocks) - 1)):
            if mech in self.mechanisms and self.blocks[l].vocab_rows is None:
                raise InputError(
                    "mechanisms",
                    f"{mech} needs block {l} ({self.blocks[l].name!r}) to have vocab_rows and vocab_row_bytes",
                    "use a catalog, hf_config, checkpoint or gguf model, or give the block both fields",
                )
        if not self.blocks:
            raise InputError("model.blocks", "the model has no blocks", "give at least one block")
        if "sublayer" in self.mechanisms and all(b.attn_weight_bytes is None for b in self.blocks):
            raise InputError(
                "mechanisms",
                "sublayer needs decoder blocks with attn_weight_bytes, attn_flops and attn_decode_flops",
                "use a catalog, hf_config, checkpoint or gguf model, or give the blocks those fields",
            )
        if not self.devices:
            raise InputError("devices", "no devices given", "list at least one device")
        names = [d.name for d in self.devices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError("devices[].name", f"duplicate device names {dupes}", "give every device its own name")
        check_weight_sources(self.devices)
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

    def planned(self) -> Scenario:
        """The scenario whose blocks plans index: with ``sublayer`` on, each decoder layer as two blocks (its
        resident ranges mapped to both halves) and ``sublayer`` off; else this scenario (docs/model.md#sublayer)."""
        if "sublayer" not in self.mechanisms:
            return self
        index = list(
            itertools.accumulate((2 if b.attn_weight_bytes is not None else 1 for b in self.blocks), initial=0)
        )
        blocks = tuple(h for b in self.blocks for h in (b.halves() if b.attn_weight_bytes is not None else (b,)))
        devices = tuple(
            dataclasses.replace(d, resident=tuple((index[a], index[b + 1] - 1) for a, b in d.resident))
            for d in self.devices
        )
        return self.replace(blocks=blocks, devices=devices, mechanisms=self.mechanisms - {"sublayer"})

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
        held: dict[str, tuple[tuple[int, int], ...]] = {}
        for st in previous.stages:  # with reuse a device may hold several stages
            held[st.device] = (*held.get(st.device, ()), (st.first, st.last))
        if "sublayer" in self.mechanisms:  # back to model blocks: a layer is held if both its halves are
            index = list(
                itertools.accumulate((2 if b.attn_weight_bytes is not None else 1 for b in self.blocks), initial=0)
            )
            for name, ranges in held.items():
                whole = [l for l in range(len(self.blocks)) if all(any(a <= i <= b for a, b in ranges)
                         for i in range(index[l], index[l + 1]))]  # fmt: skip
                held[name] = tuple((l, l) for l in whole)
        devices = [
            dataclasses.replace(d, resident=held[d.name], startup=0.0) if d.name in held else d for d in self.devices
        ]
        return self.replace(devices=tuple(devices))

    def to_dict(self) -> dict[str, Any]:
        """The scenario as a JSON-ready dict in the scenario-file format (explicit blocks)."""
        return {
            "source": self.source,
            "network": network_dict(self.network),
            "workload": asdict(self.workload),
            "model": {"name": self.model_name, "blocks": [_block_dict(b) for b in self.blocks]},
            "devices": [device_dict(d) for d in self.devices],
            **({"mechanisms": sorted(self.mechanisms)} if self.mechanisms else {}),
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
            mechanisms=frozenset(data.get("mechanisms", ())),
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
            tuple(float(b.weight_bytes) for b in scenario.planned().blocks),
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
class HeadShard:
    """Device ``device`` computes vocabulary rows ``first_row..last_row`` (inclusive) of the LM head (sharded-head)."""

    device: str
    first_row: int
    last_row: int

    @property
    def rows(self) -> int:
        return self.last_row - self.first_row + 1

    def __str__(self) -> str:
        return f"{self.device}[{self.first_row}-{self.last_row}]"


@dataclass(frozen=True)
class Plan:
    """An ordered list of stages; the data the simulator replays and the runtime interprets.

    With the ``sharded-head`` mechanism the stages end one block early and ``head_shards`` split the last
    block (final norm + LM head) by vocabulary rows (docs/model.md#sharded-head). The compact string
    form round-trips:

    >>> p = Plan.parse("orin[0-9] > pi5[10-33]")
    >>> str(p)
    'orin[0-9] > pi5[10-33]'
    >>> Plan.from_dict(p.to_dict()) == p
    True
    >>> q = Plan.parse("orin[0-9] > pi5[10-32] | head: orin[0-99], pi5[100-127]")
    >>> str(q), Plan.from_dict(q.to_dict()) == q
    ('orin[0-9] > pi5[10-32] | head: orin[0-99], pi5[100-127]', True)

    ``target`` (optional, not compared) is what the plan was made for; plan files carry it, and files
    written before it existed load without it.
    """

    stages: tuple[Stage, ...]
    head_shards: tuple[HeadShard, ...] = ()
    target: PlanTarget | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "head_shards", tuple(self.head_shards))

    def __str__(self) -> str:
        text = " > ".join(str(s) for s in self.stages)
        if self.head_shards:
            text += " | head: " + ", ".join(str(h) for h in self.head_shards)
        return text

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(s.device for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"stages": [{"device": s.device, "first": s.first, "last": s.last} for s in self.stages]}
        if self.head_shards:
            data["head_shards"] = [
                {"device": h.device, "first_row": h.first_row, "last_row": h.last_row} for h in self.head_shards
            ]
        if self.target is not None:
            data["target"] = self.target.to_dict()
        return data

    def for_target(self, scenario: Scenario) -> Plan:
        """This plan, recording that it was made for ``scenario``."""
        return dataclasses.replace(self, target=PlanTarget.of(scenario))

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Plan:
        """Read ``{"stages": [{"device": NAME, "first": 0, "last": 9}, ...]}``: names strings, indices integers
        (and, with sharded-head, ``"head_shards": [{"device": NAME, "first_row": 0, "last_row": 999}, ...]``)."""
        fix = 'write {"stages": [{"device": NAME, "first": 0, "last": 9}, ...]}'
        target = PlanTarget.from_dict(data["target"]) if isinstance(data, dict) and "target" in data else None
        stages = data.get("stages") if isinstance(data, dict) else None
        if not isinstance(stages, list):
            raise InputError("plan.stages", "is missing or not a list", fix)
        shards = data.get("head_shards", [])
        if not isinstance(shards, list):
            raise InputError("plan.head_shards", "is not a list", 'write [{"device": NAME, "first_row": 0, ...}]')
        if len(stages) > MAX_DEVICES or len(shards) > MAX_DEVICES:
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
        heads = []
        for j, h in enumerate(shards):
            if not isinstance(h, dict) or set(h) != {"device", "first_row", "last_row"}:
                raise InputError(f"plan.head_shards[{j}]", "must be a mapping of exactly device, first_row, last_row")
            if not isinstance(h["device"], str) or not h["device"]:
                raise InputError(f"plan.head_shards[{j}].device", "must be a device name (a non-empty string)")
            for key in ("first_row", "last_row"):
                v = h[key]
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise InputError(
                        f"plan.head_shards[{j}].{key}", f"must be a row index (an integer >= 0), got {cut(repr(v), 40)}"
                    )
            heads.append(HeadShard(h["device"], h["first_row"], h["last_row"]))
        return Plan(tuple(out), head_shards=tuple(heads), target=target)

    @staticmethod
    def parse(text: str) -> Plan:
        """Read the compact form ``dev[a-b] > dev[c-d]`` (with sharded-head: ``... | head: dev[r-s], ...``)."""

        def ranges(parts: list[str], what: str) -> list[tuple[str, int, int]]:
            out = []
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
                    out.append((name.strip(), int(first), int(last)))
                except ValueError:
                    raise InputError(
                        "plan", f"cannot read {what} {cut(repr(part), 80)}", "write e.g. 'orin[0-9] > pi5[10-33]'"
                    ) from None
            return out

        body, _, head = text.partition("|")
        n_stages, n_shards = body.count(">") + 1, head.count(",") + 1
        if n_stages > MAX_DEVICES or n_shards > MAX_DEVICES:
            n, what = (n_stages, "stages") if n_stages > MAX_DEVICES else (n_shards, "head shards")
            raise InputError("plan", f"has {n} {what}, more than the {MAX_DEVICES} devices allowed")
        stages = tuple(Stage(*r) for r in ranges(body.split(">"), "stage"))
        shards: tuple[HeadShard, ...] = ()
        if head.strip():
            head = head.strip()
            if not head.startswith("head:"):
                raise InputError(
                    "plan", f"cannot read {cut(repr(head), 80)}", "write '... | head: a[0-999], b[1000-1999]'"
                )
            shards = tuple(HeadShard(*r) for r in ranges(head[5:].split(","), "head shard"))
        return Plan(stages, head_shards=shards)

    def validate(self, scenario: Scenario) -> None:
        """Raise :class:`InvalidPlan` unless the plan is valid for ``scenario`` (docs/model.md#a-plan)."""
        if not self.stages:
            raise InvalidPlan("the plan has no stages")
        scenario = scenario.planned()  # sublayer: plans index the split blocks
        n = scenario.n_blocks
        n_staged = n - 1 if self.head_shards else n
        if self.head_shards and "sharded-head" not in scenario.mechanisms:
            raise InvalidPlan("the plan shards the LM head but the sharded-head mechanism is off")
        seen: set[str] = set()
        used: dict[str, float] = {}
        expected_first = 0
        for j, st in enumerate(self.stages):
            dev = scenario.device(st.device)
            if st.device in seen and "reuse" not in scenario.mechanisms:
                raise InvalidPlan(f"stage {j}: device {st.device!r} is used twice")
            if j > 0 and self.stages[j - 1].device == st.device:
                raise InvalidPlan(f"stage {j}: device {st.device!r} holds the previous stage too; merge them")
            seen.add(st.device)
            if st.first != expected_first:
                raise InvalidPlan(f"stage {j} ({st}): first block must be {expected_first}, got {st.first}")
            if st.last < st.first:
                raise InvalidPlan(f"stage {j} ({st}): last block {st.last} < first block {st.first}")
            if st.last >= n_staged:
                what = "blocks before the sharded head" if self.head_shards else "blocks"
                raise InvalidPlan(f"stage {j} ({st}): last block {st.last} >= number of {what} {n_staged}")
            need = used.get(st.device, 0.0) + sum(b.memory_bytes for b in scenario.blocks[st.first : st.last + 1])
            if need > dev.memory * (1 + 1e-12):
                raise InvalidPlan(
                    f"stage {j} ({st}): needs {need:.6g} bytes (weights + KV) but {st.device!r} has "
                    f"{dev.memory:.6g}; short by {need - dev.memory:.6g} bytes"
                )
            used[st.device] = need
            expected_first = st.last + 1
        if expected_first != n_staged:
            raise InvalidPlan(f"the plan ends at block {expected_first - 1} but the model has blocks 0..{n_staged - 1}")
        if self.head_shards:
            head = scenario.blocks[-1]
            assert head.vocab_rows is not None and head.vocab_row_bytes is not None
            next_row, on = 0, set()
            for k, sh in enumerate(self.head_shards):
                dev = scenario.device(sh.device)
                if sh.device in on:
                    raise InvalidPlan(f"head shard {k}: device {sh.device!r} holds two shards")
                on.add(sh.device)
                if sh.first_row != next_row or sh.last_row < sh.first_row:
                    raise InvalidPlan(f"head shard {k} ({sh}): rows must start at {next_row} and not be empty")
                next_row = sh.last_row + 1
                need = used.get(sh.device, 0.0) + head.vocab_fixed_bytes + sh.rows * head.vocab_row_bytes
                if need > dev.memory * (1 + 1e-12):
                    raise InvalidPlan(
                        f"head shard {k} ({sh}): {sh.device!r} needs {need:.6g} bytes with its stage but has "
                        f"{dev.memory:.6g}"
                    )
            if next_row != head.vocab_rows:
                raise InvalidPlan(f"the head shards end at row {next_row - 1} but the head has {head.vocab_rows} rows")


def _block_dict(b: Block) -> dict[str, Any]:
    return {k: v for k, v in asdict(b).items() if v is not None or not k.startswith("attn_")}


def dataclass_fields(cls: type) -> tuple[str, ...]:
    """Names of a dataclass's fields (used by the file loader to reject unknown keys)."""
    return tuple(f.name for f in fields(cls))
