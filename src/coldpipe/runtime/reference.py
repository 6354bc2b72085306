"""The single-process transformers run the pipeline must reproduce (greedy, with a KV cache)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["reference_generate"]


def reference_generate(
    checkpoint: str | Path, prompt_ids: list[int] | tuple[int, ...], new_tokens: int
) -> tuple[list[int], list[float]]:
    """Greedy tokens and the logits of the last step, from ``AutoModelForCausalLM.from_pretrained``."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), attn_implementation="sdpa").eval()
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long)  # (1, s)
    cache = DynamicCache(config=model.config)
    tokens: list[int] = []
    logits = None
    with torch.inference_mode():
        for _ in range(new_tokens):
            logits = model(input_ids=ids, cache=cache, use_cache=True).logits[:, -1, :].float()  # (1, V)
            tok = int(torch.argmax(logits, dim=-1).item())
            tokens.append(tok)
            ids = torch.tensor([[tok]], dtype=torch.long)
    assert logits is not None
    return tokens, logits[0].tolist()
