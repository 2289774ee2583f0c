"""The bridge's flow without MQTT: messages and ticks into the host core, effects out to the sinks.

``Pipeline(host, placer, writer, uns_sink, metrics)`` is driven by the live MQTT session
(:mod:`uns_bridge.mqtt`), by ``replay --direct`` and by tests alike:

* :meth:`Pipeline.feed` hands one received message to ``host.receive`` and the resulting effects to
  the placer (``observe`` of every :class:`MetricsDefined`, before any sink sees it), the store writer
  (``handle``, which may wait: that is the backpressure reaching the caller), the UNS sink and the
  metrics. It returns the :class:`Publish` effects (STATE, rebirth NCMDs) for the caller to put on the
  wire; a replay simply ignores them.
* :meth:`tick`, :meth:`connected`, :meth:`connection_lost` and :meth:`disconnecting` do the same for
  timers and the session's lifecycle.
* Calls are serialised by a lock, so the sinks see effects in the order the host produced them even
  when the receive loop and the timer task interleave.

A sink that raises is logged and counted (``sink_errors``), never allowed to stop the flow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from uns_bridge.host.effects import Effect, MetricsDefined, Publish
from uns_bridge.metrics import BridgeMetrics

log = logging.getLogger(__name__)


class HostCore(Protocol):
    """What the pipeline and the MQTT session need of :class:`uns_bridge.host.host.Host`."""

    def will(self, now_ms: int) -> Publish | None: ...
    def connected(self, now_ms: int) -> list[Effect]: ...
    def subscriptions(self) -> list[tuple[str, int]]: ...
    def receive(self, topic: str, payload: bytes, now_ms: int) -> list[Effect]: ...
    def tick(self, now_ms: int) -> list[Effect]: ...
    def next_deadline(self) -> int | None: ...
    def connection_lost(self, now_ms: int) -> list[Effect]: ...
    def disconnecting(self, now_ms: int) -> list[Effect]: ...


class PlacerLike(Protocol):
    def observe(self, effect: MetricsDefined) -> None: ...


class EffectSink(Protocol):
    """The store writer and the UNS sink: effects in, ``flush`` and ``close`` at the end."""

    async def handle(self, effects: Sequence[Effect]) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


class Pipeline:
    """Host core + placer + sinks; see the module docstring."""

    def __init__(
        self,
        host: HostCore,
        placer: PlacerLike,
        writer: EffectSink | None,
        uns_sink: EffectSink | None,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self.host = host
        self.placer = placer
        self.writer = writer
        self.uns_sink = uns_sink
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self._sinks: tuple[EffectSink, ...] = tuple(s for s in (writer, uns_sink) if s is not None)
        self._lock = asyncio.Lock()
        self._closed = False

    async def feed(self, topic: str, payload: bytes, now_ms: int) -> list[Publish]:
        """One received message (``now_ms``: receive time, ms UTC); returns what to publish."""
        async with self._lock:
            self.metrics.message(len(payload))
            try:
                effects = self.host.receive(topic, payload, now_ms)
            except Exception:
                # the host turns bad input into Anomaly effects; anything else is a bug, never a stop
                self.metrics.host_errors += 1
                log.exception("the host core failed on a message on %s (%d bytes)", topic, len(payload))
                return []
            return await self._dispatch(effects)

    async def tick(self, now_ms: int) -> list[Publish]:
        """Run the host's timers (seq reorder timeouts, rebirth retries)."""
        async with self._lock:
            return await self._dispatch(self.host.tick(now_ms))

    def next_deadline(self) -> int | None:
        return self.host.next_deadline()

    async def connected(self, now_ms: int) -> list[Publish]:
        """The session is (re)connected and subscribed: STATE online first, then rebirth requests."""
        async with self._lock:
            self.metrics.connects += 1
            return await self._dispatch(self.host.connected(now_ms))

    async def connection_lost(self, now_ms: int) -> None:
        """The session lost its broker: everything STALE (nothing can be published now)."""
        async with self._lock:
            self.metrics.connection_losses += 1
            await self._dispatch(self.host.connection_lost(now_ms))

    async def disconnecting(self, now_ms: int) -> list[Publish]:
        """Clean shutdown: everything STALE, the sinks flushed; returns the STATE death to publish."""
        async with self._lock:
            publishes = await self._dispatch(self.host.disconnecting(now_ms))
        await self.flush()
        return publishes

    async def flush(self) -> None:
        for sink in self._sinks:
            try:
                await sink.flush()
            except Exception:
                self.metrics.sink_errors += 1
                log.exception("flushing %s failed", type(sink).__name__)

    async def close(self) -> None:
        """Flush and close the sinks (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self.flush()
        for sink in self._sinks:
            try:
                await sink.close()
            except Exception:
                self.metrics.sink_errors += 1
                log.exception("closing %s failed", type(sink).__name__)

    async def _dispatch(self, effects: list[Effect]) -> list[Publish]:
        if not effects:
            return []
        publishes: list[Publish] = []
        for effect in effects:
            kind = type(effect)
            if kind is MetricsDefined:
                self.placer.observe(effect)  # type: ignore[arg-type]
            elif kind is Publish:
                publishes.append(effect)  # type: ignore[arg-type]
        for sink in self._sinks:
            try:
                await sink.handle(effects)
            except Exception:
                self.metrics.sink_errors += 1
                log.exception("%s failed on %d effects", type(sink).__name__, len(effects))
        self.metrics.observe(effects)
        return publishes
