"""Three agents (threads of this process, real CurveZMQ over TCP): measure, plan, run; tokens as transformers'."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_helpers import start_agent, start_relay

from coldpipe.cluster.clocks import offset_from_probes
from coldpipe.cluster.coordinator import AgentRef, Coordinator, load_cluster, ranges_of, scenario_from_measurements
from coldpipe.cluster.measure import fingerprint
from coldpipe.cluster.run import run_request
from coldpipe.cluster.token import read_token
from coldpipe.cluster.transport import Keys
from coldpipe.core.types import Plan, Workload
from coldpipe.errors import ColdpipeError, InputError
from coldpipe.profiler.checkpoint import profile_checkpoint
from coldpipe.runtime.checkpoint import open_checkpoint
from coldpipe.runtime.reference import reference_generate


@pytest.mark.multiprocess
def test_three_agents_generate_what_transformers_generates(tiny_checkpoint: Path, token_file: Path) -> None:
    keys = Keys(read_token(token_file))
    started = [start_agent(keys, f"a{i}", tiny_checkpoint) for i in range(3)]
    # a2's inputs go through the store-and-forward relay (the testbed's AP); a1's straight from a0
    relay, relay_th, relay_port = start_relay(keys, {"a2": f"127.0.0.1:{started[2][2]}"})
    try:
        refs = [AgentRef(f"a{i}", f"127.0.0.1:{port}") for i, (_, _, port) in enumerate(started)]
        refs[2] = AgentRef("a2", refs[2].address, relay=f"127.0.0.1:{relay_port}")
        ckpt = open_checkpoint(tiny_checkpoint)
        fp = fingerprint(ckpt)
        prompt = tuple(range(3, 11))
        with Coordinator(keys, refs) as co:
            status = co.status()
            assert all(r["reachable"] and r["resident"] == [] for r in status)  # cold
            m = co.measure(fp, len(prompt), link_bytes=256 * 1024)
            cp = profile_checkpoint(tiny_checkpoint, prompt_tokens=len(prompt), new_tokens=4, dtype=ckpt.dtype)
            sc = scenario_from_measurements(cp.blocks, m, Workload(len(prompt), 4), "tiny")
            assert [d.name for d in sc.devices] == ["a0", "a1", "a2"] and all(d.uplink > 0 for d in sc.devices)
            plan = Plan.parse("a0[0-1] > a1[2-3] > a2[4-5]")
            out = run_request(co, sc, plan, "layer", prompt, fp, new_tokens=4)
            # blocks stay resident until dropped
            assert [r["resident"] for r in co.status()] == [[0, 1], [2, 3], [4, 5]]
            with pytest.raises(ColdpipeError, match="fingerprint"):
                co.run(sc, plan, "layer", prompt, "0" * 64)
        tokens, _ = reference_generate(tiny_checkpoint, prompt, 4)
        assert out["token_ids"] == tokens
        assert relay.forwarded == 4  # a1 -> a2: the prefill's activation and three decode steps'
        assert out["measured_ttft"] > 0 and out["predicted_ttft"] > 0
        assert [s["device"] for s in out["stages"]] == ["a0", "a1", "a2"]
        # the public JSON contract of `cluster run --json`
        assert {"measured_ttft", "predicted_ttft", "plan", "scenario", "stages"} <= set(out)
        assert Plan.from_dict(out["plan"]) == plan and out["scenario"]["devices"][0]["name"] == "a0"
        assert all(
            {"load_end", "arrival", "compute_end"} <= set(s["measured"]) & set(s["predicted"]) for s in out["stages"]
        )
    finally:
        relay.stop.set()
        relay_th.join(5)
        for ag, th, _ in started:
            ag.stop.set()
            th.join(5)


def test_cluster_file_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("agents: []\n")
    with pytest.raises(InputError, match="lists no agents"):
        load_cluster(p)
    p.write_text("agents: [{name: a, address: nowhere}]\n")
    with pytest.raises(InputError, match="HOST:PORT"):
        load_cluster(p)
    p.write_text("agents: [{name: a, address: 'h:1', relay: nowhere}]\n")
    with pytest.raises(InputError, match=r"agents\[0\]\.relay"):
        load_cluster(p)
    p.write_text("agents: [{name: a, address: 'h:1', relay: 'ap:7071'}, {name: b, address: 'h:2'}]\n")
    assert [r.relay for r in load_cluster(p)] == ["ap:7071", None]
    p.write_text("agents: [{name: a, address: 'h:1'}, {name: a, address: 'h:2'}]\n")
    with pytest.raises(InputError, match="unique"):
        load_cluster(p)


def test_ranges_and_offsets() -> None:
    assert ranges_of([5, 0, 1, 2, 7, 6]) == ((0, 2), (5, 7))
    assert ranges_of([]) == ()
    # the least disturbed probe (smallest round trip) wins
    assert offset_from_probes([(0.0, 100.5, 1.0), (2.0, 102.01, 2.02), (3.0, 104.0, 3.5)]) == (100.0, 0.02)
