"""streamed-weights (docs/model.md#streamed-weights): scenario fields, the channel schedule, planning vs brute force."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import statistics
from pathlib import Path

import pytest
from tests.random_instances import random_scenario

from coldpipe.core.mechanisms import deferred_bytes
from coldpipe.core.simulator import decode_step_s, objective_s, simulate
from coldpipe.core.streamed import simulate_streamed
from coldpipe.core.types import Block, Device, Network, Plan, Scenario, Workload
from coldpipe.errors import Infeasible, InputError
from coldpipe.planning import Problem, plan
from coldpipe.planning.brute import all_plans, brute_force, fits
from coldpipe.planning.mechanisms import effective_scenario, mechanism_bounds
from coldpipe.scenario_file import load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "coldpipe" / "data" / "demo.yaml"
EXAMPLE = ROOT / "examples" / "streamed-weights.yaml"
ON = frozenset({"streamed-weights"})


def by_hand(sharing: str, mechanisms: frozenset[str] = ON) -> Scenario:
    """a reads block 0 locally (0.1 s) and computes it in 0.5 s; b's storage is slow, so it gets block 1 from
    a: a's uplink 0.1 s, b's downlink 1 s. The activation: 1 ms up, 10 ms down."""
    blocks = [Block(f"b{i}", weight_bytes=1e8, flops=1e12, out_bytes=1e6) for i in range(2)]
    a = Device("a", 2e12, 1e9, 0.0, 1e12, 8e9, 8e9)
    b = Device("b", 1e12, 1e6, 0.0, 1e12, 8e9, 8e8, weights="a")
    wl = Workload(1, prompt_bytes=0, token_bytes=0)
    return Scenario(blocks, (a, b), wl, Network(0.0, sharing), mechanisms=mechanisms)


def test_timeline_by_hand() -> None:
    p = Plan.parse("a[0-0] > b[1-1]")
    # none: b's block arrives at 1.1 s (0.1 s up from a, 1 s down), the activation at 0.611 s: b computes 1.1-2.1 s
    assert simulate(by_hand("none"), p).ttft_s == pytest.approx(2.1, abs=1e-12)
    # fdma: the activation's downlink waits for the stream on b's link (until 1.1 s): 1.1-1.11 s
    assert simulate(by_hand("fdma"), p).ttft_s == pytest.approx(2.11, abs=1e-12)
    # tdma: its uplink waits too (the air is busy until 1.1 s): 1.1-1.101-1.111 s
    tl = simulate(by_hand("tdma"), p)
    assert tl.ttft_s == pytest.approx(2.111, abs=1e-12)
    weights = [t for t in tl.transfers if t.what == "weights"]
    assert [(w.src, w.dst, w.start_s, w.at_ap_s, w.end_s) for w in weights] == [
        ("a", "b", 0.0, pytest.approx(0.1), pytest.approx(1.1))
    ]
    assert tl.stages[1].blocks[0].load_end_s == pytest.approx(1.1) and tl.warm_ttft_s == pytest.approx(1.511)
    # off: b reads its 100 MB at 1 MB/s
    assert simulate(by_hand("tdma", frozenset()), p).ttft_s == pytest.approx(100.0 + 1.0, abs=1e-9)


def test_fields_validate_and_round_trip() -> None:
    sc = by_hand("tdma")
    assert Scenario.from_dict(json.loads(json.dumps(sc.to_dict()))) == sc
    doc = {k: v for k, v in sc.to_dict().items() if k != "mechanisms"}  # a scenario file names no mechanisms
    assert scenario_from_dict(doc) == sc.replace(mechanisms=frozenset())
    assert "weights" not in by_hand("none").to_dict()["devices"][0]  # defaults stay out of the file
    assert "sharing" not in by_hand("none").to_dict()["network"]
    a, b = sc.devices
    for bad, field in (
        ((a, dataclasses.replace(b, weights="c")), "device 'b'.weights"),
        ((a, dataclasses.replace(b, weights="b")), "device 'b'.weights"),
        ((dataclasses.replace(a, weights="ap"), b), "device 'b'.weights"),  # a peer must hold its weights
    ):
        with pytest.raises(InputError) as err:
            sc.replace(devices=bad)
        assert err.value.field == field
    with pytest.raises(InputError) as err:
        Network(0.0, "cdma")
    assert err.value.field == "network.sharing"
    with pytest.raises(InputError) as err:
        dataclasses.replace(a, weights="")
    assert err.value.field == "device 'a'.weights"
    doc["network"]["sharing"] = "ofdma"
    with pytest.raises(InputError, match=r"^network\.sharing"):
        scenario_from_dict(doc)


def test_off_and_local_are_the_paper_model() -> None:
    """Off: weights and sharing change nothing; on with every device local and no head shards: nothing either."""
    demo = load_scenario(DEMO)
    assert round(plan(Problem(demo)).value_s, 3) == 3.520
    from coldpipe.cli._common import with_mechanisms

    on = with_mechanisms(demo, "all")
    assert "streamed-weights" not in on.mechanisms and round(plan(Problem(on)).value_s, 3) == 3.238
    for seed in range(6):
        sc = random_scenario(seed, 3, 5, tight=seed % 2 == 0, source_device=seed % 3 == 0)
        streaming = sc.replace(devices=(dataclasses.replace(sc.devices[0], weights="ap"), *sc.devices[1:]),
                               network=Network(sc.network.hop_latency, "tdma"))  # fmt: skip
        local_on = sc.replace(network=Network(sc.network.hop_latency, "tdma"), mechanisms=ON)
        for p in itertools.islice(all_plans(sc), 30):
            if not fits(sc, p):
                continue
            for ov in ("layer", "stage", "none"):
                ref = simulate(sc, p, ov)
                assert simulate(streaming, p, ov).ttft_s == ref.ttft_s == simulate(local_on, p, ov).ttft_s
                # the schedule itself, forced with nothing to stream and no sharing, is the paper's timeline
                mine = simulate_streamed(sc.replace(mechanisms=ON), p, ov)
                assert mine.ttft_s == pytest.approx(ref.ttft_s, rel=1e-12, abs=1e-12)
                assert mine.warm_ttft_s == pytest.approx(ref.warm_ttft_s, rel=1e-12, abs=1e-12)
                for x, y in zip(mine.stages, ref.stages, strict=True):
                    for f in ("load_end_s", "arrival_s", "compute_end_s", "wait_weights_s", "wait_input_s", "load_s"):
                        assert getattr(x, f) == pytest.approx(getattr(y, f), rel=1e-12, abs=1e-12)


def streaming(sc: Scenario, seed: int, sharing: str, hop: float) -> Scenario:
    """``sc`` with one device's storage 20x slower and its weights from the AP or a peer."""
    rng = random.Random(seed)
    devs = list(sc.devices)
    k = rng.randrange(len(devs))
    src = rng.choice(["ap"] + [d.name for i, d in enumerate(devs) if i != k])
    devs[k] = dataclasses.replace(devs[k], weights=src, load_bandwidth=devs[k].load_bandwidth / 20)
    return sc.replace(devices=tuple(devs), network=Network(hop, sharing), mechanisms=ON)


