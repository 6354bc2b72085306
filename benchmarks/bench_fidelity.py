"""Measured vs predicted TTFT of the local runtime on a case bench_runtime.py never saw (issue 13 item 6).

    .venv/bin/python benchmarks/bench_fidelity.py            # writes out/bench_fidelity.json, prints markdown

A Qwen2-shaped random fp32 checkpoint of ~110 MB (out/fidelity-qwen2: 8 layers, hidden 512, tied embeddings),
three emulated devices 40-70x slower than this host reading at 20-40 MB/s, the source on a device
(``edge-a``); the host profiled as ``coldpipe profile-host --calibrate`` does by default (idle after each timed
block as long as the devices idle: :func:`coldpipe.runtime.profile_host.emulated_gap_s`; ``--gap 0`` = the old
back-to-back default); the optimum (``layer``) and the best load-then-compute plan (``none``) each run ``--reps``
times, interleaved, cold page cache each run. Reports medians of measured / predicted and, for the first run
of each plan, block by block: load end, compute span and the compute thread's CPU time against the profile's
(docs/runtime.md#fidelity-outside-the-benchmark).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from coldpipe.core.architectures import blocks_for
from coldpipe.core.types import Device, Network, Scenario, Workload
from coldpipe.planning import Problem, plan
from coldpipe.runtime.checkpoint import arch_for, make_checkpoint, open_checkpoint
from coldpipe.runtime.emulation import emulation_for
from coldpipe.runtime.launch import Job, prompt_ids, run_local
from coldpipe.runtime.profile_host import HostProfile, calibrated_blocks, emulated_gap_s, profile_host

# name, slowdown vs this host, read cap (bytes/s), start-up (s), memory (bytes), uplink, downlink (bit/s)
DEVICES = [
    ("edge-a", 40.0, 20e6, 0.2, 600e6, 200e6, 300e6),
    ("edge-b", 55.0, 40e6, 0.3, 600e6, 300e6, 400e6),
    ("edge-c", 70.0, 30e6, 0.1, 600e6, 250e6, 350e6),
]
SOURCE = "edge-a"
HOP_S = 0.002


def ensure_checkpoint(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    arch = arch_for("qwen2.5-0.5b", layers=8, hidden=512, heads=8, kv_heads=2, intermediate=1536, vocab=8192)
    return make_checkpoint(arch, path, dtype="float32")


def scenario_for(ckpt_path: Path, prompt_tokens: int, gap_s: float | None, reps: int) -> tuple[Scenario, HostProfile]:
    ckpt = open_checkpoint(ckpt_path)
    if gap_s is None:  # as `coldpipe profile-host --calibrate` does by default: idle as the devices will
        first = profile_host(ckpt_path, prompt_tokens, reps=1, threads=1, gap_s=0.0)
        gap_s = emulated_gap_s([first.host_flops / d[1] for d in DEVICES], first.block_s, first.host_flops)
    prof = profile_host(ckpt_path, prompt_tokens, reps=reps, threads=1, gap_s=gap_s)
    blocks = calibrated_blocks(blocks_for(ckpt.architecture(), prompt_tokens=prompt_tokens, dtype=ckpt.dtype), prof)
    devices = [
        Device(n, flops=prof.host_flops / slow, load_bandwidth=rate, startup=st, memory=mem, uplink=up, downlink=down)
        for n, slow, rate, st, mem, up, down in DEVICES
    ]
    sc = Scenario(
        blocks, devices, Workload(prompt_tokens, 1), Network(HOP_S), model_name="fidelity-qwen2", source=SOURCE
    )
    return sc, prof


def block_spans(result: dict[str, Any], timeline: Any, profile_s: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per block: measured vs predicted load end, compute span, and the compute thread's CPU time vs the profile's."""
    out = []
    for st, pst in zip(result["stages"], timeline.stages, strict=True):
        loads = {sp["block"]: sp for sp in st["spans"] if sp["cat"] == "load" and sp["block"] is not None}
        comps = {sp["block"]: sp for sp in st["spans"] if sp["cat"] == "compute" and sp["block"] is not None}
        for b in pst.blocks:
            ld, cp = loads.get(b.block), comps.get(b.block)
            out.append(
                {
                    "device": pst.device,
                    "block": b.block,
                    "load_end": (ld["end"] if ld else float("nan"), b.load_end_s),
                    "compute_s": (cp["end"] - cp["start"] if cp else float("nan"), b.compute_end_s - b.compute_start_s),
                    "cpu_s": (cp["cpu"] if cp and cp.get("cpu") is not None else float("nan"), profile_s[b.block]),
                }
            )
    return out


