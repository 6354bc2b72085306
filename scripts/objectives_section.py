"""The "objectives" section of docs/evaluation.md: how the optimal plan changes with the answer's length,
with warm residency and with bursts, on the bundled scenario. Every number is computed here; every plan
by the exact planner :func:`coldpipe.planning.exact.plan_exact` (a burst's mean: its local search).

    .venv/bin/python scripts/objectives_section.py     # print the section (scripts/evaluation.py includes it)
"""

from __future__ import annotations

import time

import yaml

from coldpipe.cli._common import demo_scenario_text
from coldpipe.core.simulator import decode_step_s, objective_s, simulate
from coldpipe.core.types import Scenario
from coldpipe.planning import Problem
from coldpipe.planning.exact import plan_exact
from coldpipe.scenario_file import scenario_from_dict

NEW_TOKENS = (1, 2, 8, 32, 128, 512, 1024)
REQUESTS = (1, 2, 4, 8, 16)


def demo_with(**workload: object) -> Scenario:
    """The bundled scenario with workload fields changed (KV caches re-sized for new_tokens)."""
    data = yaml.safe_load(demo_scenario_text())
    data["workload"].update(workload)
    return scenario_from_dict(data)


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{1e3 * seconds:.0f} ms"


def length_table() -> tuple[list[str], dict[int, tuple[float, float]]]:
    rows = [
        "| new tokens | TTFT-optimal plan | its TTFT / E2E | E2E-optimal plan | its TTFT / E2E | E2E penalty of the "
        "TTFT plan | TTFT penalty of the E2E plan |",
        "|---:|---|---|---|---|---:|---:|",
    ]
    penalties = {}
    for n in NEW_TOKENS:
        sc = demo_with(new_tokens=n)
        p_ttft = plan_exact(Problem(sc)).plan
        p_e2e = plan_exact(Problem(sc, "layer", "e2e")).plan
        t1, e1 = simulate(sc, p_ttft).ttft_s, objective_s(sc, p_ttft, "layer", "e2e")
        t2, e2 = simulate(sc, p_e2e).ttft_s, objective_s(sc, p_e2e, "layer", "e2e")
        penalties[n] = (e1 / e2 - 1, t2 / t1 - 1)
        rows.append(
            f"| {n} | `{p_ttft}` | {fmt(t1)} / {fmt(e1)} | `{p_e2e}` | {fmt(t2)} / {fmt(e2)} | "
            f"{100 * penalties[n][0]:.1f} % | {100 * penalties[n][1]:.1f} % |"
        )
    return rows, penalties


def burst_table() -> list[str]:
    rows = [
        "| requests | max-optimal plan | last first token | TTFT-optimal plan's last first token | "
        "mean-optimal (local search) | TTFT-optimal plan's mean |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in REQUESTS:
        sc_max, sc_mean = demo_with(requests=r, completion="max"), demo_with(requests=r, completion="mean")
        single = plan_exact(Problem(sc_max.replace(workload={"requests": 1}))).plan  # one request's TTFT optimum
        best_max = plan_exact(Problem(sc_max, "layer", "ttft"))
        best_mean = plan_exact(Problem(sc_mean, "layer", "ttft"))
        rows.append(
            f"| {r} | `{best_max.plan}` | {fmt(best_max.value_s)} | {fmt(objective_s(sc_max, single, 'layer', 'ttft'))}"
            f" | {fmt(best_mean.value_s)} | {fmt(objective_s(sc_mean, single, 'layer', 'ttft'))} |"
        )
    return rows


def section() -> str:
    start = time.perf_counter()
    length_rows, penalties = length_table()
    sc = demo_with()
    first = plan_exact(Problem(sc))
    warm_sc = sc.after(first.plan)
    second = plan_exact(Problem(warm_sc))
    burst_rows = burst_table()
    worst_e2e = max(penalties.items(), key=lambda kv: kv[1][0])
    worst_ttft = max(penalties.items(), key=lambda kv: kv[1][1])
    tpot_first = decode_step_s(demo_with(new_tokens=2), first.plan)
    long_sc = demo_with(new_tokens=NEW_TOKENS[-1])
    tpot_long = decode_step_s(long_sc, plan_exact(Problem(long_sc, "layer", "e2e")).plan)
    lines = [
        "## Beyond the first token: objectives, residency, bursts\n",
        "`coldpipe plan --objective e2e` minimises the whole answer, `TTFT + (new_tokens - 1) x TPOT` "
        "(docs/model.md#decode); `--objective tpot` the time per output token. Bundled scenario, overlap `layer`, "
        "each plan exact (the E2E column by the Pareto DP, checked against brute force in "
        "`tests/test_objectives.py`):\n",
        *length_rows,
        "",
        f"The TTFT-optimal plan decodes a token in {fmt(tpot_first)}, the E2E-optimal plan for "
        f"{NEW_TOKENS[-1]} tokens in {fmt(tpot_long)}: the former starts on the slow mini-PC, which hides "
        f"loading but makes every later token slow. From a few tokens on, the best answer keeps the model on fewer, "
        f"faster devices: ignoring the answer's length costs up to {100 * worst_e2e[1][0]:.0f} % of E2E "
        f"(at {worst_e2e[0]} tokens), and optimising E2E costs up to {100 * worst_ttft[1][1]:.0f} % of TTFT "
        f"(at {worst_ttft[0]} tokens).\n",
        "**Warm residency.** After the first request the devices of its plan hold their blocks "
        f"(`coldpipe plan demo --after first.json`): the next request's optimum is `{second.plan}` with TTFT "
        f"{fmt(second.value_s)}, against {fmt(first.value_s)} cold. Keeping the first plan as it is would take "
        f"{fmt(simulate(warm_sc, first.plan).ttft_s)} (its warm TTFT): with start-up gone, moving blocks towards "
        f"the fast devices and loading the few they lack while the mini-PC computes pays.\n",
        "**Bursts.** `workload.requests: R` identical requests at t = 0, served back to back; `completion: max` is "
        "planned exactly (Pareto DP), `mean` by local search (its gap to brute force is measured in "
        "`tests/test_bursts.py`):\n",
        *burst_rows,
        "",
        f"(computed by `scripts/objectives_section.py` in {time.perf_counter() - start:.0f} s)\n",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(section())
