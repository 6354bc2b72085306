"""The local backend's feedback path: the last stage feeds tokens straight back to the first stage.

Against the source-fed path (every step sent by the source after ``on_token``) and transformers' own greedy
``generate``: the same tokens, for a 3-stage, a 2-stage and a single-stage plan; a cancelled request leaves
nothing behind for the next burst.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch  # the conftest skips this directory without torch
from serve_server import make_tiny

from coldpipe.cli._common import scenario_arg
from coldpipe.core.types import Plan
from coldpipe.runtime.emulation import emulation_for
from coldpipe.serve.local import LocalBackend
from coldpipe.serve.protocol import Burst, Sampling

PROMPTS = ((5, 17, 33, 2, 101, 7, 9), (250, 3, 3, 3), (44,))
PLANS = ("b[0-0] > a[1-2] > c[3-3]", "a[0-1] > c[2-3]", "c[0-3]")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalBackend, Path]]:
    ckpt, sc_path = make_tiny(tmp_path_factory.mktemp("feedback"))
    sc = scenario_arg(str(sc_path))
    b = LocalBackend(ckpt, tuple(d.name for d in sc.devices), sc)
    yield b, ckpt
    b.close()


def _run(
    b: LocalBackend,
    plan: str,
    sampling: tuple[Sampling, ...],
    budgets: tuple[int, ...],
    want: tuple[int, ...],
    eos_id: int | None = None,
) -> list[list[int]]:
    """Each request's tokens; request ``r`` asks for ``want[r]`` of them (``on_token`` says no at the last)."""
    p = Plan.parse(plan)
    sc = b.scenario
    n = len(sampling)
    emu = tuple(emulation_for(sc, p, None, enabled=False))
    job = Burst(
        p, "layer", sc, emu, PROMPTS[:n], sampling, links=False, drop_cache=False, budgets=budgets, eos_id=eos_id
    )
    got: list[list[int]] = [[] for _ in range(n)]

    def on_token(r: int, tok: int) -> bool:
        got[r].append(tok)
        return len(got[r]) < want[r]

    b.prepare(p, False)  # as the engine does before a burst: the stages' models built (or kept) ahead
    b.run_burst(job, on_token)
    return got


@pytest.mark.parametrize("plan", PLANS)
def test_fed_back_greedy_tokens_equal_the_source_fed_ones_and_transformers_generate(
    backend: tuple[LocalBackend, Path], plan: str
) -> None:
    from transformers import AutoModelForCausalLM

    b, ckpt = backend
    greedy = (Sampling(0.0, 1.0, 0),) * 3
    want = (12, 9, 5)
    fed_back = _run(b, plan, greedy, want, want)
    source_fed = _run(b, plan, greedy, (), want)
    assert fed_back == source_fed
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    for prompt, n, toks in zip(PROMPTS, want, fed_back, strict=True):
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        assert out[0, len(prompt) :].tolist() == toks


def test_seeded_sampling_is_the_same_fed_back_or_not_and_budgets_mix(backend: tuple[LocalBackend, Path]) -> None:
    b, _ = backend
    samp = (Sampling(1.0, 0.9, 7), Sampling(1.5, 1.0, 11), Sampling(0.7, 0.5, 3))
    want = (10, 6, 8)
    source_fed = _run(b, PLANS[0], samp, (), want)
    assert _run(b, PLANS[0], samp, want, want) == source_fed
    # a request without a budget (a stop string) waits for on_token at each step, the others do not
    assert _run(b, PLANS[0], samp, (10, 0, 8), want) == source_fed
    # on_token asks for more than the budget: the source sends the steps past it itself
    assert _run(b, PLANS[0], samp, (4, 2, 8), want) == source_fed


def test_the_end_token_stops_the_feedback(backend: tuple[LocalBackend, Path]) -> None:
    b, _ = backend
    greedy = (Sampling(0.0, 1.0, 0),)
    ref = _run(b, PLANS[0], greedy, (), (8,))[0]
    eos = ref[3]  # pretend the 4th token is the end token: the pipeline must not start the 5th step
    k = ref.index(eos)
    got = _run(b, PLANS[0], greedy, (8,), (k + 1,), eos_id=eos)[0]
    assert got == ref[: k + 1]


@pytest.mark.parametrize("plan", PLANS)
def test_a_cancelled_request_leaves_nothing_for_the_next_burst(backend: tuple[LocalBackend, Path], plan: str) -> None:
    b, _ = backend
    greedy = (Sampling(0.0, 1.0, 0),) * 2
    ref = _run(b, plan, greedy, (), (12, 12))
    # on_token says no after 2 and 5 tokens while the pipeline may produce 40: their next steps are dropped
    got = _run(b, plan, greedy, (40, 40), (2, 5))
    assert [len(g) for g in got] == [2, 5]
    assert got == [ref[0][:2], ref[1][:5]]
    assert _run(b, plan, greedy, (12, 12), (12, 12)) == ref  # no stale frame from the cancelled steps
