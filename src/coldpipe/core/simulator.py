"""The cold-start timeline of a plan: the latency model of docs/model.md, implemented here and only here.

Every predicted time in coldpipe (planner objectives, baselines, charts, runtime comparisons)
comes from :func:`simulate`. The planner's closed forms are tested against it.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload, Plan
>>> blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
>>> dev = lambda n: Device(n, flops=1e12, load_bandwidth=1e9, startup=0.0, memory=1e12,
...                        uplink=8e9, downlink=8e9)
>>> sc = Scenario(blocks, (dev("a"), dev("b")), Workload(prompt_tokens=1, prompt_bytes=0, token_bytes=0))
>>> plan = Plan.parse("a[0-1] > b[2-3]")
>>> simulate(sc, plan, "layer").ttft_s   # a computes block 0 at 1-2 s, block 1 at 2-3 s; 2 ms to b
5.002
>>> tl = simulate(sc, plan, "layer")
>>> tl.warm_ttft_s, tl.hidden_load_share   # 4 s of compute + 2 ms; half of the 2 s of loading is hidden
(4.002, 0.5)
>>> simulate(sc, plan, "stage").ttft_s   # a waits for both its blocks (2 s), computes 2-4 s; b 4.002-6.002 s
6.002
>>> simulate(sc, plan, "none").ttft_s    # everything loaded at 2 s, then 4 s of compute + 2 ms
6.002
"""

from __future__ import annotations

from dataclasses import dataclass

from coldpipe.core.mechanisms import (
    first_token_bytes,
    hidden_bytes,
    shard_decode_flops,
    shard_flops,
    shard_return_bytes,
    shard_weight_bytes,
)
from coldpipe.core.streamed import decode_step_streamed_s, simulate_streamed, streams
from coldpipe.core.timeline import BlockSpan, ShardTimeline, StageTimeline, Timeline, Transfer
from coldpipe.core.types import AP, OVERLAPS, Overlap, Plan, Scenario
from coldpipe.errors import InputError

__all__ = [
    "OBJECTIVES",
    "BlockSpan",
    "BurstSchedule",
    "ShardTimeline",
    "StageTimeline",
    "Timeline",
    "Transfer",
    "block_decode_s",
    "burst_completions_s",
    "burst_schedule",
    "decode_out_bytes",
    "decode_step_s",
    "objective_s",
    "shard_decode_s",
    "simulate",
    "transfer_s",
]


def transfer_s(scenario: Scenario, src: str, dst: str, n_bytes: float) -> float:
    """The star-topology transfer time from ``src`` to ``dst`` (``"ap"`` or a device name; docs/model.md#transfers)."""
    if src == dst:
        return 0.0
    hop = scenario.network.hop_latency
    t = 0.0
    if src != AP:
        t += 8.0 * n_bytes / scenario.device(src).uplink + hop
    if dst != AP:
        t += 8.0 * n_bytes / scenario.device(dst).downlink + hop
    return t


def _transfer(scenario: Scenario, what: str, src: str, dst: str, n_bytes: float, start_s: float) -> Transfer:
    hop = scenario.network.hop_latency
    at_ap = start_s
    if src != dst and src != AP:
        at_ap += 8.0 * n_bytes / scenario.device(src).uplink + hop
    end = start_s + transfer_s(scenario, src, dst, n_bytes)
    return Transfer(what, src, dst, float(n_bytes), start_s, at_ap, end)


