"""Does the profiler's compute rate predict a real decoder layer's prefill time? (docs/profiling.md)

For each (hidden size, prompt length): the FLOP/s that ``coldpipe profile`` reports (the seven
projection matmuls of one layer, prefill-shaped) turns coldpipe's FLOP count of a decoder layer
into a predicted block time; we compare it with

- a directly timed ``transformers`` ``LlamaDecoderLayer`` forward (same shapes, SDPA attention), and
- the runtime's own block call (``coldpipe.runtime.stage_model.StageModel.run_block``) when the
  runtime package is importable.

Measurements are interleaved over several rounds (the machine is shared; medians absorb noise).
The acceptance criterion of issue 6 is |measured / predicted - 1| <= 20 %.

Run:  .venv/bin/python benchmarks/bench_profile.py [--rounds 5] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from coldpipe.core.models import blocks_for
from coldpipe.profiler.measure import decoder_layer_architecture, measure_decoder_layer, measure_matmul_flops


def _runtime_block_timer(hidden: int, tokens: int, dtype: str) -> Any:
    """A function timing one ``StageModel.run_block`` of a layer, or None if the runtime is unavailable."""
    try:
        from transformers import DynamicCache
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        from coldpipe.runtime.stage_model import StageModel
    except ImportError:
        return None
    arch = decoder_layer_architecture(hidden)
    cfg = arch.to_hf_config(dtype)
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    sm = StageModel(cfg, 1, 1, tdt)
    torch.manual_seed(0)
    ref = LlamaDecoderLayer(sm.config, layer_idx=0).to(tdt)
    sm.assign(1, {f"model.layers.0.{k}": v.detach() for k, v in ref.state_dict().items()})
    x = torch.randn(1, tokens, hidden).to(tdt)  # (1, s, h)
    pos = torch.arange(tokens).unsqueeze(0)  # (1, s)
    rope = sm.position_embeddings(x, pos)

    def once() -> float:
        cache = DynamicCache(config=sm.config)
        t0 = time.perf_counter()
        sm.run_block(1, x, pos, rope, cache)
        return time.perf_counter() - t0

    try:
        once()
    except Exception as exc:  # the runtime is another engineer's work in progress
        print(f"runtime block call unavailable: {type(exc).__name__}: {exc}")
        return None
    return once


def bench(hidden: int, tokens: int, dtype: str, rounds: int) -> dict[str, Any]:
    arch = decoder_layer_architecture(hidden)
    layer_flops = blocks_for(arch, prompt_tokens=tokens, dtype=dtype)[1].flops
    runtime_once = _runtime_block_timer(hidden, tokens, dtype)
    rates, layer_times, runtime_times = [], [], []
    for _ in range(rounds):
        rates.append(measure_matmul_flops(dtype=dtype, hidden=hidden, tokens=tokens, repeats=3).value)
        layer_times.extend(measure_decoder_layer(dtype=dtype, hidden=hidden, tokens=tokens, repeats=3).samples)
        if runtime_once is not None:
            runtime_times.extend(runtime_once() for _ in range(3))
    rate = statistics.median(rates)
    predicted = layer_flops / rate
    # what `coldpipe profile` reports as `flops` by default: the rate of a timed transformers layer
    layer_rate = layer_flops / statistics.median(layer_times)
    out: dict[str, Any] = {
        "hidden": hidden,
        "tokens": tokens,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "layer_gflop": layer_flops / 1e9,
        "profile_gflops": rate / 1e9,
        "predicted_ms": predicted * 1e3,
        "transformers_layer_ms": statistics.median(layer_times) * 1e3,
        "transformers_ratio": statistics.median(layer_times) / predicted,
    }
    out["profile_layer_gflops"] = layer_rate / 1e9
    if runtime_times:
        out["runtime_block_ms"] = statistics.median(runtime_times) * 1e3
        out["runtime_ratio"] = statistics.median(runtime_times) / predicted
        # the acceptance check: runtime block time / (block FLOPs / profiled layer rate)
        out["runtime_vs_layer_profile"] = statistics.median(runtime_times) / (layer_flops / layer_rate)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--shapes", default="1024x256,2048x512,2048x128", help="HIDDENxTOKENS,...")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = []
    for shape in args.shapes.split(","):
        h, s = (int(v) for v in shape.split("x"))
        rows.append(bench(h, s, args.dtype, args.rounds))
    print(f"threads {torch.get_num_threads()}, dtype {args.dtype}, {args.rounds} rounds; ratio = measured / predicted")
    print(
        f"{'hidden':>6} {'tokens':>6} {'GFLOP':>7} {'matmul GFLOP/s':>14} {'predicted':>10} {'HF layer':>9} "
        f"{'ratio':>6} {'runtime':>9} {'ratio':>6} {'layer GFLOP/s':>13} {'runtime/layer-profile':>21}"
    )
    for r in rows:
        if "runtime_ratio" in r:
            rt = f"{r['runtime_block_ms']:7.1f}ms {r['runtime_ratio']:6.2f}"
            acc = f"{r['runtime_vs_layer_profile']:21.2f}"
        else:
            rt, acc = f"{'-':>9} {'-':>6}", f"{'-':>21}"
        print(
            f"{r['hidden']:6d} {r['tokens']:6d} {r['layer_gflop']:7.2f} {r['profile_gflops']:14.1f} "
            f"{r['predicted_ms']:8.1f}ms {r['transformers_layer_ms']:7.1f}ms {r['transformers_ratio']:6.2f} {rt} "
            f"{r['profile_layer_gflops']:13.1f} {acc}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
