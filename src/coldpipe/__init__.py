"""coldpipe: cold-start-aware pipeline placement of LLM blocks across edge devices.

The pure core (``coldpipe.core``) holds the scenario types, the simulator of the latency model
(docs/model.md), the exact planner and the baselines; the shell (CLI, file loading, plots, runtime)
imports it.
"""

__version__ = "0.1.0"
