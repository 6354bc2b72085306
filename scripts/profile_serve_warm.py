"""Where ``coldpipe serve``'s warm path spends its time: the pipeline of persistent workers against the same blocks
chained in one process.

    PYTHONPATH=src nice .venv/bin/python scripts/profile_serve_warm.py [--reps 5]

Uses benchmarks/bench_serve.py's checkpoint and scenario (made on first use). Interleaved rep by rep:

1. **pipeline**: :class:`~coldpipe.serve.local.LocalBackend` (three worker processes over 127.0.0.1 TCP, no
   HTTP, emulation off, every block resident, stage models prepared ahead as the engine does) runs the warm
   plan for one 64-token prompt and 33 greedy tokens; TTFT is the time to the first token's ``on_token``, per
   token the mean gap between later ``on_token`` calls. Twice: **fed back** (as the engine runs a request
   without stop strings: the last stage sends each token straight to the first stage, and to the source) and
   **via source** (each step sent by the source after ``on_token``, as for a request with stop strings);
2. **one process**: the same :class:`~coldpipe.runtime.stage_model.StageModel` blocks (all of them, one torch
   thread, like each worker) chained in this process with the same cache and argmax, no sockets.

The difference is what the pipeline itself costs (hops, frames, process wake-ups); the HTTP layer and
``generate`` are bench_serve.py's. Prints medians and the host's load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    import torch
    from bench_serve import PROMPT, PROMPT_VOCAB, setup
    from transformers import DynamicCache

    from coldpipe.cli._common import scenario_arg
    from coldpipe.planning import Problem, plan
    from coldpipe.runtime.checkpoint import open_checkpoint, read_tensor, torch_dtype
    from coldpipe.runtime.emulation import emulation_for
    from coldpipe.runtime.launch import prompt_ids
    from coldpipe.runtime.stage_model import StageModel
    from coldpipe.serve.local import LocalBackend
    from coldpipe.serve.protocol import Burst, Sampling

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=33)
    args = ap.parse_args()
    ckpt_dir, sc_path = setup(REPO / "out")
    sc = scenario_arg(str(sc_path))
    warm_plan = plan(Problem(sc.after(plan(Problem(sc, "layer")).plan), "layer")).plan
    ids = tuple(prompt_ids(PROMPT, PROMPT_VOCAB, seed=3))

    backend = LocalBackend(ckpt_dir, tuple(d.name for d in sc.devices), sc)

    def pipeline(n: int, fed_back: bool = True) -> tuple[float, float]:
        emu = tuple(emulation_for(sc, warm_plan, None, enabled=False))
        budgets = (n,) if fed_back else ()  # as the engine sends a request without stop strings, or with
        greedy = (Sampling(0.0, 1.0, 0),)
        job = Burst(warm_plan, "layer", sc, emu, (ids,), greedy, links=False, drop_cache=False, budgets=budgets)
        at: list[float] = []
        backend.prepare(warm_plan, False)  # as the engine does after each burst: stage models built ahead
        time.sleep(0.2)

        def on_token(_r: int, _tok: int) -> bool:
            at.append(time.perf_counter())
            return len(at) < n

        t = time.perf_counter()
        backend.run_burst(job, on_token)
        return at[0] - t, (at[-1] - at[0]) / (n - 1)

    torch.set_num_threads(1)
    ck = open_checkpoint(ckpt_dir)
    model = StageModel(ck.config, 0, ck.n_blocks - 1, torch_dtype(ck.dtype))
    for b in range(ck.n_blocks):
        tensors = {}
        for name in ck.blocks[b]:
            e = ck.tensors[name]
            fd = os.open(e.file, os.O_RDONLY)
            try:
                tensors[e.name] = read_tensor(e, fd)
            finally:
                os.close(fd)
        model.assign(b, tensors)
    prompt = torch.tensor([ids])  # (1, s)

    def one_process(n: int) -> tuple[float, float]:
        cache = DynamicCache(config=model.config)
        x, at = prompt, []
        t = time.perf_counter()
        for k in range(n):
            q, pos = (len(ids), 0) if k == 0 else (1, len(ids) + k - 1)
            position_ids = torch.arange(pos, pos + q).unsqueeze(0)  # (1, q)
            h, rope = x, None
            for b in range(ck.n_blocks):
                if rope is None and 1 <= b <= model.n_layers:
                    rope = model.position_embeddings(h, position_ids)
                h = model.run_block(b, h, position_ids, rope, cache)
            x = torch.tensor([[int(torch.argmax(h.reshape(-1)).item())]])
            at.append(time.perf_counter())
        return at[0] - t, (at[-1] - at[0]) / (n - 1)

    try:
        for _ in range(2):  # the first bursts load the warm plan's moved blocks and warm the caches
            pipeline(4)
            one_process(4)
        rows: dict[str, list[tuple[float, float]]] = {"fed back": [], "via source": [], "one process": []}
        for _ in range(args.reps):
            rows["fed back"].append(pipeline(args.tokens))
            rows["via source"].append(pipeline(args.tokens, fed_back=False))
            rows["one process"].append(one_process(args.tokens))
    finally:
        backend.close()
    print(f"warm plan {warm_plan}, prompt {PROMPT} tokens, {args.tokens} tokens, medians of {args.reps}")
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
    for k, (ttft, tok) in med.items():
        print(f"{k:11s}  TTFT {1e3 * ttft:7.1f} ms   per token {1e3 * tok:6.2f} ms   ({1 / tok:5.1f} tokens/s)")
    o = med["one process"]
    for k in ("fed back", "via source"):
        p = med[k]
        print(
            f"pipeline cost ({k}): TTFT {100 * (p[0] / o[0] - 1):+.1f} %, per token {1e3 * (p[1] - o[1]):+.2f} ms "
            f"({100 * (p[1] / o[1] - 1):+.1f} %)"
        )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