def instances(sharing: str, hop: float, n: int = 14) -> list[Scenario]:
    return [
        streaming(random_scenario(seed, 3, 5, tight=seed % 2 == 0, source_device=seed % 3 == 0), seed, sharing, hop)
        for seed in range(n)
    ]


def two_streams(sharing: str, hop: float, n: int = 14) -> list[Scenario]:
    """Harder: 4 devices, 6 blocks, tight memory; two devices' storage 50x slower, their weights from the AP or
    a local device, their downlinks 0.1, 0.8 or 2 Gbit/s."""
    out = []
    for seed in range(n):
        sc = random_scenario(seed, 4, 6, tight=True, source_device=False)
        rng = random.Random(seed)
        devs = list(sc.devices)
        ks = rng.sample(range(len(devs)), 2)
        for k in ks:
            src = rng.choice(["ap"] + [d.name for i, d in enumerate(devs) if i not in ks])
            devs[k] = dataclasses.replace(devs[k], weights=src, load_bandwidth=devs[k].load_bandwidth / 50,
                                          downlink=rng.choice([1e8, 8e8, 2e9]))  # fmt: skip
        out.append(sc.replace(devices=tuple(devs), network=Network(hop, sharing), mechanisms=ON))
    return out


@pytest.mark.parametrize("overlap", ["layer", "stage", "none"])
def test_unshared_without_hop_latency_is_exact(overlap: str) -> None:
    """sharing none, no hop latency: the effective scenario's timeline is the mechanism's for every plan, and
    the DP on it equals brute force on the real simulator."""
    for sc in instances("none", 0.0):
        eff = effective_scenario(sc)
        for p in itertools.islice(all_plans(sc), 25):
            if fits(sc, p):
                assert simulate(sc, p, overlap).ttft_s == pytest.approx(simulate(eff, p, overlap).ttft_s, rel=1e-12)
        try:
            ref = brute_force(Problem(sc, overlap))
        except Infeasible:
            with pytest.raises(Infeasible):
                plan(Problem(sc, overlap))
            continue
        sol = plan(Problem(sc, overlap))
        assert sol.value_s == pytest.approx(ref.value_s, rel=1e-12) == simulate(sc, sol.plan, overlap).ttft_s
        assert sol.exact


