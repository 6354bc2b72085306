"""The real cold-start pipeline runtime: the shell that executes a :class:`coldpipe.core.types.Plan`.

One process per stage, each a rank of ``torch.distributed`` (gloo over TCP), plus one *source* rank
(rank 0) where the prompt arrives and the tokens return. Modules:

- :mod:`.checkpoint` -- HF-format checkpoints: random ones for tests/benchmarks, block -> tensor map, raw reads;
- :mod:`.stage_model` -- the blocks of one stage, built on the meta device, weights assigned when loaded;
- :mod:`.emulation` -- the emulated edge cluster: cold page cache, read-rate cap, compute slowdown, memory
  bandwidth of decode steps, link delays;
- :mod:`.trace` -- spans recorded by the workers and the Chrome/Perfetto trace JSON;
- :mod:`.worker` -- the per-rank program (loader thread + compute loop; the source loop on rank 0);
- :mod:`.launch` -- ``coldpipe run --local``: spawns the ranks on 127.0.0.1 and gathers the result;
- :mod:`.report` -- measured vs predicted (the prediction always comes from the simulator);
- :mod:`.profile_host` -- this host's per-block compute time (prefill and decode step) and read rate.

torch, transformers and safetensors are imported only inside this package, never from ``coldpipe.core``,
and never at import time of ``coldpipe.runtime`` itself (so ``coldpipe plan`` stays fast).
"""

from __future__ import annotations

from coldpipe.errors import ColdpipeError

__all__ = ["RunFailed"]


class RunFailed(ColdpipeError):
    """A pipelined run could not finish: a rank died, a peer never connected, or an operation timed out."""
