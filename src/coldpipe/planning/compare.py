"""Every strategy on one scenario: the exact optimum per overlap mode, every baseline, the lower bounds.

The one evaluation behind ``coldpipe compare``, ``coldpipe report`` and ``coldpipe sweep``; every
time in it is the simulator's, and each plan is simulated once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from coldpipe.core.simulator import Timeline, objective_s
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario
from coldpipe.errors import ColdpipeError
from coldpipe.planning.baselines import Baseline, evaluate_baselines
from coldpipe.planning.bounds import Bounds, lower_bounds
from coldpipe.planning.mechanisms import mechanism_bounds
from coldpipe.planning.planner import plan
from coldpipe.planning.protocol import Objective, Problem, Solution

__all__ = ["STRATEGY_OPTIMAL", "Comparison", "Strategy", "compare", "idle_s", "mechanism_rows"]

STRATEGY_OPTIMAL = "coldpipe"
"""The name of coldpipe's own strategy: the exact optimum under ``layer``."""


def idle_s(timeline: Timeline | None, what: str) -> float | None:
    """Idle time summed over a plan's devices, waiting for their ``weights`` or for their ``input``."""
    if timeline is None:
        return None
    return sum(st.wait_weights_s if what == "weights" else st.wait_input_s for st in timeline.stages)


@dataclass(frozen=True)
class Strategy:
    """One strategy's row: a plan and its timeline when it can run, else why not (``note``)."""

    name: str  # "coldpipe", "optimal/<overlap>", "<partition>/<overlap>"
    kind: str  # "optimal" | "baseline"
    partition: str  # "optimal" or the baseline's partition
    overlap: Overlap
    plan: Plan | None
    timeline: Timeline | None
    note: str = ""

    @property
    def ttft_s(self) -> float:
        return self.timeline.ttft_s if self.timeline is not None else math.inf

    @property
    def hidden_load_share(self) -> float:
        return self.timeline.hidden_load_share if self.timeline is not None else math.nan


@dataclass(frozen=True)
class Comparison:
    """The exact optimum per overlap mode (``optimal``: under ``layer``), every baseline, the bounds.

    Made with ``strict=False``, an optimum or the bounds that could not be computed (no plan fits) are
    missing, and ``notes`` says why (keys: the overlap mode, or ``"bounds"``).
    """

    optimal_per_mode: dict[Overlap, Solution]
    baselines: tuple[Baseline, ...]
    bounds: Bounds | None
    notes: dict[str, str] = field(default_factory=dict)
    objective: Objective = "ttft"
    # with another objective than a single request's TTFT: each baseline's value of it (by name; inf: cannot run)
    baseline_values: dict[str, float] = field(default_factory=dict)

    @property
    def optimal(self) -> Solution:
        return self.optimal_per_mode["layer"]

    def speedup(self, ttft_s: float) -> float:
        """``ttft_s`` over coldpipe's optimum (inf for a strategy that cannot run)."""
        return ttft_s / self.optimal.ttft_s if math.isfinite(ttft_s) else math.inf

    @property
    def by_ttft(self) -> bool:
        """Whether the strategies are ranked by one request's TTFT (then ``value`` is the TTFT)."""
        return not self.baseline_values

    def value(self, baseline: Baseline) -> float:
        """The objective's value of a baseline (its TTFT unless another objective was compared)."""
        return self.baseline_values[baseline.name] if self.baseline_values else baseline.ttft_s

    def value_speedup(self, value_s: float) -> float:
        """``value_s`` over coldpipe's optimum of the compared objective (inf for a strategy that cannot run)."""
        return value_s / self.optimal.value_s if math.isfinite(value_s) else math.inf

    def strategies(self) -> list[Strategy]:
        """Every strategy as a row: the optimum per mode, then every baseline."""
        out = []
        for ov in OVERLAPS:
            name = STRATEGY_OPTIMAL if ov == "layer" else f"optimal/{ov}"
            sol = self.optimal_per_mode.get(ov)
            if sol is None:
                out.append(Strategy(name, "optimal", "optimal", ov, None, None, self.notes.get(ov, "")))
            else:
                out.append(Strategy(name, "optimal", "optimal", ov, sol.plan, sol.timeline))
        out += [
            Strategy(b.name, "baseline", b.partition, b.overlap, b.plan, b.timeline, b.why_not) for b in self.baselines
        ]
        return out

    def to_dict(self) -> dict[str, Any]:
        assert self.bounds is not None
        return {
            "optimal": self.optimal.to_dict(),
            "optimal_per_mode": {
                ov: {"ttft": r.ttft_s, "exact": r.exact, "stages": r.plan.to_dict()["stages"]}
                for ov, r in self.optimal_per_mode.items()
            },
            "baselines": [
                {
                    "name": b.name,
                    "partition": b.partition,
                    "overlap": b.overlap,
                    "ttft": b.ttft_s,
                    "speedup": self.speedup(b.ttft_s),
                    "hidden_load_share": b.hidden_load_share,
                    "idle_wait_weights": idle_s(b.timeline, "weights"),
                    "idle_wait_input": idle_s(b.timeline, "input"),
                    "plan": str(b.plan) if b.plan is not None else None,
                    "infeasible": b.why_not or None,
                }
                for b in self.baselines
            ],
            "bounds": {
                "warm": self.bounds.warm_s,
                "parallel_load": self.bounds.parallel_load_s,
                "best": self.bounds.best_s,
            },
            "gap_to_bound": self.optimal.ttft_s / self.bounds.best_s - 1.0,
            "ratio_to_bound": self.optimal.ttft_s / self.bounds.best_s,
            "objective": self.objective,
            **(
                {"values": {b.name: self.value(b) for b in self.baselines}, "optimal_value": self.optimal.value_s}
                if not self.by_ttft
                else {}
            ),
        }


