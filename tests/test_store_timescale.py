"""The TimescaleDB path: runs only where the extension can be created (preloaded); skips otherwise."""

from __future__ import annotations

import asyncpg
import pytest

from tests.store_helpers import T0, defined, settings, store
from uns_bridge.host.effects import MetricInfo, Sample, Samples
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.store.migrations import timescaledb_status


@pytest.fixture
async def timescale_dsn(database_dsn: str) -> str:
    conn = await asyncpg.connect(database_dsn)
    try:
        usable, why = await timescaledb_status(conn)
    finally:
        await conn.close()
    if not usable:
        pytest.skip(f"TimescaleDB path not tested: {why}")
    return database_dsn


async def test_hypertable_policies_and_aggregate(timescale_dsn: str, group_id: str) -> None:
    config = settings(timescaledb="on", retention_days=90, compress_after_days=7, aggregates=True)
    info = MetricInfo(group_id, "N1", None, "T", DataType.Double)
    async with store(timescale_dsn, config) as writer:
        assert writer._storage == "timescaledb"
        await writer.handle(
            [defined(writer, info), Samples(tuple(Sample(info, T0 + i * 1000, float(i)) for i in range(120)))]
        )
        await writer.handle([Samples((Sample(info, T0, 0.0),))])  # replay
        await writer.flush()
        assert writer.stats.samples_written == 120
    conn = await asyncpg.connect(timescale_dsn)
    try:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'sample'"
            )
            == 1
        )
        jobs = {r[0] for r in await conn.fetch("SELECT proc_name FROM timescaledb_information.jobs")}
        assert {"policy_compression", "policy_retention", "policy_refresh_continuous_aggregate"} <= jobs
        await conn.execute("CALL refresh_continuous_aggregate('uns.sample_1m', NULL, NULL)")
        rows = await conn.fetch("SELECT count, min, max FROM uns.sample_1m ORDER BY bucket")
        assert [(r[0], r[1], r[2]) for r in rows] == [(60, 0.0, 59.0), (60, 60.0, 119.0)]
    finally:
        await conn.close()
