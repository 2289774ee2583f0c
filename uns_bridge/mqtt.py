"""The Sparkplug host application's MQTT session (aiomqtt), around a :class:`~uns_bridge.pipeline.Pipeline`.

Per connection, in this order:

1. CONNECT with the Will from ``host.will(now)`` (STATE ``{"online": false, "timestamp": T}``, QoS 1,
   retained; a new T per connection). MQTT 3.1.1 with a clean session, or MQTT 5 with clean start and
   session expiry 0.
2. SUBSCRIBE to ``host.subscriptions()`` at QoS 1 (so NDEATH Wills arrive at QoS 1; includes our own
   STATE topic, so the host can repair a stray ``online: false``).
3. ``pipeline.connected(now)``: STATE online (same T) is the first thing published, then the rebirth
   requests the host wants after a reconnect.
4. Receive loop: every message goes to ``pipeline.feed``; its :class:`Publish` effects go out. A timer
   task runs ``pipeline.tick`` at ``host.next_deadline()`` (looked at every 50 ms).

When the connection drops: ``pipeline.connection_lost`` (everything STALE), then reconnect after an
exponential backoff with jitter (``mqtt.reconnect_min_s`` .. ``reconnect_max_s``).

Backpressure: received messages wait in a buffer of ``mqtt.receive_queue`` messages; when it is full
the session stops reading its socket until half of it is processed (see :class:`FlowClient`).

Shutdown (:meth:`HostSession.stop`): stop reading, process what was already received, then
``pipeline.disconnecting`` (everything STALE, sinks flushed) and publish STATE offline at QoS 1,
waiting for the broker's acknowledgement, before DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid

import aiomqtt

from uns_bridge.config import MqttConfig
from uns_bridge.host.effects import Publish
from uns_bridge.mqttlink import (
    Backoff,
    FlowClient,
    MqttSetupError,
    client_kwargs,
    close_quietly,
    explain_connect_error,
    parse_broker_url,
)
from uns_bridge.pipeline import Pipeline

log = logging.getLogger(__name__)

#: how long a clean shutdown waits for the broker to acknowledge STATE offline
SHUTDOWN_ACK_TIMEOUT_S = 5.0
#: the receive loop yields to the event loop after this many messages processed back to back
YIELD_EVERY = 256
#: how often the timer task looks at the host's next deadline
TIMER_POLL_S = 0.05


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class HostSession:
    """Keeps one Sparkplug host connection alive until :meth:`stop`; see the module docstring."""

    def __init__(self, config: MqttConfig, pipeline: Pipeline, *, host_id: str = "uns-bridge") -> None:
        if not config.url:
            raise MqttSetupError("mqtt.url is not set (UNS_MQTT_URL=mqtt://host:1883)")
        self.config = config
        self.pipeline = pipeline
        self.address = parse_broker_url(config.url)
        self.client_id = config.client_id or f"{host_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.connected = asyncio.Event()
        #: set when the first connection attempt finished (connected or failed); for start-up messages
        self.first_attempt_done = asyncio.Event()
        self.last_error: str | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._client: FlowClient | None = None
        #: receive pauses of connections that have ended (see :attr:`receive_pauses`)
        self._ended_pauses = 0
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        pipeline.metrics.gauge(
            "receive_queue_depth", "messages received and not yet processed", lambda: self.queue_depth
        )
        pipeline.metrics.counter(
            "receive_pauses",
            "times the session stopped reading the broker because the receive queue was full (backpressure)",
            lambda: self.receive_pauses,
        )
        pipeline.metrics.gauge(
            "mqtt_connected", "1 while the Sparkplug session is connected", lambda: float(self.is_connected)
        )
        pipeline.metrics.check("mqtt", lambda: self.is_connected)

    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    @property
    def receive_pauses(self) -> int:
        """How often reading the broker was paused because ``mqtt.receive_queue`` messages waited."""
        return self._ended_pauses + (self._client.paused_count if self._client is not None else 0)

    @property
    def queue_depth(self) -> int:
        return len(self._client.buffer) if self._client is not None else 0

    async def stop(self) -> None:
        """Ask :meth:`run` to shut down cleanly and wait until it has."""
        self._stopping.set()
        await self._stopped.wait()

    async def run(self) -> None:
        """Connect, serve, reconnect ... until :meth:`stop`. Setup errors (bad TLS files) raise."""
        timer = asyncio.create_task(self._timer(), name="sparkplug-timers")
        try:
            while not self._stopping.is_set():
                delay = await self._one_connection()
                if self._stopping.is_set():
                    break
                log.info("reconnecting to %s in %.1f s", self.address, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            self._stopped.set()

    async def _one_connection(self) -> float:
        """Serve one connection; returns the delay before the next attempt."""
        will = self.pipeline.host.will(now_ms())
        kwargs = client_kwargs(
            self.config,
            client_id=self.client_id,
            will=None if will is None else aiomqtt.Will(will.topic, will.payload, will.qos, will.retain),
        )
        client = FlowClient(receive_limit=self.config.receive_queue, **kwargs)
        try:
            await client.__aenter__()
        except (aiomqtt.MqttError, OSError) as exc:
            self.last_error = explain_connect_error(exc, str(self.address), self.config)
            log.error("%s", self.last_error)
            await close_quietly(client, 1.0)
            self.first_attempt_done.set()
            return self._backoff.next_delay()
        self._client = client
        try:
            for topic, qos in self.pipeline.host.subscriptions():
                await client.subscribe(topic, qos=max(qos, 1))
            for publish in await self.pipeline.connected(now_ms()):
                # STATE online first, and acknowledged, before anything else goes out
                await self._send(client, publish, wait=publish.qos > 0)
            self.connected.set()
            self.last_error = None
            self.first_attempt_done.set()
            self._backoff.reset()
            log.info("connected to %s as Sparkplug host (client id %s)", self.address, self.client_id)
            await self._receive(client)
        except aiomqtt.MqttError as exc:
            if not self._stopping.is_set():
                self.last_error = f"MQTT session with {self.address} failed: {exc}"
                log.warning("%s", self.last_error)
        if self._stopping.is_set() and not client.lost.is_set():
            await self._shutdown(client)
            return 0.0
        self.connected.clear()
        self._client = None
        self._ended_pauses += client.paused_count
        reason = client.lost_reason
        log.warning(
            "lost the connection to %s%s; everything is STALE", self.address, f" ({reason})" if reason else ""
        )
        await self.pipeline.connection_lost(now_ms())  # STALE at once, not after the close below
        await close_quietly(client, 1.0)
        self.first_attempt_done.set()
        return self._backoff.next_delay()

    async def _receive(self, client: FlowClient) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        pipeline = self.pipeline
        handled = 0
        try:
            while True:
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let the socket reader, the UNS publisher and HTTP run
                item = client.take()
                if item is None:
                    if client.lost.is_set() or self._stopping.is_set():
                        return
                    waiter = asyncio.ensure_future(client.next_message())
                    await asyncio.wait((waiter, stop), return_when=asyncio.FIRST_COMPLETED)
                    if not waiter.done():
                        waiter.cancel()
                        return
                    item = waiter.result()
                    if item is None:
                        return
                publishes = await pipeline.feed(item.topic, item.payload, item.received_ms)
                for publish in publishes:
                    await self._send(client, publish, wait=False)
                if self._stopping.is_set():
                    return
        finally:
            stop.cancel()

    async def _shutdown(self, client: FlowClient) -> None:
        """Clean shutdown death: process what arrived, flush, STATE offline acknowledged, DISCONNECT."""
        # what was already received is processed (a bounded amount); nothing new is read meanwhile
        for _ in range(self.config.receive_queue):
            item = client.take()
            if item is None:
                break
            for publish in await self.pipeline.feed(item.topic, item.payload, item.received_ms):
                await self._send(client, publish, wait=False)
        client.resume_reading()  # the broker's acknowledgement of the death must be read
        try:
            state_sent = False
            for publish in await self.pipeline.disconnecting(now_ms()):
                await self._send(client, publish, wait=publish.qos > 0, timeout=SHUTDOWN_ACK_TIMEOUT_S)
                state_sent = state_sent or publish.topic.startswith("spBv1.0/STATE/")
            if state_sent:
                log.info("published STATE offline; disconnecting from %s", self.address)
            else:  # a worker other than 0 (host rule W1) has no STATE of its own
                log.info("disconnecting from %s", self.address)
        except aiomqtt.MqttError as exc:
            log.warning("could not publish STATE offline before disconnecting: %s", exc)
        self.connected.clear()
        self._client = None
        self._ended_pauses += client.paused_count
        await close_quietly(client, SHUTDOWN_ACK_TIMEOUT_S)

    async def _send(self, client: FlowClient, publish: Publish, *, wait: bool, timeout: float = 10.0) -> None:
        if wait:
            await client.publish(publish.topic, publish.payload, publish.qos, publish.retain, timeout=timeout)
            return
        # never wait for an acknowledgement inside the receive loop: reading may be paused
        try:
            client.publish_nowait(publish.topic, publish.payload, publish.qos, publish.retain)
        except aiomqtt.MqttError as exc:
            log.warning("could not publish to %s: %s", publish.topic, exc)
        else:
            log.debug("published %s (%d bytes)", publish.topic, len(publish.payload))

    async def _timer(self) -> None:
        """Run ``pipeline.tick`` at the host's next deadline (timers keep running while disconnected).

        The deadline is looked at again every :data:`TIMER_POLL_S` (a message may have set an earlier
        one), so the receive path never pays for it.
        """
        pipeline = self.pipeline
        while True:
            deadline = pipeline.next_deadline()
            wait = (
                TIMER_POLL_S
                if deadline is None
                else min(TIMER_POLL_S, max(0.0, (deadline - now_ms()) / 1000))
            )
            await asyncio.sleep(wait)
            deadline = pipeline.next_deadline()
            if deadline is None or deadline > now_ms():
                continue
            publishes = await pipeline.tick(now_ms())
            client = self._client
            for publish in publishes:
                if client is not None and self.is_connected:
                    await self._send(client, publish, wait=False)
                else:
                    log.debug("not connected; dropped %s", publish.topic)
