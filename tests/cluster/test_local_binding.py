"""A local run (``coldpipe run --local``) listens on the loopback interface only: no TCP store on ``*:PORT``."""

from __future__ import annotations

import ipaddress
import threading
import time
from pathlib import Path

import psutil
import pytest

from coldpipe.core.types import Plan
from coldpipe.runtime.emulation import emulation_for
from coldpipe.runtime.job import Job
from coldpipe.runtime.launch import run_local


@pytest.mark.multiprocess
@pytest.mark.slow  # ~10 s on an idle host, ~50 s on the shared one
def test_local_run_listens_on_loopback_only(tiny_checkpoint: Path) -> None:
    from cluster_helpers import FIXED_PROFILE

    from coldpipe.cluster.coordinator import scenario_from_measurements
    from coldpipe.core.types import Workload
    from coldpipe.profiler.checkpoint import profile_checkpoint

    cp = profile_checkpoint(tiny_checkpoint, prompt_tokens=8, dtype="float32")
    m = {"profile": FIXED_PROFILE, "link": {"rtt": 1e-4, "uplink": 1e9, "downlink": 1e9}}
    sc = scenario_from_measurements(cp.blocks, {"a": m, "b": m}, Workload(8, 30), "tiny")
    plan = Plan.parse("a[0-2] > b[3-5]")
    job = Job(plan, "layer", tuple(range(8)), 30, tuple(emulation_for(sc, plan, None, enabled=False)), links=False)
    listeners: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        me = psutil.Process()
        while not done.is_set():
            for child in me.children(recursive=True):
                try:
                    for c in child.net_connections(kind="inet"):
                        if c.status == psutil.CONN_LISTEN:
                            listeners.add(c.laddr.ip)
                except psutil.Error:
                    pass
            time.sleep(0.05)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    try:
        (res,) = run_local(tiny_checkpoint, sc, [job], timeout_s=30)
    finally:
        done.set()
        th.join()
    assert len(res["token_ids"]) == 30
    assert listeners, "no listening socket seen (gloo pairs listen during the run)"
    assert all(ipaddress.ip_address(ip).is_loopback for ip in listeners), listeners