def simulate(scenario: Scenario, plan: Plan, overlap: Overlap = "layer", *, validate: bool = True) -> Timeline:
    """Replay ``plan`` on ``scenario`` under the cold-start timeline of docs/model.md.

    Raises :class:`~coldpipe.errors.InvalidPlan` if the plan is not valid (docs/model.md#a-plan; pass
    ``validate=False`` to time a plan that ignores memory, e.g. to show why it fails).
    """
    scenario = scenario.planned()  # sublayer: plans index the split blocks (docs/model.md#sublayer)
    if overlap not in OVERLAPS:
        raise InputError("overlap", f"unknown overlap mode {overlap!r}", f"use one of {list(OVERLAPS)}")
    if validate:
        plan.validate(scenario)
    if streams(scenario, plan):  # streamed-weights: blocks over the air, transfers sharing it (docs/model.md)
        return simulate_streamed(scenario, plan, overlap)
    blocks = scenario.blocks
    wl = scenario.workload

    # 1. Loading: independent of everything else. load_done[l] for every planned block; a block already
    # resident on its device (Device.resident) is there at t = 0 and the loader skips it. Each loader reads
    # its stage's first-token bytes in block order, then its head shard (sharded-head), then what the first
    # token does not need (sparse-embedding's rest of the table), which gates nothing before the first token.
    load_done: dict[int, float] = {}
    load_start: dict[int, float] = {}
    loader_free: dict[str, float] = {}
    loaded: dict[str, float] = {}  # bytes each loader has read so far (reuse: its stages in plan order)
    for st in plan.stages:
        dev = scenario.device(st.device)
        loaded_bytes = loaded.get(st.device, 0.0)
        for l in range(st.first, st.last + 1):
            if dev.holds(l):
                load_start[l] = load_done[l] = 0.0
                continue
            load_start[l] = dev.startup + loaded_bytes / dev.load_bandwidth
            loaded_bytes += first_token_bytes(scenario, l)
            load_done[l] = dev.startup + loaded_bytes / dev.load_bandwidth
        loaded[st.device] = loaded_bytes
        loader_free[st.device] = dev.startup + loaded_bytes / dev.load_bandwidth
    shard_load: list[tuple[float, float]] = []
    for sh in plan.head_shards:
        dev = scenario.device(sh.device)
        if dev.holds(len(blocks) - 1):
            shard_load.append((0.0, 0.0))
            continue
        begin = loader_free.get(sh.device, dev.startup)
        shard_load.append((begin, begin + shard_weight_bytes(scenario, sh.rows) / dev.load_bandwidth))

    # "none": inference starts once every stage holds all its blocks.
    stage_loaded = [max(load_done[l] for l in range(st.first, st.last + 1)) for st in plan.stages]
    t0 = max(stage_loaded + [end for _, end in shard_load]) if overlap == "none" else 0.0

    # 2. The prompt travels from the source to the first stage.
    transfers = [_transfer(scenario, "prompt", scenario.source, plan.stages[0].device, wl.prompt_bytes_value, t0)]
    t = transfers[0].end_s
    warm = transfers[0].end_s - t0

    # 3. Stage by stage.
    stage_timelines = []
    for j, st in enumerate(plan.stages):
        dev = scenario.device(st.device)
        if j > 0:
            prev = plan.stages[j - 1]
            tr = _transfer(scenario, "activation", prev.device, st.device, blocks[prev.last].out_bytes, t)
            transfers.append(tr)
            warm += tr.end_s - tr.start_s
            t = tr.end_s
        arrival = t
        if overlap == "stage":
            t = max(t, stage_loaded[j])
        wait_weights = (t - arrival) if overlap == "stage" else (t0 if (overlap == "none" and j == 0) else 0.0)
        spans = []
        compute_s = 0.0
        for l in range(st.first, st.last + 1):
            if overlap == "layer":
                start = max(t, load_done[l])
                wait_weights += start - t
            else:
                start = t
            dt = blocks[l].flops / dev.flops
            t = start + dt
            compute_s += dt
            spans.append(BlockSpan(l, load_start[l], load_done[l], start, t))
        warm += compute_s
        ready = stage_loaded[j] if overlap in ("stage", "none") else load_done[st.first]
        stage_timelines.append(
            StageTimeline(
                device=st.device,
                first=st.first,
                last=st.last,
                weight_bytes=sum(b.weight_bytes for b in blocks[st.first : st.last + 1]),
                memory_bytes=sum(b.memory_bytes for b in blocks[st.first : st.last + 1]),
                startup_s=dev.startup,
                load_s=sum(first_token_bytes(scenario, l) for l in range(st.first, st.last + 1) if not dev.holds(l))
                / dev.load_bandwidth,
                load_end_s=stage_loaded[j],
                compute_s=compute_s,
                arrival_s=arrival,
                compute_start_s=spans[0].compute_start_s,
                compute_end_s=t,
                wait_weights_s=wait_weights,
                wait_input_s=max(0.0, arrival - ready),
                blocks=tuple(spans),
            )
        )

    # 4. The first token returns to the source.
    if not plan.head_shards:
        tr = _transfer(scenario, "token", plan.stages[-1].device, scenario.source, wl.token_bytes, t)
        transfers.append(tr)
        warm += tr.end_s - tr.start_s
        return Timeline(plan, overlap, tr.end_s, tuple(stage_timelines), tuple(transfers), warm)

    # 4'. sharded-head: the last position's hidden state goes to every shard, each computes its logits'
    # slice and local top-k once its rows are resident, the candidates return; the source combines them.
    shards, ttft, warm_head = [], 0.0, 0.0
    last = plan.stages[-1].device
    for sh, (l_start, l_end) in zip(plan.head_shards, shard_load, strict=True):
        dev = scenario.device(sh.device)
        hid = _transfer(scenario, "hidden", last, sh.device, hidden_bytes(scenario), t)
        start = max(hid.end_s, l_end) if overlap != "none" else hid.end_s
        end = start + shard_flops(scenario, sh.rows) / dev.flops
        back = _transfer(scenario, "candidates", sh.device, scenario.source, shard_return_bytes(scenario), end)
        transfers += [hid, back]
        shards.append(
            ShardTimeline(
                sh.device,
                sh.first_row,
                sh.last_row,
                shard_weight_bytes(scenario, sh.rows),
                l_start,
                l_end,
                hid.end_s,
                start,
                end,
                back.end_s,
            )
        )
        ttft = max(ttft, back.end_s)
        warm_head = max(warm_head, (hid.end_s - hid.start_s) + (end - start) + (back.end_s - back.start_s))
    return Timeline(plan, overlap, ttft, tuple(stage_timelines), tuple(transfers), warm + warm_head, tuple(shards))


