"""The planners, behind one protocol: a :class:`Problem` in, a :class:`Solution` out.

Pure like :mod:`coldpipe.core`: the standard library, numpy, numba and the solvers only; every
predicted time comes from :mod:`coldpipe.core.simulator`. Layers, bottom up:

- :mod:`.protocol` (Problem, Solution, Planner), :mod:`.jit` (the one jit helper), :mod:`.kernels`,
  :mod:`.order_kernels`, :mod:`.additive` and :mod:`.suffix` (the numba DPs), :mod:`.tables` (device
  types and per-type prefix tables);
- one module per method: :mod:`.exact` and :mod:`.pareto` (the exact DPs, every objective),
  :mod:`.local_search`, :mod:`.order` and :mod:`.heuristic` (beyond the exact range), :mod:`.brute`
  (exhaustive), :mod:`.formulation` with :mod:`.minlp` (SCIP) and :mod:`.highs` (HiGHS), :mod:`.bounds`
  (lower bounds), :mod:`.baselines` (the usual splits);
- :mod:`.predict` (the exact DP's predicted time), :mod:`.planner` (``plan(problem, solver)``) and
  :mod:`.compare` (every strategy on one scenario).
"""

from coldpipe.planning.compare import Comparison, compare
from coldpipe.planning.planner import PLANNERS, SOLVERS, plan
from coldpipe.planning.protocol import OBJECTIVES, Objective, Planner, Problem, Solution

__all__ = [
    "OBJECTIVES",
    "PLANNERS",
    "SOLVERS",
    "Comparison",
    "Objective",
    "Planner",
    "Problem",
    "Solution",
    "compare",
    "plan",
]
