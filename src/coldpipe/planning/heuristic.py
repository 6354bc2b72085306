"""Planning beyond the exact DP's range: local search over device orders, exact split per order.

The exact DP (:mod:`coldpipe.planning.exact`) enumerates usage vectors, ``prod(count_t + 1)`` of
them, and refuses more than :data:`~coldpipe.planning.tables.MAX_USAGE_VECTORS` (about 16 distinct
devices). Once the *order* of the devices is fixed the rest is easy (:mod:`coldpipe.planning.order`:
the best subsequence of the order and its best split, exactly). The heuristic (``docs/heuristic.md``)
searches over orders:

1. **Seeds**: the whole cluster sorted by several keys (start-up, time to load an even share of
   the model, FLOP/s, ...), each solved by the order DP; plus the exact DP on a reduced cluster
   (the devices of the best seed and the best-ranked others, at most ``2**seed_types`` usage
   vectors) when that is cheap and smaller than the whole cluster.
2. **Local search** from the ``beam_width`` best distinct seeds: on the sequence ``U`` of devices
   the current plan uses, try inserting all candidate devices at a gap (the order DP picks a subset),
   inserting one at each gap, replacing a used device by one, relocating and swapping used devices;
   each candidate sequence is solved by the order DP (which may also drop devices). Best
   improvement, until no move improves, ``max_rounds`` rounds, or ``max_orders`` orders in all.

Every objective ("Other objectives" in ``docs/heuristic.md``): the same search, with the
order-restricted version of the exact method for each order (additive order DP on decode tables for
``tpot``, the ``none`` threshold search on combined tables for ``e2e`` under ``none``, the Pareto order
DP for ``e2e`` and for a burst's ``max``); a burst's ``mean`` is searched for its ``max`` and for one
request's TTFT, then both plans are polished by a plan-level local search
(:mod:`coldpipe.planning.local_search`), as is a decoding burst from the heuristic's plans of its
neighbouring problems. Neighbours of a Pareto objective are screened with one pair per state (a real
plan's value, never optimistic); accepted moves are re-solved exactly. Reported values are the
simulator's (:func:`~coldpipe.core.simulator.objective_s`).

Deterministic: no clock, no randomness. The result carries a lower bound and its gap to it.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
>>> dev = lambda n, s: Device(n, flops=1e12, load_bandwidth=1e9, startup=s, memory=1e12,
...                           uplink=8e9, downlink=8e9)
>>> sc = Scenario(blocks, (dev("slow", 3.0), dev("fast", 0.0)), Workload(1, prompt_bytes=0, token_bytes=0))
>>> res = plan_heuristic(Problem(sc))
>>> str(res.plan), res.value_s
('fast[0-3]', 5.0)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from coldpipe.core.simulator import objective_s, simulate
from coldpipe.core.types import Plan, Scenario
from coldpipe.errors import ColdpipeError, Infeasible
from coldpipe.planning import exact, local_search
from coldpipe.planning.bounds import objective_lower_bound
from coldpipe.planning.kernels import Mode
from coldpipe.planning.order import OrderProblem, Stages, solve
from coldpipe.planning.protocol import Problem, Solution
from coldpipe.planning.tables import MAX_USAGE_VECTORS, DeviceTypes, load_end_candidates

__all__ = ["BURST_E2E_EVALUATIONS", "HeuristicOptions", "HeuristicPlanner", "plan_heuristic"]

BURST_E2E_EVALUATIONS = 1_500
"""Plans the local search for a decoding burst times (each costs requests x new_tokens jobs in the simulator)."""

CERTIFIED_GAP = 1e-9
"""A plan whose value is within this relative gap of the lower bound is reported ``exact`` (proven optimal)."""

MEAN_BURST_EVALUATIONS = 20_000
"""Plans the local search for a burst's mean first-token completion times."""