# --- After the first token: decode steps, and bursts (docs/model.md#decode, docs/model.md#bursts) ----------------

OBJECTIVES = ("ttft", "e2e", "tpot")


def block_decode_s(scenario: Scenario, block_index: int, device_name: str) -> float:
    """One decode step of one block on one device: memory-bound or compute-bound, whichever is slower.

    ``max((weight_bytes + kv_bytes) / mem_bandwidth, decode_flops / flops)``: every weight and the whole
    KV cache reserved for the context are read once per token. A block without ``decode_flops`` is
    taken to cost ``flops / prompt_tokens`` (its prefill work per token).
    """
    scenario = scenario.planned()  # sublayer: plans index the split blocks (docs/model.md#sublayer)
    block = scenario.blocks[block_index]
    dev = scenario.device(device_name)
    if dev.mem_bandwidth is None:
        k = [d.name for d in scenario.devices].index(device_name)
        raise InputError(
            f"devices[{k}].mem_bandwidth",
            f"device {device_name!r} has no mem_bandwidth, needed to time decode steps",
            "add e.g. 'mem_bandwidth: 100 GB/s', or plan for TTFT only",
        )
    flops = block.decode_flops if block.decode_flops is not None else block.flops / scenario.workload.prompt_tokens
    return max((block.weight_bytes + block.kv_bytes) / dev.mem_bandwidth, flops / dev.flops)


def decode_out_bytes(scenario: Scenario, block_index: int) -> float:
    """One token's activation after block ``block_index`` (default: its prefill output per prompt token)."""
    scenario = scenario.planned()  # sublayer: plans index the split blocks (docs/model.md#sublayer)
    block = scenario.blocks[block_index]
    if block.decode_out_bytes is not None:
        return block.decode_out_bytes
    return block.out_bytes / scenario.workload.prompt_tokens


def decode_step_s(scenario: Scenario, plan: Plan) -> float:
    """The time of one decode step once every weight is resident (the time per output token, TPOT).

    The new token travels from the source to the first stage (``token_bytes``), through every stage
    (one token's activation between stages) and back to the source before the next step starts.
    """
    scenario = scenario.planned()  # sublayer: plans index the split blocks (docs/model.md#sublayer)
    if plan.head_shards and scenario.network.sharing != "none" and streams(scenario, plan):
        return decode_step_streamed_s(  # the shards' transfers share the channel
            scenario,
            plan,
            [sum(block_decode_s(scenario, l, st.device) for l in range(st.first, st.last + 1)) for st in plan.stages],
            [decode_out_bytes(scenario, st.last) for st in plan.stages],
            [shard_decode_s(scenario, sh.rows, sh.device) for sh in plan.head_shards],
        )
    wl = scenario.workload
    t = transfer_s(scenario, scenario.source, plan.stages[0].device, wl.token_bytes)
    for j, st in enumerate(plan.stages):
        if j > 0:
            prev = plan.stages[j - 1]
            t += transfer_s(scenario, prev.device, st.device, decode_out_bytes(scenario, prev.last))
        t += sum(block_decode_s(scenario, l, st.device) for l in range(st.first, st.last + 1))
    if plan.head_shards:  # sharded-head: the slowest shard's hidden state in, logits' slice, candidates back
        last = plan.stages[-1].device
        return t + max(
            transfer_s(scenario, last, sh.device, hidden_bytes(scenario))
            + shard_decode_s(scenario, sh.rows, sh.device)
            + transfer_s(scenario, sh.device, scenario.source, shard_return_bytes(scenario))
            for sh in plan.head_shards
        )
    return t + transfer_s(scenario, plan.stages[-1].device, scenario.source, wl.token_bytes)