def compare(scenario: Scenario, *, strict: bool = True, objective: Objective = "ttft") -> Comparison:
    """The optimum of ``objective`` under every overlap mode, every baseline under every mode, and the lower
    bounds (of the TTFT).

    ``strict``: raise when no plan fits (:class:`~coldpipe.errors.Infeasible`); else record why in
    ``notes`` (a sweep keeps its infeasible points). With another objective than one request's TTFT,
    ``baseline_values`` holds each baseline's value of it (the simulator's :func:`objective_s`).
    """
    per_mode: dict[Overlap, Solution] = {}
    notes: dict[str, str] = {}
    for ov in OVERLAPS:
        try:
            per_mode[ov] = plan(Problem(scenario, ov, objective))
        except ColdpipeError as exc:
            if strict:
                raise
            notes[ov] = str(exc)
    bounds: Bounds | None = None
    try:
        bounds = mechanism_bounds(scenario) if scenario.mechanisms else lower_bounds(scenario)
    except ColdpipeError as exc:  # no plan fits: no warm optimum either
        if strict:
            raise
        notes["bounds"] = str(exc)
    baselines = tuple(evaluate_baselines(scenario.planned()))  # sublayer: the baselines cut the split blocks too
    values: dict[str, float] = {}
    if objective != "ttft" or scenario.workload.requests > 1:
        values = {
            b.name: (
                objective_s(scenario, b.plan, b.overlap, objective)
                if b.timeline is not None and b.plan is not None
                else math.inf
            )
            for b in baselines
        }
    return Comparison(per_mode, baselines, bounds, notes, objective, values)


def mechanism_rows(scenario: Scenario, overlap: Overlap = "layer") -> list[tuple[str, Solution]]:
    """The TTFT optimum with no mechanism, with each of ``scenario``'s mechanisms alone, and with all of them."""
    names = sorted(scenario.mechanisms)
    sets: list[tuple[str, frozenset[str]]] = [("none", frozenset())] + [(n, frozenset({n})) for n in names]
    if len(names) > 1:
        sets.append((",".join(names), frozenset(names)))
    return [(label, plan(Problem(scenario.replace(mechanisms=m), overlap))) for label, m in sets]
