"""Shared fixtures: a private database per test, an MQTT broker, a private topic namespace per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests import services
from tests.private_servers import make_test_ca
from uns_bridge.embedded import EmbeddedBroker


@pytest.fixture(scope="session")
def postgres_admin_dsn() -> Iterator[str]:
    """The maintenance database of the PostgreSQL server the tests use (real, or embedded fallback)."""
    yield services.postgres_admin_dsn()
    services.stop_embedded_postgres()


@pytest.fixture
async def database_dsn(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """A freshly created, empty database of this test's own; dropped afterwards."""
    name = services.unique_name("uns_test")
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield services.with_database(postgres_admin_dsn, name)
    admin = await asyncpg.connect(postgres_admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def amqtt_broker() -> AsyncIterator[services.MqttBroker]:
    """A private embedded amqtt broker on a free port, for this test only."""
    async with EmbeddedBroker() as broker:
        yield services.MqttBroker(broker.host, broker.port, "amqtt")


@pytest.fixture
async def mqtt_broker() -> AsyncIterator[services.MqttBroker]:
    """The real local Mosquitto when it answers; otherwise a private embedded amqtt broker."""
    real = services.local_mosquitto()
    if real is not None:
        yield real
        return
    async with EmbeddedBroker() as broker:
        yield services.MqttBroker(broker.host, broker.port, "amqtt")


@pytest.fixture
def group_id() -> str:
    """A Sparkplug group id of this test's own, so tests on a shared broker never see each other."""
    return services.unique_name("G")


@pytest.fixture
def uns_prefix() -> str:
    """A UNS topic prefix of this test's own."""
    return services.unique_name("uns")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(ca, server cert, server key, an unrelated CA)."""
    root = tmp_path_factory.mktemp("pki")
    ca, cert, key = make_test_ca(root / "good")
    other_ca, _, _ = make_test_ca(root / "other")
    return ca, cert, key, other_ca
