"""The test infrastructure itself: a private database and a working broker."""

from __future__ import annotations

import asyncio

import aiomqtt
import asyncpg

from tests.services import MqttBroker


async def test_database_is_private_and_empty(database_dsn: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        name = await conn.fetchval("select current_database()")
        tables = await conn.fetchval(
            "select count(*) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')"
        )
    finally:
        await conn.close()
    assert name.startswith("uns_test_")
    assert tables == 0


async def test_broker_round_trip(mqtt_broker: MqttBroker, uns_prefix: str) -> None:
    async with aiomqtt.Client(mqtt_broker.host, mqtt_broker.port) as client:
        await client.subscribe(f"{uns_prefix}/#", qos=1)
        await client.publish(f"{uns_prefix}/x", b"hello", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                assert message.payload == b"hello"
                assert str(message.topic) == f"{uns_prefix}/x"
                break
