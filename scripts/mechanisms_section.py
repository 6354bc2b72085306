"""The "mechanisms" section of docs/evaluation.md: what each cold-start mechanism (docs/model.md#mechanisms)
gains alone and together on the bundled scenario, and a sweep of where each helps and where it does not.
Every number is computed here, every plan by ``coldpipe.planning.plan`` and timed by the simulator.

    .venv/bin/python scripts/mechanisms_section.py           # print the section
    .venv/bin/python scripts/mechanisms_section.py --write   # replace it in docs/evaluation.md
    .venv/bin/python scripts/mechanisms_section.py --brute   # the bundled scenario's sharded optimum by brute force
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from coldpipe.cli._common import demo_scenario_text
from coldpipe.core.simulator import decode_step_s, objective_s, simulate
from coldpipe.core.types import MECHANISMS, Plan, Scenario
from coldpipe.errors import ColdpipeError
from coldpipe.planning import Problem, plan
from coldpipe.planning.bounds import lower_bounds
from coldpipe.scenario_file import scenario_from_dict
from coldpipe.viz.sweep import scenario_at

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- mechanisms:start -->", "<!-- mechanisms:end -->"
SETS: tuple[tuple[str, frozenset[str]], ...] = (
    ("none (the paper's model)", frozenset()),
    ("sparse-embedding", frozenset({"sparse-embedding"})),
    ("sharded-head", frozenset({"sharded-head"})),
    ("reuse", frozenset({"reuse"})),
    ("sublayer", frozenset({"sublayer"})),
    ("all", frozenset(MECHANISMS)),
)
SWEEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("devices", ("2", "3", "4", "6", "8")),
    ("load_bandwidth", ("0.25x", "1x", "4x", "10x")),
    ("uplink", ("0.25x", "1x", "4x")),
    ("prompt_tokens", ("64", "512", "2048", "8192")),
    ("model", ("llama-3.2-1b", "llama-3.1-8b", "qwen2.5-14b")),
)


def demo(**workload: object) -> Scenario:
    data = yaml.safe_load(demo_scenario_text())
    data["workload"].update(workload)
    return scenario_from_dict(data)


def fmt(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{1e3 * seconds:.1f} ms"


def memory_used(sc: Scenario, p: Plan) -> float:
    """Bytes of memory the plan occupies over all devices (stages, and head shards)."""
    tl = simulate(sc, p)
    return sum(st.memory_bytes for st in tl.stages) + sum(sh.weight_bytes for sh in tl.head)


def bundled() -> list[str]:
    base = demo()
    paper = plan(Problem(base)).value_s
    bound = lower_bounds(base).parallel_load_s
    long = demo(new_tokens=128)
    model_mem = sum(b.memory_bytes for b in base.blocks)
    rows = [
        f"The paper's optimum is **{fmt(paper)}** and its parallel-loading bound {fmt(bound)}: a gap of "
        f"{fmt(paper - bound)}. *Gap closed* is `(paper optimum - TTFT) / gap`. *Extra memory*: bytes the "
        "plan holds beyond the model's weights + KV (every head shard holds the final norm). The E2E column "
        "plans `--objective e2e` for 128 new tokens with the same mechanisms.",
        "",
        "| mechanisms | TTFT | gap closed | plan | planning time | TPOT of the plan | extra memory | E2E, 128 tokens |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for label, mech in SETS:
        sc = base.replace(mechanisms=mech)
        t0 = time.perf_counter()
        sol = plan(Problem(sc))
        dt = time.perf_counter() - t0
        sc_mb = sc
        tpot = decode_step_s(sc_mb, sol.plan)
        extra = memory_used(sc, sol.plan) - model_mem
        lsc = long.replace(mechanisms=mech)
        e2e = plan(Problem(lsc, "layer", "e2e"))
        assert abs(e2e.value_s - objective_s(lsc, e2e.plan, "layer", "e2e")) < 1e-12
        shown = str(sol.plan).replace("|", "\\|")  # a pipe inside a table cell
        rows.append(
            f"| {label} | {fmt(sol.value_s)} | {100 * (paper - sol.value_s) / (paper - bound):.0f} % | `{shown}` | "
            f"{1e3 * dt:.0f} ms | {fmt(tpot)} | {extra / 1e3:.0f} kB | {fmt(e2e.value_s)} |"
        )
    return rows


def per_overlap() -> list[str]:
    """The bundled scenario's best TTFT per overlap mode and mechanism set, and what reuse alone changes."""
    base = demo()
    rows = ["| overlap | " + " | ".join(label for label, _m in SETS) + " |", "|---|" + "---:|" * len(SETS)]
    reuse_gains = []
    for ov in ("layer", "stage", "none"):
        values = [plan(Problem(base.replace(mechanisms=m), ov)).value_s for _label, m in SETS]  # type: ignore[arg-type]
        reuse_gains.append((ov, values[0] - values[3]))
        rows.append(f"| {ov} | " + " | ".join(fmt(v) for v in values) + " |")
    helped = [f"`{ov}` ({fmt(g)})" for ov, g in reuse_gains if g > 1e-9]
    rows += [
        "",
        "Reuse alone gains "
        + (", ".join(helped) if helped else "nothing in any mode")
        + " on the bundled scenario: its devices are balanced enough that every extra stage boundary (a 4 MB "
        "activation through the AP) costs more than a second stage on a device saves. It pays off on very uneven "
        "devices (`tests/planning/test_mechanisms.py`: up to 58 % on seeded tight instances; "
        "`benchmarks/bench_mechanisms.py`: 3.5 s of 10.7 s measured on the runtime).",
    ]
    return rows