@dataclass(frozen=True)
class HeuristicOptions:
    """The search's knobs; the defaults are what ``docs/heuristic.md`` measures.

    ``max_orders`` defaults to 50 000 (10 000 for the Pareto objectives: e2e under ``layer``/``stage``
    and bursts, whose order DP costs more; 5 000 for a burst under ``none``). ``screen_front``: pairs per
    state when a neighbour is screened (0: exact).
    """

    beam_width: int = 7
    max_rounds: int = 30
    seed_types: int = 8
    candidates_per_key: int = 3
    max_orders: int | None = None
    first_improvement: bool = False
    screen_front: int = 1

    def orders_for(self, problem: OrderProblem) -> int:
        if self.max_orders is not None:
            return self.max_orders
        if not problem.pareto:
            return 50_000
        return 5_000 if problem.mode == Mode.ADDITIVE else 10_000  # a burst under "none": one DP per threshold


def seed_orders(scenario: Scenario, objective: str = "ttft") -> list[tuple[str, tuple[int, ...]]]:
    """Whole-cluster orders by simple keys; the order DP picks a subsequence of each.

    Decoding objectives add keys by memory bandwidth (a decode step reads every weight once), bursts
    a key by the time to compute an even share ``requests`` times.
    """
    devs = scenario.devices
    wl = scenario.workload
    model_bytes = sum(b.weight_bytes for b in scenario.blocks)
    model_flops = sum(b.flops for b in scenario.blocks)
    n = len(devs)
    share = model_bytes / min(n, scenario.n_blocks)
    flops_share = model_flops / min(n, scenario.n_blocks)
    keys: dict[str, Any] = {
        "startup": lambda d: (d.startup, -d.load_bandwidth),
        "load-share": lambda d: d.startup + min(share, d.memory) / d.load_bandwidth,
        "flops": lambda d: -d.flops,
        "memory": lambda d: -d.memory,
        "load-then-compute": lambda d: d.startup + min(share, d.memory) / d.load_bandwidth + flops_share / d.flops,
        "file": None,
    }
    if objective in ("tpot", "e2e") and all(d.mem_bandwidth for d in devs):
        steps = wl.new_tokens - 1
        keys["mem-bandwidth"] = lambda d: -d.mem_bandwidth
        if objective == "e2e":
            keys["e2e-share"] = (
                lambda d: d.startup
                + min(share, d.memory) / d.load_bandwidth
                + flops_share / d.flops
                + steps * min(share, d.memory) / d.mem_bandwidth
            )
    if objective == "ttft" and wl.requests > 1:
        keys["burst-share"] = (
            lambda d: d.startup + min(share, d.memory) / d.load_bandwidth + wl.requests * flops_share / d.flops
        )
    out = []
    for name, key in keys.items():
        idx = list(range(n))
        if key is not None:
            idx.sort(key=lambda k, key=key: (key(devs[k]), k))
        out.append((name, tuple(idx)))
    return out


def _shortlist(
    names: list[str] | tuple[str, ...], rankings: list[tuple[int, ...]], used: set[str], per_key: int
) -> list[str]:
    """The best-ranked ``per_key`` devices outside ``used`` of every ranking, each once, in order."""
    out: list[str] = []
    for order in rankings:
        taken = [names[k] for k in order if names[k] not in used][:per_key]
        out.extend(nm for nm in taken if nm not in out)
    return out


