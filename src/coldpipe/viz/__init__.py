"""Pictures and reports of coldpipe's predictions (the shell): Gantt charts, sweeps, reports, traces.

Every bar, point and number drawn here comes from :func:`coldpipe.core.simulator.simulate` (through
the planner and the baselines); this package only lays them out. matplotlib is imported lazily,
inside the functions that draw, so importing :mod:`coldpipe.viz` costs nothing.
"""

from coldpipe.viz.gantt import Arrow, Bar, GanttChart, draw_gantt, gantt_bars, idle_bars, transfer_arrows

__all__ = ["Arrow", "Bar", "GanttChart", "draw_gantt", "gantt_bars", "idle_bars", "transfer_arrows"]