def sweep() -> list[str]:
    base = demo()
    rows = [
        "| axis | value | " + " | ".join(label.split(" ")[0] for label, _m in SETS) + " | gain of all |",
        "|---|---|" + "---:|" * (len(SETS) + 1),
    ]
    for axis, values in SWEEPS:
        for v in values:
            at = scenario_at(base, axis, v)
            ttft = []
            for _label, mech in SETS:
                try:
                    ttft.append(plan(Problem(at.replace(mechanisms=mech))).value_s)
                except ColdpipeError:  # an infeasible point
                    ttft.append(float("inf"))
            cells = " | ".join(fmt(t) if t != float("inf") else "infeasible" for t in ttft)
            gain = f"{100 * (1 - ttft[-1] / ttft[0]):.1f} %" if ttft[0] != float("inf") else "-"
            rows.append(f"| {axis} | {v} | {cells} | {gain} |")
    return rows


STREAM_EXAMPLE = ROOT / "examples" / "streamed-weights.yaml"
STREAM_READ_MBPS = (10, 25, 50, 75, 100, 150, 400)  # the SBC's storage read rate swept, MB/s


def _sharing(sc: Scenario, sharing: str, on: bool) -> Scenario:
    import dataclasses

    return sc.replace(
        network=dataclasses.replace(sc.network, sharing=sharing),
        mechanisms=frozenset({"streamed-weights"}) if on else frozenset(),
    )


