"""Measure the machine coldpipe runs on: the figures of one device (docs/model.md#devices, docs/profiling.md).

Each ``measure_*`` function times one thing and returns a :class:`Measurement` (value in SI base
units + how it was measured). torch and transformers are imported inside the functions that need
them, so importing this module is cheap. Timings are medians of repeats, with the first
repeat discarded as warm-up where a warm-up makes sense.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coldpipe.core.architectures import Architecture, blocks_for
from coldpipe.errors import InputError

__all__ = [
    "Measurement",
    "Profile",
    "Tick",
    "available_memory_bytes",
    "decoder_layer_architecture",
    "measure_decoder_layer",
    "measure_matmul_flops",
    "measure_mem_bandwidth",
    "measure_startup",
    "measure_storage_read",
    "no_tick",
]

Tick = Callable[[float], None]  # progress callback: fraction of the step done, 0..1


def no_tick(_: float) -> None:
    """The progress callback that reports nothing (every measurement's default)."""
    return None


@dataclass(frozen=True)
class Measurement:
    """One measured figure: ``value`` in SI base units, and how it was obtained."""

    value: float
    how: str
    samples: tuple[float, ...] = ()


@dataclass
class Profile:
    """Everything ``coldpipe profile`` measured; :meth:`device_entry` is the scenario device."""

    name: str
    flops: Measurement
    mem_bandwidth: Measurement
    load_bandwidth: Measurement
    memory: Measurement
    startup: Measurement
    link: dict[str, Measurement] = field(default_factory=dict)  # uplink, downlink, rtt
    notes: list[str] = field(default_factory=list)  # extra comment lines (e.g. the other compute rate)

    def device_entry(self) -> dict[str, Any]:
        """The scenario-file device (plain SI numbers). Without a peer, uplink/downlink are left out."""
        entry: dict[str, Any] = {
            "name": self.name,
            "flops": _sig(self.flops.value),
            "load_bandwidth": _sig(self.load_bandwidth.value),
            "startup": round(self.startup.value, 3),
            "memory": _sig(self.memory.value),
            "mem_bandwidth": _sig(self.mem_bandwidth.value),
        }
        if "uplink" in self.link:
            entry["uplink"] = _sig(self.link["uplink"].value)
            entry["downlink"] = _sig(self.link["downlink"].value)
        return entry

    def to_yaml(self) -> str:
        """A YAML list item, ready to paste under ``devices:``, with what each figure is as comments."""
        import yaml

        lines = ["# coldpipe profile of this machine (docs/profiling.md); paste under `devices:`"]
        for key, m in (
            ("flops", self.flops),
            ("load_bandwidth", self.load_bandwidth),
            ("startup", self.startup),
            ("memory", self.memory),
            ("mem_bandwidth", self.mem_bandwidth),
            *sorted(self.link.items()),
        ):
            lines.append(f"#   {key}: {m.how}")
        lines.extend(f"#   {note}" for note in self.notes)
        if "uplink" not in self.link:
            lines.append("#   uplink/downlink: not measured (use --peer HOST:PORT, or give radio: {distance_m: ...})")
        if "rtt" in self.link:
            lines.append(f"#   network.hop_latency ~ rtt / 2 = {self.link['rtt'].value / 2:.6f} s")
        body = yaml.safe_dump([self.device_entry()], sort_keys=False, default_flow_style=None, width=200)
        return "\n".join(lines) + "\n" + body


def _sig(x: float, digits: int = 4) -> float:
    """Round to ``digits`` significant figures (a profile is not more precise than that)."""
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits - 1}e}")


def _torch_dtype(dtype: str) -> Any:
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise InputError("--dtype", f"cannot time matmuls in {dtype!r}", f"use one of {list(table)}")
    return table[dtype]


def decoder_layer_architecture(hidden: int) -> Architecture:
    """A Llama-3-shaped decoder at hidden size ``hidden``: heads of 64, 4 query heads per KV head, MLP 3.5x."""
    if hidden < 64 or hidden % 256:
        raise InputError("--hidden", f"must be a multiple of 256, got {hidden}", "e.g. 2048 (Llama-3.2-1B)")
    heads = hidden // 64
    return Architecture(
        model_type="llama",
        hidden_size=hidden,
        intermediate_size=hidden * 7 // 2,
        num_hidden_layers=1,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
        vocab_size=32000,
        head_dim=64,
        source=f"coldpipe profile: Llama-3-shaped layer at hidden {hidden}",
    )


