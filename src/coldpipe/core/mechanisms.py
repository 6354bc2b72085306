"""The byte and work figures of the cold-start mechanisms (docs/model.md#mechanisms), for the simulator and planners.

Each mechanism is off unless ``scenario.mechanisms`` names it; with none on every figure here is the block's
own and the model is the paper's.

- ``sparse-embedding``: the first token needs only block 0's rows of the prompt's tokens (at most
  ``min(prompt_tokens, vocab_rows)`` distinct ones); the rest of the table is loaded after everything the
  device needs for the first token.
- ``sharded-head``: the last block (final norm + LM head) is split by vocabulary rows over several devices;
  each holds the norm and its rows, computes its slice of the last position's logits and returns its local
  top-:data:`SHARD_TOP_K` (ids and logits) to the source, which combines them.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> emb = Block("embed", 1000.0, 0.0, 8.0, vocab_rows=100, vocab_row_bytes=10.0)
>>> head = Block("head", 1002.0, 200.0, 4.0, vocab_rows=100, vocab_row_bytes=10.0)
>>> sc = Scenario([emb, head], [Device("x", 1.0, 1.0, 0.0, 1e9, 1.0, 1.0)], Workload(3),
...               mechanisms=frozenset({"sparse-embedding"}))
>>> first_token_bytes(sc, 0), deferred_bytes(sc, 0), first_token_bytes(sc, 1)
(30.0, 970.0, 1002.0)
>>> shard_weight_bytes(sc, 40), shard_flops(sc, 40)
(402.0, 80.0)
"""

from __future__ import annotations

from coldpipe.core.types import Scenario

__all__ = [
    "SHARD_TOP_K",
    "deferred_bytes",
    "first_token_bytes",
    "hidden_bytes",
    "prompt_rows",
    "shard_decode_flops",
    "shard_flops",
    "shard_return_bytes",
    "shard_weight_bytes",
]

SHARD_TOP_K = 50
"""Candidates each head shard returns (id and logit): enough for greedy and top-k sampling up to k = 50."""


def prompt_rows(scenario: Scenario) -> int:
    """Embedding rows the first token needs: one per distinct prompt token, at most ``prompt_tokens``."""
    rows = scenario.blocks[0].vocab_rows
    assert rows is not None
    return min(scenario.workload.prompt_tokens, rows)


def first_token_bytes(scenario: Scenario, block: int) -> float:
    """Bytes of ``block`` that must be resident before it computes the first token."""
    b = scenario.blocks[block]
    if block == 0 and "sparse-embedding" in scenario.mechanisms:
        return b.vocab_fixed_bytes + prompt_rows(scenario) * b.row_bytes
    return b.weight_bytes


def deferred_bytes(scenario: Scenario, block: int) -> float:
    """Bytes of ``block`` its loader reads after everything the first token needs (sparse-embedding's rest)."""
    return scenario.blocks[block].weight_bytes - first_token_bytes(scenario, block)


def shard_weight_bytes(scenario: Scenario, rows: int) -> float:
    """A head shard of ``rows`` vocabulary rows: the final norm (every shard holds it) plus its rows."""
    head = scenario.blocks[-1]
    return head.vocab_fixed_bytes + rows * head.row_bytes


def shard_flops(scenario: Scenario, rows: int) -> float:
    """Prefill work of a head shard: its share of the head's (last position's) logits."""
    head = scenario.blocks[-1]
    assert head.vocab_rows is not None
    return head.flops * rows / head.vocab_rows


def shard_decode_flops(scenario: Scenario, rows: int) -> float:
    """One decode step's work of a head shard."""
    head = scenario.blocks[-1]
    assert head.vocab_rows is not None
    flops = head.decode_flops if head.decode_flops is not None else head.flops / scenario.workload.prompt_tokens
    return flops * rows / head.vocab_rows


def hidden_bytes(scenario: Scenario) -> float:
    """What each head shard receives: the last position's hidden state after block ``B - 2`` (one token)."""
    b = scenario.blocks[-2]
    return b.decode_out_bytes if b.decode_out_bytes is not None else b.out_bytes / scenario.workload.prompt_tokens


def shard_return_bytes(scenario: Scenario) -> float:
    """What each head shard returns to the source: :data:`SHARD_TOP_K` token ids and logits (float32)."""
    return SHARD_TOP_K * (scenario.workload.token_bytes + 4.0)
