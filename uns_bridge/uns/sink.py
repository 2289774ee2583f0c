"""The UNS sink: effects in, the newest value per UNS topic out, as retained JSON.

* :class:`Samples`: each live (non-historical) value replaces whatever is pending for its topic
  (``placer.metric_topic``); history goes to the database only.
* :class:`MetricsStale` (deaths, a lost connection, shutdown): the affected metrics' last values are
  republished with quality ``STALE``; their ``timestamp`` is the time they became stale (the death's).
* Node and device online/offline: ``render_state`` on ``placer.state_topic(group, node, device)``.
* Every ``uns.publish_window_ms`` the pending set is rendered (``uns.contract.render_value``, only for
  what survived coalescing) and handed to the :class:`~uns_bridge.uns.publisher.UnsPublisher` while
  the next window coalesces. Messages a dropped connection left unacknowledged are queued again unless
  a newer value for their topic is already pending.
* The pending set holds at most ``uns.max_pending`` topics. When it is full, :meth:`UnsSink.handle`
  waits for the next window to take it while the publisher is connected (backpressure), and counts
  and drops values for new topics while it is not (so a UNS outage never stops the database history).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from uns_bridge.config import UnsConfig
from uns_bridge.host.effects import (
    DeviceOffline,
    DeviceOnline,
    Effect,
    MetricInfo,
    MetricsDefined,
    MetricsStale,
    NodeOffline,
    NodeOnline,
    Quality,
    Sample,
    Samples,
)
from uns_bridge.native import extension
from uns_bridge.uns import contract
from uns_bridge.uns.publisher import PublishInterrupted

log = logging.getLogger(__name__)

#: the native loop of :meth:`UnsSink._samples` (``_coalesce.c``), which that method defines
_coalesce = extension("uns_bridge.uns._coalesce", "UNS_BRIDGE_SINK_LOOP", "python")
_native_coalesce: Callable[..., tuple[int, int, int]] | None = (
    None if _coalesce is None else _coalesce.coalesce
)

#: what waits for a topic: a value (rendered at flush time) with its message's seq, or a ready payload
Pending = tuple[Sample, int | None] | bytes


class TopicPlacer(Protocol):
    def metric_topic(self, info: MetricInfo) -> str: ...
    def state_topic(self, group: str, node: str, device: str | None) -> str: ...


class Publisher(Protocol):
    @property
    def is_connected(self) -> bool: ...
    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None: ...
    async def close(self) -> None: ...


class UnsSink:
    """Coalescing, retained UNS publishing; see the module docstring."""

    def __init__(self, placer: TopicPlacer, publisher: Publisher, settings: UnsConfig) -> None:
        self.placer = placer
        self.publisher = publisher
        self.settings = settings
        self.window_s = max(settings.publish_window_ms, 0) / 1000
        self.max_pending = max(settings.max_pending, 1)
        self._pending: dict[str, Pending] = {}
        self._renderer = contract.ValueRenderer()
        #: last live value per metric (for STALE republishing); per owner, the metrics of its birth
        self._last: dict[MetricInfo, Sample] = {}
        #: UNS topic per metric (the placer's answer, cached here for the hot path)
        self._topics: dict[MetricInfo, str] = {}
        self._owned: dict[tuple[str, str, str | None], tuple[MetricInfo, ...]] = {}
        self._room = asyncio.Event()
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # counters
        self.values_in = 0
        self.coalesced = 0
        self.dropped = 0
        self.render_errors = 0
        self.stale_published = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def published(self) -> int:
        return int(getattr(self.publisher, "published", 0))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="uns-sink")

    # --- effects in ---
    async def handle(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if type(effect) is Samples:
                await self._samples(effect)
            elif isinstance(effect, MetricsStale):
                await self._stale(effect)
            elif isinstance(effect, MetricsDefined):
                self._defined(effect)
            elif isinstance(effect, NodeOnline):
                await self._state(
                    effect.group, effect.node, None, True, effect.timestamp, None, effect.bd_seq
                )
            elif isinstance(effect, NodeOffline):
                await self._state(
                    effect.group, effect.node, None, False, effect.timestamp, effect.reason, effect.bd_seq
                )
            elif isinstance(effect, DeviceOnline):
                await self._state(effect.group, effect.node, effect.device, True, effect.timestamp)
            elif isinstance(effect, DeviceOffline):
                await self._state(
                    effect.group, effect.node, effect.device, False, effect.timestamp, effect.reason
                )

    async def _samples(self, effect: Samples) -> None:
        # the hot path: locals, one topic lookup in the sink's own cache, counters added once
        pending, last, seq, topics = self._pending, self._last, effect.seq, self._topics
        metric_topic = self.placer.metric_topic
        limit = self.max_pending
        values = coalesced = 0
        samples = effect.samples
        native = _native_coalesce if type(samples) is tuple else None
        i, count = 0, len(samples)
        while i < count:
            if native is not None:
                # the native loop takes the samples of cached topics and stops at each other one
                i, taken, replaced = native(samples, i, last, topics, pending, seq, limit)
                values += taken
                coalesced += replaced
                if i >= count:
                    break
            sample = samples[i]
            i += 1
            if sample[4]:  # is_historical: the database's business only
                continue
            values += 1
            info = sample[0]
            last[info] = sample
            topic = topics.get(info)
            if topic is None:
                topic = topics[info] = metric_topic(info)
            if topic in pending:
                coalesced += 1
            elif len(pending) >= limit:
                if not await self._make_room():
                    continue
                pending = self._pending  # the window took the full set and left a new one
            pending[topic] = (sample, seq)
        self.values_in += values
        self.coalesced += coalesced
        self._work.set()

    async def _stale(self, effect: MetricsStale) -> None:
        for info in effect.metrics:
            previous = self._last.get(info)
            value = previous.value if previous is not None else None
            stale = Sample(info, effect.timestamp, value, Quality.STALE)
            self._last[info] = stale
            topic = self.placer.metric_topic(info)
            if (
                topic not in self._pending
                and len(self._pending) >= self.max_pending
                and not await self._make_room()
            ):
                continue
            self._pending[topic] = (stale, None)
            self.stale_published += 1
        self._work.set()

    def _defined(self, effect: MetricsDefined) -> None:
        owner = (effect.group, effect.node, effect.device)
        for old in self._owned.get(owner, ()):
            self._last.pop(old, None)
            self._topics.pop(old, None)
        if effect.device is None:
            # a node's birth may move its devices too (birth hints): ask the placer again for all
            self._topics.clear()
        self._owned[owner] = effect.metrics

    async def _state(
        self,
        group: str,
        node: str,
        device: str | None,
        online: bool,
        timestamp: int,
        reason: str | None = None,
        bd_seq: int | None = None,
    ) -> None:
        topic = self.placer.state_topic(group, node, device)
        payload = contract.render_state(
            online, timestamp, group=group, node=node, device=device, reason=reason, bd_seq=bd_seq
        )
        if (
            topic not in self._pending
            and len(self._pending) >= self.max_pending
            and not await self._make_room()
        ):
            return
        self._pending[topic] = payload
        self._work.set()

    async def _make_room(self) -> bool:
        """Wait for the next window to take the pending set; False (value dropped) while disconnected."""
        while len(self._pending) >= self.max_pending:
            if not self.publisher.is_connected or self._task is None:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10_000 == 0:
                    log.warning(
                        "UNS pending set full (%d topics, uns.max_pending) and the UNS broker is away: "
                        "%d values not republished (the database keeps them)",
                        self.max_pending,
                        self.dropped,
                    )
                return False
            self._room.clear()
            self._work.set()
            await self._room.wait()
        return True

    # --- out ---
    def _render(self, batch: dict[str, Pending]) -> list[tuple[str, bytes]]:
        items: list[tuple[str, bytes]] = []
        for topic, entry in batch.items():
            if isinstance(entry, bytes):
                items.append((topic, entry))
                continue
            sample, seq = entry
            try:
                items.append((topic, self._renderer.render(sample, seq)))
            except Exception as exc:
                self.render_errors += 1
                log.warning("cannot render %s for the UNS: %s", topic, exc)
        return items

    async def _publish_batch(self) -> None:
        batch, self._pending = self._pending, {}
        self._room.set()
        items = self._render(batch)
        try:
            await self.publisher.publish_many(items)
        except PublishInterrupted as exc:
            # newer values that arrived meanwhile win; the rest goes out in the next window
            for topic, payload in exc.unsent:
                self._pending.setdefault(topic, payload)

    async def _flush_loop(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            if self.window_s and not self._closing:
                await asyncio.sleep(self.window_s)
            if not self._pending:
                continue
            self._idle.clear()
            try:
                await self._publish_batch()
            except Exception:
                log.exception("UNS publishing failed")
            finally:
                if not self._pending:
                    self._idle.set()
                else:
                    self._work.set()

    async def flush(self) -> None:
        """Publish everything pending now (waits for the UNS broker while it is connected)."""
        while self._task is not None and not self._task.done() and (self._pending or not self._idle.is_set()):
            if not self.publisher.is_connected:
                return
            self._work.set()
            waiter = asyncio.ensure_future(self._idle.wait())
            await asyncio.wait((waiter,), timeout=0.05)
            waiter.cancel()
        # no window task (never started, or gone: cancelled at shutdown, say): publish from here. Waiting
        # for a task that is gone would spin, the idle flag set and the pending set never taken.
        while self._pending and self.publisher.is_connected:
            await self._publish_batch()

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 10)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.publisher.close()
