"""TLS to a private Mosquitto whose CA the test generates; a wrong CA fails with a clear message.

Also PostgreSQL over TLS: a private cluster with ``ssl = on``; ``sslmode=verify-full`` with the right CA
connects, with a wrong CA fails, and ``sslmode=require`` against a server without TLS fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import asyncpg
import pytest

from tests.private_servers import PrivateMosquitto, PrivatePostgres, postgres_bin_dir
from uns_bridge.config import MqttConfig, TlsConfig

mqttlink = pytest.importorskip("uns_bridge.mqttlink", reason="the MQTT connection module has not landed yet")


@pytest.fixture(scope="module")
def tls_broker(pki: tuple[Path, Path, Path, Path]) -> Iterator[PrivateMosquitto]:
    ca, cert, key, _ = pki
    with PrivateMosquitto(tls=(ca, cert, key)) as broker:
        yield broker


def config_for(url: str, ca: Path | None) -> MqttConfig:
    return MqttConfig(url=url, tls=TlsConfig(ca_file=ca))


async def roundtrip(config: MqttConfig) -> bytes:
    kwargs = mqttlink.client_kwargs(config, client_id="tls-test", will=None)
    async with aiomqtt.Client(**kwargs) as client:
        await client.subscribe("tls/test", qos=1)
        await client.publish("tls/test", b"over tls", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                return bytes(message.payload)  # type: ignore[arg-type]
    raise AssertionError("no message")


async def connect_error(config: MqttConfig) -> str:
    address = mqttlink.parse_broker_url(config.url)
    with pytest.raises(Exception) as caught:
        await roundtrip(config)
    return str(mqttlink.explain_connect_error(caught.value, str(address), config))


async def test_tls_with_the_generated_ca_works(tls_broker: PrivateMosquitto, pki: tuple[Path, ...]) -> None:
    assert await roundtrip(config_for(f"mqtts://127.0.0.1:{tls_broker.port}", pki[0])) == b"over tls"


async def test_wrong_ca_fails_clearly(tls_broker: PrivateMosquitto, pki: tuple[Path, ...]) -> None:
    message = await connect_error(config_for(f"mqtts://127.0.0.1:{tls_broker.port}", pki[3]))
    print(message)
    assert "not trusted" in message and "mqtt.tls.ca_file" in message


async def test_system_trust_store_rejects_a_private_ca(tls_broker: PrivateMosquitto) -> None:
    message = await connect_error(config_for(f"mqtts://127.0.0.1:{tls_broker.port}", None))
    assert "not trusted" in message


async def test_plain_client_on_a_tls_port_and_tls_on_a_plain_port_fail(
    tls_broker: PrivateMosquitto, pki: tuple[Path, ...]
) -> None:
    with PrivateMosquitto() as plain:
        message = await connect_error(config_for(f"mqtts://127.0.0.1:{plain.port}", pki[0]))
        print(message)
        # mosquitto resets the connection on a TLS ClientHello; the message names the mqtts:// address
        assert f"mqtts://127.0.0.1:{plain.port}" in message
    message = await connect_error(config_for(f"mqtt://127.0.0.1:{tls_broker.port}", None))
    print(message)
    assert message  # a plain CONNECT to a TLS listener is dropped: any explanation, never a hang


def test_missing_ca_file_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(mqttlink.MqttSetupError, match="ca_file"):
        mqttlink.client_kwargs(
            config_for("mqtts://127.0.0.1:8883", tmp_path / "nope.crt"), client_id="x", will=None
        )


# ------------------------------------------------------------------------------------ PostgreSQL TLS
needs_pg = pytest.mark.skipif(postgres_bin_dir() is None, reason="no PostgreSQL binaries")


@needs_pg
async def test_postgres_sslmode_is_honoured(pki: tuple[Path, Path, Path, Path]) -> None:
    ca, cert, key, other_ca = pki
    pg = PrivatePostgres()
    try:
        pg.enable_ssl(cert, key)
        await asyncio.to_thread(pg.start)
        base = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        conn = await asyncpg.connect(f"{base}?sslmode=verify-full&sslrootcert={ca}")
        try:
            assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        finally:
            await conn.close()
        with pytest.raises(Exception, match=r"(?i)certificate verify failed"):
            await asyncpg.connect(f"{base}?sslmode=verify-full&sslrootcert={other_ca}")
    finally:
        await asyncio.to_thread(pg.close)
    plain = PrivatePostgres()
    try:
        await asyncio.to_thread(plain.start)
        with pytest.raises(Exception, match=r"(?i)ssl"):
            await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{plain.port}/postgres?sslmode=require")
    finally:
        await asyncio.to_thread(plain.close)
