"""Embedded services for zero-configuration runs and for tests on machines without real ones.

* :class:`EmbeddedBroker`: an amqtt MQTT 3.1.1 broker inside this event loop (fine for demos; for
  throughput use Mosquitto or another real broker).
* :func:`start_embedded_postgres`: a real PostgreSQL from the ``pgserver`` wheel, data kept in a folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedBroker:
    """An amqtt broker listening on ``host:port`` for the lifetime of an ``async with`` block.

    ``port=0`` picks a free port; the chosen one is in :attr:`port` after start.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        # amqtt logs every connection at INFO; keep it quiet unless asked
        for name in ("amqtt", "transitions"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(config)
        await self._broker.start()
        for _ in range(100):
            if port_is_open(self.host, self.port, timeout=0.1):
                break
            await asyncio.sleep(0.02)
        log.info("embedded MQTT broker (amqtt) listening on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.shutdown()
            self._broker = None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class EmbeddedPostgres:
    """A pgserver PostgreSQL whose data lives in ``data_dir``; stopped by :meth:`stop` or at exit."""

    def __init__(self, data_dir: Path) -> None:
        import warnings

        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp fallback is fine
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self._server: Any = pgserver.get_server(data_dir, cleanup_mode="stop")

    def dsn(self, database: str = "postgres") -> str:
        uri: str = self._server.get_uri(database)
        return uri

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.cleanup()
