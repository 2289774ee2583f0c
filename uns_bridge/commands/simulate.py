"""The ``simulate`` command: a fleet of Sparkplug B edge nodes on a broker.

Exit codes: 0 ran to the end (or stopped by Ctrl-C/SIGTERM), 1 the broker could not be reached,
2 usage error (bad option, unknown fault).
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from uns_bridge.capture.live import DEFAULT_URL, parse_mqtt_url
from uns_bridge.simulator.fleet import FAULTS, FaultError, parse_faults

console = Console(stderr=True)


def simulate_command(
    url: Annotated[
        str, typer.Option("--url", envvar="UNS_MQTT_URL", help="broker, mqtt://host:port")
    ] = DEFAULT_URL,
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="edge nodes")] = 2,
    devices: Annotated[int, typer.Option("--devices", min=0, help="devices per node")] = 3,
    metrics: Annotated[int, typer.Option("--metrics", min=1, help="metrics per device")] = 11,
    rate: Annotated[float, typer.Option("--rate", min=0.01, help="data rounds per second per node")] = 1.0,
    duration: Annotated[float | None, typer.Option("--duration", min=0, help="stop after S seconds")] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option("--fault", help=f"NAME[=P] fault per round, repeatable: {', '.join(FAULTS)}"),
    ] = None,
    group_prefix: Annotated[
        str, typer.Option("--group-prefix", help="groups are PREFIX-Assembly, ...")
    ] = "Plant1",
    primary_host: Annotated[
        str | None, typer.Option("--primary-host", help="STATE-aware: birth only while this host is online")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same signals)")] = 1,
) -> None:
    """Run simulated Sparkplug B edge nodes (Wills, bdSeq, seq, rebirths, realistic signals)."""
    from uns_bridge.commands.capture import run_until_signal
    from uns_bridge.simulator.live import FleetStats, run_fleet

    try:
        parse_mqtt_url(url)
        faults = parse_faults(fault or [])
    except (ValueError, FaultError) as exc:
        raise typer.BadParameter(str(exc)) from None
    started = time.monotonic()

    def line(stats: FleetStats) -> Text:
        elapsed = max(time.monotonic() - started, 1e-9)
        injected = ", ".join(f"{k} {v}" for k, v in stats.injected.items() if v)
        return Text(
            f"simulating {nodes} nodes x {devices} devices x {metrics} metrics on {url}: "
            f"{stats.published:,} messages ({stats.published / elapsed:,.0f}/s), births {stats.births}, "
            f"rebirths answered {stats.rebirths_answered}" + (f", faults: {injected}" if injected else "")
        )

    try:
        with Live(line(FleetStats()), console=console, refresh_per_second=4, transient=True) as live:
            stats, _ = run_until_signal(
                lambda stop: run_fleet(
                    url,
                    nodes,
                    devices,
                    metrics,
                    rate,
                    duration,
                    faults,
                    group_prefix,
                    stop,
                    seed=seed,
                    primary_host=primary_host,
                    on_round=lambda s: live.update(line(s)),
                )
            )
    except Exception as exc:  # broker unreachable, connection refused
        console.print(f"[red]simulate failed:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    console.print(line(stats))


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the root app."""
    app.command("simulate")(simulate_command)
