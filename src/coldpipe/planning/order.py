"""The heuristic's inner problem: the best plan whose devices form a subsequence of a fixed order.

Once the *order* of the devices is fixed, the placement problem is easy: a forward DP over
``(position in the order, blocks placed)``, where each device of the order is either skipped or given
the next contiguous run of blocks, finds the best subsequence of the order *and* the best split for it
in ``O(n * B**2)`` (:func:`~coldpipe.planning.kernels.scalar_dp` on a chain of positions). It is the
exact DP with "device types still available" replaced by "position in a fixed order": the same kernel,
stage maps and tables. For the Pareto objectives (e2e under ``layer``/``stage``, a burst's max completion) the same
holds with a front of pairs per state (:func:`~coldpipe.planning.kernels.order_pareto_dp`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from coldpipe.core.types import Plan, Stage
from coldpipe.errors import InputError
from coldpipe.planning.exact import threshold_search
from coldpipe.planning.kernels import KIND_BURST, KIND_E2E, SKIP, Mode, scalar_dp
from coldpipe.planning.order_kernels import order_pareto_dp
from coldpipe.planning.protocol import Problem
from coldpipe.planning.tables import StageTables, load_end_candidates

__all__ = ["KIND_SCALAR", "OrderProblem", "Stages", "solve", "solve_order"]

Stages = tuple[tuple[int, int, int], ...]
"""A plan as ``(device index, first block, last block)`` per stage, device indices in scenario order."""

KIND_SCALAR = -1
"""One number per state (TTFT; TPOT on decode tables; E2E under ``none`` on combined tables)."""


@dataclass(frozen=True)
class OrderProblem:
    """What the order DP optimises: the tables, the type of every device, the objective's form.

    ``kind`` is :data:`KIND_SCALAR` (:func:`~coldpipe.planning.kernels.scalar_dp`), else the second
    coordinate of the Pareto order DP: ``KIND_E2E`` (decode time so far, weight ``lam = new_tokens - 1``)
    or ``KIND_BURST`` (end of the burst's last request, ``lam = requests - 1``) with ``second`` its tables.
    """

    tables: StageTables
    names: tuple[str, ...]  # device names, scenario order
    type_of: np.ndarray  # (K,) int64: type of device k
    mode: Mode
    kind: int = KIND_SCALAR
    second: StageTables | None = None
    lam: float = 0.0
    block_cost: np.ndarray | None = None  # (T, B): per-block lower bound on what the objective adds

    @staticmethod
    def build(problem: Problem) -> OrderProblem:
        """The order DP's problem for ``problem`` (``ttft`` with a burst: its max completion)."""
        scenario, objective = problem.scenario, problem.objective
        pre = StageTables.build(scenario)
        names = tuple(d.name for d in scenario.devices)
        type_of = np.array([pre.types.type_of(n) for n in names], dtype=np.int64)
        mode = Mode.of(problem.overlap)
        wl = scenario.workload
        steps = wl.new_tokens - 1
        if objective == "tpot":
            # One decode step: additive, nothing to load (startup 0, free loading), so the "stage" map
            # max(α, load_end = 0) + C is the additive one, and the order DP's fast path applies.
            return OrderProblem(StageTables.build(scenario, phase="decode"), names, type_of, Mode.STAGE)
        if objective == "e2e" and steps > 0:
            dec = StageTables.build(scenario, phase="decode")
            if mode == Mode.ADDITIVE:  # max load end + (prefill + (T - 1) x decode): the "none" search
                return OrderProblem(pre.plus(dec, float(steps)), names, type_of, mode)
            cost = np.diff(pre.cf, axis=1) + steps * np.diff(dec.cf, axis=1)
            return OrderProblem(pre, names, type_of, mode, KIND_E2E, dec, float(steps), cost)
        if objective == "ttft" and wl.requests > 1:
            cost = np.diff(pre.cf, axis=1)
            return OrderProblem(pre, names, type_of, mode, KIND_BURST, pre, float(wl.requests - 1), cost)
        return OrderProblem(pre, names, type_of, mode)

    @property
    def pareto(self) -> bool:
        return self.kind != KIND_SCALAR

    def load_ends(self, t: int) -> np.ndarray:
        """:func:`~coldpipe.planning.tables.load_end_candidates` of type ``t`` (computed once per type)."""
        cache: dict[int, np.ndarray] = self.__dict__.setdefault("_load_ends", {})
        if t not in cache:
            cache[t] = load_end_candidates(self.tables, [t])
        return cache[t]

    def load_end(self, k: int, first: int, last: int) -> float:
        """When device ``k`` holding ``first..last`` has all its blocks."""
        return self.tables.load_end(int(self.type_of[k]), first, last)

    def plan_of(self, stages: Stages) -> Plan:
        return Plan(tuple(Stage(self.names[k], a, b) for k, a, b in stages))

    def _seq(self, order: tuple[int, ...]) -> np.ndarray:
        return self.type_of[list(order)] if order else np.zeros(0, dtype=np.int64)

    def _call(
        self, order: tuple[int, ...], tau: float, arrive: np.ndarray, start_p: int, best0: float
    ) -> tuple[float, int, int, np.ndarray, np.ndarray]:
        """:func:`~coldpipe.planning.kernels.scalar_dp` on the chain of positions: ``A[p, i]`` = earliest
        arrival of block ``i - 1``'s output at the AP with blocks ``0..i-1`` on positions ``< p``; position
        ``p`` gives a stage (edge to ``p + 1``) or is skipped. Returns ``(best, p, i, pred, best_upto)``."""
        tb = self.tables
        n = len(order)
        edge_start = np.minimum(np.arange(n + 2, dtype=np.int64), n)  # one edge per position, none from the last
        skip_to = np.append(np.arange(1, n + 1, dtype=np.int64), -1)
        best, p, i, _, pred, _, best_upto = scalar_dp(
            int(self.mode),
            tau,
            edge_start,
            self._seq(order),
            np.arange(1, n + 1, dtype=np.int64),
            skip_to,
            arrive,
            start_p,
            best0,
            tb.cf,
            tb.wpt,
            tb.nres,
            tb.mp,
            tb.startup,
            tb.inv_bw,
            tb.mem,
            tb.down,
            tb.up,
            tb.ret,
            tb.types.source_type,
        )
        return best, p, i, pred, best_upto

    def run_pareto(
        self, order: tuple[int, ...], tau: float = math.inf, incumbent: float = math.inf, max_front: int = 0
    ) -> tuple[float, Stages]:
        """The Pareto order DP: (objective, stages), or ``(inf, ())`` if nothing strictly beats ``incumbent``.

        ``max_front > 0``: fronts capped to that many pairs, a real plan of the order (maybe not its best).
        """
        tb, sec = self.tables, self.second
        assert sec is not None and self.block_cost is not None
        n_blocks = tb.n_blocks
        seq = self._seq(order)
        # rest[p, i]: blocks i.. each computed by the cheapest type on positions >= p (inf: no position left)
        mins = np.full((len(order) + 1, n_blocks), np.inf)
        if order:
            mins[:-1] = np.minimum.accumulate(self.block_cost[seq][::-1], axis=0)[::-1]
        rest = np.zeros((len(order) + 1, n_blocks + 1))
        rest[:, :n_blocks] = np.cumsum(mins[:, ::-1], axis=1)[:, ::-1]
        best, q, p, i, p_from, p_pos, p_i, p_e = order_pareto_dp(
            int(self.mode),
            self.kind,
            self.lam,
            tau,
            incumbent,
            seq,
            rest[:, :, None],
            tb.cf,
            tb.mp,
            tb.mem,
            tb.down,
            tb.up,
            tb.ret,
            *tb.grid,
            tb.types.source_type,
            tb.prompt_at_ap,
            sec.cf,
            sec.down,
            sec.up,
            sec.ret,
            sec.prompt_at_ap,
            max_front,
        )
        if q == -2:
            return math.inf, ()
        rev = [(order[int(p)], int(i), n_blocks - 1)]
        q = int(q)
        while p_pos[q] >= 0:  # the root pair (nothing placed) has no stage
            rev.append((order[int(p_pos[q])], int(p_i[q]), int(p_e[q])))
            q = int(p_from[q])
        return float(best), tuple(reversed(rev))

    def run_full(self, order: tuple[int, ...], tau: float = math.inf) -> tuple[float, Stages, np.ndarray, np.ndarray]:
        """(objective, stages, the DP rows A, best_upto) for ``order`` (scalar kinds)."""
        tb = self.tables
        n_blocks = tb.n_blocks
        arrive = np.full((len(order) + 1, n_blocks), np.inf)
        arrive[0, 0] = tb.prompt_at_ap
        best, p, i, pred, best_upto = self._call(order, tau, arrive, 0, math.inf)
        if not best < math.inf:
            return math.inf, (), arrive, best_upto
        rev = [(order[int(p)], int(i), n_blocks - 1)]
        p, i = int(p), int(i)
        while i > 0:
            q = int(pred[p, i])
            if q == SKIP:
                p -= 1
                continue
            rev.append((order[p - 1], q, i - 1))
            p -= 1
            i = q
        return float(best), tuple(reversed(rev)), arrive, best_upto

    def run(self, order: tuple[int, ...], tau: float = math.inf) -> tuple[float, Stages]:
        """Best (objective, stages) over subsequences of ``order``."""
        if self.pareto:
            return self.run_pareto(order, tau)
        best, stages, _, _ = self.run_full(order, tau)
        return best, stages

    def value_from(self, order: tuple[int, ...], start_p: int, rows: np.ndarray, best0: float) -> float:
        """The optimum of ``order`` given the DP rows ``0..start_p`` of an order with the same prefix."""
        arrive = np.full((len(order) + 1, rows.shape[1]), np.inf)
        arrive[: start_p + 1] = rows[: start_p + 1]
        return float(self._call(order, math.inf, arrive, start_p, best0)[0])

    def with_load_end(self, d: float, stages: Stages) -> float:
        """``none``: the objective of ``stages`` whose additive part is ``d``: their last load end + ``d``."""
        return max(self.load_end(k, a, b) for k, a, b in stages) + d


def solve(
    problem: OrderProblem,
    order: tuple[int, ...],
    taus: tuple[float, ...] | None = None,
    incumbent: float = math.inf,
    max_front: int = 0,
) -> tuple[float, Stages, int]:
    """The best plan over subsequences of ``order``: (the DP's objective, stages, DP runs).

    ``layer``/``stage``: one DP run (for a Pareto problem, ``(inf, ())`` if nothing strictly beats
    ``incumbent``). ``none``: objective = ``max load end + D``; the same branch-and-bound over
    candidate load-end thresholds as the exact DP, restricted to ``order``; or, if ``taus`` is given,
    only those thresholds (a plan of the order, maybe not its best). ``max_front``: see
    :meth:`OrderProblem.run_pareto` (a real plan of the order, maybe not its best).
    """
    if problem.mode != Mode.ADDITIVE:
        if problem.pareto:
            best, stages = problem.run_pareto(order, math.inf, incumbent, max_front)
        else:
            best, stages = problem.run(order)
        return best, stages, 1
    if taus is not None:
        best, best_stages = math.inf, ()
        for tau in taus:
            if problem.pareto:
                d, stages = problem.run_pareto(order, tau, math.inf, max_front)
            else:
                d, stages = problem.run(order, tau)
            if stages:
                ttft = problem.with_load_end(d, stages)
                if ttft < best:
                    best, best_stages = ttft, stages
        return best, best_stages, len(taus)
    types = sorted({int(problem.type_of[k]) for k in order})
    taus_all = np.unique(np.concatenate([problem.load_ends(t) for t in types])) if types else np.zeros(0)
    memo = threshold_search(taus_all, lambda tau, _cutoff: problem.run(order, tau))
    best, best_stages = math.inf, ()
    for d, stages in memo.values():
        if stages:
            ttft = problem.with_load_end(d, stages)
            if ttft < best:
                best, best_stages = ttft, stages
    return best, best_stages, len(memo)


def solve_order(problem: Problem, order: list[str] | tuple[str, ...]) -> Plan | None:
    """The best plan for ``problem`` whose devices form a subsequence of ``order`` (exact for that order).

    None if no subsequence of ``order`` holds the model. A burst's ``mean`` completion and a decoding
    burst are not planned per order (a burst's ``max`` is).

    >>> from coldpipe.core.types import Block, Device, Scenario, Workload
    >>> sc = Scenario([Block(f"b{i}", 1.0, 1.0, 1.0) for i in range(4)],
    ...               [Device(n, 1.0, 1.0, 0.0, 2.0, 1e9, 1e9) for n in "xyz"], Workload(1))
    >>> str(solve_order(Problem(sc), ["z", "x"]))   # memory 2 blocks each: z then x, both needed
    'z[0-1] > x[2-3]'
    """
    wl = problem.scenario.workload
    if problem.objective == "ttft" and wl.completion == "mean" and wl.requests > 1:
        raise InputError("workload.completion", "a burst's mean completion is not planned per order", "use 'max'")
    if problem.objective == "e2e" and wl.requests > 1:
        raise InputError("objective", "a decoding burst's e2e is not planned per order", "use ttft or one request")
    op = OrderProblem.build(problem)
    index = {n: k for k, n in enumerate(op.names)}
    unknown = [n for n in order if n not in index]
    if unknown or len(set(order)) != len(order):
        raise InputError("order", f"unknown or repeated devices in {list(order)}", "name each device once")
    _, stages, _ = solve(op, tuple(index[n] for n in order))
    return op.plan_of(stages) if stages else None