def test_sharing_only_delays() -> None:
    """Every plan: no sharing <= tdma and fdma (a hop only ever waits), and the bounds hold."""
    for seed, sc in enumerate(instances("none", 0.003, 8)):
        for p in itertools.islice(all_plans(sc), 40):
            if not fits(sc, p):
                continue
            free = simulate(sc, p).ttft_s
            for sharing in ("tdma", "fdma"):
                assert simulate(sc.replace(network=Network(0.003, sharing)), p).ttft_s >= free - 1e-12, (seed, p)


@pytest.mark.parametrize(("sharing", "hop"), [("none", 0.003), ("tdma", 0.0), ("tdma", 0.003), ("fdma", 0.003)])
def test_gap_to_brute_force(sharing: str, hop: float) -> None:
    """Hop latency or a shared channel: the planner (DP on the effective scenario, then local search on the real
    simulator) is not proven optimal; never below brute force, median gap 0, worst within 2 %."""
    gaps = []
    for sc in instances(sharing, hop):
        try:
            ref = brute_force(Problem(sc))
        except Infeasible:
            continue
        sol = plan(Problem(sc))
        assert sol.value_s == simulate(sc, sol.plan).ttft_s >= ref.value_s - 1e-12
        assert sol.lower_bound_s is None or sol.lower_bound_s <= ref.value_s + 1e-12
        assert mechanism_bounds(sc).best_s <= ref.value_s + 1e-12
        gaps.append(sol.value_s / ref.value_s - 1.0)
    assert len(gaps) >= 10
    assert statistics.median(gaps) == 0.0 and max(gaps) <= 0.02, gaps


@pytest.mark.parametrize("sharing", ["none", "fdma", "tdma"])
def test_gap_to_brute_force_two_streams(sharing: str) -> None:
    """The harder family (two streaming devices, 4 x 6): never below brute force, median 0, worst within 2 %."""
    gaps = []
    for sc in two_streams(sharing, 0.003):
        try:
            ref = brute_force(Problem(sc))
        except Infeasible:
            continue
        sol = plan(Problem(sc))
        assert sol.value_s == simulate(sc, sol.plan).ttft_s >= ref.value_s - 1e-12
        gaps.append(sol.value_s / ref.value_s - 1.0)
    assert len(gaps) >= 10
    assert statistics.median(gaps) == 0.0 and max(gaps) <= 0.02, gaps


