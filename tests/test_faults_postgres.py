"""The real store writer behind the spool, against a private PostgreSQL that is stopped under steady load.

Samples go in as host effects (``StoreWriter.handle``), come out of ``uns.sample``; the test prints
sent/stored/duplicated/lost and asserts 0 lost, 0 duplicated. A short outage runs in ``make test``; the
60 s one is marked ``soak``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.private_servers import PrivatePostgres, postgres_bin_dir
from uns_bridge.config import DatabaseConfig, NamespaceConfig
from uns_bridge.host.effects import MetricInfo, MetricsDefined, NodeOnline, Sample, Samples
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.store.batch import BatchCodec
from uns_bridge.store.forward import Forwarder, merge_batches
from uns_bridge.store.migrations import migrate
from uns_bridge.store.spool import Spool
from uns_bridge.store.writer import StoreWriter

pytestmark = pytest.mark.skipif(postgres_bin_dir() is None, reason="no PostgreSQL binaries")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        await asyncio.to_thread(pg.start)
        yield pg
    finally:
        await asyncio.to_thread(pg.close)


async def until(condition: object, timeout: float = 60.0, what: str = "condition") -> None:
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def stored_counter_values(dsn: str, group: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT s.v_int FROM uns.sample s JOIN uns.metric m ON m.id = s.metric_id"
            " JOIN uns.edge_node n ON n.id = m.node_id WHERE n.group_id = $1 AND m.name = 'counter'",
            group,
        )
    finally:
        await conn.close()
    return [r["v_int"] for r in rows]


def report(label: str, sent: list[int], stored: list[int]) -> tuple[int, int]:
    distinct = set(stored)
    lost = len(set(sent) - distinct)
    duplicated = len(stored) - len(distinct)
    print(f"{label}: sent={len(sent)} stored={len(distinct & set(sent))} duplicated={duplicated} lost={lost}")
    return lost, duplicated


async def writer_outage(pg: PrivatePostgres, spool_dir: Path, outage_s: float, fsync: str) -> None:
    config = DatabaseConfig(
        flush_ms=20, batch_rows=200, write_timeout_ms=3000, queue_rows=20_000, current_values_interval_ms=0
    )
    await migrate(pg.dsn, config)
    writer = StoreWriter(pg.dsn, config, Placer(Namespace.from_config(NamespaceConfig()), prefix="uns"))
    await writer.start()
    forwarder = Forwarder(
        writer.deliver_to_db,
        Spool.open(spool_dir, fsync=fsync),  # type: ignore[arg-type]
        BatchCodec(),
        retry_min_s=0.05,
        retry_max_s=0.5,
        merge=merge_batches,
    )
    writer.deliver = forwarder.deliver
    await forwarder.start()
    group = "G_outage"
    info = MetricInfo(group, "E1", None, "counter", int(DataType.Int64), alias=1)
    birth = MetricsDefined(group, "E1", None, (info,), T0)
    writer.placer.observe(birth)
    await writer.handle([NodeOnline(group, "E1", 0, T0), birth])
    sent: list[int] = []
    stop = asyncio.Event()

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            samples = tuple(Sample(info, T0 + n + k, n + k) for k in range(10))
            await writer.handle([Samples(samples)])
            sent.extend(range(n, n + 10))
            n += 10
            await asyncio.sleep(0.002)

    producer = asyncio.create_task(produce())
    try:
        await until(lambda: writer.stats.batches >= 5, what="batches written directly")
        await asyncio.to_thread(pg.stop)
        await until(lambda: forwarder.spooling, what="the forwarder to spool")
        loop = asyncio.get_running_loop()
        back_at = loop.time() + outage_s
        await until(lambda: loop.time() >= back_at, timeout=outage_s + 30, what="the outage to pass")
        spooled = forwarder.stats.spooled
        await asyncio.to_thread(pg.start)
        assert await forwarder.wait_drained(120), "the spool drains once PostgreSQL is back"
    finally:
        stop.set()
        await producer
    await writer.flush()
    assert await forwarder.wait_drained(60)
    await writer.close()
    await forwarder.close()
    stored = await stored_counter_values(pg.dsn, group)
    lost, duplicated = report(f"PostgreSQL stopped {outage_s:.0f} s under the store writer", sent, stored)
    print(
        f"  batches spooled={forwarder.stats.spooled} (during the outage {spooled}) drained={forwarder.stats.drained}"
        f" in {forwarder.stats.units} deliveries, retries={forwarder.stats.retries}"
    )
    assert spooled > 0
    assert lost == 0
    assert duplicated == 0


async def test_writer_outage_short(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    await writer_outage(private_pg, tmp_path / "spool", outage_s=2.0, fsync="batch")


@pytest.mark.soak
async def test_writer_outage_60s(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    await writer_outage(private_pg, tmp_path / "spool", outage_s=60.0, fsync="always")
