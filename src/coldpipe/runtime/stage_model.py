"""The blocks of one stage as transformers modules: built on the meta device, weights assigned when loaded.

Block 0 is ``nn.Embedding``, blocks ``1..n`` are the architecture's own decoder-layer class
(``LlamaDecoderLayer``, ``Qwen2DecoderLayer``, ``MistralDecoderLayer``), the last block is the final RMSNorm +
``lm_head`` (logits of the last position only, as the model's head FLOPs assume: docs/model.md#blocks).
Attention is SDPA with no mask: causal when the query has several positions (prefill from an empty cache),
full when it has one (a decode step attends to the whole cache) -- exactly what transformers' own forward
does for one unpadded sequence.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

__all__ = ["SparseEmbedding", "StageModel"]

_PREFIX = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}


def _classes(model_type: str) -> tuple[Any, Any, Any, Any]:
    mod = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    p = _PREFIX[model_type]
    cfg_mod = importlib.import_module(f"transformers.models.{model_type}.configuration_{model_type}")
    return (
        getattr(cfg_mod, f"{p}Config"),
        getattr(mod, f"{p}DecoderLayer"),
        getattr(mod, f"{p}RMSNorm"),
        getattr(mod, f"{p}RotaryEmbedding"),
    )


_HALVES: dict[str, Any] = {  # sublayer's halves of a decoder layer: their modules (and checkpoint names)
    "attn": lambda layer: {"input_layernorm": layer.input_layernorm, "self_attn": layer.self_attn},
    "mlp": lambda layer: {"post_attention_layernorm": layer.post_attention_layernorm, "mlp": layer.mlp},
}


class SparseEmbedding(nn.Module):
    """The embedding rows that were read: the prompt's before the prefill, each new token's when it comes.

    ``fetch(token_id)`` reads one row ``(h,)`` from the checkpoint. A lookup copies rows, exactly as
    ``nn.Embedding`` does, so the outputs are bit-identical to the dense module's.
    """

    def __init__(self, rows: dict[int, torch.Tensor], fetch: Any) -> None:
        super().__init__()
        self.rows = rows
        self.fetch = fetch

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (1, q) -> (1, q, h)
        for i in ids[0].tolist():
            if i not in self.rows:
                self.rows[i] = self.fetch(i)
        return torch.stack([self.rows[i] for i in ids[0].tolist()]).unsqueeze(0)


class StageModel:
    """Blocks ``first..last`` of a checkpoint whose ``config.json`` is ``cfg``; nothing resident until assigned."""

    def __init__(self, cfg: dict[str, Any], first: int, last: int, dtype: torch.dtype, sublayer: bool = False) -> None:
        config_cls, layer_cls, norm_cls, rope_cls = _classes(cfg["model_type"])
        self.config = config_cls(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
        self.config._attn_implementation = "sdpa"
        self.first, self.last, self.dtype = first, last, dtype
        self.n_layers = int(cfg["num_hidden_layers"])
        self.sublayer = sublayer  # docs/model.md#sublayer: blocks 2i+1, 2i+2 are layer i's attention and MLP halves
        h, v = self.config.hidden_size, self.config.vocab_size
        self.modules: dict[int, nn.Module] = {}
        with torch.device("meta"):
            for b in range(first, last + 1):
                if b == 0:
                    m: nn.Module = nn.Embedding(v, h)
                elif (where := self.layer_of(b)) is not None:
                    layer = layer_cls(self.config, where[0])
                    m = layer if where[1] == "layer" else nn.ModuleDict(_HALVES[where[1]](layer))
                else:
                    m = nn.ModuleDict(
                        {"norm": norm_cls(h, eps=self.config.rms_norm_eps), "lm_head": nn.Linear(h, v, False)}
                    )
                self.modules[b] = m.eval()
        has_layers = any(self.layer_of(b) is not None for b in self.modules)
        self.rotary = rope_cls(config=self.config) if has_layers else None  # buffers only, no weights

    def layer_of(self, block: int) -> tuple[int, str] | None:
        """``(decoder layer, "layer" | "attn" | "mlp")`` of ``block``, None for the embedding and the head."""
        if self.sublayer:
            return ((block - 1) // 2, ("attn", "mlp")[(block - 1) % 2]) if 1 <= block <= 2 * self.n_layers else None
        return (block - 1, "layer") if 1 <= block <= self.n_layers else None

    def assign(self, block: int, tensors: dict[str, torch.Tensor]) -> None:
        """Make ``block`` resident from its checkpoint tensors (names as in the checkpoint)."""
        m = self.modules[block]
        if block == 0:
            sd = {"weight": tensors["model.embed_tokens.weight"]}
        elif (where := self.layer_of(block)) is not None:
            prefix = f"model.layers.{where[0]}."
            sd = {k.removeprefix(prefix): t for k, t in tensors.items()}
        else:
            head = tensors.get("lm_head.weight", tensors.get("model.embed_tokens.weight"))
            sd = {"norm.weight": tensors["model.norm.weight"], "lm_head.weight": head}
        m.load_state_dict(sd, assign=True, strict=True)

    def warm_up(self, prompt_tokens: int, passes: int = 2) -> None:
        """Run a zero-weight decoder layer of this architecture on a prompt-sized input, ``passes`` times.

        Part of the runtime's start, before any request: a fresh process's first forwards are ~10 % slower
        (allocator growth, kernel selection), and the emulation would multiply that by the slowdown.
        Touches no real weight; the layer is freed afterwards.
        """
        from transformers import DynamicCache

        layer_cls = _classes(self.config.model_type)[1]
        with torch.device("meta"):
            layer = layer_cls(self.config, 0).eval()
        layer.to_empty(device="cpu")
        for p in layer.parameters():
            p.data.zero_()
        layer.to(self.dtype)
        x = torch.randn(1, prompt_tokens, self.config.hidden_size, dtype=self.dtype)  # (1, s, h)
        pos = torch.arange(prompt_tokens).unsqueeze(0)  # (1, s)
        rope_cls = _classes(self.config.model_type)[3]
        rope = rope_cls(config=self.config)(x, position_ids=pos)
        with torch.inference_mode():
            for _ in range(passes):
                layer(
                    x,
                    attention_mask=None,
                    position_ids=pos,
                    cache=DynamicCache(config=self.config),
                    use_cache=True,
                    position_embeddings=rope,
                )

    def assign_sparse_embedding(self, emb: SparseEmbedding) -> None:
        """Block 0 as the rows of the prompt's tokens only (see :class:`SparseEmbedding`)."""
        self.modules[0] = emb

    def position_embeddings(self, hidden: torch.Tensor, position_ids: torch.Tensor) -> Any:
        return None if self.rotary is None else self.rotary(hidden, position_ids=position_ids)

    @torch.inference_mode()
    def run_block(self, block: int, x: torch.Tensor, position_ids: torch.Tensor, rope: Any, cache: Any) -> torch.Tensor:
        """One block: ids (1, s) -> hidden (1, s, h) -> ... -> logits of the last position (1, V)."""
        m = self.modules[block]
        if block == 0:
            return m(x)  # (1, s) int -> (1, s, h)
        where = self.layer_of(block)
        if where is not None and where[1] == "attn":  # LlamaDecoderLayer.forward's first residual branch
            out, _ = m["self_attn"](
                hidden_states=m["input_layernorm"](x),
                attention_mask=None,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
                position_embeddings=rope,
            )
            return x + out  # (1, s, h)
        if where is not None and where[1] == "mlp":  # ... and its second
            return x + m["mlp"](m["post_attention_layernorm"](x))  # (1, s, h)
        if where is not None:
            return m(
                x, attention_mask=None, position_ids=position_ids, cache=cache, use_cache=True, position_embeddings=rope
            )  # (1, s, h)
        return m["lm_head"](m["norm"](x[:, -1:, :]))[:, -1, :].float()  # (1, V)
