"""``coldpipe cluster status|plan|run [CLUSTER] [--discover]``: the coordinator of a cluster (docs/cluster.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coldpipe.atomic import write_text_atomic
from coldpipe.cli._common import console, err_console, print_json
from coldpipe.errors import InputError
from coldpipe.units import parse_quantity

cluster_app = typer.Typer(help="Coordinate agents on real devices: status, plan, run.", no_args_is_help=True)

ClusterArg = Annotated[
    str | None,
    typer.Argument(
        help="Cluster file: agents: [{name, address[, relay]}] and/or discover: true. Optional with --discover."
    ),
]
TokenOpt = Annotated[str, typer.Option(help="The join token (mode 600), the agents' one.")]
DiscoverOpt = Annotated[
    bool, typer.Option("--discover", help="Also find this token's agents by mDNS (agents run with --advertise).")
]
DiscoverTimeoutOpt = Annotated[
    float | None,
    typer.Option("--discover-timeout", help="Seconds of mDNS browsing (default: the file's discover_timeout_s, or 2)."),
]


def _coordinator(cluster: str | None, token_file: str, discover: bool = False, timeout_s: float | None = None) -> Any:
    from coldpipe.cluster.coordinator import Coordinator, load_cluster
    from coldpipe.cluster.token import read_token
    from coldpipe.cluster.transport import Keys

    if cluster is None and not discover:
        raise InputError("CLUSTER", "no cluster file given", "name one, or pass --discover to find the agents by mDNS")
    if timeout_s is not None and not timeout_s > 0:
        raise InputError("--discover-timeout", f"must be > 0 seconds, got {timeout_s:g}")
    keys = Keys(read_token(token_file))
    return Coordinator(keys, load_cluster(cluster, keys, discover=discover, discover_timeout_s=timeout_s))


QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress lines on stderr; only the headline figures.")
]
CheckpointOpt = Annotated[str, typer.Option(help="The checkpoint (the same files as the agents').")]
PlanOpt = Annotated[str, typer.Option(help="optimal | optimal/MODE | PARTITION/MODE | PLAN.json")]
PromptTokensOpt = Annotated[int, typer.Option(help="Prompt length of the request.")]
NewTokensOpt = Annotated[int, typer.Option(help="Tokens to generate.")]
LinkSizeOpt = Annotated[str, typer.Option(help="Bytes sent each way per link measurement.")]
ScenarioOutOpt = Annotated[str | None, typer.Option(help="Write the measured scenario (JSON) here.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _say(quiet: bool) -> Any:
    """Progress of the long steps, one line each on stderr (stdout stays the result); nothing when quiet."""
    if quiet:
        return lambda _msg: None
    return lambda msg: err_console.print(f"[dim]{msg}[/dim]", soft_wrap=True, highlight=False)


@cluster_app.command("status")
def status_command(
    token_file: TokenOpt,
    cluster: ClusterArg = None,
    json_out: JsonOpt = False,
    discover: DiscoverOpt = False,
    discover_timeout: DiscoverTimeoutOpt = None,
) -> None:
    """Each agent: reachable, what it holds resident, round trip and clock offset."""
    with _coordinator(cluster, token_file, discover, discover_timeout) as co:
        rows = co.status()
    if json_out:
        print_json({"agents": rows})
        return
    title = (f"cluster {cluster}" if cluster else "cluster") + (" + mDNS discovery" if discover else "")
    t = Table(title=title, title_justify="left")
    for col in ("agent", "address", "state", "resident blocks", "rtt", "clock offset"):
        t.add_column(col)
    for r in rows:
        if r["reachable"]:
            t.add_row(
                r["name"],
                r["address"],
                "busy" if r["busy"] else "idle",
                str(len(r["resident"])),
                f"{r['rtt_s'] * 1e3:.2f} ms",
                f"{r['clock_offset_s'] * 1e3:+.2f} ms",
            )
        else:
            t.add_row(r["name"], r["address"], "[red]unreachable[/red]", "", "", r["error"][:60])
    console.print(t)


def _measured_scenario(
    co: Any, checkpoint: str, prompt_tokens: int, new_tokens: int, link_size: str, quiet: bool
) -> tuple[Any, Any, str, dict[str, Any]]:
    from coldpipe.cluster.measure import fingerprint
    from coldpipe.core.types import Workload
    from coldpipe.runtime.checkpoint import open_checkpoint

    if prompt_tokens < 1 or new_tokens < 1:
        raise InputError("--prompt-tokens/--new-tokens", "must be >= 1")
    ckpt = open_checkpoint(checkpoint)
    fp = fingerprint(ckpt)
    link_bytes = int(parse_quantity(link_size, "bytes"))
    sc, measured = co.measured_scenario(
        checkpoint, fp, ckpt.dtype, Workload(prompt_tokens, new_tokens), link_bytes=link_bytes, progress=_say(quiet)
    )
    return sc, ckpt, fp, measured


def _write(path: str | None, sc: Any) -> None:
    if path:
        write_text_atomic(path, json.dumps(sc.to_dict(), indent=1) + "\n")  # whole or not at all


@cluster_app.command("plan")
def plan_command(
    checkpoint: CheckpointOpt,
    token_file: TokenOpt,
    cluster: ClusterArg = None,
    plan: PlanOpt = "optimal",
    prompt_tokens: PromptTokensOpt = 128,
    new_tokens: NewTokensOpt = 1,
    link_size: LinkSizeOpt = "4 MiB",
    scenario_out: ScenarioOutOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    discover: DiscoverOpt = False,
    discover_timeout: DiscoverTimeoutOpt = None,
) -> None:
    """Measure every agent and its links, build the scenario from the measurements, and plan."""
    from coldpipe.cli.run_cmd import resolve_plan
    from coldpipe.core.simulator import simulate

    with _coordinator(cluster, token_file, discover, discover_timeout) as co:
        co.check_discovered()
        sc, _ckpt, _fp, measured = _measured_scenario(
            co, checkpoint, prompt_tokens, new_tokens, link_size, quiet or json_out
        )
    _write(scenario_out, sc)
    the_plan, ov = resolve_plan(plan, sc, None)
    tl = simulate(sc, the_plan, ov)
    if json_out:
        print_json(
            {
                "plan": the_plan.to_dict(),
                "plan_text": str(the_plan),
                "overlap": ov,
                "predicted_ttft": tl.ttft_s,
                "scenario": sc.to_dict(),
                "measurements": measured,
            }
        )
        return
    if not quiet:
        _print_devices(sc)
    console.print(f"plan {the_plan} (overlap {ov}): predicted TTFT {tl.ttft_s:.3f} s")


def _print_devices(sc: Any) -> None:
    t = Table(title="measured devices", title_justify="left")
    for col in ("device", "GFLOP/s", "read MB/s", "memory MB", "up Mbit/s", "down Mbit/s", "startup ms"):
        t.add_column(col, justify="right")
    for d in sc.devices:
        t.add_row(
            d.name,
            f"{d.flops / 1e9:.2f}",
            f"{d.load_bandwidth / 1e6:.1f}",
            f"{d.memory / 1e6:.0f}",
            f"{d.uplink / 1e6:.1f}",
            f"{d.downlink / 1e6:.1f}",
            f"{d.startup * 1e3:.1f}",
        )
    console.print(t)


@cluster_app.command("run")
def run_command(
    checkpoint: CheckpointOpt,
    token_file: TokenOpt,
    cluster: ClusterArg = None,
    plan: PlanOpt = "optimal",
    prompt_tokens: PromptTokensOpt = 128,
    new_tokens: NewTokensOpt = 1,
    link_size: LinkSizeOpt = "4 MiB",
    scenario: Annotated[
        str | None, typer.Option(help="Reuse a scenario written by `cluster plan` (no measuring).")
    ] = None,
    scenario_out: ScenarioOutOpt = None,
    cold: Annotated[bool, typer.Option(help="Agents drop their checkpoint from the page cache first.")] = True,
    drop: Annotated[bool, typer.Option(help="Agents drop resident blocks before the run (a cold start).")] = True,
    recover: Annotated[bool, typer.Option(help="When an agent is lost, re-plan over the survivors.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the random prompt.")] = 0,
    trace: Annotated[str, typer.Option(help="Chrome/Perfetto trace JSON.")] = "out/cluster-trace.json",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    discover: DiscoverOpt = False,
    discover_timeout: DiscoverTimeoutOpt = None,
) -> None:
    """Measure, plan and run one request on the agents; measured vs predicted TTFT on this clock."""
    from coldpipe.cli.measured import print_measured
    from coldpipe.cli.run_cmd import resolve_plan
    from coldpipe.cluster.run import run_request
    from coldpipe.runtime.launch import prompt_ids

    with _coordinator(cluster, token_file, discover, discover_timeout) as co:
        co.check_discovered()
        if drop:
            for ch in co.ch.values():
                ch.request("drop", 5.0)
        if scenario is not None:
            from coldpipe.cli._common import scenario_arg
            from coldpipe.cluster.measure import fingerprint
            from coldpipe.runtime.checkpoint import open_checkpoint

            sc = scenario_arg(scenario)
            ckpt = open_checkpoint(checkpoint)
            fp = fingerprint(ckpt)
        else:
            sc, ckpt, fp, _m = _measured_scenario(
                co, checkpoint, prompt_tokens, new_tokens, link_size, quiet or json_out
            )
        _write(scenario_out, sc)
        the_plan, ov = resolve_plan(plan, sc, None)
        ids = prompt_ids(sc.workload.prompt_tokens, int(ckpt.config["vocab_size"]), seed)
        say = _say(quiet or json_out)
        say(f"running plan {the_plan} (overlap {ov})")
        out = run_request(
            co, sc, the_plan, ov, ids, fp, new_tokens=sc.workload.new_tokens, cold=cold, recover=recover, on_event=say
        )
    report = out["report"]
    trace_path = Path(trace)
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    trace_path.write_text(json.dumps(report.trace))
    if json_out:
        print_json({k: v for k, v in out.items() if k not in ("report", "plan_obj")} | {"trace": str(trace_path)})
        return
    if quiet:
        console.print(
            f"TTFT measured {out['measured_ttft']:.3f} s, predicted {out['predicted_ttft']:.3f} s; trace: {trace_path}"
        )
    else:
        print_measured(report, out["plan_obj"], out["overlap"], trace_path=trace_path)
    if out.get("recovery"):
        r = out["recovery"]
        console.print(
            f"recovery: lost {r['lost']} at {r['lost_at_s']:.2f} s; re-planned {r['plan']}; tail "
            f"measured {r['measured_tail_s']:.3f} s / predicted {r['predicted_tail_s']:.3f} s"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