def moves(cur: tuple[int, ...], cands: list[int]) -> list[tuple[int, ...]]:
    """Neighbours of the used sequence ``cur``: relocate, swap, insert a candidate, replace by one.

    First, for every gap, *all* candidates inserted there (in rank order and reversed): the order DP
    then picks any subset of them, so one move can add several devices at once.
    """
    m = len(cur)
    out: list[tuple[int, ...]] = []
    if len(cands) > 1:
        for group in (tuple(cands), tuple(reversed(cands))):
            out.extend((*cur[:g], *group, *cur[g:]) for g in range(m + 1))
    for i in range(m):
        rest = cur[:i] + cur[i + 1 :]
        out.extend((*rest[:g], cur[i], *rest[g:]) for g in range(m) if g != i)  # relocate
        out.extend((*cur[:i], cur[j], *cur[i + 1 : j], cur[i], *cur[j + 1 :]) for j in range(i + 2, m))  # swap
    for r in cands:
        out.extend((*cur[:g], r, *cur[g:]) for g in range(m + 1))  # insert
        out.extend((*cur[:i], r, *cur[i + 1 :]) for i in range(m))  # replace
    return out


class _OrderSearch:
    """The search over device orders for one problem, with its caches (one instance per search).

    ``evaluate(order)`` is an order's optimum; ``evaluate_move`` a cheaper score for a neighbour that is
    the order's optimum or a real plan's value (never optimistic): scalar ``layer``/``stage`` reuse the
    current order's DP rows up to the first position that differs; Pareto objectives screen with capped
    fronts; ``none`` judges a move with two load-end thresholds only (the current plan's last load end
    and the next candidate below it).
    """

    def __init__(self, problem: OrderProblem, options: HeuristicOptions, max_orders: int) -> None:
        self.problem = problem
        self.options = options
        self.max_orders = max_orders
        self.dp_runs = 0
        self.evaluated: dict[tuple[int, ...], tuple[float, Stages]] = {}
        self.all_taus = load_end_candidates(problem.tables) if problem.mode == Mode.ADDITIVE else np.zeros(0)
        self.quick: dict[tuple[tuple[int, ...], tuple[float, ...]], tuple[float, Stages]] = {}
        self.values: dict[tuple[int, ...], float] = {}  # scalar "layer"/"stage": scored from the current rows
        self.bounded: dict[tuple[int, ...], float] = {}  # Pareto: orders whose screen did not beat this bound
        self.screened: dict[tuple[int, ...], tuple[float, Stages]] = {}  # and those whose screen did
        # the current sequence, its DP rows and best_upto (scalar "layer"/"stage" only)
        self.cur: tuple[int, ...] = ()
        self.cur_rows: np.ndarray | None = None
        self.cur_best_upto: np.ndarray | None = None

    def n_orders(self) -> int:
        return len(self.evaluated) + len(self.quick) + len(self.values) + len(self.bounded) + len(self.screened)

    def evaluate(self, order: tuple[int, ...]) -> tuple[float, Stages]:
        if order not in self.evaluated:
            problem = self.problem
            if problem.pareto and problem.mode != Mode.ADDITIVE:
                # the screen's plan is the incumbent of the exact run: far fewer pairs survive
                best, stages = problem.run_pareto(order, math.inf, math.inf, 1)
                if stages:
                    exact_run = problem.run_pareto(order, math.inf, best * (1 + 1e-12))
                    best, stages = exact_run if exact_run[1] else (best, stages)
                self.dp_runs += 2
            else:
                best, stages, runs = solve(problem, order)
                self.dp_runs += runs
            self.evaluated[order] = (best, stages)
        return self.evaluated[order]

    def set_current(self, cur: tuple[int, ...]) -> None:
        if self.problem.mode != Mode.ADDITIVE and not self.problem.pareto:
            _, _, rows, best_upto = self.problem.run_full(cur)
            self.cur, self.cur_rows, self.cur_best_upto = cur, rows, best_upto

    def evaluate_move(self, order: tuple[int, ...], stages_now: Stages, bound: float) -> tuple[float, Stages]:
        """A value that is the order's optimum or a real plan's value; the stages, or () when only the value
        is known. Pareto: the optimum if it is below ``bound``, else inf."""
        problem = self.problem
        if problem.mode != Mode.ADDITIVE:
            if order in self.evaluated:
                return self.evaluated[order]
            if problem.pareto:  # screened with capped fronts: a real plan's value if it beats the bound
                if order in self.screened:
                    return self.screened[order]
                if self.bounded.get(order, -math.inf) >= bound:
                    return math.inf, ()
                best, stages = problem.run_pareto(order, math.inf, bound, self.options.screen_front)
                self.dp_runs += 1
                if stages:
                    self.bounded.pop(order, None)
                    self.screened[order] = (best, stages)
                    return best, stages
                self.bounded[order] = bound
                return math.inf, ()
            if order not in self.values:
                assert self.cur_rows is not None and self.cur_best_upto is not None
                g = 0  # first position where the neighbour differs from the current sequence
                while g < len(order) and g < len(self.cur) and order[g] == self.cur[g]:
                    g += 1
                self.values[order] = problem.value_from(order, g, self.cur_rows, float(self.cur_best_upto[g]))
                self.dp_runs += 1
            return self.values[order], ()
        tau = max(problem.load_end(k, a, b) for k, a, b in stages_now)
        below = self.all_taus[self.all_taus < tau * (1 - 1e-12)]
        taus = (tau, float(below[-1])) if below.size else (tau,)
        key = (order, taus)
        if key not in self.quick:
            best, stages, runs = solve(problem, order, taus, max_front=self.options.screen_front)
            self.dp_runs += runs
            self.quick[key] = (best, stages)
        return self.quick[key]