def test_e2e_accounts_decode_and_bursts_are_refused() -> None:
    for sc in instances("tdma", 0.003, 6):
        sc = sc.replace(devices=tuple(dataclasses.replace(d, mem_bandwidth=5e10) for d in sc.devices),
                        workload={"new_tokens": 16})  # fmt: skip
        try:
            ref = brute_force(Problem(sc, objective="e2e"))
        except Infeasible:
            continue
        sol = plan(Problem(sc, objective="e2e"))
        tl = simulate(sc, sol.plan)
        assert sol.value_s == pytest.approx(tl.ttft_s + 15 * decode_step_s(sc, sol.plan), rel=1e-12)
        assert sol.value_s >= ref.value_s - 1e-12
    burst = by_hand("tdma").replace(workload={"requests": 2})
    with pytest.raises(InputError, match="streamed weights"):
        objective_s(burst, Plan.parse("a[0-0] > b[1-1]"), "layer", "ttft")
    assert objective_s(burst, Plan.parse("a[0-1]"), "layer", "ttft") > 0  # b not in the plan: nothing streams


def test_example_streaming_helps() -> None:
    """examples/streamed-weights.yaml: the device with the slow card gains by streaming, on every sharing."""
    sc = load_scenario(EXAMPLE)
    off = plan(Problem(sc)).value_s
    for sharing in ("none", "fdma", "tdma"):
        on = sc.replace(network=dataclasses.replace(sc.network, sharing=sharing), mechanisms=ON)
        sol = plan(Problem(on))
        assert sol.value_s < off * 0.95, (sharing, sol.value_s, off)


def test_cli_compare_row_and_one_line_errors(tmp_path: Path) -> None:
    """``compare --mechanisms streamed-weights`` has its row; a bad ``weights`` or ``sharing`` in a file is one
    line naming the field, exit 2."""
    import subprocess
    import sys

    import yaml

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "coldpipe", *args], capture_output=True, text=True, timeout=300)

    ok = run("compare", str(EXAMPLE), "--mechanisms", "streamed-weights", "--json")
    assert ok.returncode == 0, ok.stderr
    rows = {r["mechanisms"]: r["ttft"] for r in json.loads(ok.stdout)["mechanisms"]}
    assert set(rows) == {"none", "streamed-weights"} and rows["streamed-weights"] < rows["none"] * 0.5
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for change, field in (
        (lambda d: d["devices"][2].update(weights="nowhere"), "device 'sbc'.weights"),
        (lambda d: d["devices"][2].update(weights="sbc"), "device 'sbc'.weights"),
        (lambda d: d["network"].update(sharing="cdma"), "network.sharing"),
    ):
        bad = yaml.safe_load(yaml.safe_dump(doc))
        change(bad)
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(bad), encoding="utf-8")
        out = run("plan", str(path))
        assert out.returncode == 2 and out.stderr.startswith(f"coldpipe: error: {field}"), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_runtime_refuses_what_it_does_not_emulate() -> None:
    from coldpipe.runtime.stream import unsupported

    p = Plan.parse("a[0-0] > b[1-1]")
    sc = by_hand("tdma")
    assert unsupported(sc, p) is None and unsupported(by_hand("none"), p) is None  # a peer source
    three = sc.replace(blocks=(*sc.blocks, sc.blocks[-1]), mechanisms=ON | {"reuse"})
    assert "several stages" in (unsupported(three, Plan.parse("b[0-0] > a[1-1] > b[2-2]")) or "")
    assert unsupported(three, Plan.parse("a[0-2]")) is None  # nothing streams


def test_deferred_embedding_rows_do_not_hold_the_air_before_the_first_token() -> None:
    """sparse-embedding defers most of block 0; a streaming device must not put those bytes on a shared channel
    ahead of the request's own transfers (they gate nothing before the first token)."""
    sc = load_scenario(EXAMPLE).replace(mechanisms=frozenset({"streamed-weights", "sparse-embedding"}))
    p = Plan.parse("sbc[0-4] > laptop[5-18] > orin-nx[19-29]")  # sbc streams (weights: ap) and holds block 0
    tl = simulate(sc, p)
    streamed = [t.n_bytes for t in tl.transfers if t.what == "weights"]
    want = [sc.blocks[0].weight_bytes - deferred_bytes(sc, 0)] + [b.weight_bytes for b in sc.blocks[1:5]]
    assert streamed == pytest.approx(want) and want[0] < sc.blocks[0].weight_bytes / 10  # the prompt's rows only
    assert tl.ttft_s < simulate(sc.replace(mechanisms=ON), p).ttft_s
