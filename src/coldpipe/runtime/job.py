"""What one run of a plan is, as data: the ``Job`` every rank receives (plan, scenario, prompts, emulation).

Kept apart from :mod:`.launch` (which starts the ranks) and :mod:`.worker` (which runs one), so each
imports it without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coldpipe.core.types import OVERLAPS, Overlap, Plan
from coldpipe.runtime.emulation import DeviceEmulation

__all__ = ["Job"]


@dataclass(frozen=True)
class Job:
    """One request through one plan: the runtime interprets exactly this, nothing else.

    A run spec carries each job as :meth:`to_dict`; every rank reads it back once with :meth:`from_dict`.
    """

    plan: Plan
    overlap: Overlap
    prompt_ids: tuple[int, ...]
    new_tokens: int
    emulation: tuple[DeviceEmulation, ...]
    return_logits: bool = False
    warm: bool = False  # every weight resident before the request (no loading at all)
    links: bool = (
        True  # sleep the model's transfer time (docs/model.md#transfers) before each send (False: loopback speed)
    )
    sparse_embedding: bool = False  # block 0 reads only the prompt's rows (then each new token's)
    sublayer: bool = False  # the plan indexes the split blocks: decoder layers as attention and MLP halves
    burst: tuple[tuple[int, ...], ...] = ()  # prompts of requests 2..R of a burst arriving with the first
    sharing: str = "none"  # streamed-weights: hops wait for the air (tdma) or their device's link (fdma)

    def __post_init__(self) -> None:
        if self.overlap not in OVERLAPS:
            raise ValueError(f"unknown overlap {self.overlap!r}; use one of {', '.join(OVERLAPS)}")
        n_ranks = len(self.plan.stages) + len(self.plan.head_shards)  # sharded-head: one rank per shard too
        if len(self.emulation) != n_ranks:
            raise ValueError(f"{len(self.emulation)} emulated devices for {n_ranks} stages and head shards")
        if any(len(p) != len(self.prompt_ids) for p in self.burst):
            raise ValueError("every prompt of a burst has the prompt's length")

    @property
    def prompts(self) -> tuple[tuple[int, ...], ...]:
        """The prompt of every request: the first request's, then the burst's."""
        return (self.prompt_ids, *self.burst)

    def to_dict(self) -> dict[str, Any]:
        """The job in a run spec (JSON): each prompt once, under ``prompts``."""
        return {
            "plan": self.plan.to_dict(),
            "overlap": self.overlap,
            "prompts": [list(p) for p in self.prompts],
            "new_tokens": self.new_tokens,
            "emulation": [e.to_dict() for e in self.emulation],
            "return_logits": self.return_logits,
            "warm": self.warm,
            "links": self.links,
            "sparse_embedding": self.sparse_embedding,
            "sublayer": self.sublayer,
            "sharing": self.sharing,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Job:
        """The job :meth:`to_dict` wrote."""
        first, *burst = (tuple(int(t) for t in p) for p in d["prompts"])
        return Job(
            plan=Plan.from_dict(d["plan"]),
            overlap=d["overlap"],
            prompt_ids=first,
            new_tokens=int(d["new_tokens"]),
            emulation=tuple(DeviceEmulation.from_dict(e) for e in d["emulation"]),
            return_logits=bool(d.get("return_logits", False)),
            warm=bool(d.get("warm", False)),
            links=bool(d.get("links", True)),
            sparse_embedding=bool(d.get("sparse_embedding", False)),
            sublayer=bool(d.get("sublayer", False)),
            burst=tuple(burst),
            sharing=str(d.get("sharing", "none")),
        )