def streamed() -> list[str]:
    """examples/streamed-weights.yaml: off against on under each sharing, a sweep of the SBC's read rate
    against its 800 Mbit/s downlink, and the planner's gap to brute force on seeded small instances."""
    import dataclasses
    import statistics
    import sys

    from coldpipe.scenario_file import load_scenario

    base = load_scenario(STREAM_EXAMPLE)
    long = base.replace(workload={"new_tokens": 128})
    off = plan(Problem(_sharing(base, "none", False)))
    off_e2e = plan(Problem(_sharing(long, "none", False), "layer", "e2e"))
    rows = [
        "`examples/streamed-weights.yaml`: Llama-3.2-3B (6.4 GB) on a laptop and an Orin NX of 3 GB each and a "
        "single-board computer (SBC, 6 GB) whose weights sit on a 40 MB/s SD card behind an 800 Mbit/s "
        "downlink (100 MB/s); the two fast devices cannot hold the model, so the SBC must take blocks. "
        "With streamed-weights on the SBC receives them from the AP (`weights: ap`). E2E: 128 new tokens, "
        "`--objective e2e`.",
        "",
        "| streamed-weights | sharing | TTFT | plan | exact | planning time | TPOT of the plan | E2E, 128 tokens |",
        "|---|---|---:|---|---|---:|---:|---:|",
        f"| off | - | {fmt(off.value_s)} | `{off.plan}` | {off.exact} | - | "
        f"{fmt(decode_step_s(base, off.plan))} | {fmt(off_e2e.value_s)} |",
    ]
    for sharing in ("none", "fdma", "tdma"):
        sc = _sharing(base, sharing, True)
        t0 = time.perf_counter()
        sol = plan(Problem(sc))
        dt = time.perf_counter() - t0
        e2e = plan(Problem(_sharing(long, sharing, True), "layer", "e2e"))
        rows.append(
            f"| on | {sharing} | {fmt(sol.value_s)} | `{sol.plan}` | {sol.exact} | {1e3 * dt:.0f} ms | "
            f"{fmt(decode_step_s(sc, sol.plan))} | {fmt(e2e.value_s)} |"
        )
    rows += [
        "",
        "Memory is unchanged (the streamed bytes are the blocks' weights). Where it pays off: the SBC's storage "
        "read rate swept against its stream (`8/down` = 100 MB/s from the AP; every hop adds 3 ms per block); "
        "TTFT of the best plan, off and on per sharing:",
        "",
        "| SBC read rate | off | on, none | on, fdma | on, tdma | gain (tdma) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    sbc = next(k for k, d in enumerate(base.devices) if d.weights != "local")
    for mbps in STREAM_READ_MBPS:
        devs = list(base.devices)
        devs[sbc] = dataclasses.replace(devs[sbc], load_bandwidth=mbps * 1e6)
        at = base.replace(devices=tuple(devs))
        vals = [plan(Problem(_sharing(at, "none", False))).value_s]
        vals += [plan(Problem(_sharing(at, sh, True))).value_s for sh in ("none", "fdma", "tdma")]
        rows.append(
            f"| {mbps} MB/s | " + " | ".join(fmt(v) for v in vals) + f" | {100 * (1 - vals[3] / vals[0]):.1f} % |"
        )
    sys.path.insert(0, str(ROOT))
    from tests.planning.test_streamed import instances, two_streams  # the tests' seeded instances

    from coldpipe.planning.brute import brute_force

    rows += [
        "",
        "The planner against brute force (every plan timed by the simulator) on the seeded instances of "
        "`tests/planning/test_streamed.py` (3 devices, 5 blocks, one device's storage 20x slower, its weights "
        "from the AP or a peer; 4 devices, 6 blocks, tight memory, two devices' storage 50x slower; the feasible "
        "ones), per sharing and hop latency. Without sharing and hop latency "
        "the DP is exact; otherwise it is the DP on the effective scenario, then local search on the simulator:",
        "",
        "| family | sharing | hop latency | instances | plans = brute force | median gap | worst gap | "
        "streaming device used |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    cases = [("3 x 5, one stream", instances, sh, hop) for sh, hop in
             (("none", 0.0), ("none", 0.003), ("fdma", 0.003), ("tdma", 0.0), ("tdma", 0.003))]  # fmt: skip
    cases += [("4 x 6, two streams", two_streams, sh, 0.003) for sh in ("none", "fdma", "tdma")]
    for family, make, sharing, hop in cases:
        gaps, used = [], 0
        for sc in make(sharing, hop, 30):
            try:
                ref = brute_force(Problem(sc))
            except ColdpipeError:
                continue
            sol = plan(Problem(sc))
            gaps.append(sol.value_s / ref.value_s - 1.0)
            used += any(sc.device(d).weights != "local" for d in ref.plan.devices)
        same = sum(g <= 1e-12 for g in gaps)
        rows.append(
            f"| {family} | {sharing} | {1e3 * hop:.0f} ms | {len(gaps)} | {same} | "
            f"{100 * statistics.median(gaps):.2f} % | {100 * max(gaps):.2f} % | {used} |"
        )
    return rows


def section() -> str:
    start = time.perf_counter()
    body = [
        "## Mechanisms beyond the paper",
        "",
        "Each mechanism of [model.md](model.md#mechanisms) is off by default; `--mechanisms LIST|all` turns it on. "
        "Generated by `.venv/bin/python scripts/mechanisms_section.py --write` (predictions of the simulator; the "
        "plans with sharded-head are not proven optimal).",
        "",
        "### The bundled scenario",
        "",
        *bundled(),
        "",
        "Per overlap mode (the optimum of the paper's problem, then with each mechanism set):",
        "",
        *per_overlap(),
        "",
        "### Where each helps, and where not",
        "",
        "TTFT of the best plan on the bundled scenario with one axis changed (as `coldpipe sweep --axis`), per "
        "mechanism set. sparse-embedding helps when block 0 is on the critical path of loading (its device is "
        "busy loading when the prompt arrives) and not when storage is fast; sharded-head helps when the "
        "last stage's loading gates the end; reuse helps when a fast device's memory, not its loading, limits "
        "what it computes (it gains nothing on the bundled scenario: its local search keeps the plan without "
        "reuse); sublayer helps when a stage boundary inside a decoder layer balances loading against compute "
        "better than one between layers (it never slows the first token: a plan keeping every layer whole is "
        "among its plans and is no slower).",
        "",
        *sweep(),
        "",
        "### streamed-weights",
        "",
        "streamed-weights acts only when a device's `weights` is not `local` (none in the bundled scenario: "
        "`all` above leaves it off), so it has its own scenario ([model.md](model.md#streamed-weights)).",
        "",
        *streamed(),
    ]
    body += ["", f"(This section took {time.perf_counter() - start:.0f} s to compute.)"]
    return "\n".join([START, *body, END])


def brute() -> None:
    """Every pipeline over blocks 0..B-2 that fits, with its exact head split (sparse-embedding and sharded-head)."""
    from coldpipe.planning.brute import all_plans, fits
    from coldpipe.planning.mechanisms import split_head

    sc = demo().replace(mechanisms=frozenset({"sparse-embedding", "sharded-head"}))
    pipeline = sc.replace(blocks=sc.blocks[:-1], mechanisms=frozenset())
    best, best_plan, n, t0 = float("inf"), None, 0, time.perf_counter()
    for p in all_plans(pipeline):
        if not fits(pipeline, p):
            continue
        n += 1
        cand = split_head(sc, p.stages)
        if cand is None:
            continue
        try:
            v = simulate(sc, cand).ttft_s
        except ColdpipeError:
            continue
        if v < best:
            best, best_plan = v, cand
    planned = plan(Problem(sc))
    print(f"{n} pipelines that fit, {time.perf_counter() - t0:.0f} s: best {best:.6f} s with {best_plan}")
    print(f"the planner: {planned.value_s:.6f} s with {planned.plan}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help="replace the section in docs/evaluation.md")
    ap.add_argument("--brute", action="store_true", help="only the brute-force check of the sharded optimum")
    args = ap.parse_args()
    if args.brute:
        brute()
        return
    text = section()
    if not args.write:
        print(text)
        return
    doc = ROOT / "docs" / "evaluation.md"
    old = doc.read_text(encoding="utf-8")
    if START in old:
        new = old[: old.index(START)] + text + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    doc.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
