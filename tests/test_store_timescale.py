"""The TimescaleDB path: runs only where the extension can be created (preloaded); skips otherwise."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests import services
from tests.store_helpers import T0, defined, settings, store
from uns_bridge.host.effects import MetricInfo, Sample, Samples
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.store.migrations import migrate, timescaledb_status

TIMESCALE_ENV = "UNS_TEST_TIMESCALE_DSN"


@pytest.fixture
async def timescale_dsn(postgres_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database of this test's own on the TimescaleDB server, dropped afterwards.

    The server is ``UNS_TEST_TIMESCALE_DSN`` (a maintenance database on a server that preloads
    timescaledb) when set, else the normal test server; skips when the extension is not usable there.
    """
    admin_dsn = os.environ.get(TIMESCALE_ENV) or postgres_admin_dsn
    name = services.unique_name("uns_tsdb")
    admin = await asyncpg.connect(admin_dsn)
    try:
        usable, why = await timescaledb_status(admin)
        if not usable:
            pytest.skip(f"TimescaleDB path not tested: {why} (set {TIMESCALE_ENV} to a server that has it)")
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield services.with_database(admin_dsn, name)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


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


async def test_migrate_twice_segmentby_and_no_aggregate(timescale_dsn: str) -> None:
    """Re-running migrate on TimescaleDB keeps one set of jobs; aggregates=False creates no sample_1m."""
    config = settings(timescaledb="on", retention_days=30, compress_after_days=3, aggregates=False)
    first = await migrate(timescale_dsn, config)
    second = await migrate(timescale_dsn, config)
    assert first.timescaledb_available and second.timescaledb_available
    conn = await asyncpg.connect(timescale_dsn)
    try:
        segment = await conn.fetch(
            "SELECT attname FROM timescaledb_information.compression_settings"
            " WHERE hypertable_name = 'sample' AND segmentby_column_index IS NOT NULL"
        )
        assert [r[0] for r in segment] == ["metric_id"]
        jobs = sorted(
            r[0]
            for r in await conn.fetch(
                "SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_name = 'sample'"
            )
        )
        assert jobs == ["policy_compression", "policy_retention"]
        assert await conn.fetchval("SELECT to_regclass('uns.sample_1m')") is None
    finally:
        await conn.close()


async def test_replay_into_compressed_chunk_stores_once(timescale_dsn: str, group_id: str) -> None:
    """Samples replayed after their chunk was compressed are still stored once (ON CONFLICT on compressed data)."""
    config = settings(timescaledb="on", retention_days=None, compress_after_days=7, aggregates=False)
    info = MetricInfo(group_id, "N1", None, "T", DataType.Int64)
    values = [Sample(info, T0 + i * 1000, i) for i in range(50)]
    async with store(timescale_dsn, config) as writer:
        await writer.handle([defined(writer, info), Samples(tuple(values))])
        await writer.flush()
        conn = await asyncpg.connect(timescale_dsn)
        try:
            compressed = await conn.fetch("SELECT compress_chunk(c) FROM show_chunks('uns.sample') c")
            assert compressed
            await writer.handle([Samples(tuple(values[:10]))])  # replay into the compressed chunk
            await writer.flush()
            assert writer.stats.samples_written == 50
            assert await conn.fetchval("SELECT count(*) FROM uns.sample") == 50
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM timescaledb_information.chunks"
                    " WHERE hypertable_name = 'sample' AND is_compressed"
                )
                >= 1
            )
        finally:
            await conn.close()


async def test_aggregates_setting_toggles_continuous_aggregate(timescale_dsn: str) -> None:
    """Turning ``aggregates`` off drops uns.sample_1m and its refresh job; on again brings both back."""

    async def state() -> tuple[bool, int]:
        conn = await asyncpg.connect(timescale_dsn)
        try:
            view = await conn.fetchval("SELECT to_regclass('uns.sample_1m')") is not None
            refresh = await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_refresh_continuous_aggregate'"
            )
            return view, int(refresh)
        finally:
            await conn.close()

    for aggregates, expected in (
        (True, (True, 1)),
        (False, (False, 0)),
        (True, (True, 1)),
        (True, (True, 1)),
    ):
        await migrate(timescale_dsn, settings(timescaledb="on", aggregates=aggregates))
        assert await state() == expected, f"aggregates={aggregates}"
