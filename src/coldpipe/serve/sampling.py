"""The last stage's choice of a token: greedy at temperature 0, else softmax(logits / T) within the top-p mass.

Each request draws from its own ``torch.Generator`` seeded with the request's ``seed``, so the same request with
the same seed returns the same tokens whatever else shares its burst.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Sampler"]


class Sampler:
    """One request's sampler (keeps its generator between decode steps)."""

    def __init__(self, temperature: float, top_p: float, seed: int) -> None:
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.gen = torch.Generator().manual_seed(int(seed))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Sampler:
        return Sampler(d["temperature"], d["top_p"], d["seed"])

    def __call__(self, logits: torch.Tensor) -> int:
        """A token id from ``logits`` of shape (1, V) or (V,).

        >>> Sampler(0.0, 1.0, 0)(torch.tensor([0.1, 2.0, 0.3]))
        1
        >>> Sampler(1.0, 1e-6, 0)(torch.tensor([0.1, 2.0, 0.3]))  # top-p keeps the most likely token only
        1
        """
        x = logits.reshape(-1).float()
        if self.temperature <= 0.0:
            return int(torch.argmax(x).item())
        probs = torch.softmax(x / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, idx = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < self.top_p  # the smallest set reaching top_p
            keep[0] = True
            probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=self.gen).item())
