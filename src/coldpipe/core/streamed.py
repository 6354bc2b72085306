"""streamed-weights: blocks sent over the air to devices without (fast) storage, sharing the channel with the
request's transfers (docs/model.md#streamed-weights). Part of the simulator: :func:`coldpipe.core.simulator.simulate`
hands a plan here when the mechanism changes its timeline (:func:`streams`).

The timeline is a schedule of jobs with precedences: every transfer is one job per AP hop (the sender's uplink
part ``8n/up + hop``, then the receiver's downlink part ``8n/down + hop``, store-and-forward), every block's
compute one job. Under ``network.sharing``

- ``none``: no hop waits for another (the paper's transfers);
- ``tdma``: the channel carries one hop at a time;
- ``fdma``: each device's link carries one hop at a time (a hop uses the link of its device end);

a hop that must wait is started, non-preemptively, when its resource frees: among the hops ready by then the
request's own first (prompt, activations, token, hidden states, candidates), then the earliest ready, then the
one created first (weights: in the plan's device order, each device's blocks in its loader's order).

>>> from coldpipe.core.types import Block, Device, Network, Plan, Scenario, Workload
>>> blocks = [Block(f"b{i}", weight_bytes=1e8, flops=1e12, out_bytes=1e6) for i in range(2)]
>>> a = Device("a", 2e12, 1e9, 0.0, 1e12, 8e9, 8e9)
>>> b = Device("b", 1e12, 1e6, 0.0, 1e12, 8e9, 8e8, weights="ap")   # slow storage: streams at 100 MB/s
>>> sc = Scenario(blocks, (a, b), Workload(1, prompt_bytes=0, token_bytes=0), Network(0.0, "tdma"),
...               mechanisms=frozenset({"streamed-weights"}))
>>> tl = simulate_streamed(sc, Plan.parse("a[0-0] > b[1-1]"))
>>> round(tl.ttft_s, 6)   # a computes 0.1-0.6 s; b's block holds the air 0-1 s; the activation 1-1.011 s, b 1.011-2.011
2.011
>>> round(simulate_streamed(sc.replace(network=Network(0.0, "none")), Plan.parse("a[0-0] > b[1-1]")).ttft_s, 6)
2.0
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from coldpipe.core.mechanism_names import LOCAL
from coldpipe.core.mechanisms import (
    deferred_bytes,
    first_token_bytes,
    hidden_bytes,
    shard_flops,
    shard_return_bytes,
    shard_weight_bytes,
)
from coldpipe.core.timeline import BlockSpan, ShardTimeline, StageTimeline, Timeline, Transfer
from coldpipe.core.types import AP, Overlap, Plan, Scenario

__all__ = ["MECHANISM", "decode_step_streamed_s", "simulate_streamed", "stream_bytes_per_s", "streams"]

MECHANISM = "streamed-weights"


def _plan_devices(plan: Plan) -> list[str]:
    out: list[str] = []
    for name in [st.device for st in plan.stages] + [sh.device for sh in plan.head_shards]:
        if name not in out:
            out.append(name)
    return out


def streams(scenario: Scenario, plan: Plan) -> bool:
    """Whether streamed-weights changes ``plan``'s timeline: it is on and a device of the plan streams, or the
    channel is shared and the plan fans out to head shards (concurrent transfers). Else the paper's timeline."""
    if MECHANISM not in scenario.mechanisms:
        return False
    if any(scenario.device(n).weights != LOCAL for n in _plan_devices(plan)):
        return True
    return scenario.network.sharing != "none" and bool(plan.head_shards)


def stream_bytes_per_s(scenario: Scenario, device: str) -> float:
    """Bytes/s a device's stream moves without contention or hop latency: ``1 / (8/down + 8/up_peer)``."""
    dev = scenario.device(device)
    s_per_byte = 8.0 / dev.downlink
    if dev.weights not in (LOCAL, AP):
        s_per_byte += 8.0 / scenario.device(dev.weights).uplink
    return 1.0 / s_per_byte if s_per_byte > 0 else math.inf


