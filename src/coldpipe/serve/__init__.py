"""``coldpipe serve``: an OpenAI-compatible endpoint that starts cold, answers the first request fast, stays warm.

Layers, bottom up (docs/serve.md):

- :mod:`.wire` -- length-prefixed frames (a JSON header + raw bytes) over TCP on 127.0.0.1;
- :mod:`.protocol` -- what a pipeline backend does (:class:`~.protocol.Backend`): one burst of requests
  through one plan, unload, close. :mod:`.local` implements it with one persistent process per emulated
  device (:mod:`.stage_worker`); a cluster backend implements the same protocol over remote agents;
- :mod:`.sampling` -- temperature / top-p / seeded sampling of the last stage's logits;
- :mod:`.engine` -- the serving state machine: plans (cold, then warm with ``Scenario.after``), the bounded
  queue, bursts, idle unload, predictions (all from the simulator) and metrics;
- :mod:`.metrics` -- the Prometheus text of ``GET /metrics``;
- :mod:`.api` -- the FastAPI app: the OpenAI routes, errors, streaming, authentication.

torch is imported by the stage workers and the tokenizer only, never by the planning layers.
"""

from __future__ import annotations

from coldpipe.errors import ColdpipeError

__all__ = ["BackendFailed"]


class BackendFailed(ColdpipeError):
    """A burst could not finish: a device's process died or stopped answering."""