def _linear_shapes(arch: Architecture) -> list[tuple[int, int]]:
    """(in, out) of every projection of one decoder layer: q, k, v, o, gate, up, down."""
    h, d = arch.hidden_size, arch.head_dim
    q, kv, inter = arch.num_attention_heads * d, arch.num_key_value_heads * d, arch.intermediate_size
    return [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (h, inter), (inter, h)]


def measure_matmul_flops(
    *, dtype: str = "float32", hidden: int = 2048, tokens: int = 512, repeats: int = 5, tick: Tick = no_tick
) -> Measurement:
    """Sustained FLOP/s of a decoder layer's seven projections on ``tokens`` rows (prefill-shaped)."""
    import torch

    tdt = _torch_dtype(dtype)
    arch = decoder_layer_architecture(hidden)
    shapes = _linear_shapes(arch)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(o, i, generator=gen).to(tdt) for i, o in shapes]  # (out, in) as nn.Linear stores them
    inputs = {i: torch.randn(1, tokens, i, generator=gen).to(tdt) for i, _ in shapes}  # (1, s, in)
    work = sum(2.0 * tokens * i * o for i, o in shapes)
    times = []
    with torch.inference_mode():
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            for (i, _), w in zip(shapes, weights, strict=True):
                torch.nn.functional.linear(inputs[i], w)  # (1, s, in) @ (in, out) -> (1, s, out)
            dt = time.perf_counter() - t0
            if r > 0:  # the first pass warms caches and allocators
                times.append(dt)
            tick((r + 1) / (repeats + 1))
    med = statistics.median(times)
    return Measurement(
        work / med,
        f"median of {repeats} passes over the 7 projections of a hidden-{hidden} Llama layer on {tokens} tokens, "
        f"{dtype}, {torch.get_num_threads()} threads ({work / 1e9:.2f} GFLOP in {med * 1e3:.1f} ms)",
        tuple(work / t for t in times),
    )


def measure_decoder_layer(
    *, dtype: str = "float32", hidden: int = 2048, tokens: int = 512, repeats: int = 3, tick: Tick = no_tick
) -> Measurement:
    """FLOP/s of a real ``transformers`` LlamaDecoderLayer prefill, FLOPs counted as coldpipe's model counts them.

    ``samples`` holds the measured forward times in seconds (not rates).
    """
    import torch
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    tdt = _torch_dtype(dtype)
    arch = decoder_layer_architecture(hidden)
    cfg = LlamaConfig(**{k: v for k, v in arch.to_hf_config(dtype).items() if k not in ("architectures",)})
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    layer = LlamaDecoderLayer(cfg, layer_idx=0).to(tdt).eval()
    rope = LlamaRotaryEmbedding(config=cfg)
    x = torch.randn(1, tokens, hidden).to(tdt)  # (1, s, h)
    pos = torch.arange(tokens).unsqueeze(0)  # (1, s)
    flops = blocks_for(arch, prompt_tokens=tokens, dtype=dtype)[1].flops
    times = []
    with torch.inference_mode():
        pe = rope(x, position_ids=pos)
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            layer(x, attention_mask=None, position_ids=pos, position_embeddings=pe)
            dt = time.perf_counter() - t0
            if r > 0:
                times.append(dt)
            tick((r + 1) / (repeats + 1))
    med = statistics.median(times)
    return Measurement(
        flops / med,
        f"transformers LlamaDecoderLayer, hidden {hidden}, {tokens} tokens, {dtype}: "
        f"{flops / 1e9:.2f} GFLOP (coldpipe's count) in {med * 1e3:.1f} ms median of {repeats}",
        tuple(times),
    )


