"""Native range partitioning: partitions ahead, on demand for old data, retention drops whole partitions."""

from __future__ import annotations

import itertools
import time

import asyncpg

from tests.store_helpers import T0, defined, settings, store
from uns_bridge.host.effects import MetricInfo, Sample, Samples
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.store.migrations import maintain, migrate

DAY = 86_400_000


async def _partitions(dsn: str) -> list[tuple[str, object, object]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, p.lo, p.hi FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN uns.sample_partition p ON p.name = c.relname"
            " WHERE i.inhparent = 'uns.sample'::regclass ORDER BY p.lo"
        )
    finally:
        await conn.close()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_partitions_created_ahead(database_dsn: str) -> None:
    await migrate(database_dsn, settings(partitions_ahead=3, partition_interval="day"))
    parts = await _partitions(database_dsn)
    assert len(parts) == 4  # today and three ahead
    now = time.time()
    assert parts[0][1].timestamp() <= now < parts[0][2].timestamp()  # type: ignore[attr-defined]
    for (_, _, hi), (_, lo, _) in itertools.pairwise(parts):
        assert hi == lo  # contiguous
    assert all((p[2] - p[1]).total_seconds() == 86400 for p in parts)  # type: ignore[operator]


async def test_old_and_future_samples_get_partitions_and_retention_drops_them(
    database_dsn: str, group_id: str
) -> None:
    config = settings(retention_days=30, partition_interval="day", partitions_ahead=1)
    info = MetricInfo(group_id, "N1", None, "T", DataType.Int32)
    old = T0 - 400 * DAY
    async with store(database_dsn, config) as writer:
        await writer.handle(
            [
                defined(writer, info),
                Samples((Sample(info, old, 1), Sample(info, T0, 2), Sample(info, T0 + 5 * DAY, 3))),
            ]
        )
        await writer.flush()
        assert writer.stats.samples_written == 3 and writer.stats.dead_letters == 0
    names = [p[0] for p in await _partitions(database_dsn)]
    assert (
        "sample_p20241127T0000" in names
        and "sample_p20260101T0000" in names
        and "sample_p20260106T0000" in names
    )
    report = await maintain(database_dsn, now_ms=T0 + 33 * DAY)  # cutoff: T0 + 3 days
    assert set(report.dropped) == {"sample_p20241127T0000", "sample_p20260101T0000"}
    conn = await asyncpg.connect(database_dsn)
    try:
        left = [r[0] for r in await conn.fetch("SELECT value_num FROM uns.samples ORDER BY time")]
    finally:
        await conn.close()
    assert left == [3.0]
    names = [p[0] for p in await _partitions(database_dsn)]
    assert "sample_p20260106T0000" in names and "sample_p20241127T0000" not in names
    # the writer recreates a dropped partition when data for it arrives again
    async with store(database_dsn, config) as writer:
        await writer.handle([defined(writer, info), Samples((Sample(info, old, 1),))])
        await writer.flush()
        assert writer.stats.samples_written == 1


async def test_interval_change_fills_gaps_between_existing_partitions(
    database_dsn: str, group_id: str
) -> None:
    info = MetricInfo(group_id, "N1", None, "T", DataType.Int32)
    async with store(database_dsn, settings(partition_interval="hour", partitions_ahead=0)) as writer:
        await writer.handle([defined(writer, info), Samples((Sample(info, T0 + 3_600_000 * 5, 5),))])
        await writer.flush()
    async with store(database_dsn, settings(partition_interval="day", partitions_ahead=0)) as writer:
        await writer.handle([Samples(tuple(Sample(info, T0 + 3_600_000 * h, h) for h in range(24)))])
        await writer.flush()
        assert writer.stats.samples_written == 23  # the one at hour 5 was stored already
    parts = [
        p for p in await _partitions(database_dsn) if p[1].year == 2026 and p[1].month == 1 and p[1].day == 1
    ]  # type: ignore[attr-defined]
    spans = [(p[1].hour, (p[2] - p[1]).total_seconds() / 3600) for p in parts]  # type: ignore[attr-defined,operator]
    assert spans == [(0, 5.0), (5, 1.0), (6, 18.0)]


async def test_maintain_prunes_old_delivery_tokens(database_dsn: str) -> None:
    await migrate(database_dsn, settings(partition_interval="day", partitions_ahead=1))
    conn = await asyncpg.connect(database_dsn)
    try:
        await conn.executemany(
            "INSERT INTO uns.delivered_batch (token, delivered_at) VALUES ($1, timestamptz 'epoch' + make_interval(secs => $2::bigint / 1e3))",
            [(1, T0 - 40 * DAY), (2, T0 - 31 * DAY), (3, T0 - 29 * DAY), (4, T0)],
        )
        report = await maintain(database_dsn, now_ms=T0)
        left = [r[0] for r in await conn.fetch("SELECT token FROM uns.delivered_batch ORDER BY token")]
    finally:
        await conn.close()
    assert report.tokens_pruned == 2
    assert left == [3, 4]  # tokens younger than DELIVERED_TOKEN_DAYS stay: a drain may still need them
    assert "2 old delivery tokens pruned" in str(report)
