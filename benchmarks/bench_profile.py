"""Does the profiler's compute rate predict a real decoder layer's prefill time? (docs/profiling.md)

For each (hidden size, prompt length), coldpipe's FLOP count of a decoder layer divided by a
profiled rate predicts the block's time. Two rates are profiled: the seven projection matmuls of one
layer alone (``measure_matmul_flops``, ``coldpipe profile --flops-from matmul``) and a directly timed
``transformers`` ``LlamaDecoderLayer`` forward (``measure_decoder_layer``, what ``coldpipe profile``
reports by default). Both predictions are compared with the runtime's own block call
(``coldpipe.runtime.stage_model.StageModel.run_block``, when the runtime package is importable).

Each round times the three back to back and takes ratios within the round (the machine is shared:
its load drifts, and ratios of neighbouring timings cancel most of the drift).
The target is |measured / predicted - 1| <= 20 %.

Run:  .venv/bin/python benchmarks/bench_profile.py [--rounds 9] [--dtype float32] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from coldpipe.core.architectures import blocks_for
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
    """Per round, back to back: the profiler's matmul pass, its decoder-layer forward and the runtime's block call.

    Ratios are taken within a round (the three timings are seconds apart, so a change in the
    machine's load affects them alike) and summarised by their median and range over rounds.
    """
    arch = decoder_layer_architecture(hidden)
    layer_flops = blocks_for(arch, prompt_tokens=tokens, dtype=dtype)[1].flops
    runtime_once = _runtime_block_timer(hidden, tokens, dtype)
    measure_matmul_flops(dtype=dtype, hidden=hidden, tokens=tokens, repeats=1)  # warm-up of both paths
    measure_decoder_layer(dtype=dtype, hidden=hidden, tokens=tokens, repeats=1)
    rates, layer_s, runtime_s = [], [], []
    for _ in range(rounds):
        rates.append(measure_matmul_flops(dtype=dtype, hidden=hidden, tokens=tokens, repeats=1).value)
        layer_s.append(measure_decoder_layer(dtype=dtype, hidden=hidden, tokens=tokens, repeats=1).samples[0])
        if runtime_once is not None:
            runtime_s.append(runtime_once())
    matmul_pred = [layer_flops / r for r in rates]  # block time predicted from the matmul-only rate
    # `coldpipe profile` reports flops = layer_flops / (its layer time): it predicts the layer time itself
    out: dict[str, Any] = {
        "hidden": hidden,
        "tokens": tokens,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "layer_gflop": layer_flops / 1e9,
        "matmul_gflops": statistics.median(rates) / 1e9,
        "layer_gflops": layer_flops / statistics.median(layer_s) / 1e9,
        "layer_ms": statistics.median(layer_s) * 1e3,
        "layer_vs_matmul": _summary([t / p for t, p in zip(layer_s, matmul_pred, strict=True)]),
    }
    if runtime_s:
        out["runtime_ms"] = statistics.median(runtime_s) * 1e3
        out["runtime_vs_matmul"] = _summary([t / p for t, p in zip(runtime_s, matmul_pred, strict=True)])
        out["runtime_vs_layer"] = _summary([t / p for t, p in zip(runtime_s, layer_s, strict=True)])
    return out


def _summary(ratios: list[float]) -> dict[str, float]:
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def _fmt(r: dict[str, float] | None) -> str:
    return "-" if r is None else f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
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
    print(f"threads {torch.get_num_threads()}, dtype {args.dtype}, {args.rounds} rounds")
    print("ratio = measured time / predicted time, median [min-max] over rounds; predicted from coldpipe's FLOP")
    print("count and (matmul) the profiler's matmul-only rate or (layer) its decoder-layer rate (the default)")
    head = ("hidden", "tokens", "GFLOP", "matmul GF/s", "layer GF/s", "layer ms", "runtime ms",
            "HF layer/matmul", "runtime/matmul", "runtime/layer")  # fmt: skip
    print(" | ".join(head))
    for r in rows:
        cells = (
            str(r["hidden"]),
            str(r["tokens"]),
            f"{r['layer_gflop']:.2f}",
            f"{r['matmul_gflops']:.1f}",
            f"{r['layer_gflops']:.1f}",
            f"{r['layer_ms']:.0f}",
            f"{r['runtime_ms']:.0f}" if "runtime_ms" in r else "-",
            _fmt(r["layer_vs_matmul"]),
            _fmt(r.get("runtime_vs_matmul")),
            _fmt(r.get("runtime_vs_layer")),
        )
        print(" | ".join(cells))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
