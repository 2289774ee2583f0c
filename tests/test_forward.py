"""Store-and-forward against real PostgreSQL servers: the shared one when healthy, a private one to stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.fault_counts import JsonIds, TableSink, count
from tests.private_servers import PrivatePostgres, postgres_bin_dir
from uns_bridge.embedded import free_port
from uns_bridge.store.forward import Forwarder, is_transient, open_spool
from uns_bridge.store.spool import Spool

needs_pg = pytest.mark.skipif(postgres_bin_dir() is None, reason="no PostgreSQL binaries")


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        await asyncio.to_thread(pg.start)
        yield pg
    finally:
        await asyncio.to_thread(pg.close)


async def until(condition: object, timeout: float = 60.0, what: str = "condition") -> None:
    """Wait for ``condition()`` to become true, polling; fail with ``what`` after ``timeout`` seconds."""
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


async def test_healthy_fast_path_never_touches_the_spool(database_dsn: str, tmp_path: Path) -> None:
    sink = TableSink(database_dsn)
    await sink.create()
    spool = Spool.open(tmp_path / "spool")
    forwarder = Forwarder(sink.deliver, spool, JsonIds())
    await forwarder.start()
    sent: list[int] = []
    for b in range(50):
        batch = list(range(b * 10, b * 10 + 10))
        await forwarder.deliver(batch)
        sent += batch
    await forwarder.close()
    await sink.close()
    counts = await count(database_dsn, sent)
    print(counts.line("healthy"))
    assert (counts.lost, counts.duplicated, counts.out_of_order) == (0, 0, 0)
    assert forwarder.stats.direct == 50 and forwarder.stats.spooled == 0
    assert segment_files(tmp_path / "spool") == [], "no disk I/O while healthy"


async def produce(
    forwarder: Forwarder[list[int]], stop: asyncio.Event, sent: list[int], size: int = 20
) -> None:
    next_id = 0
    while not stop.is_set():
        batch = list(range(next_id, next_id + size))
        next_id += size
        await forwarder.deliver(batch)
        sent.extend(batch)
        await asyncio.sleep(0.005)


async def outage_run(pg: PrivatePostgres, spool_dir: Path, outage_s: float, **spool_options: object) -> None:
    sink = TableSink(pg.dsn)
    await sink.create()
    spool = Spool.open(spool_dir, **spool_options)  # type: ignore[arg-type]
    forwarder = Forwarder(sink.deliver, spool, JsonIds(), retry_min_s=0.05, retry_max_s=0.5)
    await forwarder.start()
    sent: list[int] = []
    stop = asyncio.Event()
    producer = asyncio.create_task(produce(forwarder, stop, sent))
    try:
        await until(lambda: forwarder.stats.direct >= 20, what="direct deliveries")
        await asyncio.to_thread(pg.stop)
        await until(lambda: forwarder.spooling, what="spooling to start")
        loop = asyncio.get_running_loop()
        down_until = loop.time() + outage_s
        await until(lambda: loop.time() >= down_until, timeout=outage_s + 30, what="the outage to pass")
        spooled_during_outage = forwarder.stats.spooled
        await asyncio.to_thread(pg.start)
        assert await forwarder.wait_drained(120), "the spool drains once the database is back"
        await until(lambda: forwarder.stats.direct >= 20 + 20, what="direct deliveries after the drain")
    finally:
        stop.set()
        await producer
    assert await forwarder.wait_drained(60)
    await forwarder.close()
    await sink.close()
    counts = await count(pg.dsn, sent)
    print(
        counts.line(f"PostgreSQL stopped {outage_s:.0f} s under load")
        + f" (batches: direct={forwarder.stats.direct} spooled={forwarder.stats.spooled}"
        f" drained={forwarder.stats.drained} retries={forwarder.stats.retries};"
        f" spooled while down={spooled_during_outage})"
    )
    assert spooled_during_outage > 0
    assert counts.lost == 0, counts
    assert counts.duplicated == 0, counts
    assert counts.out_of_order == 0, "batches reach the database in the order they were handed over"
    assert forwarder.stats.drained == forwarder.stats.spooled
    assert segment_files(spool_dir) == [] or Spool.open(spool_dir).is_empty()


@needs_pg
async def test_postgres_stopped_under_load_loses_and_duplicates_nothing(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    await outage_run(private_pg, tmp_path / "spool", outage_s=2.0, fsync="batch")


@needs_pg
@pytest.mark.soak
async def test_postgres_stopped_60s_under_load_loses_and_duplicates_nothing(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    await outage_run(private_pg, tmp_path / "spool", outage_s=60.0, fsync="always", segment_bytes=64 * 1024)


@needs_pg
async def test_full_spool_blocks_the_producer_until_the_database_returns(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    sink = TableSink(private_pg.dsn)
    await sink.create()
    spool = Spool.open(tmp_path / "spool", segment_bytes=2048, max_bytes=4096, when_full="block")
    forwarder = Forwarder(sink.deliver, spool, JsonIds(), retry_min_s=0.05, retry_max_s=0.3)
    await asyncio.to_thread(private_pg.stop)
    sent: list[int] = []
    stop = asyncio.Event()
    producer = asyncio.create_task(produce(forwarder, stop, sent))
    await until(lambda: forwarder.blocked, what="the producer to block on a full spool")
    stuck_at = len(sent)
    await asyncio.sleep(0.3)  # the producer is blocked: a bounded wait, the assertion is not on timing
    assert len(sent) == stuck_at, "with when_full=block the producer waits instead of losing batches"
    assert spool.size_bytes <= 4096
    await asyncio.to_thread(private_pg.start)
    await until(lambda: len(sent) > stuck_at + 100, what="the producer to move again")
    stop.set()
    await producer
    assert await forwarder.wait_drained(60)
    await forwarder.close()
    await sink.close()
    counts = await count(private_pg.dsn, sent)
    print(counts.line("spool full, block policy") + f" blocked {forwarder.stats.blocked_s:.2f} s")
    assert (counts.lost, counts.duplicated, counts.out_of_order) == (0, 0, 0)
    assert forwarder.stats.blocked_s > 0


@needs_pg
async def test_spool_left_by_a_previous_run_is_drained_on_start(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    sink = TableSink(private_pg.dsn, idempotent=True)
    await sink.create()
    with Spool.open(tmp_path / "spool") as spool:
        for b in range(30):
            spool.append(b"\x00" + JsonIds().encode(list(range(b * 5, b * 5 + 5))))  # a forwarder record
        spool.append(b"\xff not json")  # a record the codec rejects: skipped and counted, never a crash
    forwarder = Forwarder(sink.deliver, Spool.open(tmp_path / "spool"), JsonIds())
    assert forwarder.spooling
    await forwarder.start()
    assert await forwarder.wait_drained(60)
    await forwarder.deliver([1000])
    await forwarder.close()
    await sink.close()
    counts = await count(private_pg.dsn, [*range(150), 1000])
    print(counts.line("restart with a full spool"))
    assert (counts.lost, counts.duplicated, counts.out_of_order) == (0, 0, 0)
    assert forwarder.stats.undecodable == 1
    assert forwarder.stats.direct == 1


async def test_permanent_errors_propagate_directly_and_go_to_on_permanent_when_spooled(
    database_dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(database_dsn)
    await conn.execute("CREATE TABLE strict (x int CHECK (x >= 0))")

    async def deliver(batch: list[int]) -> None:
        await conn.executemany("INSERT INTO strict VALUES ($1)", [(x,) for x in batch])

    with Spool.open(tmp_path / "spool") as spool:
        spool.append(b"\x00" + json.dumps([-1]).encode())
        spool.append(b"\x00" + json.dumps([5]).encode())
    rejected: list[tuple[list[int], str]] = []

    async def on_permanent(batch: list[int], exc: BaseException) -> None:
        rejected.append((batch, type(exc).__name__))

    forwarder = Forwarder(deliver, Spool.open(tmp_path / "spool"), JsonIds(), on_permanent=on_permanent)
    await forwarder.start()
    assert await forwarder.wait_drained(30)
    assert rejected == [([-1], "CheckViolationError")]
    with pytest.raises(asyncpg.CheckViolationError):
        await forwarder.deliver([-2])
    await forwarder.close()
    assert [r["x"] for r in await conn.fetch("SELECT x FROM strict")] == [5]
    await conn.close()


@needs_pg
async def test_transient_classification_on_real_errors(
    private_pg: PrivatePostgres, database_dsn: str
) -> None:
    with pytest.raises(OSError) as refused:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", timeout=5)
    assert is_transient(refused.value)
    conn = await asyncpg.connect(database_dsn)
    try:
        with pytest.raises(asyncpg.DataError) as data_error:
            await conn.execute("SELECT 1 / 0")
        assert not is_transient(data_error.value)
        await conn.execute("CREATE TABLE u (x int PRIMARY KEY); INSERT INTO u VALUES (1)")
        with pytest.raises(asyncpg.UniqueViolationError) as unique:
            await conn.execute("INSERT INTO u VALUES (1)")
        assert not is_transient(unique.value)
    finally:
        await conn.close()
    victim = await asyncpg.connect(private_pg.dsn)
    await asyncio.to_thread(private_pg.stop)
    with pytest.raises(Exception) as shutdown:
        await victim.execute("SELECT 1")
    assert is_transient(shutdown.value), repr(shutdown.value)
    victim.terminate()


def test_open_spool_follows_the_configuration(tmp_path: Path) -> None:
    from uns_bridge.config import SpoolConfig

    for max_bytes in (10_000, 1 << 20, 1 << 30):
        config = SpoolConfig(
            dir=tmp_path / str(max_bytes), max_bytes=max_bytes, fsync="never", when_full="drop-oldest"
        )
        with open_spool(config) as spool:
            assert (spool.max_bytes, spool.fsync_policy, spool.when_full) == (
                max_bytes,
                "never",
                "drop-oldest",
            )
            assert spool.segment_bytes <= max_bytes
            spool.append(b"x")


async def test_merged_drain_splits_a_failing_unit_to_find_the_bad_batch(
    database_dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(database_dsn)
    await conn.execute("CREATE TABLE strict (x int CHECK (x >= 0))")
    units: list[int] = []

    async def deliver(batch: list[int]) -> None:
        units.append(len(batch))
        async with conn.transaction():
            await conn.executemany("INSERT INTO strict VALUES ($1)", [(x,) for x in batch])

    with Spool.open(tmp_path / "spool") as spool:
        for batch in ([1, 2], [3], [-1], [4, 5], [6]):
            spool.append(b"\x00" + json.dumps(batch).encode())
    rejected: list[list[int]] = []

    async def on_permanent(batch: list[int], exc: BaseException) -> None:
        rejected.append(batch)

    forwarder = Forwarder(
        deliver,
        Spool.open(tmp_path / "spool"),
        JsonIds(),
        on_permanent=on_permanent,
        merge=lambda batches: [x for b in batches for x in b],
    )
    await forwarder.start()
    assert await forwarder.wait_drained(30)
    await forwarder.close()
    assert rejected == [[-1]]
    assert sorted(r["x"] for r in await conn.fetch("SELECT x FROM strict")) == [1, 2, 3, 4, 5, 6]
    assert units[0] == 7, "first one merged unit of everything"
    await conn.close()


async def test_a_single_record_unit_committed_before_a_crash_is_not_regrouped(
    database_dsn: str, tmp_path: Path
) -> None:
    """A merged drain commits a unit of one record and dies before acknowledging it; the next run finds
    more records behind it. The unit must come back alone, with its token, so it is not written twice."""
    sink = TableSink(database_dsn, idempotent=True)
    await sink.create()
    with Spool.open(tmp_path / "spool") as spool:
        spool.append(b"\x00" + json.dumps([1, 2]).encode())
    committed = asyncio.Event()

    async def commit_then_hang(batch: list[int], token: int | None = None) -> None:
        await sink.deliver(batch, token)
        committed.set()
        await asyncio.Event().wait()  # the process "dies" here: committed, never acknowledged

    merge = lambda batches: [x for b in batches for x in b]  # noqa: E731
    first = Forwarder(commit_then_hang, Spool.open(tmp_path / "spool"), JsonIds(), merge=merge)
    await first.start()
    await asyncio.wait_for(committed.wait(), 30)
    await first.close()
    with Spool.open(tmp_path / "spool") as spool:  # what the next run spools before its drain starts
        spool.append(b"\x00" + json.dumps([3]).encode())
        spool.append(b"\x00" + json.dumps([4]).encode())
    second = Forwarder(sink.deliver, Spool.open(tmp_path / "spool"), JsonIds(), merge=merge)
    await second.start()
    assert await second.wait_drained(30)
    await second.close()
    await sink.close()
    conn = await asyncpg.connect(database_dsn)
    try:
        ids = sorted(r["id"] for r in await conn.fetch("SELECT id FROM fault_sample"))
    finally:
        await conn.close()
    assert ids == [1, 2, 3, 4]
