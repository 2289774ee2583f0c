"""``replay --direct``: a capture straight into the host core, the placer and the store, no broker.

Deterministic: each message is fed with its capture time as the receive time, and the host's timers
(seq reorder timeouts, rebirth retries) run at their deadlines in capture time, before the first message
that comes after them; after the last message the clock is advanced past every pending deadline. The
same capture therefore yields the same effects every time, and because the store is idempotent a second
replay stores no sample twice. Publishes the host asks for (STATE, rebirth NCMDs) go nowhere.

Speed: nothing in the feed loop waits on its own (the writer only waits when its queue is full), so
without help the loop would parse the whole capture before the writer's delivery tasks ever ran, and
only then would PostgreSQL start working: CPU and database strictly one after the other. The loop
therefore hands the event loop a turn every :data:`YIELD_EVERY` messages, and the sealed batches are
copied while the host core decodes the next messages (PostgreSQL works on the other core). A turn is
only a scheduling point: the order of effects, and so the stored result, is the same.

The timers are checked once per distinct capture time, not once per message (``Host.next_deadline``
walks every node): a message received at ``t`` arms a reorder timeout at ``t + reorder_timeout_ms`` and
defers a rebirth request to a time after ``t`` (host rules S2, R2), so once the timers due at ``t``
have fired, none can fall due before a message with a different time arrives. With a zero interval
configured the check runs before every message, as a zero interval can arm a deadline at ``t`` itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uns_bridge.capture.jsonl import CaptureRecord, Problem, open_capture
from uns_bridge.config import Config

#: messages fed between two turns of the event loop (each turn costs ~1 µs; a message ~10-150 µs)
YIELD_EVERY = 16


@dataclass
class DirectResult:
    messages: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    seconds: float = 0.0
    writer_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return self.counters.get("samples", 0)


def build_pipeline(config: Config, dsn: str) -> tuple[Any, Any]:
    """Host core + placer + store writer, as the service wires them (no UNS sink: nothing to publish to)."""
    from uns_bridge.app import host_config
    from uns_bridge.host.host import Host
    from uns_bridge.metrics import BridgeMetrics
    from uns_bridge.namespace import Namespace
    from uns_bridge.pipeline import Pipeline
    from uns_bridge.placement import Placer
    from uns_bridge.store.writer import StoreWriter

    host = Host(host_config(config))  # exactly as the live service builds it
    placer = Placer(Namespace.from_config(config.namespace), prefix=config.uns.prefix)
    writer = StoreWriter(dsn, config.database, placer)
    metrics = BridgeMetrics()
    return Pipeline(host, placer, writer, None, metrics), writer


async def run_timers(pipeline: Any, until_ms: int | None) -> None:
    """Fire every timer due at or before ``until_ms`` (``None``: all pending), each at its own deadline."""
    for _ in range(100_000):  # bounded: a timer that re-arms at the same instant cannot spin forever
        deadline = pipeline.next_deadline()
        if deadline is None or (until_ms is not None and deadline > until_ms):
            return
        await pipeline.tick(deadline)
        if pipeline.next_deadline() == deadline:
            await pipeline.tick(deadline + 1)


async def feed_capture(
    pipeline: Any,
    records: Iterable[CaptureRecord],
    config: Config,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Feed ``records`` in order with their capture times, timers at their deadlines; returns the count.

    Ends by advancing the clock past every pending deadline. Does not flush or close the pipeline.
    """
    now = None
    messages = 0
    checked: int | None = None  # the capture time the timers were last run at
    every_message = config.host.reorder_timeout_ms <= 0 or config.host.rebirth_interval_ms <= 0
    for record in records:
        now = record.t_ms
        if messages == 0:
            await pipeline.connected(now)
        if now != checked or every_message:
            await run_timers(pipeline, now)
            checked = now
        await pipeline.feed(record.topic, record.payload, now)
        messages += 1
        if messages % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # let the writer's delivery tasks move (see the module docstring)
            if on_progress is not None and messages % 1024 == 0:
                on_progress(messages)
    if now is not None:
        await run_timers(pipeline, None)
    return messages


async def replay_direct(
    path: Path,
    config: Config,
    dsn: str,
    *,
    reader_options: dict[str, Any] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DirectResult:
    """Feed a capture through the pipeline into the database at ``dsn`` (migrated first)."""
    from uns_bridge.store.migrations import migrate

    await migrate(dsn, config.database)
    pipeline, writer = build_pipeline(config, dsn)
    await writer.start()
    result = DirectResult()
    started = time.perf_counter()
    reader = open_capture(path, **(reader_options or {}))
    try:
        result.messages = await feed_capture(pipeline, reader, config, on_progress=on_progress)
    finally:
        await pipeline.close()
    result.seconds = time.perf_counter() - started
    result.counters = pipeline.metrics.counters()
    result.problems = list(reader.problems.kept)
    result.problem_count = reader.problems.count
    stats = getattr(writer, "stats", None)
    if stats is not None:
        result.writer_stats = dict(vars(stats)) if hasattr(stats, "__dict__") else {"stats": stats}
    return result
