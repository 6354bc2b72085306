"""Gantt chart of a cold-start timeline: who loads what, when it computes, when it sits idle.

The chart is data first: :func:`gantt_bars`, :func:`idle_bars` and :func:`transfer_arrows` turn a
:class:`~coldpipe.core.simulator.Timeline` into plain spans (no matplotlib), and
:func:`draw_gantt` draws exactly those spans and returns them, so tests compare the drawing's data
with the simulator's timeline instead of pixels.

Layout (time on x, t = 0 when the request arrives): the top row is the access point, then one row
per stage in stage order, labelled with its device, block range and idle accounting. In each stage
row the upper lane holds start-up (grey) and the loading of each block (shaded, hatched), the lower
lane the compute of each block (solid); a gap in the lower lane is idle time, marked with a thin
red line while the device waits for its weights and a grey one while it waits for its input.
Arrows show transfers device -> AP -> device; the vertical red line is the TTFT.

>>> from coldpipe.core.types import Block, Device, Scenario, Workload, Plan
>>> from coldpipe.core.simulator import simulate
>>> blocks = [Block(f"b{i}", weight_bytes=1e9, flops=1e12, out_bytes=1e6) for i in range(4)]
>>> dev = lambda n: Device(n, flops=1e12, load_bandwidth=1e9, startup=0.0, memory=1e12,
...                        uplink=8e9, downlink=8e9)
>>> sc = Scenario(blocks, (dev("a"), dev("b")), Workload(prompt_tokens=1, prompt_bytes=0, token_bytes=0))
>>> tl = simulate(sc, Plan.parse("a[0-1] > b[2-3]"), "layer")
>>> [(b.kind, b.block, b.start_s, b.end_s) for b in gantt_bars(tl) if b.stage == 0]
[('load', 0, 0.0, 1.0), ('load', 1, 1.0, 2.0), ('compute', 0, 1.0, 2.0), ('compute', 1, 2.0, 3.0)]
>>> [(b.device, b.kind, b.start_s, b.end_s) for b in idle_bars(tl)]  # a waits for weights, b for a's output
[('a', 'idle-weights', 0.0, 1.0), ('b', 'idle-input', 1.0, 3.002)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from coldpipe.core.simulator import Timeline
from coldpipe.core.types import AP
from coldpipe.units import format_seconds
from coldpipe.viz import _mpl

__all__ = [
    "MEASURED_COLORS",
    "Arrow",
    "Bar",
    "GanttChart",
    "build_gantt",
    "draw_gantt",
    "gantt_bars",
    "idle_bars",
    "source_row_device",
    "transfer_arrows",
]

BAR_KINDS = ("startup", "load", "compute")
IDLE_KINDS = ("idle-weights", "idle-input")
MEASURED_KINDS = ("load", "compute", "send", "recv", "wait")


@dataclass(frozen=True)
class Bar:
    """A span drawn on stage row ``stage`` (0-based, in stage order).

    ``kind`` is ``startup``, ``load`` or ``compute`` (predicted bars), ``idle-weights`` or
    ``idle-input`` (idle marks), or for ``measured`` spans read from a runtime trace also ``send``,
    ``recv`` or ``wait``. ``block`` is the block index when the span belongs to one block.
    """

    stage: int
    device: str
    kind: str
    start_s: float
    end_s: float
    block: int | None = None
    measured: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Arrow:
    """A transfer ``src`` -> AP -> ``dst``; a stage index of ``None`` means the AP row."""

    what: str  # "prompt" | "activation" | "token" (| "hidden", "candidates", "weights" with mechanisms)
    src_stage: int | None
    dst_stage: int | None
    start_s: float
    at_ap_s: float
    end_s: float
    n_bytes: float


@dataclass(frozen=True)
class GanttChart:
    """What :func:`draw_gantt` drew, as data."""

    bars: tuple[Bar, ...]
    idle: tuple[Bar, ...]
    arrows: tuple[Arrow, ...]
    measured: tuple[Bar, ...]
    ttft_s: float
    t_max_s: float
    paths: tuple[Path, ...] = field(default=())


def gantt_bars(timeline: Timeline) -> list[Bar]:
    """Start-up, then per block its load and compute span, stage by stage (from the timeline as is)."""
    bars: list[Bar] = []
    for j, st in enumerate(timeline.stages):
        if st.startup_s > 0:
            bars.append(Bar(j, st.device, "startup", 0.0, st.startup_s))
        bars.extend(Bar(j, st.device, "load", b.load_start_s, b.load_end_s, b.block) for b in st.blocks)
        bars.extend(Bar(j, st.device, "compute", b.compute_start_s, b.compute_end_s, b.block) for b in st.blocks)
    return bars


def idle_bars(timeline: Timeline) -> list[Bar]:
    """The idle spans behind each stage's ``wait_weights_s`` and ``wait_input_s``.

    Per stage the ``idle-weights`` spans add up to ``wait_weights_s`` and the ``idle-input`` span
    to ``wait_input_s``: under ``layer`` a wait before any block whose weights are not resident yet;
    under ``stage`` one wait from the input's arrival until the stage's last block is resident;
    under ``none`` the global barrier, from t = 0 until the prompt leaves, charged to stage 1.
    Waiting for input runs from the moment the stage could have started computing (its first
    block resident under ``layer``, all of them otherwise) to the input's arrival.
    """
    out: list[Bar] = []
    for j, st in enumerate(timeline.stages):
        if timeline.overlap == "layer":
            t = st.arrival_s
            for b in st.blocks:
                if b.compute_start_s > t:
                    out.append(Bar(j, st.device, "idle-weights", t, b.compute_start_s, b.block))
                t = b.compute_end_s
        elif timeline.overlap == "stage":
            if st.compute_start_s > st.arrival_s:
                out.append(Bar(j, st.device, "idle-weights", st.arrival_s, st.compute_start_s, st.first))
        elif j == 0 and st.wait_weights_s > 0:  # "none": the barrier
            out.append(Bar(j, st.device, "idle-weights", 0.0, st.wait_weights_s))
        ready = st.blocks[0].load_end_s if timeline.overlap == "layer" else st.load_end_s
        if st.arrival_s > ready:
            out.append(Bar(j, st.device, "idle-input", ready, st.arrival_s))
    return out


def source_row_device(timeline: Timeline) -> str | None:
    """The source device when it holds no stage: it gets its own row (index ``len(stages)``) below the stages."""
    if not timeline.transfers:
        return None
    src = timeline.transfers[0].src  # the prompt leaves the source first
    if src == AP or src in {st.device for st in timeline.stages}:
        return None
    return src


def transfer_arrows(timeline: Timeline) -> list[Arrow]:
    """One arrow per transfer of the timeline, between the rows of its endpoints (``None``: the AP row; a
    source device without a stage has row ``len(stages)``)."""
    row = {st.device: j for j, st in enumerate(timeline.stages)}
    source = source_row_device(timeline)
    if source is not None:
        row[source] = len(timeline.stages)
    return [
        Arrow(tr.what, row.get(tr.src), row.get(tr.dst), tr.start_s, tr.at_ap_s, tr.end_s, tr.n_bytes)
        for tr in timeline.transfers
        if tr.src != tr.dst
    ]


# Lanes, as (top, bottom) offsets from a row's centre; y grows downwards (the axis is inverted).
_LANES = {"load": (-0.42, -0.04), "compute": (0.04, 0.42)}
_LANES_WITH_MEASURED = {
    "load": (-0.44, -0.25),
    "load-measured": (-0.23, -0.04),
    "compute": (0.04, 0.23),
    "compute-measured": (0.25, 0.44),
}
# measured spans of a runtime trace, one colour per kind (the legend names each)
MEASURED_COLORS = {"load": "#1f77b4", "compute": "#ff7f0e", "send": "#2ca02c", "recv": "#9467bd", "wait": "#d62728"}
_PREDICTED_GREY = "#5b6770"
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#bcbd22", "#7f7f7f")


def _row_label(timeline: Timeline, j: int) -> str:
    st = timeline.stages[j]
    return (
        f"{st.device}  blocks {st.first}-{st.last}\n"
        f"load {format_seconds(st.load_s)}, compute {format_seconds(st.compute_s)}\n"
        f"idle: weights {format_seconds(st.wait_weights_s)}, input {format_seconds(st.wait_input_s)}"
    )


def build_gantt(
    timeline: Timeline,
    *,
    title: str | None = None,
    t_max_s: float | None = None,
    measured: Sequence[Bar] = (),
    measured_ttft_s: float | None = None,
) -> tuple[GanttChart, Any]:
    """The chart's data and its matplotlib figure (not written anywhere); see :func:`draw_gantt`."""
    bars = gantt_bars(timeline)
    idle = idle_bars(timeline)
    arrows = transfer_arrows(timeline)
    measured = tuple(measured)
    ends = [timeline.ttft_s, *(b.end_s for b in bars), *(m.end_s for m in measured)]
    if measured_ttft_s is not None:
        ends.append(measured_ttft_s)
    horizon = t_max_s if t_max_s is not None else 1.04 * max(ends)
    chart = GanttChart(tuple(bars), tuple(idle), tuple(arrows), measured, timeline.ttft_s, horizon)
    return chart, _figure(timeline, chart, title, measured_ttft_s)


