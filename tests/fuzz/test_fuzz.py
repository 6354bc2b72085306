"""The fuzz suite (issue 15): mutated scenario, plan, checkpoint, trace files and CLI arguments through the CLI.

Each case runs ``coldpipe.cli.main(argv)`` in a forked child with a memory cap and a timeout
(:mod:`fuzzing`); the suite fails on any traceback, hang, memory blow-up, multi-line or over-long error,
or exit code other than 0 or 2. The CI run is derandomised (fixed seeds); the summary line it prints
(``pytest -s``, or ``COLDPIPE_FUZZ_LOG=FILE``) is what docs/reliability.md quotes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzzing import Tally, run_all, run_case, verdict, warm_up, write_summary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import BLOCKS_SCENARIO, Corpus, cases

CI_COUNTS = {"scenario": 800, "plan": 300, "checkpoint": 550, "trace": 100, "cli": 300}  # + 120 hypothesis
SLOW_COUNTS = {name: 10 * n for name, n in CI_COUNTS.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    c = Corpus(tmp_path_factory.mktemp("fuzz"))
    warm_up(
        [
            ["plan", str(c.blocks_scenario), "--json"],
            ["plan", str(c.ckpt_scenario), "--json"],
            ["model-info", str(c.blocks_scenario), "--json"],
            ["model-info", "--checkpoint", str(c.ckpt), "--json"],
            ["compare", str(c.blocks_scenario), "--json"],
            ["show", str(c.trace_file), "--json", "--out", str(c.root / "warm.svg")],  # imports matplotlib
        ]
    )
    return c


def _check(tally: Tally, name: str) -> None:
    write_summary(tally, name)
    assert not tally.failures, f"{len(tally.failures)} of {tally.cases} cases broke the contract:\n{tally.report()}"


def test_the_harness_catches_what_it_should(corpus: Corpus) -> None:
    """The verdicts can fail: a good run, a one-line error, and a crash are told apart."""
    ok = run_case(["plan", str(corpus.blocks_scenario), "--json"])
    assert ok.code == 0 and verdict(ok) is None
    bad = run_case(["plan", str(corpus.root / "missing.yaml")])
    assert bad.code == 2 and verdict(bad) is None and bad.stderr.startswith("coldpipe: error: ")
    crash = run_case(["plan", "--time-limit", "0.1"])  # a usage error: still one line
    assert verdict(crash) is None
    slow = run_case(["plan", str(corpus.blocks_scenario)], timeout_s=0.0)
    assert verdict(slow) == "hang"


def test_fuzz_ci(corpus: Corpus) -> None:
    """>= 2,000 seeded cases over every family (the figures in docs/reliability.md)."""
    tally = run_all(cases(15, corpus, CI_COUNTS))
    assert tally.cases == sum(CI_COUNTS.values())
    _check(tally, "ci")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_paths = st.sampled_from(
    [
        ("workload",), ("workload", "prompt_tokens"), ("workload", "requests"), ("workload", "new_tokens"),
        ("model",), ("model", "blocks"), ("model", "blocks", 0), ("model", "blocks", 1, "flops"),
        ("devices",), ("devices", 0), ("devices", 1, "memory"), ("devices", 2, "radio"), ("network",),
        ("network", "hop_latency"), ("source",),
    ]
)  # fmt: skip


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(_paths, _json), min_size=1, max_size=3), as_json=st.booleans())
def test_fuzz_hypothesis_scenarios(corpus: Corpus, edits: list[tuple[tuple, object]], as_json: bool) -> None:
    """Hypothesis: any JSON value at any place of a good scenario gives exit 0 or one line and exit 2."""
    doc = json.loads(json.dumps(BLOCKS_SCENARIO))
    for path, value in edits:
        node = doc
        try:
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced the parent
    f = corpus.scratch("h.json" if as_json else "h.yaml")
    f.write_text(json.dumps(doc))  # JSON is YAML too; NaN here is not strict JSON: the reader must refuse it
    o = run_case(["plan", str(f), "--json"], "hypothesis")
    assert verdict(o) is None, o.describe()


@pytest.mark.slow
def test_fuzz_slow(corpus: Corpus) -> None:
    """>= 20,000 cases, other seeds."""
    tally = Tally()
    for seed in range(3):
        run_all(cases(1000 + seed, corpus, {k: v // 3 + 1 for k, v in SLOW_COUNTS.items()}), tally)
    assert tally.cases >= 20_000
    _check(tally, "slow")


def test_seeds_reproduce(corpus: Corpus) -> None:
    """The same seed makes the same cases (CI is reproducible); another seed makes others."""

    def shape(seed: int) -> list[tuple[str, str, str]]:
        out = []
        for kind, argv in cases(seed, corpus, {"scenario": 15, "cli": 15}):
            if kind.startswith("scenario"):  # argv[1] is the mutated file: compare its text
                out.append((kind, argv[0], Path(argv[1]).read_text(errors="replace")))
            else:  # file names differ from run to run; the rest of the argv does not
                out.append((kind, argv[0], " ".join(a for a in argv if corpus.root.name not in a)))
        return out

    assert shape(3) == shape(3) != shape(4)
