"""What an agent measures about its own device at start (``--profile auto``) and the checkpoint's fingerprint.

Every figure is measured on the device, with the checkpoint it holds:

- ``flops``: a decoder layer of the checkpoint's own architecture (``StageModel`` block 1, random weights)
  on a prompt of ``prompt_tokens``, FLOPs counted as the model counts them (docs/model.md#blocks);
- ``load_bandwidth``: a sequential read of the checkpoint's files after ``posix_fadvise(DONTNEED)`` (cold);
- ``memory``: free memory, capped by the memory cgroup the agent runs in (the testbed's limit);
- ``mem_bandwidth``: a numpy copy (:func:`coldpipe.profiler.measure.measure_mem_bandwidth`);
- ``startup``: how late the loader thread starts after ``t0`` (the stage is built before ``t0``, when
  the ``prepare`` message arrives, so that is all that separates the request from the first read).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from coldpipe.core.architectures import blocks_for

__all__ = ["cgroup_memory_limit_bytes", "fingerprint", "layer_flops", "measure_device"]

READ_CAP_BYTES = 256 * 2**20  # the read-rate probe reads at most this much of the checkpoint


def fingerprint(ckpt: Any) -> str:
    """SHA-256 over config.json and every tensor's (name, dtype, shape, file name, offset, size)."""
    h = hashlib.sha256(json.dumps(ckpt.config, sort_keys=True).encode())
    for name in sorted(ckpt.tensors):
        e = ckpt.tensors[name]
        h.update(json.dumps([name, e.dtype, list(e.shape), Path(e.file).name, e.offset, e.nbytes]).encode())
    return h.hexdigest()


def cgroup_memory_limit_bytes() -> float | None:
    """The memory cgroup's limit minus its usage (cgroup v1 or v2), None when unlimited or unknown."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for ln in lines:
        _, ctrls, path = ln.split(":", 2)
        if "memory" in ctrls.split(","):
            d = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            limit_f, usage_f = d / "memory.limit_in_bytes", d / "memory.usage_in_bytes"
        elif ctrls == "":
            d = Path("/sys/fs/cgroup") / path.lstrip("/")
            limit_f, usage_f = d / "memory.max", d / "memory.current"
        else:
            continue
        try:
            limit = limit_f.read_text().strip()
            if limit == "max" or int(limit) >= 2**60:
                continue
            return float(int(limit) - int(usage_f.read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def layer_flops(ckpt: Any, prompt_tokens: int, min_s: float = 1.0, clock: str = "wall") -> tuple[float, str]:
    """Forwards of one layer, repeated for at least ``min_s`` (many CFS periods: a cpu quota shows in full).

    ``clock="cpu"`` divides by the thread's CPU time instead: FLOPs per CPU-second, what a cpu quota
    hands out, unaffected by other processes sharing the host (the testbed's reference).
    """
    import torch

    from coldpipe.runtime.checkpoint import torch_dtype
    from coldpipe.runtime.stage_model import StageModel

    dtype = torch_dtype(ckpt.dtype)
    model = StageModel(ckpt.config, 1, 1, dtype)
    layer = model.modules[1]
    layer.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(dtype) * 0.02)
    x = torch.randn(1, prompt_tokens, model.config.hidden_size, generator=gen).to(dtype)  # (1, s, h)
    pos = torch.arange(prompt_tokens).unsqueeze(0)  # (1, s)
    rope = model.position_embeddings(x, pos)
    from transformers import DynamicCache

    model.run_block(1, x, pos, rope, DynamicCache(config=model.config))  # warm-up
    n, t0, c0 = 0, time.perf_counter(), time.thread_time()
    while n < 3 or time.perf_counter() - t0 < min_s:
        model.run_block(1, x, pos, rope, DynamicCache(config=model.config))
        n += 1
    per_s = ((time.thread_time() - c0) if clock == "cpu" else (time.perf_counter() - t0)) / n
    flops = blocks_for(ckpt.architecture(), prompt_tokens=prompt_tokens, dtype=ckpt.dtype)[1].flops
    how = (
        f"{ckpt.config['model_type']} decoder layer, {prompt_tokens} tokens: {per_s * 1e3:.2f} ms ({clock}) mean of {n}"
    )
    return flops / per_s, how


def _read_rate(ckpt: Any) -> tuple[float, str]:
    from coldpipe.runtime.emulation import drop_page_cache

    files = sorted(ckpt.files, key=lambda p: -p.stat().st_size)
    drop_page_cache(files)
    buf = bytearray(8 * 2**20)
    view = memoryview(buf)
    done = 0
    t0 = time.perf_counter()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            while done < READ_CAP_BYTES:
                n = os.readv(fd, [view])
                if n <= 0:
                    break
                done += n
        finally:
            os.close(fd)
        if done >= READ_CAP_BYTES:
            break
    dt = time.perf_counter() - t0
    drop_page_cache(files)
    return done / dt, f"sequential read of {done / 2**20:.0f} MiB of the checkpoint, cold (fadvise DONTNEED)"


def _startup(repeats: int = 5) -> float:
    """How late a thread told to start at ``t`` really starts (the loader waits for ``t0`` this way), median."""
    late = []
    for _ in range(repeats):
        at = time.time() + 0.01
        got: list[float] = []

        def wake(at: float = at, got: list[float] = got) -> None:
            time.sleep(max(0.0, at - time.time()))
            got.append(time.time() - at)

        th = threading.Thread(target=wake)
        th.start()
        th.join()
        late.append(got[0])
    return max(0.0, statistics.median(late))


def measure_device(ckpt: Any, prompt_tokens: int) -> dict[str, Any]:
    """The device's figures (SI units) and how each was measured."""
    from coldpipe.profiler.measure import available_memory_bytes, measure_mem_bandwidth

    t_start = time.perf_counter()
    flops, flops_how = layer_flops(ckpt, prompt_tokens)
    load_bps, load_how = _read_rate(ckpt)
    mem = available_memory_bytes().value
    cg = cgroup_memory_limit_bytes()
    if cg is not None:
        mem = min(mem, cg)
    membw = measure_mem_bandwidth(size_bytes=64 * 2**20, repeats=3).value
    startup_s = _startup()
    return {
        "flops": flops,
        "load_bandwidth": load_bps,
        "memory": mem,
        "mem_bandwidth": membw,
        "startup": startup_s,
        "prompt_tokens": prompt_tokens,
        "how": {"flops": flops_how, "load_bandwidth": load_how, "memory": "MemAvailable, capped by the memory cgroup"},
        "profile_s": time.perf_counter() - t_start,
    }
