"""The program of one rank: ``python -m coldpipe.runtime.worker --spec SPEC.json`` (or under ``torchrun``).

Ranks: 0 is the **source** (where the prompt arrives and the tokens return; ``scenario.source``), rank
``j + 1`` plays stage ``j`` of the plan. A spec holds several jobs (plans) run one after another by the same
processes (tests use that to check many splits with one start-up); a rank with no stage in a job only joins
its collectives. Per job, every rank calls the same collectives in the same order:

    barrier (all built)  ->  broadcast t0 (the request arrives)  ->  [none: all_reduce MAX load end]  ->
    point-to-point prompt / activations / tokens  ->  gather_object (spans, logits) to rank 0

A stage rank runs two threads: the **loader** (from ``t0 + startup``: read each block's tensors in block
order, paced by the read-rate cap, assign them, signal the block resident) and the **compute loop** (main
thread; all torch.distributed calls are made here): receive a job (a request's prefill or one of its decode
steps: a burst's jobs come in the first stage's order), run each block once the overlap mode allows, send
without waiting (:class:`coldpipe.runtime.links.Links`; the receiver emulates the link time). The runtime
only interprets the plan and the emulation knobs; it makes no planning decision.

Errors end the rank with one line on stderr (``coldpipe: error: rank R (...): ...``) and exit code 1; a
watchdog thread also ends it when the launcher writes the abort file or the launcher dies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coldpipe.runtime.links import DOING, Links, doing, span_tag
from coldpipe.runtime.stream import AirClient, AirServer, BlockServer, StreamClient

if TYPE_CHECKING:
    from coldpipe.runtime.job import Job

__all__ = ["main"]


ANNOUNCE_S = 0.3  # the request's arrival time is broadcast this long before it


def _one_line(exc: BaseException, timeout_s: float | None) -> str:
    """A short, plain reason for ``exc`` (gloo's messages are long and name C++ files)."""
    text = str(exc)
    if isinstance(exc, LoaderFailed):
        return str(exc)
    if "Connection closed by peer" in text or "Connection reset by peer" in text or "Broken pipe" in text:
        reason = "lost the connection to a peer (that rank crashed or was stopped)"
    elif type(exc).__name__ == "DistStoreError" or "wait timeout" in text:
        reason = f"rendezvous timed out after {timeout_s or '?'} s (a peer never connected)"
    elif "Timed out" in text or "timed out" in text or "Timeout" in text:
        reason = f"timed out after {timeout_s or '?'} s waiting for a peer"
    else:
        lines = text.strip().splitlines()
        reason = f"{type(exc).__name__}: {(lines[0] if lines else '')[:300]}"
    return f"{reason}, while {DOING[0]}"


class _Ctx:
    """What every job of this rank shares, and the jobs themselves (each read from the spec once)."""

    def __init__(self, spec: dict[str, Any], rank: int, world: int) -> None:
        from coldpipe.core.types import Scenario
        from coldpipe.runtime.checkpoint import open_checkpoint
        from coldpipe.runtime.job import Job

        self.spec = spec
        self.rank = rank
        self.world = world
        self.scenario = Scenario.from_dict(spec["scenario"])
        self.jobs = [Job.from_dict(d) for d in spec["jobs"]]
        self.whole = self.ckpt = open_checkpoint(spec["checkpoint"])
        self.plan_blocks = self.scenario.blocks  # the blocks the current job's plan indexes
        self.timeout_s = float(spec.get("timeout_s", 30.0))
        self.stream_port = self.air_port = 0  # streamed-weights: rank 0's block and air servers (runtime/stream.py)
        self.started = time.time()

    def start(self, job: Job) -> None:
        """Index the checkpoint and the scenario's blocks as ``job``'s plan does (sublayer: the split blocks)."""
        self.ckpt = self.whole.split_layers() if job.sublayer else self.whole
        on = self.scenario.mechanisms | {"sublayer"} if job.sublayer else self.scenario.mechanisms - {"sublayer"}
        self.plan_blocks = self.scenario.replace(mechanisms=on).planned().blocks


def _run_source(ctx: _Ctx, job: Job, t0: float) -> dict[str, Any]:
    """Rank 0: send the prompt(s), collect the tokens; times relative to the request (t0).

    A burst's ``R`` prompts are all sent at once (they arrive together). Each token that comes back goes
    out again at once as its request's next decode step, until every request has ``new_tokens`` tokens.
    """
    import torch

    from coldpipe.runtime.trace import Recorder

    plan = job.plan
    src, first_dev, last_dev = ctx.scenario.source, plan.stages[0].device, plan.stages[-1].device
    n_stages = len(plan.stages)
    n_new = job.new_tokens
    rec = Recorder(t0)
    links = Links(ctx, rec, job.links, job.sharing)
    prompts = job.prompts
    for r, p in enumerate(prompts):
        links.send(torch.tensor([p], dtype=torch.int32), 1, src, first_dev, f"prompt{span_tag(r, 0)}", r, 0)
    first = [0.0] * len(prompts)
    last = [0.0] * len(prompts)
    tokens: list[list[int]] = [[] for _ in prompts]
    shards = plan.head_shards
    for _ in range(len(prompts) * n_new):
        if shards:  # sharded-head: every shard's top-k, combined (the largest logit; ties: the lower id)
            best: tuple[float, int] | None = None
            for k_sh, sh in enumerate(shards):
                n_cand = _shard_k(sh)
                r, k, cand = links.recv(
                    lambda _step, n=n_cand: (2, n),
                    torch.float32,
                    n_stages + 1 + k_sh,
                    sh.device,
                    src,
                    "candidates",
                )
                i = int(torch.argmax(cand[1]))  # the first maximum: the lowest id among equal logits
                top = (float(cand[1][i]), -int(cand[0][i]))
                best = top if best is None or top > best else best
            assert best is not None
            tok = torch.tensor([-best[1]], dtype=torch.int32)
        else:
            r, k, tok = links.recv(lambda _step: (1,), torch.int32, n_stages, last_dev, src, "token")
        now = rec.now()
        if k == 0:
            first[r] = now
        last[r] = now
        tokens[r].append(int(tok.item()))
        if k + 1 < n_new:
            links.send(tok.view(1, 1), 1, src, first_dev, f"token{span_tag(r, k + 1)}", r, k + 1)
    links.finish()
    return {
        "token_ids": tokens[0],
        "all_token_ids": tokens,
        "first_token_ids": [t[0] for t in tokens],
        "completions": first,
        "last_token_s": last,
        "measured_ttft": first[0],
        "measured_e2e": max(last),
        "source_spans": [s.to_dict() for s in rec.spans],
    }


def _loader(
    ctx: _Ctx,
    model: Any,
    emu: Any,
    t0: float,
    rec: Any,
    ready: list[threading.Event],
    failure: list[BaseException],
    fault: str | None,
    sparse_ids: list[int] | None,
) -> None:
    """Loader thread: from t0 + startup, read blocks first..last in order, each resident before the next.

    ``sparse_ids``: read only these rows of the embedding (block 0), not the whole matrix.
    """
    from coldpipe.runtime.checkpoint import read_tensor
    from coldpipe.runtime.emulation import Pacer

    block: int | None = None
    try:
        wait = t0 + emu.startup_s - time.time()
        if wait > 0:
            time.sleep(wait)
        pacer = Pacer(emu.read_bytes_per_s)
        fds: dict[str, int] = {}
        stream = StreamClient(ctx.stream_port) if emu.stream_hops else None
        air = AirClient(ctx.air_port) if any(c for c, _r, _h in emu.stream_hops) else None
        try:
            for i, b in enumerate(range(model.first, model.last + 1)):
                block = b
                start = rec.now()
                if stream is not None:  # streamed-weights: from rank 0, in the model's transfer time
                    sent = time.time()
                    tensors, n = stream.fetch(ctx.ckpt, b)
                    arrived = sent
                    for channel, s_per_byte, hop_s in emu.stream_hops:  # store-and-forward, hop by hop
                        dur = n * s_per_byte + hop_s
                        arrived = (air.hop(channel, arrived, 1, dur) if air is not None else arrived) + dur
                    wait = arrived - time.time()
                    if wait > 0:
                        time.sleep(wait)
                    model.assign(b, tensors)
                    rec.add(f"stream b{b}", "load", start, rec.now(), b, n)
                    ready[i].set()
                    continue
                if b == 0 and sparse_ids is not None:
                    n = _load_sparse_embedding(ctx, model, sparse_ids, pacer.pace)
                    rec.add("load b0 (prompt rows)", "load", start, rec.now(), 0, n)
                    ready[i].set()
                    continue
                tensors = {}
                entries = sorted((ctx.ckpt.tensors[n] for n in ctx.ckpt.blocks[b]), key=lambda e: (e.file, e.offset))
                for e in entries:
                    if fault == "load-error":  # an I/O error in the loader thread: the rank must say so
                        raise OSError(5, "Input/output error (fault injected)", e.file)
                    if e.file not in fds:
                        fds[e.file] = os.open(e.file, os.O_RDONLY)
                    tensors[e.name] = read_tensor(e, fds[e.file], pacer.pace)
                model.assign(b, tensors)
                n = sum(e.nbytes for e in entries)
                rec.add(f"load b{b}", "load", start, rec.now(), b, n)
                if fault == "load":
                    os._exit(3)
                ready[i].set()
        finally:
            for fd in fds.values():
                os.close(fd)
            if stream is not None:
                stream.close()
            if air is not None:
                air.close()
    except BaseException as exc:
        failure.append(LoaderFailed(block, exc))
        for ev in ready:
            ev.set()


class LoaderFailed(Exception):
    """The loader thread could not make ``block`` resident; ``cause`` is why (an I/O error, a bad tensor)."""

    def __init__(self, block: int | None, cause: BaseException) -> None:
        self.block, self.cause = block, cause
        lines = str(cause).strip().splitlines()
        what = f"block {block}" if block is not None else "the weights"
        super().__init__(
            f"the loader failed reading {what}: {type(cause).__name__}: {(lines[0] if lines else '')[:300]}"
        )


def _load_sparse_embedding(ctx: _Ctx, model: Any, ids: list[int], pace: Any) -> int:
    """Read the embedding rows of ``ids`` (paced); later tokens' rows are read when they come. Returns bytes."""
    import torch

    from coldpipe.runtime.checkpoint import torch_dtype
    from coldpipe.runtime.stage_model import SparseEmbedding

    e = ctx.ckpt.tensors["model.embed_tokens.weight"]
    vocab, h = e.shape
    row_bytes = e.nbytes // vocab
    dtype = torch_dtype(e.dtype_name, "--checkpoint")

    def fetch(token: int) -> torch.Tensor:  # one row (h,), read for real
        buf = torch.empty(row_bytes, dtype=torch.uint8)
        fd = os.open(e.file, os.O_RDONLY)
        try:
            if os.preadv(fd, [memoryview(buf.numpy())], e.offset + token * row_bytes) != row_bytes:
                raise OSError(f"short read of embedding row {token} in {e.file}")
        finally:
            os.close(fd)
        return buf.view(dtype).reshape(h)

    rows = {}
    for token in sorted(set(ids)):
        rows[token] = fetch(token)
        pace(row_bytes)
    model.assign_sparse_embedding(SparseEmbedding(rows, fetch))
    return row_bytes * len(rows)


def _preload(ctx: _Ctx, model: Any) -> None:
    """Warm jobs: make every block resident before the request (no pacing, nothing recorded)."""
    from coldpipe.runtime.checkpoint import read_tensor

    for b in range(model.first, model.last + 1):
        tensors = {}
        for name in ctx.ckpt.blocks[b]:
            e = ctx.ckpt.tensors[name]
            fd = os.open(e.file, os.O_RDONLY)
            try:
                tensors[name] = read_tensor(e, fd)
            finally:
                os.close(fd)
        model.assign(b, tensors)


def _run_stage(ctx: _Ctx, job: Job, j: int, model: Any, t0: float, fault: str | None) -> dict[str, Any]:
    """Stage ``j`` (rank j + 1): the loader thread plus the compute loop, prefill then decode."""
    import torch
    import torch.distributed as dist
    from transformers import DynamicCache

    from coldpipe.runtime.trace import Recorder

    plan = job.plan
    overlap = job.overlap
    st = plan.stages[j]
    n_stages = len(plan.stages)
    emu = job.emulation[j]
    prev_rank, next_rank = j, (j + 2 if j + 1 < n_stages else 0)
    next_dev = plan.stages[j + 1].device if j + 1 < n_stages else ctx.scenario.source
    is_last = st.last == ctx.ckpt.n_blocks - 1
    rec = Recorder(t0)
    blocks = list(range(st.first, st.last + 1))
    ready = [threading.Event() for _ in blocks]
    failure: list[BaseException] = []
    sparse_ids = sorted({t for p in job.prompts for t in p}) if job.sparse_embedding else None
    loader = threading.Thread(
        target=_loader, args=(ctx, model, emu, t0, rec, ready, failure, fault, sparse_ids), daemon=True
    )
    if job.warm:  # weights already resident (see _preload)
        for ev in ready:
            ev.set()
    else:
        loader.start()

    def wait_resident(i: int) -> None:
        if not ready[i].is_set():
            start = rec.now()
            doing(f"waiting for block {blocks[i]} to load")
            ready[i].wait()
            if not failure:
                rec.add(f"wait b{blocks[i]}", "wait", start, rec.now(), blocks[i])
        if failure:  # set by a failed loader too: never compute on weights that are not there
            raise failure[0]

    if overlap == "none":  # load-then-compute: nobody starts before every stage has all its blocks
        start = rec.now()
        doing("loading (overlap none)")
        for ev in ready:
            ev.wait()
        if failure:
            raise failure[0]
        doing("waiting for every stage to load (overlap none)")
        dist.all_reduce(torch.tensor([rec.now()], dtype=torch.float64), op=dist.ReduceOp.MAX)
        rec.add("wait all loaded", "wait", start, rec.now())

    h = model.config.hidden_size
    prev_dev = plan.stages[j - 1].device if j > 0 else ctx.scenario.source
    links = Links(ctx, rec, job.links, job.sharing)
    # decode steps stream every weight (and the reserved KV cache) through memory once: a device with
    # `mem_bandwidth` needs at least that long per block, whatever the host's own memory does
    mem_floor_s = [0.0] * len(blocks)
    sc_blocks = ctx.plan_blocks
    if emu.mem_bandwidth is not None:
        mem_floor_s = [(sc_blocks[b].weight_bytes + sc_blocks[b].kv_bytes) / emu.mem_bandwidth for b in blocks]
    s = len(job.prompt_ids)
    n_requests = len(job.prompts)
    logits = None
    caches = [DynamicCache(config=model.config) for _ in range(n_requests)]
    # every job (request r, step k) in the order the previous rank sent it: the first stage's order
    for _ in range(n_requests * job.new_tokens):
        if j == 0:
            r, step, x = links.recv(
                lambda k: (1, s if k == 0 else 1), torch.int32, prev_rank, prev_dev, st.device, "prompt/token"
            )
            x = x.long()  # (1, q)
        else:
            r, step, x = links.recv(
                lambda k: (1, s if k == 0 else 1, h), model.dtype, prev_rank, prev_dev, st.device, "activation"
            )  # (1, q, h)
        tag = span_tag(r, step)
        q = s if step == 0 else 1  # positions in this forward
        pos = 0 if step == 0 else s + step - 1
        position_ids = torch.arange(pos, pos + q).unsqueeze(0)  # (1, q)
        rope = None
        for i, b in enumerate(blocks):
            if step == 0 and overlap == "layer":
                wait_resident(i)  # this block only (later requests find it resident)
            elif step == 0 and overlap == "stage" and i == 0:
                for k in range(len(blocks)):
                    wait_resident(k)  # the whole stage
            if fault == "compute":
                os._exit(3)
            if fault == "hang":  # alive but silent: the peers' transfers must time out
                time.sleep(3600)
            start = rec.now()
            c0, cpu0 = time.perf_counter(), time.thread_time()
            if rope is None and model.layer_of(b) is not None:
                rope = model.position_embeddings(x, position_ids)
            x = model.run_block(b, x, position_ids, rope, caches[r])
            wall_s, cpu_s = time.perf_counter() - c0, time.thread_time() - cpu0
            # stretch to the emulated device: it needs `slowdown` times the host's time for this block; with
            # compute_clock "cpu" the host's time is this thread's CPU time (1 torch thread), so time lost to
            # other processes sharing the host's cores is absorbed by the sleep instead of multiplied by it
            host_s = cpu_s if emu.compute_clock == "cpu" else wall_s
            target_s = host_s * emu.slowdown if emu.slowdown > 1.0 else 0.0
            if step > 0:
                target_s = max(target_s, mem_floor_s[i])
            if target_s > wall_s:
                time.sleep(target_s - wall_s)
            cat = "compute" if step == 0 else "decode"
            rec.add(f"{cat} b{b}{tag}", cat, start, rec.now(), b, cpu_s=cpu_s, request=r)
        if is_last:
            logits = x  # (1, V)
            x = torch.argmax(x, dim=-1).to(torch.int32)  # (1,)
        if plan.head_shards and j + 1 == n_stages:  # sharded-head: the last position to every shard
            for k_sh, sh in enumerate(plan.head_shards):
                links.send(x[:, -1:, :], n_stages + 1 + k_sh, st.device, sh.device, "hidden" + tag, r, step)
            continue
        links.send(x, next_rank, st.device, next_dev, ("token" if is_last else "activation") + tag, r, step)
    links.finish()
    if loader.is_alive():
        loader.join()
    if failure:
        raise failure[0]
    out: dict[str, Any] = {"stage": j, "device": st.device, "spans": [sp.to_dict() for sp in rec.spans]}
    if is_last and job.return_logits:
        out["last_logits"] = logits[0].tolist() if logits is not None else None
    return out


def _shard_k(shard: Any) -> int:
    """Candidates a head shard returns: SHARD_TOP_K, or all its rows if it has fewer."""
    from coldpipe.core.mechanisms import SHARD_TOP_K

    return min(SHARD_TOP_K, shard.rows)


def _run_shard(ctx: _Ctx, job: Job, k: int, t0: float) -> dict[str, Any]:
    """Head shard ``k`` (sharded-head, docs/model.md#sharded-head): load the final norm and its vocabulary rows,
    then for every job: the last position's hidden state in, its logits' slice and local top-k out to the source."""
    import torch
    import torch.distributed as dist

    from coldpipe.runtime.checkpoint import read_tensor, torch_dtype
    from coldpipe.runtime.emulation import Pacer
    from coldpipe.runtime.trace import Recorder

    plan, sh = job.plan, job.plan.head_shards[k]
    n_stages = len(plan.stages)
    emu = job.emulation[n_stages + k]
    rec = Recorder(t0)
    cfg = ctx.ckpt.config
    h, eps = int(cfg["hidden_size"]), float(cfg.get("rms_norm_eps", 1e-6))
    tensors = ctx.ckpt.tensors
    head = tensors.get("lm_head.weight", tensors["model.embed_tokens.weight"])
    row_bytes = head.nbytes // int(head.shape[0])
    ready = threading.Event()
    failure: list[BaseException] = []
    weights: dict[str, Any] = {}

    def load() -> None:
        try:
            wait = t0 + emu.startup_s - time.time()
            if wait > 0:
                time.sleep(wait)
            pacer = Pacer(emu.read_bytes_per_s)
            start = rec.now()
            norm = tensors["model.norm.weight"]
            fd = os.open(norm.file, os.O_RDONLY)
            try:
                weights["norm"] = read_tensor(norm, fd, pacer.pace).float()
            finally:
                os.close(fd)
            buf = torch.empty(sh.rows * row_bytes, dtype=torch.uint8)
            fd = os.open(head.file, os.O_RDONLY)
            try:
                view, done = memoryview(buf.numpy()), 0
                while done < len(buf):
                    n = os.preadv(fd, [view[done : done + (1 << 20)]], head.offset + sh.first_row * row_bytes + done)
                    if n <= 0:
                        raise OSError(f"short read of the LM head rows in {head.file}")
                    done += n
                    pacer.pace(n)
            finally:
                os.close(fd)
            weights["rows"] = buf.view(torch_dtype(head.dtype_name, "--checkpoint")).reshape(sh.rows, h).float()
            rec.add(f"load head rows {sh.first_row}-{sh.last_row}", "load", start, rec.now(), ctx.ckpt.n_blocks - 1)
        except BaseException as exc:  # reported by the compute loop
            failure.append(exc)
        ready.set()

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    if job.overlap == "none":
        ready.wait()
        dist.all_reduce(torch.tensor([rec.now()], dtype=torch.float64), op=dist.ReduceOp.MAX)
    links = Links(ctx, rec, job.links, job.sharing)
    last_dev = plan.stages[-1].device
    dtype = torch_dtype(ctx.ckpt.dtype)
    for _ in range(len(job.prompts) * job.new_tokens):
        r, step, x = links.recv(lambda _s: (1, 1, h), dtype, n_stages, last_dev, sh.device, "hidden")
        if not ready.is_set():
            start = rec.now()
            ready.wait()
            rec.add("wait head rows", "wait", start, rec.now())
        if failure:
            raise failure[0]
        start = rec.now()
        c0, cpu0 = time.perf_counter(), time.thread_time()
        with torch.inference_mode():
            v = x[0, -1].float()
            normed = v * torch.rsqrt(v.pow(2).mean() + eps) * weights["norm"]  # the model's RMSNorm, in float32
            logits = weights["rows"] @ normed  # (rows,)
            vals, idx = torch.topk(logits, _shard_k(sh))
            cand = torch.stack([(idx + sh.first_row).float(), vals])  # (2, K)
        wall_s, cpu_s = time.perf_counter() - c0, time.thread_time() - cpu0
        host_s = cpu_s if emu.compute_clock == "cpu" else wall_s
        target_s = host_s * emu.slowdown if emu.slowdown > 1.0 else 0.0
        if step > 0 and emu.mem_bandwidth is not None:
            target_s = max(target_s, (weights["rows"].numel() * row_bytes / h) / emu.mem_bandwidth)
        if target_s > wall_s:
            time.sleep(target_s - wall_s)
        rec.add(f"head rows{span_tag(r, step)}", "compute" if step == 0 else "decode", start, rec.now(), cpu_s=cpu_s)
        links.send(cand, 0, sh.device, ctx.scenario.source, "candidates" + span_tag(r, step), r, step)
    links.finish()
    loader.join()
    return {"shard": k, "device": sh.device, "spans": [sp.to_dict() for sp in rec.spans]}


def _run(ctx: _Ctx, init_method: str, fault: dict[str, Any] | None, result_path: str | None) -> None:
    import torch
    import torch.distributed as dist

    from coldpipe.runtime.checkpoint import torch_dtype
    from coldpipe.runtime.emulation import drop_page_cache
    from coldpipe.runtime.stage_model import StageModel

    my_fault = fault.get("at") if fault and int(fault.get("rank", -1)) == ctx.rank else None
    if my_fault == "connect":  # a peer that never connects: the others must time out
        time.sleep(3600)
    torch.set_num_threads(int(ctx.spec.get("threads", 1)))
    doing(f"connecting to the other {ctx.world - 1} ranks")
    dist.init_process_group(
        "gloo", init_method=init_method, rank=ctx.rank, world_size=ctx.world, timeout=timedelta(seconds=ctx.timeout_s)
    )
    dtype = torch_dtype(ctx.ckpt.dtype)
    results = []
    if any(e.stream_hops for job in ctx.jobs for e in job.emulation):  # streamed-weights
        server = BlockServer(lambda: ctx.ckpt) if ctx.rank == 0 else None
        port = torch.tensor([server.port if server is not None else 0], dtype=torch.int64)
        dist.broadcast(port, 0)
        ctx.stream_port = int(port.item())
    if any(job.sharing != "none" or any(c for e in job.emulation for c, _, _ in e.stream_hops) for job in ctx.jobs):
        air_server = AirServer() if ctx.rank == 0 else None
        port = torch.tensor([air_server.port if air_server is not None else 0], dtype=torch.int64)
        dist.broadcast(port, 0)
        ctx.air_port = int(port.item())
    if ctx.rank > 0 and ctx.spec.get("warm_up", True):  # runtime start: warm the allocator and kernels
        doing("warming up")
        StageModel(ctx.ckpt.config, 1, 0, dtype).warm_up(len(ctx.jobs[0].prompt_ids))
    ready_s = time.time() - ctx.started
    for job in ctx.jobs:
        job_start = time.time()
        ctx.start(job)
        plan = job.plan
        j = ctx.rank - 1
        model = None
        if 0 <= j < len(plan.stages):
            model = StageModel(ctx.ckpt.config, plan.stages[j].first, plan.stages[j].last, dtype, job.sublayer)
        if model is not None and job.warm:
            doing("preloading the weights (warm job)")
            _preload(ctx, model)
        doing("waiting for every rank to be ready")
        dist.barrier()  # every rank built: the cluster is up, nothing is loaded
        if ctx.rank == 0 and ctx.spec.get("cold_cache", True):
            drop_page_cache(ctx.ckpt.files)
        # the request arrives at t0, announced slightly ahead so that every rank is listening at t0 (the
        # broadcast takes up to ~0.1 s on a loaded host; a real device's notification is part of `startup`)
        t = torch.tensor([time.time() + ANNOUNCE_S], dtype=torch.float64)
        dist.broadcast(t, 0)
        t0 = float(t.item())
        if time.time() < t0:
            time.sleep(t0 - time.time())
        if ctx.rank == 0:
            if job.overlap == "none":
                dist.all_reduce(torch.zeros(1, dtype=torch.float64), op=dist.ReduceOp.MAX)
            out: dict[str, Any] = _run_source(ctx, job, t0)
        elif model is not None:
            out = _run_stage(ctx, job, j, model, t0, my_fault)
        elif 0 <= j - len(plan.stages) < len(plan.head_shards):
            out = _run_shard(ctx, job, j - len(plan.stages), t0)
        else:
            if job.overlap == "none":
                dist.all_reduce(torch.zeros(1, dtype=torch.float64), op=dist.ReduceOp.MAX)
            out = {}
        doing("gathering the results")
        gathered: list[Any] = [None] * ctx.world if ctx.rank == 0 else []
        dist.gather_object(out, gathered if ctx.rank == 0 else None, dst=0)
        if ctx.rank == 0:
            res = gathered[0]
            res["stages"] = [g for g in gathered[1 : len(plan.stages) + 1]]
            res["job_wall_s"] = time.time() - job_start
            res["source_ready_s"] = ready_s
            results.append(res)
        del model
    if ctx.rank == 0 and result_path:
        from coldpipe.atomic import write_text_atomic

        write_text_atomic(result_path, json.dumps({"jobs": results}))
    dist.barrier()
    dist.destroy_process_group()


_DYING = threading.Lock()


def _die(line: str) -> None:
    """Print the rank's one error line and end the process; a second caller (other thread) never prints."""
    _DYING.acquire()
    print(line, file=sys.stderr, flush=True)
    os._exit(1)


def _watchdog(abort_file: str | None, launcher_pid: int | None, rank: int, role: str) -> None:
    while True:
        time.sleep(0.2)
        if abort_file and os.path.exists(abort_file):
            why = Path(abort_file).read_text().strip() or "the run failed elsewhere"
            _die(f"coldpipe: error: rank {rank} ({role}): stopped because {why}")
        if launcher_pid is not None:
            try:
                os.kill(launcher_pid, 0)
            except ProcessLookupError:
                _die(f"coldpipe: error: rank {rank} ({role}): the launcher died; stopping")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="coldpipe-worker", description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True, help="run spec JSON written by the launcher")
    ap.add_argument("--rank", type=int, default=None, help="default: $RANK (torchrun)")
    ap.add_argument("--world-size", type=int, default=None, help="default: $WORLD_SIZE (torchrun)")
    ap.add_argument("--master-addr", default="127.0.0.1")
    ap.add_argument("--master-port", type=int, default=None, help="default: env:// rendezvous (torchrun)")
    ap.add_argument(
        "--store-file",
        default=None,
        help="rendezvous through this file (local runs: no TCP store; gloo bound to the loopback interface)",
    )
    ap.add_argument("--result", default=None, help="rank 0 writes the gathered result here")
    ap.add_argument("--abort-file", default=None, help="stop with an error when this file appears")
    ap.add_argument("--launcher-pid", type=int, default=None, help="stop when this process is gone")
    ap.add_argument("--log", default=None, help="redirect this rank's stdout and stderr to this file")
    args = ap.parse_args(argv)
    if args.log:
        fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    rank = args.rank if args.rank is not None else int(os.environ.get("RANK", "0"))
    world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    role = "source" if rank == 0 else f"stage {rank - 1}"
    threading.Thread(target=_watchdog, args=(args.abort_file, args.launcher_pid, rank, role), daemon=True).start()
    try:
        spec = json.loads(Path(args.spec).read_text())
        init = f"tcp://{args.master_addr}:{args.master_port}" if args.master_port is not None else "env://"
        if args.store_file is not None:  # a local run listens on 127.0.0.1 only (docs/cluster.md#security)
            os.environ["GLOO_SOCKET_IFNAME"] = "lo"
            init = f"file://{args.store_file}"
        ctx = _Ctx(spec, rank, world)
        _run(ctx, init, spec.get("fault"), args.result)
    except BaseException as exc:  # one line per rank, never a traceback wall
        if isinstance(exc, SystemExit) and not exc.code:
            os._exit(0)
        timeout = None
        with contextlib.suppress(Exception):  # the spec itself may be what failed
            timeout = float(json.loads(Path(args.spec).read_text()).get("timeout_s", 30.0))
        _die(f"coldpipe: error: rank {rank} ({role}): {_one_line(exc, timeout)}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