def _seeds(
    search: _OrderSearch, problem: Problem, orders: list[tuple[str, tuple[int, ...]]]
) -> list[tuple[float, str, tuple[int, ...]]]:
    """The seed orders' plans, and the exact optimum of a reduced cluster: ``(value, seed name, used devices)``."""
    scenario, options = problem.scenario, search.options
    names = search.problem.names
    seeds: list[tuple[float, str, tuple[int, ...]]] = []
    for name, order in orders:
        val, stages = search.evaluate(order)
        if stages:
            seeds.append((val, name, tuple(k for k, _, _ in stages)))
    if not seeds:
        return seeds
    # Exact optimum of a reduced cluster: the best seed's devices, then the others by the load-share key.
    best_used = min(seeds)[2]
    ranked = list(best_used) + [k for k in orders[1][1] if k not in best_used]
    # the source device stays in the reduced cluster (a scenario's source must be one of its devices)
    subset: list[int] = [names.index(scenario.source)] if scenario.source in names else []
    # the Pareto objectives' exact DP costs more per usage vector: a smaller reduced cluster
    limit = 1 << (options.seed_types if not search.problem.pareto else max(1, options.seed_types - 2))
    for k in ranked:
        if k in subset:
            continue
        trial = scenario.replace(devices=tuple(scenario.devices[i] for i in sorted([*subset, k])))
        if DeviceTypes.of(trial).n_usage_vectors > limit:
            break
        subset.append(k)
    if len(subset) < len(names) or len(names) <= 1:
        sub = scenario.replace(devices=tuple(scenario.devices[i] for i in sorted(subset)))
        try:
            sub_plan = exact.plan_exact(problem.replace(scenario=sub)).plan
            index = {nm: k for k, nm in enumerate(names)}
            val, stages = search.evaluate(tuple(index[st.device] for st in sub_plan.stages))
            if stages:
                seeds.append((val, "exact-on-subset", tuple(k for k, _, _ in stages)))
        except ColdpipeError:
            pass  # the reduced cluster may not hold the model
    return seeds


