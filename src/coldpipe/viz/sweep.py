"""Sweeps: how the optimum, every baseline and the lower bounds move along one axis of a scenario.

For each value of the axis the scenario is rewritten (:func:`scenario_at`), then planned and timed:

- ``coldpipe``: the exact optimum under overlap ``layer`` (coldpipe's own schedule);
- ``optimal/stage`` and ``optimal/none``: the exact optimum under the weaker overlap modes;
- ``<partition>/<overlap>``: every baseline of :func:`coldpipe.planning.baselines.evaluate_baselines`;
- ``bound/warm`` and ``bound/parallel-load``: :func:`coldpipe.planning.bounds.lower_bounds`.

Axes and what a value means (``x`` multiplies the scenario's own value of every device; a value
with a unit replaces it on every device):

========================  ===========================================================================
``devices``               ``k``: the first ``k`` devices; beyond the scenario's ``n``, copies of the
                          device list named ``<name>-2``, ``<name>-3``, ... (device ``i`` is a copy of
                          device ``i mod n``)
``uplink``                ``2x`` or ``600 Mbit/s``: the links to and from the AP (uplink and downlink)
``load_bandwidth``        ``0.5x`` or ``3 GB/s``: storage -> memory bandwidth
``startup``               ``0x`` or ``500 ms``: start-up time
``model``                 a catalog model name (:data:`coldpipe.core.architectures.CATALOG`), same dtype
``prompt_tokens``         the prompt length in tokens (the model must be a catalog model)
========================  ===========================================================================

A bare number on the multiplier axes is a multiplier (``2`` = ``2x``).

>>> from coldpipe.core.types import Block, Device, Scenario, Workload
>>> sc = Scenario([Block("b", 1e9, 1e9, 1e3)], [Device("a", 1e12, 1e9, 1.0, 1e10, 1e9, 1e9)], Workload(8))
>>> [d.name for d in scenario_at(sc, "devices", "3").devices]
['a', 'a-2', 'a-3']
>>> scenario_at(sc, "startup", "0.5x").devices[0].startup, scenario_at(sc, "uplink", "1 Gbit/s").devices[0].uplink
(0.5, 1000000000.0)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from coldpipe.atomic import atomic_path
from coldpipe.core.architectures import CATALOG, DTYPE_BYTES, blocks_for
from coldpipe.core.types import Device, Scenario, Workload
from coldpipe.errors import InputError
from coldpipe.planning.compare import STRATEGY_OPTIMAL, compare
from coldpipe.units import Kind, parse_quantity
from coldpipe.viz import _mpl

__all__ = [
    "AXES",
    "DEFAULT_VALUES",
    "SweepResult",
    "SweepRow",
    "evaluate",
    "plot_sweep",
    "read_csv",
    "run_sweep",
    "scenario_at",
    "write_csv",
]

AXES = ("devices", "uplink", "load_bandwidth", "model", "prompt_tokens", "startup")

DEFAULT_VALUES: dict[str, tuple[str, ...]] = {
    "devices": ("1", "2", "3", "4", "5", "6", "8"),
    "uplink": ("0.1x", "0.25x", "0.5x", "1x", "2x", "4x", "10x", "100x"),
    "load_bandwidth": ("0.1x", "0.25x", "0.5x", "1x", "2x", "4x", "10x", "100x", "1000x"),
    "model": (
        "qwen2.5-0.5b",
        "llama-3.2-1b",
        "qwen2.5-1.5b",
        "llama-3.2-3b",
        "qwen2.5-7b",
        "llama-3.1-8b",
        "qwen2.5-14b",
    ),
    "prompt_tokens": ("32", "128", "512", "2048", "8192"),
    "startup": ("0x", "0.25x", "0.5x", "1x", "2x", "4x"),
}

_MULTIPLIER_AXES: dict[str, Kind] = {"uplink": "bit_rate", "load_bandwidth": "byte_rate", "startup": "seconds"}
_X_LABELS = {
    "devices": "number of devices",
    "model": "model (catalog name, by size)",
    "prompt_tokens": "prompt tokens",
}
_ABSOLUTE_UNITS = {"uplink": "bit/s", "load_bandwidth": "B/s", "startup": "s"}

STRATEGY_BOUNDS = ("bound/warm", "bound/parallel-load")


@dataclass(frozen=True)
class SweepRow:
    """One strategy at one value of the axis; ``ttft_s`` is ``inf`` when the strategy cannot run.

    ``speedup`` is this row's TTFT over coldpipe's at the same value (so coldpipe is 1, a baseline
    at 2 is twice as slow, a bound is below 1).
    """

    axis: str
    value: str  # as given, e.g. "2x" or "llama-3.1-8b"
    x: float  # where it is plotted
    strategy: str  # "coldpipe", "optimal/<overlap>", "<partition>/<overlap>", "bound/<name>"
    kind: str  # "optimal" | "baseline" | "bound"
    partition: str  # "optimal", a baseline partition, or the bound's name
    overlap: str  # "layer" | "stage" | "none" | "" (bounds)
    ttft_s: float
    speedup: float
    hidden_load_share: float  # nan for bounds and infeasible rows
    plan: str
    note: str  # why a strategy cannot run


@dataclass(frozen=True)
class SweepResult:
    axis: str
    rows: tuple[SweepRow, ...]
    x_label: str
    log_x: bool

    def values(self) -> list[str]:
        return list(dict.fromkeys(r.value for r in self.rows))

    def at(self, value: str) -> dict[str, SweepRow]:
        """The rows of one value, by strategy."""
        return {r.strategy: r for r in self.rows if r.value == value}


def _multiplier(text: str) -> float | None:
    t = text.strip()
    body = t[:-1] if t.endswith("x") else t[1:] if t.startswith("x") else t
    try:
        return float(body)
    except ValueError:
        return None


def _catalog_dtype(scenario: Scenario) -> str | None:
    """The dtype with which the scenario's catalog model was expanded, or None if it is not one."""
    arch = CATALOG.get(scenario.model_name)
    if arch is None:
        return None
    wl = scenario.workload
    for dtype in DTYPE_BYTES:
        blocks = blocks_for(
            arch, prompt_tokens=wl.prompt_tokens, new_tokens=wl.new_tokens, dtype=dtype, token_bytes=wl.token_bytes
        )
        if blocks == scenario.blocks:
            return dtype
    return None


