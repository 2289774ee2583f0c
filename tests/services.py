"""Where the tests find PostgreSQL and MQTT.

The real local services (PostgreSQL on 127.0.0.1:5432, Mosquitto on 127.0.0.1:1883) when they answer;
otherwise the embedded ones (pgserver, amqtt), so the suite also passes on a machine with neither.
``UNS_TEST_EMBEDDED=1`` forces the embedded ones. ``UNS_TEST_PG_DSN`` / ``UNS_TEST_MQTT`` (host:port) point
the tests at other servers.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from uns_bridge.embedded import EmbeddedPostgres, port_is_open

FORCE_EMBEDDED = os.environ.get("UNS_TEST_EMBEDDED", "") not in ("", "0")


@dataclass(frozen=True)
class MqttBroker:
    host: str
    port: int
    #: "mosquitto" (a real broker) or "amqtt" (the embedded one)
    kind: str

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def local_postgres_dsn() -> str | None:
    """The DSN of the machine's PostgreSQL maintenance database, or None when none answers."""
    explicit = os.environ.get("UNS_TEST_PG_DSN")
    if explicit:
        return explicit
    if FORCE_EMBEDDED or not port_is_open("127.0.0.1", 5432):
        return None
    return "postgresql://postgres@127.0.0.1:5432/postgres"


_embedded_pg: EmbeddedPostgres | None = None


def postgres_admin_dsn() -> str:
    """A DSN of a maintenance database on which tests may CREATE and DROP their own databases."""
    global _embedded_pg
    dsn = local_postgres_dsn()
    if dsn is not None:
        return dsn
    if _embedded_pg is None:
        _embedded_pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="uns-test-pg-")) / "data")
    return _embedded_pg.dsn("postgres")


def stop_embedded_postgres() -> None:
    global _embedded_pg
    if _embedded_pg is not None:
        _embedded_pg.stop()
        _embedded_pg = None


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointed at another database (works for host/port and socket DSNs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def local_mosquitto() -> MqttBroker | None:
    explicit = os.environ.get("UNS_TEST_MQTT")
    if explicit:
        host, _, port = explicit.rpartition(":")
        return MqttBroker(host or "127.0.0.1", int(port), "mosquitto")
    if FORCE_EMBEDDED or not port_is_open("127.0.0.1", 1883):
        return None
    return MqttBroker("127.0.0.1", 1883, "mosquitto")
