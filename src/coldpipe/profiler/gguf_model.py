"""Model profiles from a GGUF file (llama.cpp's format): exact bytes of every block, for every ggml type.

The header is read by :mod:`coldpipe.gguf_files` (no tensor data). A tensor's size follows from its
ggml type's block layout, so Q4_K, Q6_K, Q8_0, F16, ... and files mixing them (a Q4_K_M file holds Q4_K,
Q6_K and F32 tensors) are counted to the byte. The architecture comes from the metadata, checked against
the tensors' shapes (:func:`coldpipe.core.architectures.architecture_from_gguf`). Tensors map to the blocks
of docs/model.md#blocks by name, as llama.cpp names them:

- ``token_embd.*``               -> block 0 (the embedding)
- ``blk.{i}.*``                  -> block ``i + 1``
- ``output_norm.*``, ``output.*`` -> the last block (final norm + LM head)
- ``rope_freqs.*`` (Llama 3's RoPE scaling factors, shared by every layer) -> every decoder layer's block

Without ``output.weight`` the embeddings are tied (llama.cpp uses the embedding as the head): its bytes
count in both the first and the last block, as for a tied safetensors checkpoint, since each stage holding
one of them must load it. FLOPs, activation and KV bytes come from the architecture at the activation dtype,
float16 by default: llama.cpp keeps its KV cache in f16 (``--cache-type-k/-v f16``), and neither the KV
cache nor the activations are quantised with the weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from coldpipe.core.architectures import Architecture, architecture_from_gguf, blocks_for
from coldpipe.core.types import Block
from coldpipe.errors import InputError
from coldpipe.gguf_files import GGUFFile, GGUFTensor, read_gguf

__all__ = ["ACTIVATION_DTYPES", "GGUFProfile", "gguf_block_weight_bytes", "profile_gguf"]

ACTIVATION_DTYPES = ("float16", "bfloat16", "float32")  # the KV cache and activations: never quantised here
_LAYER = re.compile(r"^blk\.(\d+)\.")
_HEAD = ("output_norm.", "output.")
_SHARED = ("rope_freqs.",)


def gguf_block_weight_bytes(
    tensors: dict[str, GGUFTensor], n_layers: int, field: str = "model.gguf", file: str = "model.gguf"
) -> list[int]:
    """Exact weight bytes of each of the ``n_layers + 2`` blocks (index = block), by the module's rule."""
    out = [0] * (n_layers + 2)
    shared = 0
    for name, t in tensors.items():
        if name.startswith("token_embd."):
            out[0] += t.nbytes
        elif m := _LAYER.match(name):
            i = int(m.group(1))
            if i >= n_layers:
                raise InputError(
                    field,
                    f"{file!r}: tensor {name!r} is in layer {i} but the metadata gives {n_layers} layers",
                    "the metadata and the tensors disagree: convert the model again",
                )
            out[i + 1] += t.nbytes
        elif name.startswith(_HEAD):
            out[-1] += t.nbytes
        elif name.startswith(_SHARED):
            shared += t.nbytes
        else:
            raise InputError(
                field,
                f"{file!r}: tensor {name!r} ({t.ggml_type}) belongs to no block",
                "only llama.cpp's llama/qwen2 names (token_embd, blk.N, output_norm, output, rope_freqs) are "
                "understood",
            )
    empty = [i for i in range(n_layers) if out[i + 1] == 0]
    if empty:
        raise InputError(field, f"{file!r}: no tensors for layers {empty[:5]} (blk.{empty[0]}.*)", "is the file whole?")
    for i in range(1, n_layers + 1):
        out[i] += shared  # each stage holding a layer loads the shared factors
    if "output.weight" not in tensors:
        out[-1] += out[0]  # the tied head is the embedding matrix: its stage loads it too
    return out


@dataclass(frozen=True)
class GGUFProfile:
    """A GGUF model read into blocks: the architecture, the file read, and the activation dtype used."""

    name: str
    architecture: Architecture
    file: GGUFFile
    blocks: tuple[Block, ...]
    dtype: str

    @property
    def file_bytes(self) -> int:
        """Sum of every tensor's size in the file(s) (each tensor once)."""
        return sum(t.nbytes for t in self.file.tensors.values())

    def bytes_by_type(self) -> dict[str, int]:
        """Tensor bytes per ggml type, largest first."""
        out: dict[str, int] = {}
        for t in self.file.tensors.values():
            out[t.ggml_type] = out.get(t.ggml_type, 0) + t.nbytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def profile_gguf(
    path: str | Path,
    *,
    prompt_tokens: int,
    new_tokens: int = 1,
    dtype: str | None = None,
    token_bytes: float = 4.0,
    field: str = "model.gguf",
    dtype_field: str = "model.dtype",
) -> GGUFProfile:
    """Blocks of the GGUF model at ``path`` for one workload, weight bytes read from the file's header.

    ``dtype`` is the activation and KV-cache dtype (one of ``ACTIVATION_DTYPES``; default float16), as in
    :func:`coldpipe.core.architectures.blocks_for`; the weights' bytes are the file's own.
    """
    dtype = dtype or "float16"
    if dtype not in ACTIVATION_DTYPES:
        raise InputError(
            dtype_field,
            f"{dtype!r} is not an activation dtype: a GGUF file gives its weights' bytes itself",
            f"dtype sets the activations and the KV cache: use {', '.join(ACTIVATION_DTYPES)}; float16 by default",
        )
    gf = read_gguf(path, field)
    file = str(gf.path)
    shapes = {name: t.shape for name, t in gf.tensors.items()}
    arch = architecture_from_gguf(gf.metadata, shapes, field=field, file=file)
    sizes = gguf_block_weight_bytes(gf.tensors, arch.num_hidden_layers, field, file)
    shaped = blocks_for(arch, prompt_tokens=prompt_tokens, new_tokens=new_tokens, dtype=dtype, token_bytes=token_bytes)
    attn = [0] * len(sizes)  # sublayer's attention half: the layer's attn_* tensors (attn_norm included), exact
    for tname, t in gf.tensors.items():
        if (m := _LAYER.match(tname)) and tname[m.end() :].startswith("attn_"):
            attn[int(m.group(1)) + 1] += t.nbytes
    blocks = tuple(
        replace(b, weight_bytes=float(n), attn_weight_bytes=float(a) if b.attn_weight_bytes is not None else None)
        for b, n, a in zip(shaped, sizes, attn, strict=True)
    )
    name = gf.path.name.removesuffix(".gguf")
    if len(gf.files) > 1:
        name = re.sub(r"-00001-of-\d{5}$", "", name)
    return GGUFProfile(name, arch, gf, blocks, dtype)
