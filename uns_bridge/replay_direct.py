"""``replay --direct``: a capture straight into the host core, the placer and the store, no broker.

Deterministic: each message is fed with its capture time as the receive time, and the host's timers
(seq reorder timeouts, rebirth retries) run at their deadlines in capture time, before the first message
that comes after them; after the last message the clock is advanced past every pending deadline. The
same capture therefore yields the same effects every time, and because the store is idempotent a second
replay stores no sample twice. Publishes the host asks for (STATE, rebirth NCMDs) go nowhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uns_bridge.capture.jsonl import Problem, open_capture
from uns_bridge.config import Config


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
    now = None
    try:
        for record in reader:
            now = record.t_ms
            if result.messages == 0:
                await pipeline.connected(now)
            await run_timers(pipeline, now)
            await pipeline.feed(record.topic, record.payload, now)
            result.messages += 1
            if on_progress is not None and result.messages % 1000 == 0:
                on_progress(result.messages)
        if now is not None:
            await run_timers(pipeline, None)
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