@dataclass
class _Job:
    dur: float
    res: str | None
    cls: int  # 0: the request's transfers and compute; 1: weights
    release: float
    preds: list[int]
    succ: list[int] = field(default_factory=list)
    left: int = 0
    ready: float = 0.0
    start: float = math.nan
    end: float = math.nan


class _Schedule:
    """Jobs with precedences and release times; hops on a shared resource one at a time (module docstring)."""

    def __init__(self, scenario: Scenario) -> None:
        self.sc = scenario
        self.jobs: list[_Job] = []

    def add(self, dur: float, preds: list[int], *, res: str | None = None, cls: int = 0, release: float = 0.0) -> int:
        self.jobs.append(_Job(dur, res, cls, release, list(preds)))
        return len(self.jobs) - 1

    def _res(self, device: str) -> str | None:
        sharing = self.sc.network.sharing
        return None if sharing == "none" else ("air" if sharing == "tdma" else device)

    def transfer(
        self, src: str, dst: str, n_bytes: float, preds: list[int], *, cls: int = 0, release: float = 0.0
    ) -> list[int]:
        """The hops of ``src -> AP -> dst`` (a zero-length job if ``src == dst``), the first after ``preds``."""
        if src == dst:
            return [self.add(0.0, preds, release=release, cls=cls)]
        hop = self.sc.network.hop_latency
        ids: list[int] = []
        if src != AP:
            ids.append(
                self.add(
                    8.0 * n_bytes / self.sc.device(src).uplink + hop,
                    preds,
                    res=self._res(src),
                    cls=cls,
                    release=release,
                )
            )
        if dst != AP:
            ids.append(
                self.add(
                    8.0 * n_bytes / self.sc.device(dst).downlink + hop,
                    ids[-1:] or preds,
                    res=self._res(dst),
                    cls=cls,
                    release=0.0 if ids else release,
                )
            )
        return ids

    def run(self) -> None:
        jobs = self.jobs
        for k, j in enumerate(jobs):
            j.left = len(j.preds)
            for p in j.preds:
                jobs[p].succ.append(k)
        events: list[tuple[float, int]] = []
        waiting: dict[str, list[int]] = {}
        free: dict[str, float] = {}

        def on_ready(k: int) -> None:
            j = jobs[k]
            j.ready = max([j.release] + [jobs[p].end for p in j.preds])
            if j.res is None:
                j.start, j.end = j.ready, j.ready + j.dur
                heapq.heappush(events, (j.end, k))
            else:
                waiting.setdefault(j.res, []).append(k)

        for k, j in enumerate(jobs):
            if not j.preds:
                on_ready(k)
        while True:
            best: tuple[float, str] | None = None
            for r, ks in waiting.items():
                if ks:
                    s = max(free.get(r, 0.0), min(jobs[k].ready for k in ks))
                    if best is None or s < best[0]:
                        best = (s, r)
            if events and (best is None or events[0][0] <= best[0]):
                _, k = heapq.heappop(events)
                for n in jobs[k].succ:
                    jobs[n].left -= 1
                    if jobs[n].left == 0:
                        on_ready(n)
                continue
            if best is None:
                break
            s, r = best
            k = min((k for k in waiting[r] if jobs[k].ready <= s), key=lambda k: (jobs[k].cls, jobs[k].ready, k))
            waiting[r].remove(k)
            jobs[k].start, jobs[k].end = s, s + jobs[k].dur
            free[r] = jobs[k].end
            heapq.heappush(events, (jobs[k].end, k))
        assert all(not math.isnan(j.end) for j in jobs), "a job was never scheduled (a cycle)"


