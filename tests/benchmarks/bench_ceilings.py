"""The physical limits of this machine, measured in the same run as the bridge figures.

* broker: a minimal paho subscriber (own process) receiving the same DDATA from the local Mosquitto,
  100-metric and 1-metric messages, publisher blasting as fast as the socket takes it;
* database: asyncpg binary COPY of the same rows (metric id, time, double) into a narrow table with an
  index on (metric_id, time), 10k-row batches in metric order (as the bridge copies), one and two
  connections;
* pipeline: paho receive -> protobuf parse -> rows -> COPY on two connections (own process): the least a
  bridge must do, so the bridge's end-to-end throughput is judged against it.

Other suites call :func:`measure` (cached per process) so their ratios use the same run's ceilings.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from tests.benchmarks._figures import Figure
from tests.benchmarks._harness import (
    BenchUnavailable,
    CpuMeter,
    Publisher,
    Sink,
    bench_database,
    cpu_note,
    mosquitto_pids,
    postgres_backends,
    services_or_reason,
    unique,
)
from tests.benchmarks._publisher import Fleet
from tests.benchmarks._sinks import BATCH_ROWS, NARROW_DDL, NARROW_TABLE, metric_first

SUITE = "ceilings"
#: messages the publisher may run ahead of a ceiling sink (an unlimited blast makes Mosquitto drop QoS 0;
#: with these windows it drops none here, and any loss is reported)
WINDOW = int(os.environ.get("BENCH_WINDOW", "2000"))
SMALL_WINDOW = int(os.environ.get("BENCH_SMALL_WINDOW", "3000"))


@dataclass
class Ceilings:
    """The same-run limits (NaN when a measurement could not be made); ``figures`` for printing."""

    broker_msgs_100: float = float("nan")
    broker_msgs_1: float = float("nan")
    copy_rows_1: float = float("nan")
    copy_rows_2: float = float("nan")
    pipeline_metrics: float = float("nan")
    figures: list[Figure] = field(default_factory=list)

    @property
    def copy_rows(self) -> float:
        return max(self.copy_rows_1, self.copy_rows_2)


_measured: dict[bool, Ceilings] = {}


def measure(quick: bool) -> Ceilings:
    """The ceilings of this run, measured once per process and mode."""
    if quick not in _measured:
        _measured[quick] = asyncio.run(_measure(quick))
    return _measured[quick]


def run(quick: bool) -> list[Figure]:
    try:
        return measure(quick).figures
    except BenchUnavailable as exc:  # reported, not a crash: e.g. no local broker in this environment
        return [Figure(SUITE, "ceilings could not be measured", float("nan"), "", note=str(exc))]


async def broker_ceiling(host: str, port: int, metrics: int, count: int) -> tuple[float, int, str]:
    """(messages/s received by a bare subscriber, lost, CPU note) for ``count`` blasted messages."""
    group = unique("BenchC")
    fleet = Fleet(group=group, nodes=1, devices=10, metrics=metrics, host=host, port=port, probe=False)
    args = {"host": host, "port": port, "topic": f"spBv1.0/{group}/DDATA/#", "expect": count, "idle_s": 3.0}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        args["counter"] = f"{tmp}/counter"
        return await _blast_into("subscribe", args, fleet, count)


async def _blast_into(
    mode: str, args: dict[str, Any], fleet: Fleet, count: int, database: tuple[str, str] | None = None
) -> tuple[float, int, str]:
    """Blast ``count`` messages window-limited into a sink; (items/s, lost, CPU note)."""
    async with Sink(mode, args) as sink, Publisher(fleet) as pub:
        groups = {mode: [sink.pid], "mosquitto": mosquitto_pids(), "publisher": [pub.pid]}
        if database is not None:
            groups["postgres"] = await postgres_backends(*database)
        cpu = CpuMeter(groups)
        cpu.start()
        sent = await pub.blast(
            count, counter=args["counter"], window=WINDOW if fleet.metrics > 10 else SMALL_WINDOW
        )
        got = await sink.result()
        elapsed = max(1e-6, got["last"] - sent["t0"])
        usage = cpu.stop(wall=elapsed)
    done = got.get("rows", got["msgs"])
    expected = sent["metrics"] if "rows" in got else sent["msgs"]
    return done / elapsed, expected - done, cpu_note(usage)


def same_rows(count: int, metrics: int = 100) -> list[tuple[int, dt.datetime, float]]:
    """The rows the traffic turns into: (metric id, time, value), ``metrics`` per timestamp."""
    start = dt.datetime.now(dt.UTC)
    step = dt.timedelta(milliseconds=1)
    return [(i % metrics + 1, start + step * (i // metrics), float(i % metrics) + 0.25) for i in range(count)]


async def copy_ceiling(
    dsn: str, database: str, rows: list[tuple[int, dt.datetime, float]], writers: int
) -> tuple[float, str]:
    """(rows/s, CPU note) of binary COPY in 10k-row batches on ``writers`` connections into a fresh table."""
    conns = [await asyncpg.connect(dsn) for _ in range(writers)]
    try:
        await conns[0].execute(f"drop table if exists {NARROW_TABLE}; {NARROW_DDL}")
        # each batch in metric order, as the bridge copies its batches (see StoreWriter._write_samples)
        batches = [
            sorted(rows[i : i + BATCH_ROWS], key=metric_first) for i in range(0, len(rows), BATCH_ROWS)
        ]
        cpu = CpuMeter({"postgres": await postgres_backends(dsn, database)})

        async def write(conn: asyncpg.Connection, mine: list[list[tuple[int, dt.datetime, float]]]) -> None:
            for batch in mine:
                await conn.copy_records_to_table(
                    NARROW_TABLE, records=batch, columns=("metric_id", "time", "value")
                )

        loop = asyncio.get_running_loop()
        cpu.start()
        started = loop.time()
        await asyncio.gather(*(write(c, batches[k::writers]) for k, c in enumerate(conns)))
        elapsed = loop.time() - started
        usage = cpu.stop()
        stored = await conns[0].fetchval(f"select count(*) from {NARROW_TABLE}")
        if stored != len(rows):
            raise AssertionError(f"COPY stored {stored} of {len(rows)} rows")
        return len(rows) / elapsed, cpu_note(usage)
    finally:
        for conn in conns:
            await conn.close()


async def pipeline_ceiling(
    dsn: str, database: str, host: str, port: int, count: int
) -> tuple[float, int, str]:
    """(metrics/s committed by the minimal pipeline, lost rows, CPU note) for ``count`` 100-metric messages."""
    group = unique("BenchP")
    fleet = Fleet(group=group, nodes=1, devices=10, metrics=100, host=host, port=port, probe=False)
    args = {
        "dsn": dsn,
        "host": host,
        "port": port,
        "topic": f"spBv1.0/{group}/DDATA/#",
        "expect": count,
        "idle_s": 5.0,
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        args["counter"] = f"{tmp}/counter"
        return await _blast_into("pipeline", args, fleet, count, database=(dsn, database))


async def _measure(quick: bool) -> Ceilings:
    result = Ceilings()
    admin, broker = services_or_reason()
    n100, n1 = (20_000, 100_000) if quick else (100_000, 400_000)
    rate, lost, note = await broker_ceiling(broker.host, broker.port, 100, n100)
    result.broker_msgs_100 = rate
    result.figures.append(
        Figure(
            SUITE,
            "broker -> bare paho subscriber, 100-metric DDATA",
            rate * 100,
            "metrics/s",
            note=f"{rate:,.0f} msg/s, lost {lost}; {note}",
        )
    )
    rate, lost, note = await broker_ceiling(broker.host, broker.port, 1, n1)
    result.broker_msgs_1 = rate
    result.figures.append(
        Figure(
            SUITE,
            "broker -> bare paho subscriber, 1-metric DDATA",
            rate,
            "msg/s",
            note=f"lost {lost}; {note}",
        )
    )
    rows = same_rows(300_000 if quick else 3_000_000)
    async with bench_database(admin) as (dsn, name):
        for writers in (1, 2):
            rate, note = await copy_ceiling(dsn, name, rows, writers)
            setattr(result, f"copy_rows_{writers}", rate)
            result.figures.append(
                Figure(
                    SUITE,
                    f"asyncpg binary COPY, narrow+index, 10k batches, {writers} conn",
                    rate,
                    "rows/s",
                    note=note,
                )
            )
        del rows
        await _drop_narrow(dsn)
        rate, lost, note = await pipeline_ceiling(
            dsn, name, broker.host, broker.port, 10_000 if quick else 50_000
        )
        result.pipeline_metrics = rate
        result.figures.append(
            Figure(
                SUITE,
                "minimal paho -> protobuf -> COPY(2) pipeline",
                rate,
                "metrics/s",
                ceiling=result.copy_rows,
                ceiling_name="raw COPY",
                note=f"lost {lost}; {note}",
            )
        )
    return result


async def _drop_narrow(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"drop table if exists {NARROW_TABLE}")
    finally:
        await conn.close()
