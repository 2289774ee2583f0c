"""``uns-bridge run [--config FILE] [--demo]``: the service.

With no broker configured it uses a broker already answering on 127.0.0.1:1883 or starts the
embedded amqtt broker; with no database configured it starts the embedded PostgreSQL
(``.uns-bridge/postgres``). ``--demo`` also runs the simulator's demo plant in this process. With
``host.workers > 1`` it supervises that many worker processes instead (:mod:`uns_bridge.workers`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from uns_bridge.config import Config

if TYPE_CHECKING:
    from uns_bridge.app import Extra

log = logging.getLogger("uns_bridge")


def configure_logging(level: str, tag: str | None = None) -> None:
    """Readable logs on stderr: time, level, where (and which worker, with ``tag``), message."""
    where = "%(name)s" if tag is None else f"[{tag}] %(name)s"
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)-7s {where}: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("amqtt", "transitions", "asyncio", "pgserver"):
        if level.upper() != "DEBUG":
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(config_file: Path | None) -> Config:
    from uns_bridge.config import ConfigError, load_config

    try:
        return load_config(config_file, os.environ)
    except ConfigError as exc:
        typer.echo(f"uns-bridge: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


DEMO_NODES, DEMO_DEVICES, DEMO_METRICS, DEMO_RATE = 2, 3, 8, 1.0


def _demo_extra() -> Extra | None:
    """The simulator's demo plant as an extra task of the app, or ``None`` (said so) when unavailable."""
    try:
        from uns_bridge.simulator import run_fleet
    except ImportError:
        typer.echo(
            "uns-bridge: --demo needs the simulator (uns_bridge.simulator), which is not available in this "
            "build; running the bridge without the demo plant",
            err=True,
        )
        return None

    async def demo(config: Config, stop: asyncio.Event) -> None:
        assert config.mqtt.url is not None
        log.info(
            "demo plant: %d edge nodes x %d devices x %d metrics at %.0f round/s on %s",
            DEMO_NODES,
            DEMO_DEVICES,
            DEMO_METRICS,
            DEMO_RATE,
            config.mqtt.url,
        )
        if config.mqtt.groups:
            log.warning("mqtt.groups is set: the bridge only sees demo groups listed there")
        await run_fleet(
            config.mqtt.url,
            nodes=DEMO_NODES,
            devices=DEMO_DEVICES,
            metrics=DEMO_METRICS,
            rate=DEMO_RATE,
            stop_event=stop,
            primary_host=config.host.id,
        )

    return demo


def run_command(config_file: Path | None, demo: bool) -> int:
    """Load the configuration, run the bridge until a signal, return the exit code."""
    try:
        from uns_bridge.app import run_bridge
    except ImportError as exc:
        typer.echo(f"uns-bridge: this build cannot run the bridge yet: {exc}", err=True)
        return 1
    from uns_bridge.defaults import DefaultsError
    from uns_bridge.mqttlink import MqttSetupError
    from uns_bridge.workers import WorkerSetupError, check_workers, supervise, worker_config, worker_shard

    config = _load(config_file)
    try:
        shard = worker_shard(os.environ)
        check_workers(config, demo)
    except WorkerSetupError as exc:
        typer.echo(f"uns-bridge: configuration error: {exc}", err=True)
        return 2
    configure_logging(config.log_level, tag=None if shard is None else f"worker {shard[0]}")
    if shard is None and config.host.workers > 1:
        log.info("uns-bridge supervisor starting (configuration: %s)", config.source)
        try:
            return asyncio.run(supervise(config, config_file))
        except KeyboardInterrupt:
            return 130
    if shard is not None:
        config = worker_config(config, shard[0])
    log.info("uns-bridge starting (configuration: %s)", config.source)
    extra = _demo_extra() if demo else None
    try:
        return asyncio.run(run_bridge(config, extra=extra))
    except (DefaultsError, MqttSetupError, OSError) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


def register(app: typer.Typer) -> None:
    """Add ``run`` to the root app."""

    @app.command("run")
    def run(
        config: Annotated[
            Path | None,
            typer.Option(
                "--config", "-c", help="TOML configuration file (default: UNS_CONFIG or built-in defaults)."
            ),
        ] = None,
        demo: Annotated[
            bool, typer.Option("--demo", help="Also run the simulator's demo plant in this process.")
        ] = False,
    ) -> None:
        """Run the bridge: Sparkplug host -> PostgreSQL history + UNS republishing."""
        raise typer.Exit(run_command(config, demo))