def measure_mem_bandwidth(*, size_bytes: int = 256 * 2**20, repeats: int = 5, tick: Tick = no_tick) -> Measurement:
    """DRAM bandwidth: copy a ``size_bytes`` buffer into another; read + write bytes per second (one thread)."""
    import numpy as np

    src = np.ones(size_bytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        dt = time.perf_counter() - t0
        if r > 0:
            times.append(dt)
        tick((r + 1) / (repeats + 1))
    med = statistics.median(times)
    moved = 2.0 * src.nbytes
    return Measurement(
        moved / med,
        f"numpy copy of {src.nbytes / 2**20:.0f} MiB, (read + write bytes) / median of {repeats}, one thread",
        tuple(moved / t for t in times),
    )


_CHUNK = 8 * 2**20


def _write_test_file(path: Path, size_bytes: int, tick: Tick) -> None:
    block = os.urandom(_CHUNK)  # incompressible, in case the file system compresses
    written = 0
    with path.open("wb") as f:
        while written < size_bytes:
            n = min(_CHUNK, size_bytes - written)
            f.write(block[:n])
            written += n
            tick(written / size_bytes)
        f.flush()
        os.fsync(f.fileno())


def _drop_cache(path: Path) -> bool:
    """Ask the kernel to forget ``path``'s cached pages; true if the call exists and succeeded."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _read_all(path: Path, direct: bool, tick: Tick) -> int:
    size = path.stat().st_size
    if direct:
        import mmap

        flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
        buf = mmap.mmap(-1, _CHUNK)  # page-aligned, as O_DIRECT needs
        view = memoryview(buf)
        fd = os.open(path, flags)
        try:
            done = 0
            while True:
                n = os.readv(fd, [view])
                if n <= 0:
                    break
                done += n
                tick(done / size)
        finally:
            os.close(fd)
            view.release()
            buf.close()
        return done
    buf2 = bytearray(_CHUNK)
    done = 0
    with path.open("rb", buffering=0) as f:
        while True:
            n = f.readinto(buf2)  # type: ignore[attr-defined]
            if not n:
                break
            done += n
            tick(done / size)
    return done


def measure_storage_read(
    path: str | Path, *, size_bytes: int = 2 * 2**30, direct: bool = False, tick: Tick = no_tick
) -> Measurement:
    """Sequential read rate with a cold page cache.

    ``path`` is an existing file (read as is: e.g. a model's safetensors) or a directory (a test file
    of ``size_bytes`` is written there, read, and deleted). The cache is defeated with
    ``posix_fadvise(DONTNEED)`` after an ``fsync``, or bypassed with ``O_DIRECT`` when ``direct``.
    """
    p = Path(path)
    made = False
    if p.is_dir():
        target = p / f".coldpipe-profile-{os.getpid()}.bin"
        _write_test_file(target, size_bytes, lambda f: tick(0.5 * f))
        made = True
    elif p.is_file():
        target = p
    else:
        raise InputError("--path", f"{str(p)!r} does not exist", "give a directory on the disk to test, or a big file")
    try:
        size = target.stat().st_size
        if size < _CHUNK:
            raise InputError("--path", f"{str(target)!r} has only {size} bytes", "use a file of at least 8 MiB")
        dropped = direct or _drop_cache(target)
        t0 = time.perf_counter()
        try:
            n = _read_all(target, direct, lambda f: tick(0.5 + 0.5 * f if made else f))
        except OSError as exc:
            if not direct:
                raise
            raise InputError("--direct", f"O_DIRECT read failed: {exc.strerror}", "drop --direct") from None
        dt = time.perf_counter() - t0
    finally:
        if made:
            target.unlink(missing_ok=True)
    method = "O_DIRECT" if direct else ("fadvise(DONTNEED)" if dropped else "NO cache drop (warm: an upper bound)")
    return Measurement(n / dt, f"sequential read of {n / 2**20:.0f} MiB from {str(p)!r}, cold cache via {method}")


def available_memory_bytes() -> Measurement:
    """``MemAvailable`` of /proc/meminfo (what can be allocated without swapping), else free physical pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return Measurement(float(line.split()[1]) * 1024, "MemAvailable from /proc/meminfo")
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return Measurement(float(pages), "free physical pages (os.sysconf)")


STARTUP_FULL = "import torch, transformers; from transformers.models.llama import modeling_llama"
STARTUP_QUICK = "import torch"


def measure_startup(*, code: str = STARTUP_FULL, repeats: int = 3, tick: Tick = no_tick) -> Measurement:
    """Seconds for a fresh Python process to start and run ``code`` (the framework imports), median of repeats.

    Files are in the page cache after the first run, so this is a warm start; a first start after
    boot reads the framework from storage and is slower.
    """
    times = []
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for r in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise InputError("startup", f"`python -c {code!r}` failed: {last}", "is the framework installed?")
        tick((r + 1) / repeats)
    gc.collect()
    return Measurement(
        statistics.median(times), f"python start + `{code}`, median of {repeats} warm-cache runs", tuple(times)
    )
