"""Measured vs predicted gains of the mechanisms (docs/model.md#mechanisms) on the real runtime.

    .venv/bin/python benchmarks/bench_mechanisms.py     # writes out/bench_mechanisms.json, prints markdown
    .venv/bin/python benchmarks/bench_mechanisms.py --only sublayer   # one mechanism

1. make (once) a random fp32 Llama-shaped checkpoint in out/bench-mech (6 layers, hidden 512, vocabulary 32,000:
   the embedding is a third of the weights, as in small real models);
2. profile this host (``coldpipe profile-host``) and calibrate the blocks' FLOPs to it, as bench_runtime.py does;
3. three emulated devices with slow storage (start-ups, read caps, links);
4. plan the paper's problem and the same with ``sparse-embedding`` (:func:`coldpipe.planning.plan`);
5. run both ``--reps`` times, interleaved, from a cold page cache; the sparse plan with the runtime's
   ``--sparse-embedding`` (block 0 reads the prompt's rows only);
6. the same for ``sharded-head`` on the first cluster (one more rank per head shard) and for ``reuse`` on a
   second emulated cluster (:data:`REUSE_DEVICES`: very uneven devices, where
   the planner gives two devices two stages each), the paper's optimum against the reuse plan;
7. ``sublayer`` on a third cluster (:data:`SUBLAYER_DEVICES`, tight memory), stage boundaries inside decoder layers;
8. ``streamed-weights`` on a fourth (:data:`STREAMED_DEVICES`): edge-c's blocks come from rank 0 over its emulated
   downlink instead of its 4 MB/s storage (``network.sharing: none``), and again under ``tdma``
   (``--only streamed-weights-tdma``: the blocks and the activations share one emulated channel).

Reports medians: each plan's measured and predicted TTFT, and the measured gain (paper plan's TTFT minus
the sparse plan's) against the predicted gain. Target: within +-10 %. The host is shared: expect noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from coldpipe.core.architectures import blocks_for
from coldpipe.core.types import Device, Network, Scenario, Workload
from coldpipe.planning import Problem, plan
from coldpipe.runtime.checkpoint import arch_for, make_checkpoint, open_checkpoint
from coldpipe.runtime.emulation import emulation_for
from coldpipe.runtime.launch import Job, prompt_ids, run_local
from coldpipe.runtime.profile_host import calibrated_blocks, profile_host

# name, slowdown vs this host, read cap (bytes/s), start-up (s), memory (bytes), uplink, downlink (bit/s)
DEVICES = [
    ("edge-a", 6.0, 40e6, 0.2, 400e6, 300e6, 400e6),
    ("edge-b", 8.0, 30e6, 0.4, 400e6, 200e6, 300e6),
    ("edge-c", 4.0, 35e6, 0.3, 400e6, 400e6, 500e6),
]
HOP_S = 0.002
# found by a seeded random search over emulatable clusters (the largest predicted reuse gain of 300)
REUSE_DEVICES = [
    ("edge-a", 32.0, 40e6, 0.1, 40e6, 400e6, 500e6),
    ("edge-b", 2.0, 20e6, 0.1, 40e6, 400e6, 200e6),
    ("edge-c", 8.0, 20e6, 0.5, 400e6, 100e6, 500e6),
]

# the largest predicted sublayer gain (seconds) of 300 seeded random clusters (slowdowns 2-32x, 20-80 MB/s,
# 40-400 MB) on a 42 GFLOP/s host; sublayer gains on 149 of the 255 feasible ones
SUBLAYER_DEVICES = [
    ("edge-a", 4.0, 20e6, 0.5, 80e6, 100e6, 500e6),
    ("edge-b", 4.0, 20e6, 0.5, 80e6, 100e6, 500e6),
    ("edge-c", 32.0, 20e6, 0.1, 150e6, 400e6, 200e6),
]

# streamed-weights: edge-c's storage reads 4 MB/s, its 400 Mbit/s downlink 50 MB/s (weights: ap); a and b cannot
# hold the model alone (80 MB each)
STREAMED_DEVICES = [
    ("edge-a", 6.0, 40e6, 0.2, 80e6, 300e6, 400e6),
    ("edge-b", 8.0, 30e6, 0.4, 80e6, 200e6, 300e6),
    ("edge-c", 4.0, 4e6, 0.3, 400e6, 400e6, 400e6),
]
STREAMING = {"edge-c"}


def ensure_checkpoint(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    arch = arch_for("llama-3.1-8b", layers=6, hidden=512, heads=8, kv_heads=4, intermediate=1408, vocab=32000)
    return make_checkpoint(arch, path, dtype="float32", shard_bytes=400e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="out/bench-mech")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="out/bench_mechanisms.json")
    ap.add_argument("--only", default=None, help="one mechanism (its own JSON: out/bench_mechanisms-NAME.json)")
    args = ap.parse_args()

    ckpt_path = ensure_checkpoint(Path(args.checkpoint))
    ckpt = open_checkpoint(ckpt_path)
    s = args.prompt_tokens
    prof = profile_host(ckpt_path, s, reps=args.reps, threads=1, gap_s=0.25)
    blocks = calibrated_blocks(blocks_for(ckpt.architecture(), prompt_tokens=s, dtype=ckpt.dtype), prof)
    ids = prompt_ids(s, int(ckpt.config["vocab_size"]))
    out: dict[str, object] = {"command": "python benchmarks/bench_mechanisms.py", "prompt_tokens": s, "reps": args.reps}
    out["host_flops"] = prof.host_flops
    for name, devs, mech in (
        ("sparse-embedding", DEVICES, "sparse-embedding"),
        ("sharded-head", DEVICES, "sharded-head"),
        ("reuse", REUSE_DEVICES, "reuse"),
        ("sublayer", SUBLAYER_DEVICES, "sublayer"),
        ("streamed-weights", STREAMED_DEVICES, "streamed-weights"),
        ("streamed-weights-tdma", STREAMED_DEVICES, "streamed-weights"),
    ):
        if args.only is not None and name != args.only:
            continue
        devices = [
            Device(n, flops=prof.host_flops / slow, load_bandwidth=rate, startup=st, memory=mem, uplink=up, downlink=dn,
                   weights="ap" if mech == "streamed-weights" and n in STREAMING else "local")
            for n, slow, rate, st, mem, up, dn in devs
        ]  # fmt: skip
        sharing = "tdma" if name.endswith("-tdma") else "none"  # the air shared with the streams, one hop at a time
        sc = Scenario(blocks, devices, Workload(s, 1), Network(HOP_S, sharing), model_name="bench-mech")
        on_sc = sc.replace(mechanisms=frozenset({mech}))
        paper, on = plan(Problem(sc)), plan(Problem(on_sc))
        sparse = mech == "sparse-embedding"
        jobs = []
        for _ in range(args.reps):
            jobs.append(Job(paper.plan, "layer", ids, 1, tuple(emulation_for(sc, paper.plan, prof.host_flops))))
            emu = tuple(emulation_for(on_sc, on.plan, prof.host_flops))
            job_sharing = sharing if mech == "streamed-weights" else "none"
            jobs.append(
                Job(
                    on.plan,
                    "layer",
                    ids,
                    1,
                    emu,
                    sparse_embedding=sparse,
                    sublayer=mech == "sublayer",
                    sharing=job_sharing,
                )
            )
        t = time.time()
        results = run_local(ckpt_path, sc, jobs, timeout_s=60)
        wall = time.time() - t
        runs = list(zip(results, jobs, strict=True))
        m_paper = statistics.median(r["measured_ttft"] for k, (r, _j) in enumerate(runs) if k % 2 == 0)
        m_on = statistics.median(r["measured_ttft"] for k, (r, _j) in enumerate(runs) if k % 2 == 1)
        tokens = {tuple(r["token_ids"]) for r in results}
        gain_pred, gain_meas = paper.value_s - on.value_s, m_paper - m_on
        out[name] = {
            "paper": {"plan": str(paper.plan), "measured_ttft": m_paper, "predicted_ttft": paper.value_s},
            name: {"plan": str(on.plan), "measured_ttft": m_on, "predicted_ttft": on.value_s},
            "gain": {"measured_s": gain_meas, "predicted_s": gain_pred, "ratio": gain_meas / gain_pred},
            "same_tokens_every_run": len(tokens) == 1,
            "all_ttfts": [(str(j.plan), r["measured_ttft"]) for r, j in runs],
            "wall_s": wall,
        }
        print(f"{name}:")
        print("| mechanisms | plan | measured TTFT | predicted TTFT |")
        print("|---|---|---:|---:|")
        print(f"| none | `{paper.plan}` | {m_paper:.3f} s | {paper.value_s:.3f} s |")
        print(f"| {name} | `{on.plan}` | {m_on:.3f} s | {on.value_s:.3f} s |")
        print(
            f"gain: measured {gain_meas:.3f} s, predicted {gain_pred:.3f} s (measured / predicted "
            f"{gain_meas / gain_pred:.3f}); same tokens every run: {len(tokens) == 1}; {wall:.0f} s of runs"
        )
    dest = Path(args.out if args.only is None else args.out.replace(".json", f"-{args.only}.json"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