def _search(problem: Problem, options: HeuristicOptions) -> tuple[Plan, dict[str, Any]]:
    """Seeds, then best-improvement local search over device orders; returns the best plan found."""
    op = OrderProblem.build(problem)
    search = _OrderSearch(op, options, options.orders_for(op))
    scenario = problem.scenario
    orders = seed_orders(scenario, problem.objective)
    seeds = _seeds(search, problem, orders)
    if not seeds:
        if DeviceTypes.of(scenario).n_usage_vectors <= MAX_USAGE_VECTORS:
            exact.raise_infeasible(scenario)
        raise Infeasible(
            f"no plan found: no order of the {len(op.names)} devices holds the model's "
            f"{sum(b.memory_bytes for b in scenario.blocks):.4g} bytes in contiguous stages",
            shortfall_bytes=math.nan,
        )
    seeds.sort()
    starts: list[tuple[float, str, tuple[int, ...]]] = []
    for s in seeds:
        if all(s[2] != t[2] for t in starts):
            starts.append(s)
    starts = starts[: options.beam_width]
    best_val, best_stages, best_seed = math.inf, (), ""
    rounds_total = 0
    rankings = [order for _, order in orders]  # unused devices worth trying: the best-ranked few of every key
    for val0, seed_name, used0 in starts:
        cur_val, cur = val0, used0
        for _ in range(options.max_rounds):
            rounds_total += 1
            cands: list[int] = []
            seen_types: set[int] = set()  # identical candidates once (a type in use may still add a device)
            for order in rankings:
                taken = 0
                for k in order:
                    t = int(op.type_of[k])
                    if taken == options.candidates_per_key:
                        break
                    if k in cur or k in cands:
                        continue
                    taken += 1
                    if t not in seen_types:
                        seen_types.add(t)
                        cands.append(k)
            step_val, step = cur_val, cur
            cur_stages = search.evaluate(cur)[1]
            search.set_current(cur)
            for mv in moves(cur, cands):
                if search.n_orders() >= search.max_orders:
                    break
                val, stages = search.evaluate_move(mv, cur_stages, step_val * (1 - 1e-12))
                if val < step_val * (1 - 1e-12):
                    if not stages:  # scored from the prefix: solve it for its plan
                        val, stages = search.evaluate(mv)
                    step_val, step = val, tuple(k for k, _, _ in stages)
                    if options.first_improvement:
                        break
            if step == cur:
                break
            cur, cur_val = step, min(step_val, search.evaluate(step)[0])
        if cur_val < best_val:
            best_val, best_stages, best_seed = cur_val, search.evaluate(cur)[1], seed_name
    details: dict[str, Any] = {
        "method": f"local search over device orders (beam {len(starts)}), exact split per order",
        "orders_evaluated": search.n_orders(),
        "max_orders": search.max_orders,
        "dp_runs": search.dp_runs,
        "rounds": rounds_total,
        "best_seed": best_seed,
    }
    return op.plan_of(best_stages), details


def _with_bound(
    problem: Problem, plan: Plan, details: dict[str, Any], bound_scenario: Scenario | None = None
) -> Solution:
    """The heuristic's solution: the simulator's value, and a lower bound with its gap."""
    scenario, objective = problem.scenario, problem.objective
    timeline = simulate(scenario, plan, problem.overlap)
    value = timeline.ttft_s if problem.is_first_token else objective_s(scenario, plan, problem.overlap, objective)
    lb, lb_kind = objective_lower_bound(bound_scenario or scenario, objective, problem.overlap, value)
    gap = value / lb - 1.0 if lb > 0 else math.inf
    details.update({"lower_bound": lb, "lower_bound_kind": lb_kind, "gap_to_lower_bound": gap})
    # the heuristic reports the simulator's value of its plan as its own; proven optimal when the bound meets it
    proven = gap <= CERTIFIED_GAP
    return Solution(plan, value, proven, "heuristic", objective, problem.overlap, value, lb, details, timeline)