def _record(s: _Schedule, what: str, src: str, dst: str, n_bytes: float, ids: list[int]) -> Transfer:
    first, last = s.jobs[ids[0]], s.jobs[ids[-1]]
    at_ap = first.end if (src != AP and src != dst) else first.start
    return Transfer(what, src, dst, float(n_bytes), first.start, at_ap, last.end)


@dataclass
class _Built:
    """The jobs of one first-token schedule, by what they are."""

    arrive: dict[tuple[str, int], list[int]]  # (device, block; -1 its head shard, -2 deferred) -> the hops
    local: dict[tuple[str, int], tuple[float, float]]  # (device, block) -> (load start, end) from its storage
    weights: list[tuple[str, str, float, list[int]]]  # streamed items: (src, dst, bytes, hops)
    req: list[tuple[str, str, str, float, list[int]]]  # the request's transfers: (what, src, dst, bytes, hops)
    arrivals: list[int]  # per stage: the job after which its input is there
    computes: list[list[int]]  # per stage: its blocks' compute jobs
    shards: list[tuple[list[int], int, list[int]]]  # per head shard: hidden hops, compute job, candidate hops


def _run(scenario: Scenario, plan: Plan, overlap: Overlap, cold: bool) -> tuple[_Schedule, _Built]:
    """Build and run the first-token schedule; ``cold=False`` with every weight resident (the warm TTFT)."""
    sc, wl, blocks = scenario, scenario.workload, scenario.blocks
    s = _Schedule(sc)
    n_last = len(blocks) - 1
    shard_of = {sh.device: sh for sh in plan.head_shards}
    # Weights: per device, in its loader's order (its stages in plan order, its head shard, deferred bytes).
    arrive: dict[tuple[str, int], list[int]] = {}  # (device, block or -1 for its shard) -> the hops that bring it
    local_done: dict[tuple[str, int], tuple[float, float]] = {}  # (device, block) -> (load start, load end)
    weight_transfers: list[tuple[str, str, float, list[int]]] = []
    for name in _plan_devices(plan):
        dev = sc.device(name)
        items: list[tuple[int, float, bool]] = []  # (block or -1, bytes, gates the first token)
        for st in plan.stages:
            if st.device == name:
                items += [(l, first_token_bytes(sc, l), True) for l in range(st.first, st.last + 1) if not dev.holds(l)]
        if name in shard_of and not dev.holds(n_last):
            items.append((-1, shard_weight_bytes(sc, shard_of[name].rows), True))
        holds_embedding = any(st.device == name and st.first == 0 for st in plan.stages) and not dev.holds(0)
        if holds_embedding and deferred_bytes(sc, 0) > 0:
            items.append((-2, deferred_bytes(sc, 0), False))
        if not cold:
            items = []
        if dev.weights == LOCAL:
            done = 0.0
            for l, n, _ in items:
                begin = dev.startup + done / dev.load_bandwidth
                done += n
                local_done[(name, l)] = (begin, dev.startup + done / dev.load_bandwidth)
            continue
        # Block 0's deferred bytes are read after the first token (sparse-embedding): on the air before it,
        # one non-preemptive hop of most of the table would hold the channel for nothing the token needs.
        items = [it for it in items if it[0] != -2]
        src = dev.weights
        start = max(dev.startup, sc.device(src).startup if src != AP else 0.0)
        prev: list[int] = []
        for l, n, _ in items:
            ids = s.transfer(src, name, n, prev, cls=1, release=start if not prev else 0.0)
            arrive[(name, l)] = ids
            weight_transfers.append((src, name, n, ids))
            prev = ids[-1:]

    def gate(name: str, ls: list[int]) -> tuple[list[int], float]:
        """The jobs and the release time after which ``name``'s items ``ls`` are resident."""
        preds = [arrive[(name, l)][-1] for l in ls if (name, l) in arrive]
        rel = max([local_done[(name, l)][1] for l in ls if (name, l) in local_done], default=0.0)
        return preds, rel

    barrier: tuple[list[int], float] = ([], 0.0)
    if overlap == "none":
        preds, rel = [], 0.0
        for name in _plan_devices(plan):
            p, r = gate(
                name, [l for st in plan.stages if st.device == name for l in range(st.first, st.last + 1)] + [-1]
            )
            preds, rel = preds + p, max(rel, r)
        barrier = (preds, rel)
    src0 = sc.source
    prompt = s.transfer(src0, plan.stages[0].device, wl.prompt_bytes_value, barrier[0], release=barrier[1])
    req: list[tuple[str, str, str, float, list[int]]] = [
        ("prompt", src0, plan.stages[0].device, wl.prompt_bytes_value, prompt)
    ]
    prev = prompt[-1]
    arrivals: list[int] = []
    computes: list[list[int]] = []
    for j, st in enumerate(plan.stages):
        if j > 0:
            p = plan.stages[j - 1]
            act = s.transfer(p.device, st.device, blocks[p.last].out_bytes, [prev])
            req.append(("activation", p.device, st.device, blocks[p.last].out_bytes, act))
            prev = act[-1]
        arrivals.append(prev)
        dev = sc.device(st.device)
        ids = []
        for l in range(st.first, st.last + 1):
            preds, rel = [prev], 0.0
            if overlap == "layer":
                g, rel = gate(st.device, [l])
                preds += g
            elif overlap == "stage" and l == st.first:
                g, rel = gate(st.device, list(range(st.first, st.last + 1)))
                preds += g
            prev = s.add(blocks[l].flops / dev.flops, preds, release=rel)
            ids.append(prev)
        computes.append(ids)
    shard_jobs: list[tuple[list[int], int, list[int]]] = []
    if not plan.head_shards:
        tok = s.transfer(plan.stages[-1].device, src0, wl.token_bytes, [prev])
        req.append(("token", plan.stages[-1].device, src0, wl.token_bytes, tok))
    for sh in plan.head_shards:
        last = plan.stages[-1].device
        hid = s.transfer(last, sh.device, hidden_bytes(sc), [prev])
        g, rel = gate(sh.device, [-1]) if overlap != "none" else ([], 0.0)
        comp = s.add(shard_flops(sc, sh.rows) / sc.device(sh.device).flops, [hid[-1], *g], release=rel)
        back = s.transfer(sh.device, src0, shard_return_bytes(sc), [comp])
        req += [
            ("hidden", last, sh.device, hidden_bytes(sc), hid),
            ("candidates", sh.device, src0, shard_return_bytes(sc), back),
        ]
        shard_jobs.append((hid, comp, back))
    s.run()
    return s, _Built(arrive, local_done, weight_transfers, req, arrivals, computes, shard_jobs)