def x_of(axis: str, value: str) -> float:
    """Where ``value`` goes on the plot's x axis (multiplier, absolute value, count, parameters)."""
    if axis == "model":
        return CATALOG[value].n_params / 1e9
    if axis in _MULTIPLIER_AXES:
        m = _multiplier(value)
        return m if m is not None else parse_quantity(value, _MULTIPLIER_AXES[axis])
    return float(value)


def scenario_at(scenario: Scenario, axis: str, value: str) -> Scenario:
    """``scenario`` with ``axis`` set to ``value`` (see the module docstring); raises InputError if it cannot be."""
    if axis not in AXES:
        raise InputError("--axis", f"unknown axis {axis!r}", f"use one of {', '.join(AXES)}")
    field = f"--values ({axis})"
    if axis == "devices":
        try:
            k = int(value)
        except ValueError:
            raise InputError(field, f"{value!r} is not a number of devices", "write e.g. 1,2,4,8") from None
        if k < 1:
            raise InputError(field, f"needs at least 1 device, got {k}")
        base = scenario.devices
        devs = [base[i] if i < len(base) else replace(base[i % len(base)], name=_copy_name(base, i)) for i in range(k)]
        return scenario.replace(devices=devs)
    if axis in _MULTIPLIER_AXES:
        kind = _MULTIPLIER_AXES[axis]
        m = _multiplier(value)
        if m is None:
            try:
                absolute = parse_quantity(value, kind)
            except ValueError as exc:
                raise InputError(field, str(exc), "or a multiplier such as 2x") from None
        elif m < 0 or not math.isfinite(m):
            raise InputError(field, f"multiplier {value!r} must be finite and >= 0")

        def set_(d: Device, name: str) -> float:
            return getattr(d, name) * m if m is not None else absolute

        if axis == "uplink":
            devs = [replace(d, uplink=set_(d, "uplink"), downlink=set_(d, "downlink")) for d in scenario.devices]
        elif axis == "load_bandwidth":
            devs = [replace(d, load_bandwidth=set_(d, "load_bandwidth")) for d in scenario.devices]
        else:
            devs = [replace(d, startup=set_(d, "startup")) for d in scenario.devices]
        return scenario.replace(devices=devs)
    wl = scenario.workload
    dtype = _catalog_dtype(scenario)
    if axis == "model":
        if value not in CATALOG:
            raise InputError(field, f"unknown catalog model {value!r}", f"use one of {', '.join(sorted(CATALOG))}")
        blocks = blocks_for(
            CATALOG[value],
            prompt_tokens=wl.prompt_tokens,
            new_tokens=wl.new_tokens,
            dtype=dtype or "bfloat16",
            token_bytes=wl.token_bytes,
        )
        return scenario.replace(blocks=tuple(blocks), workload=wl, model_name=value)
    # prompt_tokens
    try:
        s = int(value)
    except ValueError:
        raise InputError(field, f"{value!r} is not a number of tokens", "write e.g. 128,512,2048") from None
    if s < 1:
        raise InputError(field, f"needs at least 1 prompt token, got {s}")
    if dtype is None:
        raise InputError(
            "--axis",
            f"prompt_tokens needs the model's architecture, but {scenario.model_name!r} is not a catalog model",
            "use a scenario with model: {catalog: NAME}",
        )
    default_prompt_bytes = wl.prompt_bytes_value == 4.0 * wl.prompt_tokens
    new_wl = Workload(s, wl.new_tokens, None if default_prompt_bytes else wl.prompt_bytes, wl.token_bytes)
    arch = CATALOG[scenario.model_name]
    blocks = blocks_for(arch, prompt_tokens=s, new_tokens=wl.new_tokens, dtype=dtype, token_bytes=wl.token_bytes)
    return scenario.replace(blocks=tuple(blocks), workload=new_wl)