def shard_decode_s(scenario: Scenario, rows: int, device_name: str) -> float:
    """One decode step of a head shard of ``rows`` rows: as :func:`block_decode_s`, its norm and rows only."""
    scenario = scenario.planned()  # sublayer: plans index the split blocks (docs/model.md#sublayer)
    dev = scenario.device(device_name)
    if dev.mem_bandwidth is None:
        block_decode_s(scenario, len(scenario.blocks) - 1, device_name)  # raises the missing-field error
    assert dev.mem_bandwidth is not None
    return max(shard_weight_bytes(scenario, rows) / dev.mem_bandwidth, shard_decode_flops(scenario, rows) / dev.flops)


@dataclass(frozen=True)
class BurstSchedule:
    """When each request of a burst gets its first and its last token back at the source (seconds).

    ``order`` is the order in which the stages serve the jobs, ``(request, step)`` with step 0 the prefill
    and step ``k`` the ``k``-th decode step: the same order on every stage.
    """

    first_token_s: tuple[float, ...]
    last_token_s: tuple[float, ...]
    order: tuple[tuple[int, int], ...]


def burst_schedule(scenario: Scenario, plan: Plan, overlap: Overlap = "layer") -> BurstSchedule:
    """The ``workload.requests`` requests of a burst, each decoding ``workload.new_tokens`` tokens.

    All requests arrive at t = 0. The first stage serves its jobs one at a time in the order their input
    arrives (ties: lower request first); every later stage serves them in that same order (the pipeline
    keeps the order, as point-to-point links do), a job starting on a stage once its input has arrived and
    the previous job has left. A prefill's blocks wait for their weights as in :func:`simulate`; a decode
    step costs :func:`block_decode_s` per block and carries one token's activation. A request's next step
    leaves the source as soon as its previous token is back. Transfers take their :func:`transfer_s` time
    each and do not queue on the links (the stages are the queue). With one request this is
    :func:`simulate`'s TTFT, then ``new_tokens - 1`` times :func:`decode_step_s` (docs/model.md#bursts).
    """
    scenario = scenario.planned()  # sublayer: plans index the split blocks (docs/model.md#sublayer)
    import heapq

    streamed = streams(scenario, plan)
    if (plan.head_shards or len(set(plan.devices)) < len(plan.stages) or streamed) and scenario.workload.requests == 1:
        ttft = simulate(scenario, plan, overlap).ttft_s  # one request: the first token, then the decode steps
        steps = scenario.workload.new_tokens - 1
        last = ttft + steps * decode_step_s(scenario, plan) if steps else ttft
        return BurstSchedule((ttft,), (last,), tuple((0, k) for k in range(steps + 1)))
    if plan.head_shards or len(set(plan.devices)) < len(plan.stages) or streamed:
        raise InputError(
            "workload.requests",
            "bursts are not timed with a sharded head, a device holding several stages or streamed weights",
            "plan one request, or turn sharded-head, reuse and streamed-weights off",
        )
    tl = simulate(scenario, plan, overlap)
    blocks = scenario.blocks
    wl = scenario.workload
    load_done = {span.block: span.load_end_s for st in tl.stages for span in st.blocks}
    stage_loaded = [st.load_end_s for st in tl.stages]
    t0 = tl.transfers[0].start_s  # 0, or the last load end under "none"
    src, first_dev, last_dev = scenario.source, plan.stages[0].device, plan.stages[-1].device
    devs = [scenario.device(st.device) for st in plan.stages]
    prefill_s = [
        [blocks[l].flops / dev.flops for l in range(st.first, st.last + 1)]
        for st, dev in zip(plan.stages, devs, strict=True)
    ]
    decode_s = (
        [sum(block_decode_s(scenario, l, st.device) for l in range(st.first, st.last + 1)) for st in plan.stages]
        if wl.new_tokens > 1
        else []
    )
    hop_prefill = [
        transfer_s(scenario, plan.stages[j - 1].device, st.device, blocks[plan.stages[j - 1].last].out_bytes)
        if j
        else 0.0
        for j, st in enumerate(plan.stages)
    ]
    hop_decode = (
        [
            transfer_s(
                scenario, plan.stages[j - 1].device, st.device, decode_out_bytes(scenario, plan.stages[j - 1].last)
            )
            if j
            else 0.0
            for j, st in enumerate(plan.stages)
        ]
        if wl.new_tokens > 1
        else []
    )
    back_s = transfer_s(scenario, last_dev, src, wl.token_bytes)
    token_in_s = transfer_s(scenario, src, first_dev, wl.token_bytes)
    prompt_in = t0 + transfer_s(scenario, src, first_dev, wl.prompt_bytes_value)
    pending = [(prompt_in, r, 0) for r in range(wl.requests)]  # (input at the first stage, request, step)
    heapq.heapify(pending)
    free = [0.0] * len(plan.stages)
    first = [0.0] * wl.requests
    last = [0.0] * wl.requests
    order = []
    while pending:
        t, r, k = heapq.heappop(pending)  # the next job of the first stage, hence of every stage
        order.append((r, k))
        for j, st in enumerate(plan.stages):
            if j > 0:
                t += hop_prefill[j] if k == 0 else hop_decode[j]
            t = max(t, free[j])
            if k > 0:
                t += decode_s[j]
            else:
                if overlap == "stage":
                    t = max(t, stage_loaded[j])
                for i, l in enumerate(range(st.first, st.last + 1)):
                    if overlap == "layer":
                        t = max(t, load_done[l])
                    t += prefill_s[j][i]
            free[j] = t
        t += back_s
        if k == 0:
            first[r] = t
        last[r] = t
        if k + 1 < wl.new_tokens:
            heapq.heappush(pending, (t + token_in_s, r, k + 1))
    return BurstSchedule(tuple(first), tuple(last), tuple(order))