def draw_gantt(
    timeline: Timeline,
    out: str | Path | Sequence[str | Path] = (),
    *,
    title: str | None = None,
    t_max_s: float | None = None,
    measured: Sequence[Bar] = (),
    measured_ttft_s: float | None = None,
    option: str = "--gantt",
) -> GanttChart:
    """Draw ``timeline`` (and ``measured`` spans from a runtime trace, if any) to ``out`` (.png / .svg).

    ``t_max_s`` fixes the right end of the time axis so several charts share one scale; ``option``
    names the command-line option in the error raised for a path that is neither .png nor .svg.
    Returns the drawn data; with ``out`` empty nothing is written (the figure is still built).
    """
    paths = _mpl.check_paths(out, option) if out else []
    chart, fig = build_gantt(timeline, title=title, t_max_s=t_max_s, measured=measured, measured_ttft_s=measured_ttft_s)
    _mpl.save(fig, paths)
    return replace(chart, paths=tuple(paths))


def _figure(timeline: Timeline, chart: GanttChart, title: str | None, measured_ttft_s: float | None) -> Any:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(timeline.stages)
    source = source_row_device(timeline)
    n_rows = n + (1 if source is not None else 0)  # stages, and a source device that holds none
    has_measured = bool(chart.measured)
    lanes = _LANES_WITH_MEASURED if has_measured else _LANES
    fig = _mpl.new_figure(11.0, 1.5 + (1.25 if has_measured else 0.95) * (n_rows + 1))
    ax = fig.add_subplot()

    def lane(stage: int, name: str) -> tuple[float, float]:
        top, bottom = lanes[name]
        return stage + 1 + top, bottom - top

    # Predicted bars, one broken_barh per (row, kind): load shaded and hatched, compute solid.
    for j in range(n):
        # with measured spans (coloured by kind) the prediction is drawn in grey, so no colour means two things
        color = _PREDICTED_GREY if has_measured else _COLORS[j % len(_COLORS)]
        rows = [b for b in chart.bars if b.stage == j]
        startup = [(b.start_s, b.duration_s) for b in rows if b.kind == "startup"]
        if startup:
            ax.broken_barh(startup, lane(j, "load"), facecolors="#d9d9d9", edgecolor="#999999", linewidth=0.5)
        loads = [(b.start_s, b.duration_s) for b in rows if b.kind == "load"]
        ax.broken_barh(loads, lane(j, "load"), facecolors=color, alpha=0.35, edgecolor=color, hatch="///", lw=0.4)
        comps = [(b.start_s, b.duration_s) for b in rows if b.kind == "compute"]
        ax.broken_barh(comps, lane(j, "compute"), facecolors=color, edgecolor="white", linewidth=0.4)
        for b in chart.idle:
            if b.stage != j:
                continue
            y0, h = lane(j, "compute")
            style = {"color": "#d62728", "lw": 2.0} if b.kind == "idle-weights" else {"color": "#7f7f7f", "lw": 1.5}
            ax.plot([b.start_s, b.end_s], [y0 + h / 2, y0 + h / 2], solid_capstyle="butt", **style)

    # Measured spans, in their own thinner lanes under the predicted ones, coloured by kind.
    for m in chart.measured:
        if m.stage < 0 or m.stage >= n:
            continue
        kind = "load-measured" if m.kind == "load" else "compute-measured"
        color = MEASURED_COLORS.get(m.kind, "#7f7f7f")
        ax.broken_barh(
            [(m.start_s, m.duration_s)],
            lane(m.stage, kind),
            facecolors=color,
            alpha=0.55,
            edgecolor=color,
            hatch="xxx" if m.kind == "load" else None,
            linewidth=0.6,
        )

    # Transfers: source row -> AP row (when the bytes reach the AP) -> destination row.
    def y_of(stage: int | None) -> float:
        return 0.0 if stage is None else stage + 1.0

    for a in chart.arrows:
        for (x0, s0), (x1, s1) in (
            ((a.start_s, a.src_stage), (a.at_ap_s, None)),
            ((a.at_ap_s, None), (a.end_s, a.dst_stage)),
        ):
            if s0 is None and s1 is None:
                continue
            ax.annotate(
                "",
                xy=(x1, y_of(s1)),
                xytext=(x0, y_of(s0)),
                arrowprops={"arrowstyle": "->", "color": "#333333", "lw": 0.8, "shrinkA": 0, "shrinkB": 0},
            )
        ax.plot([a.at_ap_s], [0.0], marker="o", color="#333333", markersize=3)

    ax.axvline(chart.ttft_s, color="#d62728", lw=1.2)
    # the predicted TTFT is labelled at the top, the measured one at the bottom: close values never overlap
    ax.text(chart.ttft_s, -0.5, f" TTFT {format_seconds(chart.ttft_s)}", color="#d62728", va="top", fontsize=8)
    if measured_ttft_s is not None:
        ax.axvline(measured_ttft_s, color="black", lw=1.2, ls="--")
        ax.text(measured_ttft_s, n_rows + 0.5, f" measured {format_seconds(measured_ttft_s)}", va="bottom", fontsize=8)

    ap_label = "AP (source)" if timeline.plan and _source_is_ap(timeline) else "AP"
    labels = [ap_label, *(_row_label(timeline, j) for j in range(n))]
    if source is not None:
        labels.append(f"{source}\n(source, no stage)")
    ax.set_yticks(range(n_rows + 1), labels, fontsize=7 if has_measured else 8)
    ax.set_ylim(n_rows + 0.55, -0.55)
    ax.set_xlim(0.0, chart.t_max_s)
    ax.set_xlabel("time since the request arrived (s)")
    ax.grid(axis="x", color="#eeeeee", lw=0.6)
    ax.set_axisbelow(True)
    default_title = (
        f"{timeline.plan}  (overlap={timeline.overlap}): TTFT {format_seconds(timeline.ttft_s)}, "
        f"{100 * timeline.hidden_load_share:.0f}% of the loading critical path hidden"
    )
    ax.set_title(title or default_title, loc="left", fontsize=9)
    pc = _PREDICTED_GREY if has_measured else "#1f77b4"
    predicted = "predicted " if has_measured else ""
    handles: list[Any] = [
        Patch(facecolor="#d9d9d9", edgecolor="#999999", label="start-up"),
        Patch(facecolor=pc, alpha=0.35, hatch="///", edgecolor=pc, label=f"{predicted}load (per block)"),
        Patch(facecolor=pc, label=f"{predicted}compute (per block)"),
        Line2D([], [], color="#d62728", lw=2.0, label="idle: waiting for weights"),
        Line2D([], [], color="#7f7f7f", lw=1.5, label="idle: waiting for input"),
        Line2D([], [], color="#333333", lw=0.8, marker=">", markersize=4, label="transfer via AP"),
        Line2D([], [], color="#d62728", lw=1.2, label="TTFT"),
    ]
    if has_measured:
        kinds = [k for k in MEASURED_COLORS if any(m.kind == k for m in chart.measured)]
        for k in kinds:
            c = MEASURED_COLORS[k]
            label = f"measured {k}" + (" (lower lanes)" if k == kinds[0] else "")
            handles.append(Patch(facecolor=c, alpha=0.55, edgecolor=c, hatch="xxx" if k == "load" else None,
                                 label=label))  # fmt: skip
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=7, frameon=False)
    return fig


def _source_is_ap(timeline: Timeline) -> bool:
    return bool(timeline.transfers) and timeline.transfers[0].src == AP
