"""``--solver highs`` through the planner: registered, same result fields as ``minlp``, refuses what it cannot plan."""

from __future__ import annotations

import pytest

pytest.importorskip("highspy")
pytest.importorskip("pyscipopt")

from coldpipe.errors import Infeasible, InputError
from coldpipe.planning import SOLVERS, Problem, plan
from coldpipe.planning.highs import plan_highs
from random_instances import brute_value, hard_scenario

FIELDS = {"status", "solver_status", "gap", "dual_bound", "solve_time_s", "n_vars", "n_conss", "nodes", "stages"}


def test_highs_is_a_solver_with_the_same_fields_as_minlp() -> None:
    assert "highs" in SOLVERS
    sc = hard_scenario(1, max_blocks=5, max_devices=3)
    highs = plan(Problem(sc, "stage"), "highs")
    minlp = plan(Problem(sc, "stage"), "minlp")
    assert highs.method == "highs" and minlp.method == "minlp"
    assert highs.details.keys() >= FIELDS and minlp.details.keys() >= FIELDS
    assert highs.exact and highs.details["linearized"] is True
    assert highs.value_s == pytest.approx(brute_value(sc, "stage")[0], rel=1e-6)
    assert highs.to_dict()["solver"]["status"] == "optimal"


def test_highs_refuses_other_objectives_and_bursts() -> None:
    sc = hard_scenario(1, max_blocks=5, max_devices=3)
    with pytest.raises(InputError, match="'highs' plans the TTFT of one request"):
        plan(Problem(sc, "layer", "tpot"), "highs")


def test_highs_says_infeasible_with_the_shortfall() -> None:
    sc = next(s for s in (hard_scenario(i, max_blocks=6) for i in range(200)) if brute_value(s)[0] == float("inf"))
    with pytest.raises(Infeasible, match="every device would need"):
        plan_highs(Problem(sc))