def simulate_streamed(scenario: Scenario, plan: Plan, overlap: Overlap = "layer") -> Timeline:
    """The first-token timeline with streamed weights and channel sharing (docs/model.md#streamed-weights).

    ``scenario`` is the planned scenario and ``plan`` valid on it (the caller, ``simulate``, checks both)."""
    sc, blocks = scenario, scenario.blocks
    s, r = _run(sc, plan, overlap, cold=True)
    warm_s, warm_r = _run(sc, plan, overlap, cold=False)
    arrive, local = r.arrive, r.local
    jobs = s.jobs

    def span(name: str, l: int) -> tuple[float, float]:
        if (name, l) in arrive:
            ids = arrive[(name, l)]
            return jobs[ids[0]].start, jobs[ids[-1]].end
        return local.get((name, l), (0.0, 0.0))

    transfers = [_record(s, *t) for t in r.req]
    transfers += [_record(s, "weights", *t) for t in r.weights]
    t0 = jobs[r.req[0][4][0]].start if overlap == "none" else 0.0
    stages = []
    for j, st in enumerate(plan.stages):
        dev = sc.device(st.device)
        ids = r.computes[j]
        arrival = jobs[r.arrivals[j]].end
        spans = [
            BlockSpan(l, *span(st.device, l), jobs[k].start, jobs[k].end)
            for l, k in zip(range(st.first, st.last + 1), ids, strict=True)
        ]
        load_end = max(b.load_end_s for b in spans)
        prev_end = [arrival] + [jobs[k].end for k in ids[:-1]]
        if overlap == "layer":
            wait_w = sum(b.compute_start_s - p for b, p in zip(spans, prev_end, strict=True))
        elif overlap == "stage":
            wait_w = spans[0].compute_start_s - arrival
        else:
            wait_w = t0 if j == 0 else 0.0
        ready = spans[0].load_end_s if overlap == "layer" else load_end
        stages.append(
            StageTimeline(
                device=st.device,
                first=st.first,
                last=st.last,
                weight_bytes=sum(b.weight_bytes for b in blocks[st.first : st.last + 1]),
                memory_bytes=sum(b.memory_bytes for b in blocks[st.first : st.last + 1]),
                startup_s=dev.startup,
                load_s=sum(b.load_end_s - b.load_start_s for b in spans),
                load_end_s=load_end,
                compute_s=sum(jobs[k].dur for k in ids),
                arrival_s=arrival,
                compute_start_s=spans[0].compute_start_s,
                compute_end_s=spans[-1].compute_end_s,
                wait_weights_s=wait_w,
                wait_input_s=max(0.0, arrival - ready),
                blocks=tuple(spans),
            )
        )
    head = []
    for sh, (hid, comp, back) in zip(plan.head_shards, r.shards, strict=True):
        l_start, l_end = span(sh.device, -1)
        head.append(
            ShardTimeline(
                sh.device,
                sh.first_row,
                sh.last_row,
                shard_weight_bytes(sc, sh.rows),
                l_start,
                l_end,
                jobs[hid[-1]].end,
                jobs[comp].start,
                jobs[comp].end,
                jobs[back[-1]].end,
            )
        )
    ends = [jobs[back[-1]].end for _, _, back in r.shards] or [transfers[len(r.req) - 1].end_s]
    warm_jobs = warm_s.jobs
    warm_ends = [warm_jobs[b[-1]].end for _, _, b in warm_r.shards] or [warm_jobs[warm_r.req[-1][4][-1]].end]
    return Timeline(plan, overlap, max(ends), tuple(stages), tuple(transfers), max(warm_ends), tuple(head))


