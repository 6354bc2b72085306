"""The measured-against-predicted tables of a run: ``coldpipe run`` and ``coldpipe show`` print exactly these.

Every figure is shown in the same order everywhere: measured, predicted, and their ratio (measured /
predicted; 1.000 = the model was exact).
"""

from __future__ import annotations

from pathlib import Path

from coldpipe.cli._common import console, is_narrow, new_table
from coldpipe.core.types import Plan
from coldpipe.runtime.report import RunReport
from coldpipe.units import format_seconds

STAGE_FIGURES = (
    ("loaded at", "load_end_s"),
    ("input at", "arrival_s"),
    ("compute", "compute_s"),
    ("idle: weights", "idle_weights_s"),
    ("done at", "compute_end_s"),
)


def _ratio(m: float, p: float) -> str:
    return f"{m / p:.3f}" if p > 0 else "-"


def print_measured(report: RunReport, plan: Plan, overlap: str, *, trace_path: Path | str | None = None) -> None:
    """The per-stage table and the headline table (TTFT, TPOT, E2E or a burst's completions)."""
    title = f"measured / predicted, plan {plan} (overlap={overlap}); seconds since the request"
    table = new_table(title)
    if is_narrow():  # one row per stage and figure: three short columns instead of five wide ones
        for col in ("#", "device", "figure", "measured", "predicted", "ratio"):
            table.add_column(col, justify="left" if col in ("device", "figure") else "right", no_wrap=True)
        for j, s in enumerate(report.stages):
            for k, (label, attr) in enumerate(STAGE_FIGURES):
                m, p = getattr(s, f"m_{attr}"), getattr(s, f"p_{attr}")
                table.add_row(
                    str(j + 1) if k == 0 else "",
                    s.device if k == 0 else "",
                    label,
                    format_seconds(m),
                    format_seconds(p),
                    _ratio(m, p),
                    end_section=k == len(STAGE_FIGURES) - 1,
                )
    else:
        for col in ("#", "device", "blocks", *(label for label, _a in STAGE_FIGURES)):
            table.add_column(col, justify="left" if col in ("device", "blocks") else "right", no_wrap=col == "device")
        for j, s in enumerate(report.stages):
            cells = [
                f"{format_seconds(getattr(s, f'm_{a}'))} / {format_seconds(getattr(s, f'p_{a}'))}"
                for _label, a in STAGE_FIGURES
            ]
            table.add_row(str(j + 1), s.device, f"{s.first}-{s.last}", *cells)
    console.print(table)
    summary = new_table("measured / predicted")
    for col in ("", "measured", "predicted", "ratio"):
        summary.add_column(col, justify="left" if not col else "right")
    for row in report.summary:
        what = row["what"]
        bold = what in ("TTFT", "burst: last first token (max)") or what.startswith("E2E")
        summary.add_row(
            what,
            format_seconds(row["measured"]),
            format_seconds(row["predicted"]),
            f"{row['ratio']:.3f}",
            style="bold" if bold else None,
        )
    console.print(summary)
    if report.token_ids:
        console.print(
            f"tokens {report.token_ids}"
            + (f"; first token of each request {list(report.first_token_ids)}" if report.burst else "")
        )
    if trace_path is not None:
        console.print(f"trace: {trace_path}")
