"""``coldpipe testbed up|down``: a kernel-enforced testbed of a scenario on this host (docs/cluster.md#testbed)."""

from __future__ import annotations

from typing import Annotated

import typer

from coldpipe.cli._common import console, scenario_arg

testbed_app = typer.Typer(help="Namespaces + tc + cgroups per device, an agent in each (root).", no_args_is_help=True)


@testbed_app.command("up")
def up_command(
    scenario: Annotated[str, typer.Argument(help="Scenario whose devices set the limits (nothing else is read).")],
    checkpoint: Annotated[str, typer.Option(help="Checkpoint copied to every device.")],
    token_file: Annotated[str, typer.Option(help="The join token the agents are started with.")],
    cluster_out: Annotated[str, typer.Option(help="Where to write the cluster file of the agents.")],
    name: Annotated[str, typer.Option(help="Testbed name (1-5 lower-case letters/digits).")] = "tb",
    relay: Annotated[
        bool, typer.Option(help="The AP stores and forwards device-to-device messages whole (the model's channel).")
    ] = True,
) -> None:
    """Create the testbed and start one agent per device; the coordinator reaches them through the AP."""
    from coldpipe.testbed import up

    sc = scenario_arg(scenario)
    state = up(
        sc, checkpoint, token_file, cluster_out, name=name, relay=relay, say=lambda m: console.print(f"[dim]{m}[/dim]")
    )
    console.print(f"testbed {name} up: {len(state['agents'])} agents; cluster file {cluster_out}")


@testbed_app.command("down")
def down_command(name: Annotated[str, typer.Option(help="Testbed name.")] = "tb") -> None:
    """Stop the agents and remove every namespace, veth, cgroup and file of the testbed (idempotent)."""
    from coldpipe.testbed import down

    removed = down(name)
    console.print(f"testbed {name} down" + (f": removed {', '.join(removed)}" if removed else ": nothing was left"))


def register(app: typer.Typer) -> None:
    app.add_typer(testbed_app, name="testbed")
