"""Embedded defaults for ``uns-bridge run``: a broker and a database when none is configured.

* No ``mqtt.url``: an MQTT broker already answering on 127.0.0.1:1883 (a local Mosquitto, say) is used,
  and the log says so; otherwise an embedded amqtt broker is started on 1883, or on a free port when
  1883 is taken by something that is not an MQTT broker.
* No ``database.url``: an embedded PostgreSQL (pgserver) whose data lives in ``database.embedded_dir``.

:func:`embedded_defaults` is an async context manager yielding the configuration with both URLs filled
in; leaving it stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import aiomqtt

from uns_bridge.config import Config
from uns_bridge.embedded import EmbeddedBroker, EmbeddedPostgres, free_port, port_is_open

log = logging.getLogger(__name__)

DEFAULT_MQTT_HOST = "127.0.0.1"
DEFAULT_MQTT_PORT = 1883


class DefaultsError(RuntimeError):
    """An embedded service could not start; the message says what to configure instead."""


async def answers_mqtt(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when an MQTT broker accepts an anonymous connection on host:port."""
    if not port_is_open(host, port, timeout=0.5):
        return False
    try:
        async with asyncio.timeout(timeout), aiomqtt.Client(host, port, timeout=timeout):
            return True
    except Exception:
        return False


@contextlib.asynccontextmanager
async def embedded_broker_or_local(
    config: Config, host: str = DEFAULT_MQTT_HOST, port: int = DEFAULT_MQTT_PORT
) -> AsyncIterator[Config]:
    """``config`` with ``mqtt.url`` set: as configured, a broker on host:port, or an embedded one."""
    if config.mqtt.url:
        yield config
        return
    if await answers_mqtt(host, port):
        log.info(
            "no MQTT broker configured; using the broker already answering on %s:%d (set UNS_MQTT_URL to choose)",
            host,
            port,
        )
        yield dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, url=f"mqtt://{host}:{port}"))
        return
    if port_is_open(host, port):
        chosen = free_port(host)
        log.warning(
            "port %d is taken by something that is not an MQTT broker; embedded broker on %d", port, chosen
        )
        port = chosen
    broker = EmbeddedBroker(host, port)
    try:
        await broker.start()
    except Exception as exc:
        raise DefaultsError(
            f"could not start the embedded MQTT broker on {host}:{port}: {exc}; set UNS_MQTT_URL to a broker"
        ) from None
    log.info("no MQTT broker configured; started the embedded amqtt broker on %s", broker.url)
    try:
        yield dataclasses.replace(config, mqtt=dataclasses.replace(config.mqtt, url=broker.url))
    finally:
        await broker.stop()


@contextlib.asynccontextmanager
async def embedded_database(config: Config) -> AsyncIterator[Config]:
    """``config`` with ``database.url`` set: as configured, or an embedded PostgreSQL (pgserver)."""
    if config.database.url:
        yield config
        return
    directory = config.database.embedded_dir
    log.info("no database configured; starting the embedded PostgreSQL in %s ...", directory)
    try:
        server = await asyncio.to_thread(EmbeddedPostgres, directory)
    except Exception as exc:
        raise DefaultsError(
            f"could not start the embedded PostgreSQL in {directory}: {exc}; set UNS_DATABASE_URL to a server"
        ) from None
    dsn = server.dsn("postgres")
    log.info("embedded PostgreSQL is up (%s)", dsn)
    try:
        yield dataclasses.replace(config, database=dataclasses.replace(config.database, url=dsn))
    finally:
        await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def embedded_defaults(config: Config) -> AsyncIterator[Config]:
    """Both of the above."""
    async with embedded_broker_or_local(config) as with_broker, embedded_database(with_broker) as ready:
        yield ready
