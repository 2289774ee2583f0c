"""Concurrent delivery keeps catalog rows ahead of the samples that reference them.

With two delivery workers, a batch that carries a birth's catalog rows must commit before any later
batch of that metric's samples starts, else the samples fail their foreign keys and are dead-lettered.
"""

from __future__ import annotations

import asyncpg

from tests.store_helpers import T0, defined, settings, store
from uns_bridge.host.effects import MetricInfo, Sample, Samples
from uns_bridge.sparkplug.datatypes import DataType


async def test_births_interleaved_with_samples_lose_nothing_with_two_workers(
    database_dsn: str, group_id: str
) -> None:
    config = settings(batch_rows=50, flush_ms=5, pool_size=4)
    devices, values_per_device = 40, 120
    async with store(database_dsn, config) as writer:
        assert writer._concurrency == 2
        for d in range(devices):
            # an edge node's birth and its device's birth land in consecutive batches
            node_info = MetricInfo(group_id, f"N{d}", None, "uptime", DataType.Int64, alias=1)
            device_info = MetricInfo(group_id, f"N{d}", "D", "speed", DataType.Int32, alias=2)
            for info in (node_info, device_info):
                await writer.handle([defined(writer, info, timestamp=T0 + d)])
                samples = tuple(Sample(info, T0 + d * 1000 + i, i) for i in range(values_per_device // 2))
                for start in range(0, len(samples), 25):
                    await writer.handle([Samples(samples[start : start + 25])])
        await writer.flush()
        dead = writer.stats.dead_letters
    conn = await asyncpg.connect(database_dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM uns.samples WHERE group_id = $1", group_id)
        letters = await conn.fetchval("SELECT count(*) FROM uns.dead_letter")
    finally:
        await conn.close()
    assert (stored, letters, dead) == (devices * values_per_device, 0, 0)
