"""Store writer throughput next to a raw asyncpg binary COPY of the same rows into the same table.

Own database (created and dropped), migrated; the same samples (Double and Int64 values over 200
metrics) go (a) through ``StoreWriter.handle`` -> batches -> ``deliver_to_db`` and (b) as the identical
precomputed rows through ``copy_records_to_table`` on one connection, batch by batch, after a TRUNCATE.
Both wait for the commit. Target: the writer reaches at least 0.7x of raw COPY.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tests import services
from tests.benchmarks._figures import Figure
from uns_bridge.config import DatabaseConfig, NamespaceConfig
from uns_bridge.host.effects import MetricInfo, MetricsDefined, Sample, Samples
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.store.batch import SAMPLE_COLUMNS, Batch
from uns_bridge.store.migrations import migrate
from uns_bridge.store.writer import StoreWriter, setup_connection

SUITE = "store"
T0 = 1_767_225_600_000
METRICS = 200
PER_MESSAGE = 50


def _effects(n: int) -> tuple[list[MetricsDefined], list[Samples]]:
    infos = [
        MetricInfo("BenchG", f"N{i % 4}", f"D{i % 10}", f"m{i}", DataType.Double if i % 2 else DataType.Int64)
        for i in range(METRICS)
    ]
    by_entity: dict[tuple[str, str], list[MetricInfo]] = {}
    for info in infos:
        by_entity.setdefault((info.node, info.device or ""), []).append(info)
    defined = [
        MetricsDefined("BenchG", node, dev, tuple(group), T0) for (node, dev), group in by_entity.items()
    ]
    messages = []
    for start in range(0, n, PER_MESSAGE):
        messages.append(
            Samples(
                tuple(
                    Sample(
                        infos[k % METRICS],
                        T0 + k // METRICS * 100,
                        (k * 0.25) if k % 2 else k,
                    )
                    for k in range(start, min(n, start + PER_MESSAGE))
                )
            )
        )
    return defined, messages


async def _run(quick: bool) -> list[Figure]:
    n = 100_000 if quick else 500_000
    settings = DatabaseConfig(batch_rows=10_000, flush_ms=200, queue_rows=200_000, pool_size=4)
    admin_dsn = services.postgres_admin_dsn()
    name = services.unique_name("uns_bench")
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = services.with_database(admin_dsn, name)
    try:
        await migrate(dsn, settings)
        defined, messages = _effects(n)
        placer = Placer(Namespace.from_config(NamespaceConfig()))
        for effect in defined:
            placer.observe(effect)

        # capture the writer's own rows for the raw run (same rows, same table)
        captured: list[Batch] = []
        writer = StoreWriter(dsn, settings, placer)

        async def keep(batch: Batch) -> None:
            captured.append(batch)

        writer.deliver = keep
        await writer.start()
        await writer.handle(defined)
        for message in messages:
            await writer.handle([message])
        await writer.flush()
        await writer.close()
        sample_batches = [b.samples for b in captured if b.samples]

        conn = await asyncpg.connect(dsn)
        await setup_connection(conn)
        stamps = sorted({r[0] // 3_600_000_000 * 3_600_000_000 for rows in sample_batches for r in rows})
        await conn.fetch("SELECT * FROM uns.ensure_partitions($1::timestamptz[])", stamps)
        raw_best = writer_best = 0.0
        written = 0
        for _ in range(2):
            await conn.execute("TRUNCATE uns.sample")
            started = time.perf_counter()
            for rows in sample_batches:
                await conn.copy_records_to_table(
                    "sample", schema_name="uns", records=rows, columns=SAMPLE_COLUMNS
                )
            raw_best = max(raw_best, n / (time.perf_counter() - started))

            await conn.execute("TRUNCATE uns.sample, uns.metric_current")
            writer = StoreWriter(dsn, settings, placer)
            await writer.start()
            await writer.handle(defined)
            await writer.flush()
            started = time.perf_counter()
            for message in messages:
                await writer.handle([message])
            await writer.flush()
            writer_best = max(writer_best, n / (time.perf_counter() - started))
            written = writer.stats.samples_written
            await writer.close()
        stored = await conn.fetchval("SELECT count(*) FROM uns.sample")
        await conn.close()
        assert written == n and stored == n, (written, stored, n)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return [
        Figure(
            SUITE,
            f"writer: effects -> committed samples ({n:,} rows)",
            writer_best,
            "rows/s",
            ceiling=raw_best,
            ceiling_name="raw asyncpg binary COPY",
            target_ratio=0.7,
            note=f"batch_rows={settings.batch_rows}, {PER_MESSAGE} samples per Samples effect",
        )
    ]


def run(quick: bool) -> list[Figure]:
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    for figure in run(quick=True):
        print(figure.line())
