"""Measured vs predicted TTFT on the kernel-enforced testbed (root): 2 architectures x 3 device mixes.

    sudo PYTHONPATH=src python benchmarks/bench_testbed.py [--reps 3] [--out out/bench_testbed.json] [--no-relay]

For each architecture (Llama- and Qwen2-shaped random checkpoints) and device mix, ``testbed up`` builds
the namespaces/tc/cgroups, the coordinator measures the agents (never reads the limits), plans the
optimum (overlap layer) and the best load-then-compute plan (overlap none), and runs each ``--reps``
times cold (resident blocks dropped, page cache dropped by the agents); device-to-device messages are
stored and forwarded whole by the AP's relay (``--no-relay``: straight through the bridge, the A/B of
docs/cluster.md's term 3). Every run is kept in ``--out``;
the table shows medians and the measured vs predicted speedup of the optimum over load-then-compute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ARCHS = {  # catalog shape, scaled down to tens of MB
    "llama": ("llama-3.1-8b", {"layers": 8, "hidden": 384, "vocab": 4096}),
    "qwen2": ("qwen2.5-7b", {"layers": 8, "hidden": 384, "vocab": 4096}),
}
MIXES = {  # per device: (share of a host core, read MB/s, uplink Mbit/s, downlink Mbit/s)
    "slow-storage": [(0.30, 20, 40, 60), (0.25, 30, 30, 50), (0.20, 40, 20, 40)],
    "slow-links": [(0.30, 60, 8, 12), (0.30, 60, 10, 15), (0.25, 60, 6, 10)],
    "mixed": [(0.40, 15, 50, 80), (0.15, 50, 20, 30), (0.25, 30, 10, 20)],
}
PROMPT = 32


def main() -> None:
    import torch

    from coldpipe.cluster.coordinator import Coordinator, load_cluster, scenario_from_measurements
    from coldpipe.cluster.measure import fingerprint, layer_flops
    from coldpipe.cluster.run import run_request
    from coldpipe.cluster.token import read_token
    from coldpipe.cluster.transport import Keys
    from coldpipe.core.types import Workload
    from coldpipe.planning import Problem, plan
    from coldpipe.profiler.checkpoint import profile_checkpoint
    from coldpipe.runtime.checkpoint import arch_for, make_checkpoint, open_checkpoint
    from coldpipe.scenario_file import scenario_from_dict
    from coldpipe.testbed import down, up

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="out/bench_testbed.json")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--mixes", default=",".join(MIXES))
    ap.add_argument(
        "--no-relay",
        action="store_true",
        help="device-to-device messages straight through the AP's bridge, not stored and forwarded (an A/B)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-testbed-"))
    token = tmp / "token"
    token.write_text(os.urandom(24).hex())
    token.chmod(0o600)
    keys = Keys(read_token(token))
    runs: list[dict[str, Any]] = []
    rows = []
    for arch_name in args.archs.split(","):
        cfg, kw = ARCHS[arch_name]
        ck = make_checkpoint(arch_for(cfg, **kw), tmp / arch_name)
        ckpt = open_checkpoint(ck)
        size_mb = sum(ckpt.block_bytes(b) for b in range(ckpt.n_blocks)) / 1e6
        fp = fingerprint(ckpt)
        cp = profile_checkpoint(ck, prompt_tokens=PROMPT, dtype=ckpt.dtype)
        host_flops = layer_flops(ckpt, PROMPT, clock="cpu")[0]
        for mix in args.mixes.split(","):
            sc_in = scenario_from_dict(
                {
                    "source": "ap",
                    "workload": {"prompt_tokens": PROMPT},
                    "model": {"hf_config": str(ck / "config.json"), "dtype": ckpt.dtype},
                    "devices": [
                        {
                            "name": f"d{i}",
                            "flops": s * host_flops,
                            "load_bandwidth": r * 1e6,
                            "startup": 0.0,
                            "memory": 400e6,
                            "uplink": u * 1e6,
                            "downlink": dn * 1e6,
                        }
                        for i, (s, r, u, dn) in enumerate(MIXES[mix])
                    ],
                }
            )
            cluster = tmp / f"{arch_name}-{mix}.yaml"
            load0 = os.getloadavg()[0]
            up(sc_in, ck, token, cluster, name="bench", host_flops=host_flops, relay=not args.no_relay)
            try:
                with Coordinator(keys, load_cluster(cluster)) as co:
                    m = co.measure(fp, PROMPT, link_bytes=2**20)
                    sc = scenario_from_measurements(cp.blocks, m, Workload(PROMPT, 1), arch_name)
                    res: dict[str, list[tuple[float, float]]] = {}
                    for ov in ("layer", "none"):
                        p = plan(Problem(sc, ov)).plan
                        for rep in range(args.reps):
                            for ch in co.ch.values():
                                ch.request("drop", 5.0)
                            out = run_request(co, sc, p, ov, tuple(range(PROMPT)), fp, recover=False)
                            res.setdefault(ov, []).append((out["measured_ttft"], out["predicted_ttft"]))
                            runs.append(
                                {
                                    "arch": arch_name,
                                    "mix": mix,
                                    "overlap": ov,
                                    "rep": rep,
                                    "plan": out["plan_text"],
                                    "measured_ttft": out["measured_ttft"],
                                    "predicted_ttft": out["predicted_ttft"],
                                    "stages": out["stages"],
                                    "scenario": out["scenario"],
                                    "load_average": os.getloadavg()[0],
                                }
                            )
                            print(
                                f"{arch_name} {mix} {ov} #{rep}: {out['plan_text']} measured "
                                f"{out['measured_ttft']:.3f} s predicted {out['predicted_ttft']:.3f} s",
                                flush=True,
                            )
                            time.sleep(0.3)
            finally:
                down("bench")
            med = {ov: statistics.median(x for x, _ in v) for ov, v in res.items()}
            pred = {ov: v[0][1] for ov, v in res.items()}
            rows.append((arch_name, size_mb, mix, med, pred, load0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(runs, indent=1))
    print(f"\nevery run: {args.out}; host: {os.cpu_count()} cores shared with other jobs (load average shown)\n")
    print(
        "| arch | MB | mix | optimum (layer): measured / predicted | ratio | load-then-compute (none): measured /"
        " predicted | ratio | speedup measured / predicted | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arch_name, size_mb, mix, med, pred, load0 in rows:
        sm, sp = med["none"] / med["layer"], pred["none"] / pred["layer"]
        print(
            f"| {arch_name} | {size_mb:.0f} | {mix} | {med['layer']:.3f} / {pred['layer']:.3f} s | "
            f"{med['layer'] / pred['layer']:.3f} | {med['none']:.3f} / {pred['none']:.3f} s | "
            f"{med['none'] / pred['none']:.3f} | {sm:.2f}x / {sp:.2f}x ({sm / sp:.2f}) | {load0:.1f} |"
        )


if __name__ == "__main__":
    main()
