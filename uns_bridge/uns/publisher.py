"""The UNS publisher: its own MQTT connection, publishing batches of retained JSON messages.

Separate from the Sparkplug host session on purpose (the UNS may live on another broker, and a slow
UNS never delays Sparkplug's own traffic). :meth:`UnsPublisher.publish_many` keeps up to
``window`` messages in flight (QoS 1 acknowledgements pipelined, not waited for one by one) and
returns once every message of the batch is acknowledged. When the connection drops mid-batch it raises
:class:`PublishInterrupted` carrying the messages that were not acknowledged, so the caller can
queue them again; the connection is re-established in the background with backoff and jitter.

With MQTT 3.1.1 (the default) the connection is a :class:`~uns_bridge.uns.wire.PublishSession`, a
lean publish-only session (see its module for why); with ``mqtt.protocol = "5"`` it is an aiomqtt
client like the Sparkplug session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Sequence
from typing import Protocol

import aiomqtt

from uns_bridge.config import MqttConfig, UnsConfig
from uns_bridge.mqttlink import (
    Backoff,
    FlowClient,
    client_kwargs,
    close_quietly,
    explain_connect_error,
    parse_broker_url,
    read_password,
    tls_context,
)
from uns_bridge.uns.wire import PublishSession, SessionError

log = logging.getLogger(__name__)


class PublishInterrupted(Exception):
    """The connection dropped before these ``(topic, payload)`` messages were acknowledged."""

    def __init__(self, unsent: list[tuple[str, bytes]]) -> None:
        super().__init__(f"{len(unsent)} UNS messages not acknowledged")
        self.unsent = unsent


class _Link(Protocol):
    """What :class:`UnsPublisher` needs of a connection (a :class:`PublishSession` or a :class:`FlowClient`)."""

    unacked: dict[int, tuple[str, bytes]]
    lost: asyncio.Event

    def publish_nowait(self, topic: str, payload: bytes, qos: int, retain: bool) -> None: ...
    async def wait_unacked(self, at_most: int) -> None: ...


#: what a lost connection raises from a :class:`_Link`
_LINK_ERRORS = (aiomqtt.MqttError, SessionError)


class UnsPublisher:
    """A self-reconnecting MQTT connection for the UNS; see the module docstring."""

    def __init__(
        self, mqtt: MqttConfig, uns: UnsConfig, *, client_id: str | None = None, window: int = 1000
    ) -> None:
        self.mqtt = mqtt
        self.uns = uns
        self.address = parse_broker_url(mqtt.url or "")
        base = mqtt.client_id or "uns-bridge"
        self.client_id = client_id or f"{base}-uns-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.window = max(window, 1)
        self.published = 0
        self.connected = asyncio.Event()
        self._client: _Link | None = None
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(mqtt.reconnect_min_s, mqtt.reconnect_max_s)
        self.last_error: str | None = None

    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep_connected(), name="uns-publisher")

    async def _connect(self) -> tuple[_Link, asyncio.Event]:
        """A new connection and the event set when it is lost."""
        if self.mqtt.protocol == "5":
            client = FlowClient(
                receive_limit=1000, **client_kwargs(self.mqtt, client_id=self.client_id, will=None)
            )
            try:
                await client.__aenter__()
            except BaseException:
                await close_quietly(client, 1.0)
                raise
            return client, client.lost
        username = self.mqtt.username or self.address.username
        session = await PublishSession.open(
            self.address,
            client_id=self.client_id,
            keepalive_s=self.mqtt.keepalive_s,
            username=username,
            password=read_password(self.mqtt, self.address) if username else None,
            tls=tls_context(self.mqtt, self.address),
        )
        return session, session.lost

    async def _disconnect(self, link: _Link, timeout: float = 5.0) -> None:
        if isinstance(link, PublishSession):
            await link.close(timeout)
        else:
            assert isinstance(link, FlowClient)
            await close_quietly(link, timeout)

    async def _keep_connected(self) -> None:
        while not self._closing.is_set():
            try:
                link, lost_event = await self._connect()
            except (aiomqtt.MqttError, OSError) as exc:
                self.last_error = explain_connect_error(exc, str(self.address), self.mqtt)
                log.error("UNS publisher: %s", self.last_error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self._backoff.next_delay())
                continue
            self._client = link
            self._backoff.reset()
            self.last_error = None
            self.connected.set()
            log.info("UNS publisher connected to %s (prefix %r)", self.address, self.uns.prefix)
            closing = asyncio.ensure_future(self._closing.wait())
            lost = asyncio.ensure_future(lost_event.wait())
            await asyncio.wait((closing, lost), return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            lost.cancel()
            self.connected.clear()
            self._client = None
            if self._closing.is_set():
                with contextlib.suppress(*_LINK_ERRORS):
                    await link.wait_unacked(0)
                await self._disconnect(link)
                return
            log.warning("UNS publisher lost its connection to %s; reconnecting", self.address)
            await self._disconnect(link, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._backoff.next_delay())

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish ``items`` retained (``uns.retain``) at ``uns.qos``; waits for a connection first."""
        if not items:
            return
        await self.connected.wait()
        client = self._client
        if client is None:
            raise PublishInterrupted(list(items))
        qos, retain, window = self.uns.qos, self.uns.retain, self.window
        session = client if isinstance(client, PublishSession) else None
        for index, (topic, payload) in enumerate(items):
            if session is not None and index % window == window - 1:
                try:  # bounded memory at QoS 0 too: wait while the socket's buffer is full
                    await session.drain()
                except _LINK_ERRORS:
                    raise PublishInterrupted(list(client.unacked.values()) + list(items[index:])) from None
            if len(client.unacked) >= window:
                try:
                    await client.wait_unacked(window // 2)
                except _LINK_ERRORS:
                    raise PublishInterrupted(list(client.unacked.values()) + list(items[index:])) from None
            try:
                client.publish_nowait(topic, payload, qos, retain)
            except ValueError as exc:  # a topic or payload MQTT cannot carry: skip it, keep the rest
                log.warning("UNS message to %r not publishable: %s", topic, exc)
                continue
            except _LINK_ERRORS:
                raise PublishInterrupted(list(client.unacked.values()) + list(items[index:])) from None
        try:
            await client.wait_unacked(0)
        except _LINK_ERRORS:
            raise PublishInterrupted(list(client.unacked.values())) from None
        self.published += len(items)

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
            self._task = None