def decode_step_streamed_s(
    scenario: Scenario, plan: Plan, stage_s: list[float], out_bytes: list[float], shard_s: list[float]
) -> float:
    """One decode step when the head shards' transfers share the channel (every weight resident): the token
    in, every stage's blocks (``stage_s``), one token's activation at each boundary (``out_bytes``: after
    stage ``j``), the hidden state to every shard, its slice (``shard_s``), the candidates back, scheduled as
    the first token's transfers are."""
    sc, wl = scenario, scenario.workload
    s = _Schedule(sc)
    prev = s.transfer(sc.source, plan.stages[0].device, wl.token_bytes, [])[-1]
    for j, st in enumerate(plan.stages):
        if j > 0:
            prev = s.transfer(plan.stages[j - 1].device, st.device, out_bytes[j - 1], [prev])[-1]
        prev = s.add(stage_s[j], [prev])
    ends = []
    if not plan.head_shards:
        ends.append(s.transfer(plan.stages[-1].device, sc.source, wl.token_bytes, [prev])[-1])
    for sh, shard_step_s in zip(plan.head_shards, shard_s, strict=True):
        hid = s.transfer(plan.stages[-1].device, sh.device, hidden_bytes(sc), [prev])[-1]
        comp = s.add(shard_step_s, [hid])
        ends.append(s.transfer(sh.device, sc.source, shard_return_bytes(sc), [comp])[-1])
    s.run()
    return max(s.jobs[k].end for k in ends)