def burst_completions_s(scenario: Scenario, plan: Plan, overlap: Overlap = "layer") -> tuple[float, ...]:
    """First-token completion time of each of ``workload.requests`` identical requests arriving at t = 0.

    Requests are served back to back: request ``r`` starts stage ``j`` once its input has arrived and
    request ``r - 1`` has left the stage; within the stage its blocks wait for their weights as in
    :func:`simulate` (only the first request ever does: the others come after it). Transfers take
    their :func:`transfer_s` time each and do not queue on the links (the stages are the queue). With one request this
    is exactly :func:`simulate`'s TTFT. Decoding never delays a first token (every prompt reaches the
    first stage before any token can come back), so this is :func:`burst_schedule`'s ``first_token_s``.
    """
    if scenario.workload.requests == 1:
        return (simulate(scenario, plan, overlap).ttft_s,)
    if scenario.workload.new_tokens > 1:
        from dataclasses import replace

        scenario = replace(scenario, workload=replace(scenario.workload, new_tokens=1))
    return burst_schedule(scenario, plan, overlap).first_token_s


def objective_s(scenario: Scenario, plan: Plan, overlap: Overlap, objective: str) -> float:
    """The value of ``objective`` for ``plan``: ``ttft``, ``e2e`` = TTFT + (new_tokens - 1) * TPOT, or ``tpot``.

    With a burst (``workload.requests > 1``) ``ttft`` is the max or mean first-token completion
    (``workload.completion``) of :func:`burst_completions_s`, and ``e2e`` the max or mean last-token
    completion of :func:`burst_schedule`.
    """
    scenario = scenario.planned()  # sublayer: plans index the split blocks (docs/model.md#sublayer)
    if objective == "ttft":
        if scenario.workload.requests > 1:
            done = burst_completions_s(scenario, plan, overlap)
            return max(done) if scenario.workload.completion == "max" else sum(done) / len(done)
        return simulate(scenario, plan, overlap).ttft_s
    if objective == "tpot":
        plan.validate(scenario)
        return decode_step_s(scenario, plan)
    if objective == "e2e":
        if scenario.workload.requests > 1:
            done = burst_schedule(scenario, plan, overlap).last_token_s
            return max(done) if scenario.workload.completion == "max" else sum(done) / len(done)
        ttft = simulate(scenario, plan, overlap).ttft_s
        steps = scenario.workload.new_tokens - 1
        return ttft + steps * decode_step_s(scenario, plan) if steps else ttft
    raise InputError("objective", f"unknown objective {objective!r}", f"use one of {list(OBJECTIVES)}")
