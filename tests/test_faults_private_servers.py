"""The private servers that fault tests stop and restart: they start, serve, stop, restart and clean up."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import asyncpg
import paho.mqtt.client as paho
import pytest

from tests.private_servers import (
    PrivateMosquitto,
    PrivatePostgres,
    ServerError,
    make_test_ca,
    postgres_bin_dir,
)
from uns_bridge.embedded import port_is_open

needs_pg = pytest.mark.skipif(postgres_bin_dir() is None, reason="no PostgreSQL binaries")


@needs_pg
async def test_private_postgres_survives_stop_kill_and_restart() -> None:
    with PrivatePostgres() as pg:
        root = pg.root
        conn = await asyncpg.connect(pg.dsn)
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1)")
        await conn.close()
        await asyncio.to_thread(pg.stop)
        assert not pg.running
        with pytest.raises(OSError):
            await asyncpg.connect(pg.dsn, timeout=5)
        await asyncio.to_thread(pg.start)
        await asyncio.to_thread(pg.kill)
        assert not port_is_open("127.0.0.1", pg.port)
        await asyncio.to_thread(pg.start)
        conn = await asyncpg.connect(pg.dsn)
        assert await conn.fetchval("SELECT count(*) FROM t") == 1, "committed data survives a crash"
        await conn.close()
    assert not root.exists(), "the cluster's directory is removed"
    assert not port_is_open("127.0.0.1", pg.port)


@needs_pg
def test_private_postgres_is_cleaned_up_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError, match="boom"), PrivatePostgres() as pg:
        port, root = pg.port, pg.root
        raise RuntimeError("boom")
    assert not root.exists()
    assert not port_is_open("127.0.0.1", port)


def _roundtrip(port: int, tls_ca: Path | None = None) -> bytes:
    """Publish a retained message and return what a subscription on the same topic receives."""
    got: list[bytes] = []
    arrived = threading.Event()

    def on_message(_client: object, _userdata: object, message: paho.MQTTMessage) -> None:
        got.append(message.payload)
        arrived.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    if tls_ca is not None:
        client.tls_set(ca_certs=str(tls_ca))
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe("private/test", qos=1)
        client.publish("private/test", b"hello", qos=1, retain=True).wait_for_publish(10)
        arrived.wait(10)
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0] if got else b""


def test_private_mosquitto_restarts_and_keeps_retained_messages() -> None:
    with PrivateMosquitto() as broker:
        root = broker.root
        assert _roundtrip(broker.port) == b"hello"
        broker.restart()
        assert _roundtrip(broker.port) == b"hello"
        broker.kill()
        assert not broker.running
    assert not root.exists()


def test_private_mosquitto_with_tls(tmp_path: Path) -> None:
    ca, cert, key = make_test_ca(tmp_path / "pki")
    with PrivateMosquitto(tls=(ca, cert, key)) as broker:
        assert _roundtrip(broker.port, tls_ca=ca) == b"hello"


def test_bad_mosquitto_config_fails_clearly() -> None:
    with pytest.raises(ServerError, match="mosquitto exited"):
        PrivateMosquitto(extra_config="this_is_not_an_option 1\n").__enter__()
