"""``coldpipe report``: one scenario's plans, speedups, schedules and accounting, as HTML and Markdown.

``index.html`` is self-contained (figures embedded as base64 data URIs, CSS inline), for attaching
to an issue or a paper draft; ``report.md`` says the same with its figures as PNG files beside it
(``figures/``). Every number comes from the planner, the baselines and the simulator.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

from coldpipe.atomic import write_text_atomic
from coldpipe.core.simulator import Timeline, objective_s
from coldpipe.core.types import Scenario
from coldpipe.planning.bounds import Bounds
from coldpipe.planning.compare import Strategy, compare
from coldpipe.units import format_bytes, format_rate, format_seconds
from coldpipe.viz import _mpl
from coldpipe.viz.gantt import build_gantt

__all__ = ["Strategy", "evaluate_strategies", "write_report"]


def evaluate_strategies(scenario: Scenario, objective: str = "ttft") -> tuple[list[Strategy], Bounds]:
    """The optimum of ``objective`` under every overlap mode, then every baseline, each with its timeline."""
    cmp = compare(scenario, objective=objective)  # type: ignore[arg-type]
    assert cmp.bounds is not None
    return cmp.strategies(), cmp.bounds


def _objective_values(scenario: Scenario, strategies: list[Strategy], objective: str) -> dict[str, float]:
    """Each runnable strategy's value of ``objective`` (the simulator's), by name."""
    return {
        s.name: objective_s(scenario, s.plan, s.overlap, objective)
        for s in strategies
        if s.plan is not None and s.timeline is not None
    }


@dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def markdown(self) -> str:
        right = ["---:" if h in _NUMERIC or h.startswith("E2E") else "---" for h in self.headers]
        lines = ["| " + " | ".join(self.headers) + " |", "| " + " | ".join(right) + " |"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td class="{"num" if h in _NUMERIC else ""}">{html.escape(c)}</td>'
                for h, c in zip(self.headers, r, strict=True)
            )
            + "</tr>"
            for r in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_NUMERIC = {
    "TTFT",
    "first token",
    "E2E",
    "TPOT",
    "speedup",
    "hidden load",
    "idle: weights",
    "idle: input",
    "weights",
    "load",
    "compute",
    "start-up",
    "loaded at",
    "done at",
    "memory",
    "FLOP/s",
    "load bandwidth",
    "uplink",
    "downlink",
}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _strategies_table(
    strategies: list[Strategy], ref_s: float, values: dict[str, float] | None = None, what: str = ""
) -> _Table:
    """With ``values`` (another objective than the TTFT), a column ``what`` of them, and speedups of them."""
    rows = []
    for s in strategies:
        tl = s.timeline
        extra = ("-",) if values is not None else ()
        if tl is None:
            rows.append((s.name, s.overlap, *extra, "infeasible", "-", "-", "-", "-", s.note.split(";")[0][:90]))
            continue
        value = values[s.name] if values is not None else tl.ttft_s
        rows.append(
            (
                s.name,
                s.overlap,
                *((format_seconds(value),) if values is not None else ()),
                format_seconds(tl.ttft_s),
                f"{value / ref_s:.2f}x",
                _pct(tl.hidden_load_share),
                format_seconds(sum(st.wait_weights_s for st in tl.stages)),
                format_seconds(sum(st.wait_input_s for st in tl.stages)),
                str(tl.plan),
            )
        )
    headers = ("strategy", "overlap", *((what,) if values is not None else ()), "TTFT", "speedup", "hidden load",
               "idle: weights", "idle: input", "plan")  # fmt: skip
    return _Table(headers, tuple(rows))


def _stages_table(tl: Timeline, scenario: Scenario) -> _Table:
    rows = []
    blocks = scenario.planned().blocks  # sublayer: the plan indexes the split blocks
    for j, st in enumerate(tl.stages):
        rows.append(
            (
                str(j + 1),
                st.device,
                f"{st.first}-{st.last} ({blocks[st.first].name}..{blocks[st.last].name})",
                format_bytes(st.weight_bytes),
                format_seconds(st.startup_s),
                format_seconds(st.load_s),
                format_seconds(st.load_end_s),
                format_seconds(st.compute_s),
                format_seconds(st.wait_weights_s),
                format_seconds(st.wait_input_s),
                format_seconds(st.compute_end_s),
            )
        )
    headers = (
        "#",
        "device",
        "blocks",
        "weights",
        "start-up",
        "load",
        "loaded at",
        "compute",
        "idle: weights",
        "idle: input",
        "done at",
    )
    return _Table(headers, tuple(rows))


def _devices_table(scenario: Scenario) -> _Table:
    rows = tuple(
        (
            d.name,
            f"{d.flops / 1e12:.3g} T",
            f"{format_bytes(d.load_bandwidth)}/s",
            format_seconds(d.startup),
            format_bytes(d.memory),
            format_rate(d.uplink),
            format_rate(d.downlink),
        )
        for d in scenario.devices
    )
    return _Table(("device", "FLOP/s", "load bandwidth", "start-up", "memory", "uplink", "downlink"), rows)


def _ttft_bars_figure(strategies: list[Strategy], bounds: Bounds) -> object:
    feasible = [s for s in strategies if s.timeline is not None]
    fig = _mpl.new_figure(8.0, 0.8 + 0.22 * len(feasible))
    ax = fig.add_subplot()
    names = [s.name for s in feasible]
    ttfts = [s.ttft_s for s in feasible]
    colors = ["black" if s.name == "coldpipe" else "#555555" if s.kind == "optimal" else "#9bb7d4" for s in feasible]
    ax.barh(names, ttfts, color=colors)
    ax.axvline(bounds.best_s, color="#d62728", ls="--", lw=1.0, label=f"lower bound {format_seconds(bounds.best_s)}")
    ax.invert_yaxis()
    ax.set_xlabel("TTFT (s)")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _data_uri(fig: object, fmt: str) -> str:
    data = _mpl.to_bytes(fig, fmt)  # type: ignore[arg-type]
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


def write_report(
    scenario: Scenario, out_dir: str | Path, *, scenario_text: str | None = None, objective: str = "ttft"
) -> list[Path]:
    """Write ``index.html``, ``report.md`` and ``figures/*.png`` to ``out_dir``; return the paths written.

    ``scenario_text`` is echoed verbatim when given (the scenario file); otherwise the scenario's
    JSON form is. ``objective`` (``ttft``, ``e2e``, ``tpot``) is what the optimum minimises and what the
    speedups compare.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    strategies, bounds = evaluate_strategies(scenario, objective)
    by_ttft = objective == "ttft" and scenario.workload.requests == 1
    values = None if by_ttft else _objective_values(scenario, strategies, objective)
    what = {"ttft": "first token", "e2e": f"E2E ({scenario.workload.new_tokens} tokens)", "tpot": "TPOT"}[objective]
    opt = strategies[0]
    assert opt.timeline is not None
    feasible_baselines = [s for s in strategies if s.kind == "baseline" and s.timeline is not None]
    best = (
        min(feasible_baselines, key=lambda s: s.ttft_s if values is None else values[s.name])
        if feasible_baselines
        else None
    )
    shown = [opt, *( [best] if best is not None else []), strategies[2]]  # fmt: skip
    t_max = 1.04 * max(s.ttft_s for s in shown)

    figures: list[tuple[str, str, object]] = []  # (file stem, caption, figure)
    for s in shown:
        assert s.timeline is not None
        label = "coldpipe optimum" if s.name == "coldpipe" else (
            "best baseline" if s is best else "best load-then-compute plan")  # fmt: skip
        _chart, fig = build_gantt(s.timeline, t_max_s=t_max)
        caption = f"{label} ({s.name}): {s.timeline.plan}, TTFT {format_seconds(s.ttft_s)}"
        figures.append((f"gantt_{s.name.replace('/', '-')}", caption, fig))
    figures.append(("ttft", "TTFT of every strategy (the dashed line is the lower bound)", _ttft_bars_figure(
        strategies, bounds)))  # fmt: skip

    written: list[Path] = []
    for stem, _caption, fig in figures:
        written += _mpl.save(fig, [out / "figures" / f"{stem}.png"])  # type: ignore[arg-type]

    ref = opt.ttft_s
    ref_value = ref if values is None else values[opt.name]
    tables = {
        "strategies": _strategies_table(strategies, ref_value, values, what),
        "stages": _stages_table(opt.timeline, scenario),
        "devices": _devices_table(scenario),
    }
    total_bytes = sum(b.weight_bytes for b in scenario.blocks)
    wl = scenario.workload
    summary = [
        f"Model {scenario.model_name}: {scenario.n_blocks} blocks, {format_bytes(total_bytes)} of weights; "
        f"{len(scenario.devices)} devices behind one access point (source: {scenario.source}); "
        f"prompt {wl.prompt_tokens} tokens, {wl.new_tokens} new token(s).",
        f"coldpipe's plan {opt.timeline.plan} (minimising {what if values is not None else 'the TTFT'}) reaches "
        f"the first token in {format_seconds(ref)}"
        + (f", {what} {format_seconds(ref_value)}" if values is not None else "")
        + f"; loading hidden behind compute: {_pct(opt.timeline.hidden_load_share)}.",
        (
            f"The best baseline, {best.name} ({best.timeline.plan if best.timeline else ''}), takes "
            + (
                f"{format_seconds(best.ttft_s)}: coldpipe is {best.ttft_s / ref:.2f}x faster."
                if values is None
                else f"{format_seconds(values[best.name])} ({what}): coldpipe is {values[best.name] / ref_value:.2f}x "
                "faster."
            )
            if best is not None
            else "No baseline can run this scenario."
        ),
        f"Lower bounds: warm optimum {format_seconds(bounds.warm_s)}, parallel loading "
        f"{format_seconds(bounds.parallel_load_s)}; coldpipe's TTFT is {ref / bounds.best_s:.2f}x the "
        f"{'parallel-loading' if bounds.parallel_load_s >= bounds.warm_s else 'warm-optimum'} bound.",
    ]
    echo = scenario_text if scenario_text is not None else json.dumps(scenario.to_dict(), indent=2)

    md = [f"# coldpipe report: {scenario.model_name}", "", *[f"- {s}" for s in summary], ""]
    what_cmp = "TTFT" if values is None else what
    md += ["## Plans and speedups", "", f"Speedup = the strategy's {what_cmp} / coldpipe's.", ""]
    md += [tables["strategies"].markdown(), "", "## coldpipe's plan, stage by stage", ""]
    md += [tables["stages"].markdown(), "", "## Schedules", ""]
    for stem, caption, _fig in figures:
        md += [f"![{caption}](figures/{stem}.png)", "", f"*{caption}*", ""]
    md += ["## Scenario", "", tables["devices"].markdown(), "", "```", echo.strip(), "```", ""]
    md_path = out / "report.md"
    write_text_atomic(md_path, "\n".join(md))

    body = [f"<h1>coldpipe report: {html.escape(scenario.model_name)}</h1>", "<ul>"]
    body += [f"<li>{html.escape(s)}</li>" for s in summary] + ["</ul>"]
    body += [f"<h2>Plans and speedups</h2><p>Speedup = the strategy's {html.escape(what_cmp)} / coldpipe's.</p>"]
    body += [tables["strategies"].html(), "<h2>coldpipe's plan, stage by stage</h2>", tables["stages"].html()]
    body += ["<h2>Schedules</h2>"]
    for _stem, caption, fig in figures:
        body.append(
            f'<figure><img alt="{html.escape(caption)}" src="{_data_uri(fig, "svg")}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    body += ["<h2>Scenario</h2>", tables["devices"].html(), f"<pre>{html.escape(echo.strip())}</pre>"]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>coldpipe report: {html.escape(scenario.model_name)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    html_path = out / "index.html"
    write_text_atomic(html_path, page)
    return [html_path, md_path, *written]
