"""What a pipeline backend does for the server, as data and one protocol.

The engine (:mod:`.engine`) decides everything -- the plan, the emulation knobs, which requests form a burst --
and hands a backend a :class:`Burst`; the backend only executes it (the runtime interprets a plan and never
plans). :class:`~coldpipe.serve.local.LocalBackend` runs one persistent process per device on this host; a
cluster backend (remote agents) implements the same :class:`Backend` protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from coldpipe.core.types import Overlap, Plan, Scenario
from coldpipe.runtime.emulation import DeviceEmulation

__all__ = ["Backend", "Burst", "BurstOutcome", "Sampling"]


@dataclass(frozen=True)
class Sampling:
    """How the last stage picks a token from its logits (``temperature`` 0: greedy)."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


@dataclass(frozen=True)
class Burst:
    """Requests that arrived together, through one plan: prompts go out in this order (the model's order)."""

    plan: Plan
    overlap: Overlap
    scenario: Scenario  # the scenario this burst runs in (residency and start-ups as the plan assumed)
    emulation: tuple[DeviceEmulation, ...]  # one per stage
    prompts: tuple[tuple[int, ...], ...]
    sampling: tuple[Sampling, ...]
    links: bool = True  # emulate the link times
    drop_cache: bool = True  # a cold burst: drop the checkpoint's page cache first
    # Per request, how many tokens the pipeline may produce without asking ``on_token`` first (0, or no entry:
    # every next step waits for ``on_token``): the last stage feeds token ``n`` straight back to the first stage
    # while ``n < budget`` and the token is not ``eos_id``; ``on_token`` still sees every token, and answering
    # no cancels the request's steps still to come (a step already in the pipeline is computed and dropped).
    budgets: tuple[int, ...] = ()
    eos_id: int | None = None


@dataclass
class BurstOutcome:
    """What a burst did: when it started (wall clock), and per device the bytes it loaded and its load end."""

    t0: float
    loaded_bytes: dict[str, int] = field(default_factory=dict)
    load_end_s: dict[str, float] = field(default_factory=dict)  # seconds after t0, devices that loaded anything


class Backend(Protocol):
    """A pipeline of devices that keeps the blocks it loaded resident between bursts."""

    def devices_up(self) -> tuple[str, ...]:
        """The devices that can take a stage now (the engine re-plans when this changes)."""
        ...

    def prepare(self, plan: Plan, cold: bool) -> None:
        """The engine's next plan, before any request for it: build what the stages need off the critical path
        (``cold``: nothing is resident, e.g. drop the page cache). May do nothing."""
        ...

    def run_burst(self, burst: Burst, on_token: Callable[[int, int], bool]) -> BurstOutcome:
        """Run ``burst``; ``on_token(request, token_id)`` for every token, in arrival order at the source.

        ``on_token`` returns whether that request wants another token; once it says no, the request's next
        decode step is never sent (its place in the pipeline is free; with a ``budget`` the pipeline may already
        have started it: it is dropped). A backend may ignore ``budgets`` and ask ``on_token`` each time. Raises
        :class:`~coldpipe.serve.BackendFailed` when a device fails.
        """
        ...

    def unload(self) -> dict[str, int]:
        """Free every resident block on every device; the bytes freed per device."""
        ...

    def close(self) -> None:
        """Stop every device's process (idempotent)."""
        ...