def _plan_burst_e2e(problem: Problem, options: HeuristicOptions) -> Solution:
    """``e2e`` with a burst (each request's last token; max or mean): a plan-level local search.

    As within the exact range, from the neighbouring problems' plans — here the heuristic's: the burst's
    max first-token completion, one request's e2e, the tpot — with the best-ranked unused devices only,
    at most :data:`BURST_E2E_EVALUATIONS` plans.
    """
    scenario = problem.scenario
    if scenario.workload.new_tokens == 1:  # the last token is the first one
        first = plan_heuristic(problem.replace(objective="ttft"), options)
        return Solution(
            first.plan,
            objective_s(scenario, first.plan, problem.overlap, "e2e"),
            False,
            "heuristic",
            "e2e",
            problem.overlap,
            None,
            first.lower_bound_s,
            first.details,
            first.timeline,
        )
    names = [d.name for d in scenario.devices]
    rankings = [order for _, order in seed_orders(scenario, "e2e")]

    def shortlist(seeds: list[Plan]) -> list[str]:  # the best-ranked devices no seed uses
        used = {name for p in seeds for name in p.devices}
        return _shortlist(names, rankings, used, options.candidates_per_key)

    plan, details = local_search.plan_burst_e2e(
        problem,
        lambda sub: plan_heuristic(sub, options).plan,
        unused=shortlist,
        max_evaluations=BURST_E2E_EVALUATIONS,
    )
    details["method"] = "local search on plans from the heuristic's burst-max, e2e and tpot plans"
    return _with_bound(problem, plan, details)


def plan_heuristic(problem: Problem, options: HeuristicOptions | None = None) -> Solution:
    """A good plan for any cluster size (not proven optimal); see the module docstring.

    The order search optimises the objective itself (a burst's mean: its max and one request's TTFT,
    then a plan-level local search for the mean from both plans). Raises
    :class:`~coldpipe.errors.Infeasible` if no order admits a plan (for clusters within the exact DP's
    range, with the DP's shortfall message), :class:`~coldpipe.errors.InputError` for a decoding
    objective on a device without ``mem_bandwidth``.
    """
    options = options or HeuristicOptions()
    scenario, objective = problem.scenario, problem.objective
    wl = scenario.workload
    if objective == "e2e" and wl.requests > 1:
        return _plan_burst_e2e(problem, options)
    mean_burst = objective == "ttft" and wl.requests > 1 and wl.completion == "mean"
    search_problem = (
        problem.replace(scenario=scenario.replace(workload={"completion": "max"})) if mean_burst else problem
    )
    plan, details = _search(search_problem, options)
    op_names = tuple(d.name for d in scenario.devices)
    if mean_burst:
        # plan-level local search for the mean, from the max plan and from the single request's TTFT plan
        # (the mean lies between the first and the last request); unused devices: the best-ranked few
        rankings = [order for _, order in seed_orders(scenario, objective)]
        shortlist = _shortlist(op_names, rankings, set(plan.devices), options.candidates_per_key)
        one = problem.replace(scenario=scenario.replace(workload={"requests": 1}))
        # the second seed's search has the burst search's budget of orders, not one request's default
        ttft_plan, _ = _search(one, dataclasses.replace(options, max_orders=details["max_orders"]))
        more = _shortlist(op_names, rankings, set(ttft_plan.devices), options.candidates_per_key)
        shortlist += [name for name in more if name not in shortlist]
        seeds = [plan] if ttft_plan == plan else [plan, ttft_plan]
        plan, n_eval = local_search.local_search(
            scenario, seeds, problem.overlap, unused=shortlist, max_evaluations=MEAN_BURST_EVALUATIONS
        )
        details["method"] += "; then local search on plans for the mean completion from it and the TTFT plan"
        details["plans_evaluated"] = n_eval
    return _with_bound(problem, plan, details)


class HeuristicPlanner:
    """``heuristic``: local search over device orders with an exact split per order, for any cluster size."""

    name = "heuristic"

    def __init__(self, options: HeuristicOptions | None = None) -> None:
        self.options = options or HeuristicOptions()

    def refuses(self, problem: Problem) -> str | None:
        return None

    def solve(self, problem: Problem) -> Solution:
        return plan_heuristic(problem, self.options)
