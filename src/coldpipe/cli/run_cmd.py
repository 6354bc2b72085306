"""``coldpipe run``, ``coldpipe make-checkpoint``, ``coldpipe profile-host``: the real runtime (docs/runtime.md).

torch and transformers are imported inside the commands only, so the other commands start fast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from coldpipe.atomic import write_text_atomic
from coldpipe.cli._common import (
    JsonFlag,
    QuietFlag,
    console,
    note,
    overlap_arg,
    phase,
    print_json,
    read_json_arg,
    read_plan_file,
    scenario_arg,
    with_mechanisms,
)
from coldpipe.cli.measured import print_measured
from coldpipe.core.simulator import simulate
from coldpipe.core.types import OVERLAPS, Overlap, Plan, Scenario
from coldpipe.errors import InputError
from coldpipe.planning import Problem
from coldpipe.planning import plan as plan_scenario
from coldpipe.planning.baselines import PARTITIONS, partition, single_device_plans
from coldpipe.units import format_bytes, format_seconds, parse_quantity


def resolve_plan(spec: str, scenario: Scenario, overlap: str | None) -> tuple[Plan, Overlap]:
    """``optimal[/MODE]``, ``PARTITION/MODE`` or ``PARTITION-MODE``, a plan JSON file, or ``dev[a-b] > ...``."""
    ov_given = overlap
    if spec == "optimal" or spec.startswith("optimal/") or spec.startswith("optimal-"):
        ov = spec[len("optimal") + 1 :] or ov_given or "layer"
        if ov not in OVERLAPS:
            raise InputError("--plan", f"unknown overlap {ov!r}", f"use optimal/{'|'.join(OVERLAPS)}")
        return plan_scenario(Problem(scenario, ov)).plan, ov  # type: ignore[arg-type]
    for sep in ("/", "-"):
        name, _, ov = spec.rpartition(sep)
        if name in PARTITIONS and ov in OVERLAPS:
            if name == "single":
                plans = single_device_plans(scenario)
                if not plans:
                    raise InputError("--plan", "no single device holds the whole model", "pick another partition")
                best = min(plans, key=lambda p: simulate(scenario, p, ov).ttft_s)  # type: ignore[arg-type]
                return best, ov  # type: ignore[return-value]
            return partition(name, scenario), ov  # type: ignore[return-value]
    if "[" in spec and Path(spec).suffix not in (".json", ".yaml", ".yml"):
        return Plan.parse(spec), overlap_arg(ov_given or "layer")
    if Path(spec).is_file():
        the_plan, data = read_plan_file(spec, "--plan", scenario)
        return the_plan, overlap_arg(ov_given or str(data.get("overlap", "layer")))
    raise InputError(
        "--plan",
        f"cannot read {spec!r}",
        f"use optimal, optimal/MODE, PARTITION/MODE (partitions {', '.join(PARTITIONS)}; modes "
        f"{', '.join(OVERLAPS)}), a plan JSON file, or 'dev[0-9] > dev2[10-33]'",
    )


def check_scenario_matches(scenario: Scenario, n_blocks: int, where: str = "--scenario") -> None:
    if scenario.n_blocks != n_blocks:
        raise InputError(
            where,
            f"the scenario's model has {scenario.n_blocks} blocks but the checkpoint has {n_blocks}",
            "derive the scenario's model from the checkpoint: model: {hf_config: CHECKPOINT/config.json, dtype: ...}",
        )


def run_command(
    scenario: Annotated[
        str | None,
        typer.Argument(metavar="SCENARIO", help="Scenario file whose model matches the checkpoint."),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option(metavar="DIR", help="HF model directory (config.json + safetensors).")
    ] = None,
    scenario_option: Annotated[
        str | None, typer.Option("--scenario", hidden=True, help="Deprecated: give SCENARIO positionally.")
    ] = None,
    plan: Annotated[
        str,
        typer.Option(
            help="optimal | optimal/MODE | PARTITION/MODE (e.g. uniform/none) | PLAN.json | 'a[0-3] > b[4-9]'"
        ),
    ] = "optimal",
    overlap: Annotated[str | None, typer.Option(help="Overlap for a plan file or plan string (default layer).")] = None,
    local: Annotated[bool, typer.Option("--local", help="Start every rank on this host (127.0.0.1).")] = False,
    host_profile: Annotated[
        str | None, typer.Option(help="JSON from `coldpipe profile-host`: enables the compute slowdown.")
    ] = None,
    emulate: Annotated[
        bool,
        typer.Option(help="Emulate the scenario's start-ups, read rates, links (and slowdowns with --host-profile)."),
    ] = True,
    cold: Annotated[bool, typer.Option(help="Drop the checkpoint from the page cache before the request.")] = True,
    sparse_embedding: Annotated[
        bool, typer.Option(help="Block 0 reads only the prompt's embedding rows (the scenario should say so).")
    ] = False,
    new_tokens: Annotated[int | None, typer.Option(help="Tokens to generate (default: the scenario's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random prompt.")] = 0,
    timeout: Annotated[float, typer.Option(help="Seconds any rendezvous or transfer may wait before failing.")] = 30.0,
    threads: Annotated[int, typer.Option(help="torch threads per rank.")] = 1,
    compute_clock: Annotated[
        str, typer.Option(help="Host time a block's slowdown stretches: cpu (thread CPU time) | wall.")
    ] = "cpu",
    trace: Annotated[
        str, typer.Option("--trace", "-o", help="Where to write the Chrome/Perfetto trace JSON.")
    ] = "out/trace.json",
    write_spec: Annotated[
        str | None, typer.Option(help="Only write the run spec here (to start the ranks with torchrun) and exit.")
    ] = None,
    json_out: JsonFlag = False,
    quiet: QuietFlag = False,
    mechanisms: Annotated[
        str, typer.Option(help="Cold-start mechanisms beyond the paper's model: all | comma-separated names.")
    ] = "",
) -> None:
    """Run a plan for real: one process per stage, loading while computing; measured vs predicted TTFT."""
    if scenario is not None and scenario_option is not None:
        raise InputError("--scenario", "SCENARIO is given twice", "give it once, positionally: coldpipe run SCENARIO")
    if scenario_option is not None:
        note("--scenario is deprecated; write `coldpipe run SCENARIO ...`")
        scenario = scenario_option
    if scenario is None:
        raise InputError("SCENARIO", "is missing", "coldpipe run SCENARIO --checkpoint DIR --local")
    if checkpoint is None:
        raise InputError("--checkpoint", "is missing", "give the checkpoint directory (coldpipe make-checkpoint)")
    if not local and write_spec is None:
        raise InputError(
            "--local",
            "only local runs are started by `coldpipe run`",
            "pass --local, or --write-spec FILE and start the ranks with torchrun (docs/runtime.md)",
        )
    if not (0 < timeout < math.inf):  # nan too
        raise InputError("--timeout", f"must be a finite number of seconds > 0, got {timeout}")
    if threads < 1:
        raise InputError("--threads", f"must be >= 1, got {threads}")
    if compute_clock not in ("cpu", "wall"):
        raise InputError("--compute-clock", f"unknown clock {compute_clock!r}", "use cpu or wall")
    if compute_clock == "cpu" and threads > 1:
        raise InputError(
            "--compute-clock", "cpu counts the calling thread only", "use --threads 1, or --compute-clock wall"
        )
    from coldpipe.runtime.checkpoint import open_checkpoint
    from coldpipe.runtime.emulation import emulation_for
    from coldpipe.runtime.job import Job
    from coldpipe.runtime.launch import prompt_ids, run_local
    from coldpipe.runtime.profile_host import HostProfile
    from coldpipe.runtime.report import build_report

    with phase("reading the scenario and the checkpoint, planning"):
        sc = with_mechanisms(scenario_arg(scenario), mechanisms)
        ckpt = open_checkpoint(checkpoint)
        check_scenario_matches(sc, ckpt.n_blocks, "SCENARIO")
        the_plan, ov = resolve_plan(plan, sc, overlap)
        the_plan.validate(sc)
    from coldpipe.runtime.stream import unsupported

    why = unsupported(sc.planned(), the_plan)
    if why is not None:  # docs/model.md#streamed-weights: what the local runtime emulates
        raise InputError("--mechanisms", f"streamed-weights: {why}", "give the streaming devices weights: ap")
    sparse_embedding = sparse_embedding or "sparse-embedding" in sc.mechanisms
    host_flops = None
    if host_profile is not None:
        host_flops = HostProfile.from_dict(read_json_arg(host_profile, "--host-profile")).host_flops
    n_requests = sc.workload.requests
    n_new = new_tokens if new_tokens is not None else sc.workload.new_tokens
    if n_new < 1:
        raise InputError("--new-tokens", f"must be >= 1, got {n_new}")
    vocab = int(ckpt.config["vocab_size"])
    ids = prompt_ids(sc.workload.prompt_tokens, vocab, seed)
    burst = tuple(prompt_ids(sc.workload.prompt_tokens, vocab, seed + r) for r in range(1, n_requests))
    job = Job(
        the_plan,
        ov,
        ids,
        n_new,
        tuple(emulation_for(sc, the_plan, host_flops, enabled=emulate, compute_clock=compute_clock)),
        links=emulate,
        sparse_embedding=sparse_embedding,
        sublayer="sublayer" in sc.mechanisms,
        burst=burst,
        sharing=sc.network.sharing if "streamed-weights" in sc.mechanisms else "none",
    )
    if write_spec is not None:
        from coldpipe.runtime.launch import make_spec

        spec = make_spec(checkpoint, sc, [job], timeout_s=timeout, threads=threads, cold_cache=cold)
        write_text_atomic(write_spec, json.dumps(spec))
        console.print(
            f"wrote {write_spec}; start {len(the_plan.stages) + 1} ranks (rank 0 = the source), e.g.\n"
            f"  torchrun --nproc-per-node {len(the_plan.stages) + 1} -m coldpipe.runtime.worker --spec {write_spec} "
            "--result result.json"
        )
        return
    with phase(f"running {len(the_plan.stages) + 1} ranks: start-up, loading while computing, {n_new} token(s)"):
        (result,) = run_local(checkpoint, sc, [job], timeout_s=timeout, threads=threads, cold_cache=cold)
    report = build_report(result, sc, the_plan, ov)
    trace_path = Path(trace)
    # the measured results first: a trace that cannot be written (a full disk) must not lose them
    if json_out:
        print_json({**report.to_dict(), "plan": str(the_plan), "overlap": ov, "trace": str(trace_path)})
    else:
        if quiet:
            m, p = format_seconds(report.measured_ttft_s), format_seconds(report.predicted_ttft_s)
            console.print(f"TTFT measured {m}, predicted {p} (ratio {report.ratio:.3f}); trace: {trace_path}")
        else:
            print_measured(report, the_plan, ov, trace_path=trace_path)
    write_text_atomic(trace_path, json.dumps(report.trace))  # whole or not at all


def make_checkpoint_command(
    config: Annotated[str, typer.Option(help="A catalog model (see `coldpipe plan --help`) or a config.json path.")],
    out: Annotated[
        str, typer.Option("--out", "-o", metavar="DIR", help="Directory to write config.json + safetensors into.")
    ],
    layers: Annotated[int | None, typer.Option(help="Override the number of decoder layers.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Override the hidden size (heads follow).")] = None,
    intermediate: Annotated[int | None, typer.Option(help="Override the MLP width.")] = None,
    heads: Annotated[int | None, typer.Option(help="Override the attention heads.")] = None,
    kv_heads: Annotated[int | None, typer.Option(help="Override the KV heads.")] = None,
    vocab: Annotated[int | None, typer.Option(help="Override the vocabulary size.")] = None,
    dtype: Annotated[str, typer.Option(help="float32 | float16 | bfloat16.")] = "float32",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    init_std: Annotated[float, typer.Option(help="Std of the random weights.")] = 0.02,
    shard_size: Annotated[str, typer.Option(help="Largest shard, e.g. 512MB (more -> index.json).")] = "2GB",
    tokenizer: Annotated[
        bool, typer.Option(help="Also write a byte-level BPE tokenizer trained on a bundled text (vocab >= 269).")
    ] = True,
) -> None:
    """Write a random-initialised HF checkpoint of a catalog model or a config.json (to run, test, benchmark)."""
    from coldpipe.runtime.checkpoint import arch_for, make_checkpoint, open_checkpoint
    from coldpipe.runtime.tokenizer import MIN_VOCAB, write_tokenizer

    if dtype not in ("float32", "float16", "bfloat16"):
        raise InputError("--dtype", f"unknown dtype {dtype!r}", "use float32, float16 or bfloat16")
    for name, v in (
        ("--layers", layers),
        ("--hidden", hidden),
        ("--intermediate", intermediate),
        ("--heads", heads),
        ("--kv-heads", kv_heads),
        ("--vocab", vocab),
    ):
        if v is not None and v < 1:
            raise InputError(name, f"must be >= 1, got {v}")
    if not (0 < init_std < math.inf):  # nan too
        raise InputError("--init-std", f"must be a finite number > 0, got {init_std}")
    shard_bytes = parse_quantity(shard_size, "bytes")
    arch = arch_for(
        config, layers=layers, hidden=hidden, vocab=vocab, intermediate=intermediate, heads=heads, kv_heads=kv_heads
    )
    path = make_checkpoint(arch, out, dtype=dtype, seed=seed, shard_bytes=shard_bytes, init_std=init_std)
    ck = open_checkpoint(path)
    total = sum(ck.block_bytes(b) for b in range(ck.n_blocks))
    if not tokenizer:
        tok_note = "no tokenizer (--no-tokenizer)"
    elif arch.vocab_size < MIN_VOCAB:
        tok_note = f"no tokenizer (a byte-level one needs --vocab >= {MIN_VOCAB})"
    else:
        tok_note = f"tokenizer of {write_tokenizer(path, arch.vocab_size)} ids"
    console.print(
        f"wrote {path}: {arch.model_type}, {arch.num_hidden_layers} layers, hidden {arch.hidden_size}, vocab "
        f"{arch.vocab_size}, {dtype}; {ck.n_blocks} blocks, {format_bytes(total)} read by a full load, "
        f"{len(ck.files)} file(s); {tok_note}"
    )


def profile_host_command(
    checkpoint: Annotated[str, typer.Option(help="HF model directory to profile.")],
    prompt_tokens: Annotated[
        int | None, typer.Option(help="Prompt length of the prefill passes (default: --calibrate's, else 128).")
    ] = None,
    reps: Annotated[int, typer.Option(help="Timed passes (median per block).")] = 5,
    threads: Annotated[int, typer.Option(help="torch threads (the runtime uses 1 per rank by default).")] = 1,
    clock: Annotated[str, typer.Option(help="Time blocks by cpu (thread CPU time, needs 1 thread) or wall.")] = "cpu",
    gap: Annotated[
        float | None,
        typer.Option(
            help="Seconds idle after each timed block, as an emulated device's sleeps (default: with --calibrate, "
            "the median idle of the scenario's devices, from a first back-to-back pass; else 0.25)."
        ),
    ] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Write the profile JSON here.")] = None,
    calibrate: Annotated[
        str | None,
        typer.Option(metavar="SCENARIO", help="A scenario of this checkpoint whose blocks to calibrate to this host."),
    ] = None,
    scenario_out: Annotated[
        str | None, typer.Option(help="Where to write the calibrated scenario (JSON, explicit blocks).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", "-j", help="Print the profile as JSON.")] = False,
) -> None:
    """Measure this host's per-block prefill time and read rate (for the emulated cluster of `coldpipe run`).

    With --calibrate S --scenario-out S2, S2 is S with each block's FLOPs replaced by its measured time on this
    host times the host's FLOP/s: `coldpipe run S2 --host-profile PROFILE` then predicts what the
    emulated devices really do.
    """
    from coldpipe.runtime.checkpoint import open_checkpoint
    from coldpipe.runtime.profile_host import DEFAULT_GAP_S, calibrated_blocks, emulated_gap_s, profile_host

    if (calibrate is None) != (scenario_out is None):
        raise InputError("--calibrate/--scenario-out", "give both or neither")
    sc = None
    if calibrate is not None:
        sc = scenario_arg(calibrate)
        check_scenario_matches(sc, open_checkpoint(checkpoint).n_blocks, "--calibrate")
        if prompt_tokens is not None and prompt_tokens != sc.workload.prompt_tokens:
            raise InputError(
                "--prompt-tokens",
                f"{prompt_tokens} differs from the scenario's {sc.workload.prompt_tokens}",
                "omit it to profile the scenario's prompt length",
            )
        prompt_tokens = sc.workload.prompt_tokens
    n_tokens = 128 if prompt_tokens is None else prompt_tokens
    if n_tokens < 1 or reps < 1 or threads < 1:
        raise InputError("--prompt-tokens/--reps/--threads", "must all be >= 1")
    if clock not in ("cpu", "wall"):
        raise InputError("--clock", f"unknown clock {clock!r}", "use cpu or wall")
    if clock == "cpu" and threads > 1:
        raise InputError("--clock", "cpu counts the calling thread only", "use --threads 1, or --clock wall")
    if gap is not None and not (0 <= gap < math.inf):  # nan too
        raise InputError("--gap", f"must be a finite number of seconds >= 0, got {gap}")
    if gap is None and sc is not None:  # idle as the scenario's emulated devices will: needs the host's speed first
        first = profile_host(checkpoint, n_tokens, reps=1, threads=threads, clock=clock, gap_s=0.0)
        gap = emulated_gap_s([d.flops for d in sc.devices], first.block_s, first.host_flops)
    prof = profile_host(
        checkpoint, n_tokens, reps=reps, threads=threads, clock=clock, gap_s=DEFAULT_GAP_S if gap is None else gap
    )
    if out:
        write_text_atomic(out, json.dumps(prof.to_dict(), indent=2) + "\n")
    if sc is not None and scenario_out is not None:
        calibrated = sc.replace(blocks=tuple(calibrated_blocks(sc.blocks, prof)))
        write_text_atomic(scenario_out, json.dumps(calibrated.to_dict(), indent=1) + "\n")
    if json_out:
        print_json(prof.to_dict())
        return
    console.print(
        f"host: {prof.host_flops / 1e9:.2f} GFLOP/s over {len(prof.block_s)} blocks (prefill of {n_tokens} "
        f"tokens, {threads} thread(s), {format_seconds(prof.gap_s)} idle after each block); "
        f"per block {', '.join(format_seconds(s) for s in prof.block_s[:6])}"
        f"{' ...' if len(prof.block_s) > 6 else ''}; read {format_bytes(prof.read_cold_bytes_per_s)}/s cold, "
        f"{format_bytes(prof.read_warm_bytes_per_s)}/s warm"
        + (f"; wrote {out}" if out else "")
        + (f"; calibrated scenario {scenario_out}" if scenario_out else "")
    )


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("make-checkpoint")(make_checkpoint_command)
    app.command("profile-host")(profile_host_command)
