"""Shared pieces of the store tests: a migrated database with a started writer, exact value comparison."""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from uns_bridge.config import DatabaseConfig, NamespaceConfig
from uns_bridge.host.effects import MetricInfo, MetricsDefined
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer
from uns_bridge.store import values as V
from uns_bridge.store.migrations import migrate
from uns_bridge.store.writer import StoreWriter

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def settings(**overrides: object) -> DatabaseConfig:
    base: dict[str, object] = {"flush_ms": 20, "batch_rows": 1000, "current_values_interval_ms": 0}
    base.update(overrides)
    return DatabaseConfig(**base)  # type: ignore[arg-type]


@asynccontextmanager
async def store(dsn: str, config: DatabaseConfig | None = None) -> AsyncIterator[StoreWriter]:
    """Migrate ``dsn`` and yield a started writer (closed afterwards)."""
    config = config or settings()
    await migrate(dsn, config)
    placer = Placer(Namespace.from_config(NamespaceConfig()), prefix="uns")
    writer = StoreWriter(dsn, config, placer)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


def defined(writer: StoreWriter, *infos: MetricInfo, timestamp: int = T0) -> MetricsDefined:
    """A ``MetricsDefined`` for ``infos`` (one entity), observed by the writer's placer."""
    first = infos[0]
    effect = MetricsDefined(first.group, first.node, first.device, tuple(infos), timestamp)
    writer.placer.observe(effect)
    return effect


def canon(value: object) -> object:
    """A comparable form: floats by their 64 bits (NaN == NaN, -0.0 != 0.0), containers recursively."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple(canon(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, tuple | list):
        return (
            type(value).__name__ if not hasattr(value, "_fields") else "nt",
            tuple(canon(v) for v in value),
        )
    return value


async def stored_values(dsn: str) -> list[tuple[str, int, object]]:
    """(metric name, time ms, exact value) of every stored sample, decoded from the columns."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT m.name, m.datatype, (extract(epoch FROM s.time) * 1000)::bigint AS ms, s.kind, s.v_int,"
            " s.v_float, s.v_bool, s.v_text, s.v_bytes, s.v_json::text AS v_json, s.v_floats"
            " FROM uns.sample s JOIN uns.metric m ON m.id = s.metric_id ORDER BY m.name, s.time, s.vhash"
        )
    finally:
        await conn.close()
    return [
        (
            r["name"],
            r["ms"],
            V.decode(
                r["kind"],
                r["v_int"],
                r["v_float"],
                r["v_bool"],
                r["v_text"],
                r["v_bytes"],
                r["v_json"],
                r["v_floats"],
                r["datatype"],
            ),
        )
        for r in rows
    ]


def is_nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)
