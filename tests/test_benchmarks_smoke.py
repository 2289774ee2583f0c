"""The benchmark suite still runs: every bench module imports, and the harness's cheapest pieces work
against the real broker and database (no speed assertions: speed is reported by the suite, never tested)."""

from __future__ import annotations

import importlib
import pkgutil
import tempfile

import asyncpg  # type: ignore[import-untyped]
import pytest

import tests.benchmarks as package
from tests import services
from tests.benchmarks._harness import Publisher, Sink, bench_database, percentile, unique
from tests.benchmarks._publisher import Fleet
from tests.benchmarks._wire import SEQ_FIELD, make_template, parse_module, payload_encoder, ts_bytes
from uns_bridge.sparkplug.values import Metric

BENCH_MODULES = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_"))


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_every_bench_module_imports_and_has_run(name: str) -> None:
    module = importlib.import_module(f"tests.benchmarks.{name}")
    assert callable(module.run)


def test_template_patches_timestamps_and_seq_exactly() -> None:
    pb = parse_module()
    encode, _ = payload_encoder()
    metrics = [Metric(None, a, None, 10, float(a) + 0.25) for a in (1, 2, 300)]
    template = make_template(encode, metrics)
    for ms, seq in ((1_700_000_000_123, 0), (1_800_000_000_999, 127), (1_750_000_000_000, 255)):
        raw = template.render(ts_bytes(ms), seq)
        msg = pb.Payload()
        msg.ParseFromString(raw)
        assert (msg.timestamp, msg.seq) == (ms, seq)
        assert [(m.alias, m.timestamp, m.double_value) for m in msg.metrics] == [
            (1, ms, 1.25),
            (2, ms, 2.25),
            (300, ms, 300.25),
        ]
    assert len(SEQ_FIELD) == 256


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(101)], 0.99) == 99.0


async def test_publisher_reaches_a_bare_subscriber_without_loss() -> None:
    broker = services.local_mosquitto()
    if broker is None:
        pytest.skip("needs the local Mosquitto")
    group = unique("BenchSmoke")
    fleet = Fleet(
        group=group, nodes=2, devices=2, metrics=10, host=broker.host, port=broker.port, probe=False
    )
    with tempfile.TemporaryDirectory() as tmp:
        counter = f"{tmp}/counter"
        args: dict[str, object] = {
            "host": broker.host,
            "port": broker.port,
            "topic": f"spBv1.0/{group}/DDATA/#",
            "expect": 500,
            "idle_s": 5.0,
            "counter": counter,
        }
        async with Sink("subscribe", args) as sink, Publisher(fleet) as pub:
            sent = await pub.blast(500, counter=counter, window=100)
            got = await sink.result(timeout=60)
    assert sent["msgs"] == 500
    assert got["msgs"] == 500


async def test_bench_database_is_created_and_always_dropped() -> None:
    admin = services.local_postgres_dsn()
    if admin is None:
        pytest.skip("needs the local PostgreSQL")
    with pytest.raises(RuntimeError, match="boom"):
        async with bench_database(admin) as (dsn, name):
            assert name.startswith("uns_bench_")
            conn = await asyncpg.connect(dsn)
            assert await conn.fetchval("select current_database()") == name
            await conn.close()
            raise RuntimeError("boom")
    conn = await asyncpg.connect(admin)
    try:
        assert await conn.fetchval("select count(*) from pg_database where datname = $1", name) == 0
    finally:
        await conn.close()


async def test_minimal_pipeline_commits_every_row() -> None:
    admin, broker = services.local_postgres_dsn(), services.local_mosquitto()
    if admin is None or broker is None:
        pytest.skip("needs the local PostgreSQL and Mosquitto")
    group = unique("BenchSmoke")
    fleet = Fleet(
        group=group, nodes=1, devices=3, metrics=10, host=broker.host, port=broker.port, probe=False
    )
    async with bench_database(admin) as (dsn, _):
        with tempfile.TemporaryDirectory() as tmp:
            counter = f"{tmp}/counter"
            args: dict[str, object] = {
                "dsn": dsn,
                "host": broker.host,
                "port": broker.port,
                "topic": f"spBv1.0/{group}/DDATA/#",
                "expect": 300,
                "idle_s": 5.0,
                "counter": counter,
            }
            async with Sink("pipeline", args) as sink, Publisher(fleet) as pub:
                sent = await pub.blast(300, counter=counter, window=100)
                got = await sink.result(timeout=60)
        conn = await asyncpg.connect(dsn)
        try:
            stored = await conn.fetchval("select count(*) from bench_narrow")
            aliases = await conn.fetchval("select count(distinct metric_id) from bench_narrow")
        finally:
            await conn.close()
    assert sent["metrics"] == 3000
    assert got["rows"] == stored == 3000
    assert aliases == 30


async def test_publisher_births_only_the_nodes_asked_for() -> None:
    broker = services.local_mosquitto()
    if broker is None:
        pytest.skip("needs the local Mosquitto")
    fleet = Fleet(
        group=unique("BenchSmoke"), nodes=4, devices=2, metrics=3, host=broker.host, port=broker.port
    )
    async with Publisher(fleet) as pub:
        first = await pub.births(0, 1, probe=False)
        rest = await pub.births(1, 4, probe=True)
    assert (first["msgs"], first["birth_metrics"]) == (3, 6)
    assert (rest["msgs"], rest["birth_metrics"]) == (3 * 3 + 2, 3 * 6 + 1)