def _copy_name(base: Sequence[Device], i: int) -> str:
    return f"{base[i % len(base)].name}-{i // len(base) + 1}"


def evaluate(scenario: Scenario) -> list[tuple[str, str, str, str, float, float, str, str]]:
    """(strategy, kind, partition, overlap, ttft_s, hidden_load_share, plan, note) of every strategy."""
    cmp = compare(scenario, strict=False)
    out: list[tuple[str, str, str, str, float, float, str, str]] = []
    for s in cmp.strategies():
        plan_text = str(s.plan) if s.plan is not None else ""
        note = s.note.split(";")[0] if s.kind == "baseline" else s.note
        out.append((s.name, s.kind, s.partition, s.overlap, s.ttft_s, s.hidden_load_share, plan_text, note))
    bd = cmp.bounds
    if bd is not None:
        bounds = [(STRATEGY_BOUNDS[0], bd.warm_s, ""), (STRATEGY_BOUNDS[1], bd.parallel_load_s, "")]
    else:  # no plan fits: no bound
        bounds = [(name, math.inf, cmp.notes["bounds"]) for name in STRATEGY_BOUNDS]
    for name, value, note in bounds:
        out.append((name, "bound", name.split("/")[1], "", value, math.nan, "", note))
    return out


def run_sweep(
    scenario: Scenario,
    axis: str,
    values: Sequence[str] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> SweepResult:
    """Plan and time every strategy at every value of ``axis`` (``values`` default: :data:`DEFAULT_VALUES`).

    ``on_step(value)`` is called after each value (for a progress bar).
    """
    if axis not in AXES:
        raise InputError("--axis", f"unknown axis {axis!r}", f"use one of {', '.join(AXES)}")
    values = list(values) if values else list(DEFAULT_VALUES[axis])
    if not values:
        raise InputError("--values", "no values given", "write e.g. --values 1,2,4")
    scenarios = [scenario_at(scenario, axis, v) for v in values]  # every value checked before any work
    xs = [x_of(axis, v) for v in values]
    multiplier_flags = {_multiplier(v) is not None for v in values} if axis in _MULTIPLIER_AXES else set()
    if len(multiplier_flags) > 1:
        raise InputError("--values", "mixes multipliers and absolute values", "give either 2x,4x or 1 GB/s,2 GB/s")
    rows: list[SweepRow] = []
    for value, x, sc in zip(values, xs, scenarios, strict=True):
        results = evaluate(sc)
        ref = results[0][4]
        for strategy, kind, part, ov, ttft, hidden, plan_text, note in results:
            if math.isfinite(ref):
                speedup = ttft / ref
            else:
                speedup = math.nan
            rows.append(SweepRow(axis, value, x, strategy, kind, part, ov, ttft, speedup, hidden, plan_text, note))
        if on_step is not None:
            on_step(value)
    if axis in _MULTIPLIER_AXES:
        is_mult = multiplier_flags == {True}
        x_label = f"{axis} (x the scenario's)" if is_mult else f"{axis} ({_ABSOLUTE_UNITS[axis]})"
    else:
        x_label = _X_LABELS[axis]
    positive = all(x > 0 for x in xs)
    log_x = positive and axis in ("uplink", "load_bandwidth", "model", "prompt_tokens") and max(xs) / min(xs) >= 8
    return SweepResult(axis, tuple(rows), x_label, log_x)


CSV_FIELDS = tuple(f.name for f in fields(SweepRow))


def write_csv(result: SweepResult, path: str | Path) -> Path:
    """One row per value x strategy; infinite TTFTs are written ``inf``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:  # whole or not at all
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in result.rows:
            d = asdict(row)
            for k in ("x", "ttft_s", "speedup", "hidden_load_share"):
                d[k] = repr(float(d[k]))  # full precision; inf / nan stay readable by float()
            writer.writerow(d)
    return p


def read_csv(path: str | Path) -> list[SweepRow]:
    """Inverse of :func:`write_csv`."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        out = []
        for d in csv.DictReader(fh):
            vals: dict[str, Any] = dict(d)
            for k in ("x", "ttft_s", "speedup", "hidden_load_share"):
                vals[k] = float(vals[k])
            out.append(SweepRow(**vals))
        return out


_PARTITION_COLORS = {
    "uniform": "#1f77b4",
    "memory": "#ff7f0e",
    "compute": "#2ca02c",
    "warm-optimal": "#9467bd",
    "single": "#8c564b",
}
_OVERLAP_STYLES = {"layer": "-", "stage": "--", "none": ":"}


def _finite(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


def _plain_ticks(axis: Any, decades: float) -> None:
    """Log-axis ticks written 0.1, 2, 30 instead of 10^-1, 2x10^0, 3x10^1 (minor ones only on short ranges)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    if decades <= 2.0:
        axis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if f"{v:g}"[0] in "235" else ""))
    else:
        axis.set_minor_formatter(NullFormatter())


def _decades(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    return math.log10(max(finite) / min(finite)) if finite else 0.0


def plot_sweep(result: SweepResult, out: str | Path | Sequence[str | Path], title: str | None = None) -> list[Path]:
    """Two panels: TTFT of every strategy (log y), and coldpipe's speedup over the best baselines."""
    paths = _mpl.check_paths(out, "--out")
    values = result.values()
    by_strategy: dict[str, list[float]] = {}
    xs: list[float] = []
    for v in values:
        at = result.at(v)
        # models are spread evenly (sizes cluster); every other axis is plotted at its value
        xs.append(float(len(xs)) if result.axis == "model" else next(iter(at.values())).x)
        for name, row in at.items():
            by_strategy.setdefault(name, []).append(row.ttft_s)
    fig = _mpl.new_figure(11.0, 5.6)
    ax_t, ax_s = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for name, ys in by_strategy.items():
        if name in STRATEGY_BOUNDS:
            continue
        if name == STRATEGY_OPTIMAL:
            style: dict[str, Any] = {"color": "black", "lw": 2.4, "marker": "o", "ms": 4, "zorder": 5}
        elif name.startswith("optimal/"):
            style = {"color": "black", "lw": 1.2, "ls": _OVERLAP_STYLES[name.split("/")[1]], "zorder": 4}
        else:
            part, ov = name.rsplit("/", 1)
            style = {"color": _PARTITION_COLORS.get(part, "grey"), "lw": 1.0, "ls": _OVERLAP_STYLES[ov], "alpha": 0.8}
        ax_t.plot(xs, _finite(ys), label=name, **style)
    bound = [max(a, b) for a, b in zip(*(by_strategy[n] for n in STRATEGY_BOUNDS), strict=True)]
    ax_t.fill_between(xs, 0, _finite(bound), color="#cccccc", alpha=0.5, label="below the lower bound", lw=0)
    ax_t.set_ylabel("TTFT (s)")
    all_ttfts = [t for ys in by_strategy.values() for t in ys]
    if any(math.isfinite(t) and t > 0 for t in all_ttfts):  # a sweep where nothing fits has nothing to scale
        ax_t.set_yscale("log")
        _plain_ticks(ax_t.yaxis, _decades(all_ttfts))

    # Right: how much coldpipe gains over the best baseline, the loading-unaware optimum, load-then-compute.
    baselines = [n for n in by_strategy if "/" in n and not n.startswith(("optimal/", "bound/"))]
    best = [min(by_strategy[n][i] for n in baselines) for i in range(len(xs))]
    ref = by_strategy[STRATEGY_OPTIMAL]
    for label, ys, style in (
        ("speedup vs best baseline", best, {"color": "black", "lw": 2.0, "marker": "o", "ms": 4}),
        ("speedup vs warm-optimal/layer", by_strategy.get("warm-optimal/layer", []), {"color": "#9467bd", "lw": 1.6}),
        (
            "speedup vs warm-optimal/none",
            by_strategy.get("warm-optimal/none", []),
            {"color": "#9467bd", "lw": 1.6, "ls": ":"},
        ),
        ("speedup vs optimal/none (load-then-compute)", by_strategy["optimal/none"], {"color": "grey", "lw": 1.6}),
    ):
        if ys:
            ax_s.plot(xs, _finite([y / r if math.isfinite(r) else math.nan for y, r in zip(ys, ref, strict=True)]),
                      label=label, **style)  # fmt: skip
    ax_s.axhline(1.0, color="#999999", lw=0.8)
    ax_s.set_ylabel("speedup of coldpipe (their TTFT / coldpipe's)")
    handles, labels = ax_t.get_legend_handles_labels()
    more_handles, more_labels = ax_s.get_legend_handles_labels()
    fig.legend(
        handles + more_handles, labels + more_labels, loc="outside lower center", ncol=5, fontsize=6.5, frameon=False
    )
    for ax in (ax_t, ax_s):
        ax.set_xlabel(result.x_label)
        if result.log_x and result.axis != "model":
            ax.set_xscale("log")
            _plain_ticks(ax.xaxis, _decades(xs))
        ax.grid(color="#eeeeee", lw=0.6)
        if result.axis == "model":
            ax.set_xticks(xs, values, rotation=30, ha="right", fontsize=7)
            ax.minorticks_off()
    fig.suptitle(title or f"sweep over {result.axis}", fontsize=10, x=0.01, ha="left")
    return _mpl.save(fig, paths)


@dataclass(frozen=True)
class PaperSweep:
    """One sweep of the default evaluation: ``axis`` over its default values, after ``base`` is applied."""

    name: str  # file stem: sweep_<name>.csv / .png / .svg
    axis: str
    base: tuple[tuple[str, str], ...] = ()  # (axis, value) pairs applied to the scenario first
    caption: str = ""


PAPER_SWEEPS: tuple[PaperSweep, ...] = (
    *(PaperSweep(axis, axis, (), f"the bundled scenario, {axis} varied") for axis in AXES),
    PaperSweep(
        "load_bandwidth-no-startup",
        "load_bandwidth",
        (("startup", "0x"),),
        "start-up times set to 0, load bandwidth varied: at the top, loading is free",
    ),
    PaperSweep(
        "devices-llama-3.2-1b",
        "devices",
        (("model", "llama-3.2-1b"),),
        "a 1B model that one device holds, number of devices varied",
    ),
)


def paper_plan(scenario: Scenario) -> list[tuple[PaperSweep, Scenario, list[str]]]:
    """Every sweep of the default evaluation with its base scenario and values (nothing run yet)."""
    out = []
    for ps in PAPER_SWEEPS:
        sc = scenario
        for axis, value in ps.base:
            sc = scenario_at(sc, axis, value)
        out.append((ps, sc, list(DEFAULT_VALUES[ps.axis])))
    return out


def run_paper(
    scenario: Scenario, out_dir: str | Path, on_step: Callable[[str], None] | None = None
) -> dict[str, SweepResult]:
    """Run :data:`PAPER_SWEEPS` on ``scenario``; write ``sweep_<name>.csv/.png/.svg`` to ``out_dir``.

    Also draws the scenario's own schedules, on one time axis: ``gantt_coldpipe``, ``gantt_best-baseline``
    and ``gantt_load-then-compute`` (the exact optimum under overlap ``none``), each .png and .svg.
    """
    out = Path(out_dir)
    write_paper_gantts(scenario, out)
    results = {}
    for ps, sc, values in paper_plan(scenario):
        res = run_sweep(sc, ps.axis, values, on_step)
        write_csv(res, out / f"sweep_{ps.name}.csv")
        plot_sweep(res, [out / f"sweep_{ps.name}.png", out / f"sweep_{ps.name}.svg"], title=ps.caption)
        results[ps.name] = res
    return results


def write_paper_gantts(scenario: Scenario, out_dir: str | Path) -> list[Path]:
    """The Gantt charts of :func:`run_paper`: coldpipe, the best baseline, the best load-then-compute plan."""
    from coldpipe.units import format_seconds
    from coldpipe.viz.gantt import draw_gantt

    strategies = compare(scenario).strategies()
    by_name = {s.name: s for s in strategies}
    baselines = [s for s in strategies if s.kind == "baseline" and s.timeline is not None]
    chosen = [("coldpipe", by_name["coldpipe"]), ("load-then-compute", by_name["optimal/none"])]
    if baselines:
        chosen.insert(1, ("best-baseline", min(baselines, key=lambda s: s.ttft_s)))
    t_max = 1.04 * max(s.ttft_s for _role, s in chosen)
    written: list[Path] = []
    for role, s in chosen:
        assert s.timeline is not None
        paths = [Path(out_dir) / f"gantt_{role}.png", Path(out_dir) / f"gantt_{role}.svg"]
        title = f"{s.name}: {s.timeline.plan}, TTFT {format_seconds(s.ttft_s)}"
        written += draw_gantt(s.timeline, paths, t_max_s=t_max, title=title).paths
    return written
