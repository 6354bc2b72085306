"""``coldpipe profile-host``: this host's real per-block prefill time and storage read rate, for one checkpoint.

The emulated cluster is derived from these numbers, not guessed: a device ``slowdown`` times slower than the
host has ``flops = host_flops / slowdown``, and :func:`calibrated_blocks` replaces each block's analytic FLOPs
by ``measured seconds * host_flops`` so that the simulator predicts, block by block, what the host really does.
(Analytic FLOPs are a fine model across devices; on one host the embedding lookup, attention and the head do
not all run at the same FLOP/s, and calibration removes that error from the comparison.)
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from coldpipe.core.architectures import blocks_for
from coldpipe.core.types import Block

__all__ = ["DEFAULT_GAP_S", "HostProfile", "calibrated_blocks", "emulated_gap_s", "profile_host"]

DECODE_STEPS = 4  # decode steps timed after each prefill pass (the median over reps x steps is kept)
DEFAULT_GAP_S = 0.25  # idle after each timed block when no scenario says how long the emulation idles
MAX_GAP_S = 1.0  # longer idles change a block's time little more and make profiling long


def emulated_gap_s(device_flops: list[float], block_s: tuple[float, ...], host_flops: float) -> float:
    """How long an emulated device idles after a block: the median over ``device_flops`` of ``(slowdown - 1) * c``,
    ``slowdown = host_flops / F`` (clamped at 1, as the runtime does) and ``c`` the median block time.

    The runtime stretches a block of host time ``c`` to ``c * slowdown`` by sleeping after it, so the next block
    starts after that idle; a block's CPU time after an idle is well above its back-to-back time (20-40 % here
    after 0.3-0.5 s: caches and clock frequency), and the stretch multiplies it. Profiling with this gap times
    blocks as the emulation runs them (at most ``MAX_GAP_S``; docs/runtime.md#fidelity-outside-the-benchmark).

    >>> emulated_gap_s([1e9, 2e9, 4e9], (0.01, 0.01, 0.02), 40e9)
    0.19
    """
    c = statistics.median(block_s)
    return min(MAX_GAP_S, statistics.median(max(0.0, (host_flops / f - 1.0) * c) for f in device_flops))


@dataclass(frozen=True)
class HostProfile:
    """Medians over ``reps`` prefill passes of ``prompt_tokens`` tokens with ``threads`` torch threads."""

    checkpoint: str
    prompt_tokens: int
    threads: int
    reps: int
    clock: str  # "cpu" (thread CPU time) or "wall"
    gap_s: float  # idle time after each timed block
    block_s: tuple[float, ...]  # prefill seconds of each block (in block order, docs/model.md#blocks)
    host_flops: float  # sum of analytic block FLOPs / sum of block_s
    read_cold_bytes_per_s: float  # bytes/s reading every block once after dropping the page cache
    read_warm_bytes_per_s: float  # the same again, from the page cache
    decode_block_s: tuple[float, ...] = ()  # a decode step of each block (1 token, after the prompt; median)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["block_s"] = list(self.block_s)
        d["decode_block_s"] = list(self.decode_block_s)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> HostProfile:
        return HostProfile(
            **{**d, "block_s": tuple(d["block_s"]), "decode_block_s": tuple(d.get("decode_block_s", ()))}
        )


def calibrated_blocks(blocks: tuple[Block, ...], profile: HostProfile) -> tuple[Block, ...]:
    """``blocks`` with ``flops = measured block seconds * host_flops`` (same total FLOP/s as the host), and
    ``decode_flops = measured decode-step seconds * host_flops`` when the profile timed decode steps."""
    if len(blocks) != len(profile.block_s):
        raise ValueError(f"{len(blocks)} blocks but the profile has {len(profile.block_s)}")
    out = [_scaled(b, flops=s * profile.host_flops) for b, s in zip(blocks, profile.block_s, strict=True)]
    if profile.decode_block_s:
        out = [
            _scaled(b, decode_flops=s * profile.host_flops) for b, s in zip(out, profile.decode_block_s, strict=True)
        ]
    return tuple(out)


def _scaled(b: Block, **work: float) -> Block:
    """``b`` with new ``flops`` or ``decode_flops``; a decoder layer's attention share (sublayer) scaled alike."""
    (name, value), attn = next(iter(work.items())), {}
    old, old_attn = getattr(b, name), getattr(b, f"attn_{name}")
    if old_attn is not None:
        attn = {f"attn_{name}": old_attn * value / old if old else 0.0}
    return replace(b, **work, **attn)


def _read_all(ckpt: Any) -> tuple[dict[int, dict[str, Any]], int, float]:
    import os

    from coldpipe.runtime.checkpoint import read_tensor

    out: dict[int, dict[str, Any]] = {}
    total = 0
    fds: dict[str, int] = {}
    start = time.perf_counter()
    for b, names in enumerate(ckpt.blocks):
        out[b] = {}
        for e in sorted((ckpt.tensors[n] for n in names), key=lambda e: (e.file, e.offset)):
            fd = fds.get(e.file) or fds.setdefault(e.file, os.open(e.file, os.O_RDONLY))
            out[b][e.name] = read_tensor(e, fd)
            total += e.nbytes
    elapsed = time.perf_counter() - start
    for fd in fds.values():
        os.close(fd)
    return out, total, elapsed


def profile_host(
    checkpoint: str | Path,
    prompt_tokens: int,
    *,
    reps: int = 5,
    threads: int = 1,
    clock: str = "cpu",
    gap_s: float = 0.0,
) -> HostProfile:
    """Measure read rates (cold, warm) and each block's prefill time on this host.

    ``clock="cpu"`` times blocks by the thread's CPU time (what the runtime stretches by default; only meaningful
    with ``threads=1``), ``"wall"`` by wall-clock time. ``gap_s`` idles that long after each timed block, as an
    emulated device does (its compute alternates with slowdown sleeps): a block's CPU time after an idle gap
    can be well above that of back-to-back passes (caches, clock frequency).
    """
    import torch
    from transformers import DynamicCache

    from coldpipe.runtime.checkpoint import open_checkpoint, torch_dtype
    from coldpipe.runtime.emulation import drop_page_cache
    from coldpipe.runtime.launch import prompt_ids
    from coldpipe.runtime.stage_model import StageModel

    torch.set_num_threads(threads)
    ckpt = open_checkpoint(checkpoint)
    drop_page_cache(ckpt.files)
    tensors, n_bytes, cold_s = _read_all(ckpt)
    del tensors
    tensors, _, warm_s = _read_all(ckpt)
    model = StageModel(ckpt.config, 0, ckpt.n_blocks - 1, torch_dtype(ckpt.dtype))
    for b, t in tensors.items():
        model.assign(b, t)
    ids = torch.tensor([list(prompt_ids(prompt_tokens, int(ckpt.config["vocab_size"])))])  # (1, s)
    pos = torch.arange(prompt_tokens).unsqueeze(0)  # (1, s)
    samples: list[list[float]] = [[] for _ in range(ckpt.n_blocks)]
    decode_samples: list[list[float]] = [[] for _ in range(ckpt.n_blocks)]

    def now() -> float:
        return time.thread_time() if clock == "cpu" else time.perf_counter()

    def forward(x: Any, position_ids: Any, cache: Any, out: list[list[float]], timed: bool) -> Any:
        rope = None
        for b in range(ckpt.n_blocks):
            c0 = now()
            if rope is None and 1 <= b <= model.n_layers:
                rope = model.position_embeddings(x, position_ids)
            x = model.run_block(b, x, position_ids, rope, cache)
            if timed:
                out[b].append(now() - c0)
                if gap_s > 0:
                    time.sleep(gap_s)
        return x

    for rep in range(reps + 1):  # the first pass warms up allocators and kernels
        cache = DynamicCache(config=model.config)
        logits = forward(ids, pos, cache, samples, rep > 0)
        for k in range(DECODE_STEPS):  # decode steps come in a row in a real answer: time several per pass
            token = torch.argmax(logits, dim=-1).view(1, 1)  # (1, 1)
            logits = forward(token, torch.tensor([[prompt_tokens + k]]), cache, decode_samples, rep > 0)
    block_s = tuple(statistics.median(s) for s in samples)
    arch = ckpt.architecture()
    flops = sum(b.flops for b in blocks_for(arch, prompt_tokens=prompt_tokens, dtype=ckpt.dtype))
    return HostProfile(
        checkpoint=str(Path(checkpoint)),
        prompt_tokens=prompt_tokens,
        threads=threads,
        reps=reps,
        clock=clock,
        gap_s=gap_s,
        block_s=block_s,
        host_flops=flops / sum(block_s),
        read_cold_bytes_per_s=n_bytes / cold_s,
        read_warm_bytes_per_s=n_bytes / warm_s,
        decode_block_s=tuple(statistics.median(s) for s in decode_samples),
    )
