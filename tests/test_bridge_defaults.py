"""Embedded defaults of ``uns-bridge run``: which broker and database it picks when none is configured."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import asyncpg
import pytest

from tests.services import MqttBroker
from uns_bridge.config import Config, DatabaseConfig, MqttConfig
from uns_bridge.defaults import answers_mqtt, embedded_broker_or_local, embedded_database
from uns_bridge.embedded import free_port, port_is_open


async def test_a_configured_broker_is_used_as_is() -> None:
    config = Config(mqtt=MqttConfig(url="mqtt://broker.example:1883"))
    async with embedded_broker_or_local(config) as ready:
        assert ready is config


async def test_a_broker_already_answering_is_used_and_said(
    mqtt_broker: MqttBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uns_bridge.defaults")
    async with embedded_broker_or_local(Config(), host=mqtt_broker.host, port=mqtt_broker.port) as ready:
        assert ready.mqtt.url == f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}"
    assert "already answering" in caplog.text


async def test_embedded_broker_on_the_default_port_when_free() -> None:
    port = free_port()
    async with embedded_broker_or_local(Config(), port=port) as ready:
        assert ready.mqtt.url == f"mqtt://127.0.0.1:{port}"
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.publish("t", b"x", qos=1)
    assert not port_is_open("127.0.0.1", port)


async def test_a_port_taken_by_something_else_gets_a_free_one(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="uns_bridge.defaults")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    taken = server.sockets[0].getsockname()[1]
    try:
        assert not await answers_mqtt("127.0.0.1", taken, timeout=1)
        async with embedded_broker_or_local(Config(), port=taken) as ready:
            assert ready.mqtt.url is not None and not ready.mqtt.url.endswith(f":{taken}")
            port = int(ready.mqtt.url.rsplit(":", 1)[1])
            assert await answers_mqtt("127.0.0.1", port)
        assert f"port {taken} is taken" in caplog.text
    finally:
        server.close()
        await server.wait_closed()


async def test_embedded_postgres_when_no_database_is_configured(tmp_path: Path) -> None:
    config = Config(database=DatabaseConfig(embedded_dir=tmp_path / "pg"))
    async with embedded_database(config) as ready:
        assert ready.database.url is not None
        connection = await asyncpg.connect(ready.database.url)
        try:
            assert await connection.fetchval("SELECT 1") == 1
        finally:
            await connection.close()


def test_unreachable_database_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    """`run` against a database that does not answer exits 1 and says what to do, never printing a secret."""
    env = {
        **os.environ,
        "UNS_DATABASE_URL": "postgresql://svc:hunter2@127.0.0.1:1/uns",
        "UNS_MQTT_URL": "mqtt://127.0.0.1:1",
        "UNS_HTTP_ENABLED": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "uns_bridge", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "cannot use the database at postgresql://svc:***@127.0.0.1:1/uns" in output
    assert "UNS_DATABASE_URL" in output and "hunter2" not in output


def test_collector_is_tuned_while_the_bridge_runs_and_restored_after() -> None:
    import gc

    from uns_bridge import app

    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with app._collector_tuned():
        assert gc.get_threshold() == app.GC_THRESHOLDS
        assert gc.get_freeze_count() > frozen  # startup's objects are out of the collections
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
