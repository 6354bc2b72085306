"""What the simulator reports: the timeline of one plan (docs/model.md#what-the-simulator-reports).

:mod:`coldpipe.core.simulator` computes it (and re-exports these types); :mod:`coldpipe.core.streamed` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coldpipe.core.types import Overlap, Plan

__all__ = ["BlockSpan", "ShardTimeline", "StageTimeline", "Timeline", "Transfer"]


@dataclass(frozen=True)
class BlockSpan:
    """Block ``block`` was loaded during [load_start_s, load_end_s] and computed in [compute_start_s, compute_end_s]."""

    block: int
    load_start_s: float
    load_end_s: float
    compute_start_s: float
    compute_end_s: float


@dataclass(frozen=True)
class StageTimeline:
    """What one stage's device did, from the request (t = 0) to the end of its compute."""

    device: str
    first: int
    last: int
    weight_bytes: float  # weights of its blocks (resident ones included)
    memory_bytes: float  # weights + KV
    startup_s: float
    load_s: float  # time spent loading (excludes start-up; resident blocks cost nothing)
    load_end_s: float  # its last block is resident (0 if every block was already resident)
    compute_s: float  # time spent computing
    arrival_s: float  # its input arrived
    compute_start_s: float  # first block starts
    compute_end_s: float  # last block ends
    wait_weights_s: (
        float  # idle with input present, waiting for its weights (in "none": the global barrier, on stage 1)
    )
    wait_input_s: float  # idle with its first weights resident, waiting for input
    blocks: tuple[BlockSpan, ...]


@dataclass(frozen=True)
class ShardTimeline:
    """One head shard (sharded-head): its device loaded it in [load_start_s, load_end_s] (after its stage's
    blocks), received the last hidden state at ``arrival_s``, computed its logits and local top-k in
    [compute_start_s, compute_end_s]; the candidates reached the source at ``returned_s``."""

    device: str
    first_row: int
    last_row: int
    weight_bytes: float
    load_start_s: float
    load_end_s: float
    arrival_s: float
    compute_start_s: float
    compute_end_s: float
    returned_s: float


@dataclass(frozen=True)
class Transfer:
    """Bytes moving ``src`` -> AP -> ``dst``; ``at_ap_s`` is when they reached the AP."""

    what: str  # "prompt" | "activation" | "token" | "hidden" | "candidates" (sharded-head) | "weights" (streamed)
    src: str
    dst: str
    n_bytes: float
    start_s: float
    at_ap_s: float
    end_s: float


@dataclass(frozen=True)
class Timeline:
    """The predicted timeline of one plan under one overlap mode."""

    plan: Plan
    overlap: Overlap
    ttft_s: float
    stages: tuple[StageTimeline, ...]
    transfers: tuple[Transfer, ...]
    warm_ttft_s: float  # TTFT of the same plan with every weight already resident
    head: tuple[ShardTimeline, ...] = ()  # the head shards (sharded-head), in the plan's order

    @property
    def cold_penalty_s(self) -> float:
        """What the cold start costs this plan: TTFT minus its warm TTFT."""
        return self.ttft_s - self.warm_ttft_s

    @property
    def max_load_end_s(self) -> float:
        return max([st.load_end_s for st in self.stages] + [sh.load_end_s for sh in self.head])

    @property
    def hidden_load_share(self) -> float:
        """Share of the loading critical path hidden behind compute and communication.

        Load-then-compute exposes all of it (``none`` gives exactly 0: its TTFT is the last load end
        plus the warm TTFT); a plan whose TTFT equals its warm TTFT hides all of it (1).
        """
        horizon = self.max_load_end_s
        if horizon <= 0:
            return 1.0
        return min(1.0, max(0.0, 1.0 - self.cold_penalty_s / horizon))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ttft": self.ttft_s,
            "overlap": self.overlap,
            "warm_ttft": self.warm_ttft_s,
            "cold_penalty": self.cold_penalty_s,
            "hidden_load_share": self.hidden_load_share,
            "stages": [
                {
                    "device": st.device,
                    "first": st.first,
                    "last": st.last,
                    "weight_bytes": st.weight_bytes,
                    "memory_bytes": st.memory_bytes,
                    "startup": st.startup_s,
                    "load": st.load_s,
                    "load_end": st.load_end_s,
                    "compute": st.compute_s,
                    "arrival": st.arrival_s,
                    "compute_start": st.compute_start_s,
                    "compute_end": st.compute_end_s,
                    "wait_weights": st.wait_weights_s,
                    "wait_input": st.wait_input_s,
                    "blocks": [
                        {
                            "block": b.block,
                            "load_start": b.load_start_s,
                            "load_end": b.load_end_s,
                            "compute_start": b.compute_start_s,
                            "compute_end": b.compute_end_s,
                        }
                        for b in st.blocks
                    ],
                }
                for st in self.stages
            ],
            "transfers": [
                {
                    "what": tr.what,
                    "src": tr.src,
                    "dst": tr.dst,
                    "bytes": tr.n_bytes,
                    "start": tr.start_s,
                    "at_ap": tr.at_ap_s,
                    "end": tr.end_s,
                }
                for tr in self.transfers
            ],
            **(
                {
                    "head_shards": [
                        {
                            "device": sh.device,
                            "first_row": sh.first_row,
                            "last_row": sh.last_row,
                            "weight_bytes": sh.weight_bytes,
                            "load_start": sh.load_start_s,
                            "load_end": sh.load_end_s,
                            "arrival": sh.arrival_s,
                            "compute_start": sh.compute_start_s,
                            "compute_end": sh.compute_end_s,
                            "returned": sh.returned_s,
                        }
                        for sh in self.head
                    ]
                }
                if self.head
                else {}
            ),
        }
