"""The Planner protocol: the worked example of docs/architecture.md runs, and plan() dispatches as documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coldpipe.core.types import OVERLAPS
from coldpipe.errors import InputError
from coldpipe.planning import PLANNERS, Planner, Problem, plan
from coldpipe.planning.tables import MAX_USAGE_VECTORS, DeviceTypes
from random_instances import brute_value, random_scenario

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _example_planner() -> Planner:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code is not None, "docs/architecture.md lost its worked example"
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), str(DOC), "exec"), namespace)
    return namespace["TinyBrutePlanner"]()  # type: ignore[operator,no-any-return]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("overlap", OVERLAPS)
def test_the_documented_planner_equals_brute_force(seed: int, overlap: str) -> None:
    planner = _example_planner()
    sc = random_scenario(seed, 3, 6, tight=True, source_device=seed == 2)
    problem = Problem(sc, overlap)  # type: ignore[arg-type]
    assert planner.refuses(problem) is None
    expected, _ = brute_value(sc, overlap)
    if expected == float("inf"):
        return
    assert planner.solve(problem).value_s == pytest.approx(expected, rel=1e-12)


def test_every_registered_planner_follows_the_protocol() -> None:
    sc = random_scenario(5, 3, 5, tight=False, source_device=False)
    problem = Problem(sc)
    values = {}
    for name, planner in PLANNERS.items():
        assert planner.name == name
        assert planner.refuses(problem) is None
        sol = plan(problem, name)
        assert sol.method == name and sol.timeline is not None
        assert sol.value_s == sol.timeline.ttft_s  # one source of truth
        values[name] = sol.value_s
    assert max(values.values()) <= min(values.values()) * (1 + 1e-6)  # all exact here (heuristic too)


def test_auto_falls_back_when_the_exact_dp_refuses() -> None:
    import dataclasses

    base = random_scenario(9, 1, 6, tight=False, source_device=False)
    devices = [dataclasses.replace(base.devices[0], name=f"d{k}", startup=0.01 * k) for k in range(17)]
    sc = base.replace(devices=devices)
    assert DeviceTypes.of(sc).n_usage_vectors > MAX_USAGE_VECTORS
    assert PLANNERS["dp"].refuses(Problem(sc)) is not None
    assert plan(Problem(sc)).method == "heuristic"
    with pytest.raises(InputError, match="brute force would enumerate"):
        plan(Problem(sc), "brute")
    with pytest.raises(InputError, match="unknown solver"):
        plan(Problem(sc), "magic")