def run(ckpt_path: Path, sc: Scenario, host_flops: float, profile_s: tuple[float, ...], reps: int) -> dict[str, Any]:
    opt = plan(Problem(sc, "layer"))
    ltc = plan(Problem(sc, "none"))
    ids = prompt_ids(sc.workload.prompt_tokens, int(open_checkpoint(ckpt_path).config["vocab_size"]))
    jobs = [
        Job(p.plan, p.overlap, ids, 1, tuple(emulation_for(sc, p.plan, host_flops)))
        for _ in range(reps)
        for p in (opt, ltc)
    ]
    results = run_local(ckpt_path, sc, jobs, timeout_s=60)
    out: dict[str, Any] = {}
    for key, p in (("optimal", opt), ("load_then_compute", ltc)):
        rs = [r for r, j in zip(results, jobs, strict=True) if j.overlap == p.overlap]
        ttfts = [r["measured_ttft"] for r in rs]
        m = statistics.median(ttfts)
        out[key] = {
            "plan": str(p.plan),
            "overlap": p.overlap,
            "measured_ttfts": ttfts,
            "measured_ttft": m,
            "predicted_ttft": p.ttft_s,
            "ratio": m / p.ttft_s,
            "blocks_first_run": block_spans(rs[0], p.timeline, profile_s),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="out/fidelity-qwen2")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--gap", type=float, default=None, help="profile-host --gap (default: profile-host's, the devices' idle)"
    )
    ap.add_argument("--out", default="out/bench_fidelity.json")
    args = ap.parse_args()
    t = time.time()
    ckpt_path = ensure_checkpoint(Path(args.checkpoint))
    sc, prof = scenario_for(ckpt_path, args.prompt_tokens, args.gap, args.reps)
    out = run(ckpt_path, sc, prof.host_flops, prof.block_s, args.reps)
    with open("/proc/loadavg") as f:
        out["loadavg"] = f.read().split()[:3]
    out["gap_s"] = prof.gap_s
    out["host_flops"] = prof.host_flops
    out["command"] = "python benchmarks/bench_fidelity.py" + ("" if args.gap is None else f" --gap {args.gap}")
    out["wall_s"] = time.time() - t
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("| plan | overlap | measured TTFT (median) | predicted TTFT | measured / predicted |")
    print("|---|---|---|---|---|")
    for key in ("optimal", "load_then_compute"):
        r = out[key]
        print(
            f"| `{r['plan']}` | {r['overlap']} | {r['measured_ttft']:.3f} s | {r['predicted_ttft']:.3f} s"
            f" | {r['ratio']:.3f} |"
        )
        for b in r["blocks_first_run"]:
            (lm, lp), (cm, cp), (um, up) = b["load_end"], b["compute_s"], b["cpu_s"]
            print(
                f"    {b['device']} b{b['block']}: load end {lm:.3f} / {lp:.3f} s, compute {cm:.3f} / {cp:.3f} s"
                f" (measured / predicted); CPU time {1e3 * um:.2f} ms / profiled {1e3 * up:.2f} ms"
            )
    print(
        f"profiled with {prof.gap_s:.3f} s idle after each block; load average {' '.join(out['loadavg'])};"
        f" wrote {args.out} ({out['wall_s']:.0f} s)"
    )


if __name__ == "__main__":
    main()
