"""The store writer against the real PostgreSQL: exact round trips, replays, dead letters, backpressure."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import asyncpg
import pytest

from tests.store_helpers import T0, canon, defined, settings, store, stored_values
from uns_bridge.host.effects import (
    Anomaly,
    AnomalyKind,
    DeviceOffline,
    DeviceOnline,
    MetricInfo,
    MetricsStale,
    NodeOffline,
    NodeOnline,
    Quality,
    RebirthRequested,
    Sample,
    Samples,
)
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.values import (
    DataSet,
    Metric,
    PropertySet,
    PropertyValue,
    Template,
    TemplateParameter,
)
from uns_bridge.store.batch import Batch, BatchCodec

U64 = 2**64 - 1
TEMPLATE = Template(
    metrics=(
        Metric("Speed", None, T0, T.Double, 1.5),
        Metric("Count", None, None, T.UInt64, U64),
        Metric("Label", None, None, T.String, "a\x00b"),
    ),
    parameters=(TemplateParameter("max", T.Int32, -7), TemplateParameter("ratio", T.Float, math.inf)),
    version="1.0",
    template_ref="Motor",
)
DATASET = DataSet(
    ("a", "b", "c", "d"),
    (T.Int64, T.Double, T.String, T.Boolean),
    ((-(2**63), math.nan, "x", True), (2**63 - 1, -0.0, None, False), (0, math.inf, "ü\U0001f600", None)),
)
PROPS = PropertySet(
    (("engUnit", PropertyValue(T.String, "degC")), ("limit", PropertyValue(T.Double, math.nan)))
)

#: datatype -> values that must come back exactly
CASES: dict[int, list[object]] = {
    T.Int8: [-128, 127, 0],
    T.Int16: [-32768, 32767],
    T.Int32: [-(2**31), 2**31 - 1],
    T.Int64: [-(2**63), 2**63 - 1, 9007199254740993],
    T.UInt8: [0, 255],
    T.UInt16: [65535],
    T.UInt32: [2**32 - 1],
    T.UInt64: [0, 2**63 - 1, 2**63, U64, 2**63 + 12345],
    T.Float: [1.5, math.nan, math.inf, -math.inf, -0.0, 3.4028234663852886e38],
    T.Double: [0.1, math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308],
    T.Boolean: [True, False],
    T.String: ["", "plain", "NUL\x00inside", "ü€\U0001f600", "lone \ud800 surrogate", "NaN", "-0"],
    T.Text: ["line1\nline2\ttab", "\x00"],
    T.UUID: ["123e4567-e89b-12d3-a456-426614174000"],
    T.DateTime: [T0, 0, 253402300799999],
    T.Bytes: [b"", b"\x00\xff\x00", bytes(range(256))],
    T.File: [b"%PDF-1.4\x00"],
    T.Int8Array: [(-128, 0, 127), ()],
    T.Int64Array: [(-(2**63), 2**63 - 1)],
    T.UInt64Array: [(0, U64, 2**63)],
    T.FloatArray: [(1.5, math.nan, -0.0), ()],
    T.DoubleArray: [(math.inf, -math.inf, 0.1, -0.0, math.nan)],
    T.BooleanArray: [(True, False, True)],
    T.StringArray: [("a", "", "ü"), ("nul\x00", "x")],
    T.DateTimeArray: [(T0, 0)],
    T.DataSet: [DATASET],
    T.Template: [TEMPLATE],
    T.PropertySet: [PROPS],
}


def _infos(group: str) -> dict[int, MetricInfo]:
    return {
        dt: MetricInfo(group, "N1", "D1" if dt % 2 else None, f"m{dt:02d}_{T(dt).name}", dt, unit="u")
        for dt in CASES
    }


async def _write_all(writer: object, group: str) -> list[tuple[str, int, object]]:
    from uns_bridge.store.writer import StoreWriter

    assert isinstance(writer, StoreWriter)
    infos = _infos(group)
    expected = []
    effects: list[object] = []
    for device in (None, "D1"):
        subset = [i for i in infos.values() if i.device == device]
        effects.append(defined(writer, *subset))
    for dt, values in CASES.items():
        info = infos[dt]
        samples = []
        for n, value in enumerate(values):
            samples.append(Sample(info, T0 + n, value))
            expected.append((info.name, T0 + n, value))
        effects.append(Samples(tuple(samples)))
    await writer.handle(effects)  # type: ignore[arg-type]
    await writer.flush()
    return sorted(expected, key=lambda e: (e[0], e[1]))


async def test_every_datatype_round_trips_exactly(database_dsn: str, group_id: str) -> None:
    async with store(database_dsn) as writer:
        expected = await _write_all(writer, group_id)
    stored = await stored_values(database_dsn)
    assert len(stored) == len(expected)
    assert [(n, t, canon(v)) for n, t, v in stored] == [(n, t, canon(v)) for n, t, v in expected]
    assert writer.stats.samples_written == len(expected)
    assert writer.stats.errors == 0 and writer.stats.dead_letters == 0


async def test_view_values_are_exact_json(database_dsn: str, group_id: str) -> None:
    async with store(database_dsn) as writer:
        await _write_all(writer, group_id)
    conn = await asyncpg.connect(database_dsn)
    try:
        rows = await conn.fetch(
            "SELECT metric, datatype, device_id, edge_node_id, group_id, asset_path, unit, value::text AS value,"
            " value_num, quality, is_historical, (extract(epoch FROM time) * 1000)::bigint AS ms FROM uns.samples"
        )
    finally:
        await conn.close()
    by = {(r["metric"], r["ms"] - T0): r for r in rows}
    name = {dt: f"m{dt:02d}_{T(dt).name}" for dt in CASES}
    # exact integers, also above 2^63
    assert json.loads(by[(name[T.UInt64], 3)]["value"]) == U64
    assert by[(name[T.UInt64], 3)]["value"] == str(U64)
    assert json.loads(by[(name[T.Int64], 0)]["value"]) == -(2**63)
    assert json.loads(by[(name[T.Int64], 2)]["value"]) == 9007199254740993
    # NaN / infinities as strings, value_num keeps them
    assert json.loads(by[(name[T.Double], 1)]["value"]) == "NaN"
    assert json.loads(by[(name[T.Double], 2)]["value"]) == "Infinity"
    assert json.loads(by[(name[T.Double], 3)]["value"]) == "-Infinity"
    assert math.isnan(by[(name[T.Double], 1)]["value_num"])
    assert math.copysign(1.0, by[(name[T.Double], 4)]["value_num"]) == -1.0
    assert json.loads(by[(name[T.Double], 0)]["value"]) == 0.1
    assert json.loads(by[(name[T.DoubleArray], 0)]["value"]) == ["Infinity", "-Infinity", 0.1, 0, "NaN"]
    assert json.loads(by[(name[T.UInt64Array], 0)]["value"]) == [0, U64, 2**63]
    assert json.loads(by[(name[T.String], 3)]["value"]) == "ü€\U0001f600"
    assert json.loads(by[(name[T.String], 2)]["value"]) == "NUL\ufffdinside"  # jsonb cannot hold U+0000
    assert json.loads(by[(name[T.Bytes], 1)]["value"]) == "AP8A"
    assert json.loads(by[(name[T.DataSet], 0)]["value"])["types"] == ["Int64", "Double", "String", "Boolean"]
    assert json.loads(by[(name[T.Template], 0)]["value"])["template_ref"] == "Motor"
    row = by[(name[T.Int8], 0)]
    assert (row["datatype"], row["unit"], row["quality"], row["is_historical"]) == (
        "Int8",
        "u",
        "GOOD",
        False,
    )
    assert row["value_num"] == -128.0
    assert row["device_id"] == "D1" and row["edge_node_id"] == "N1" and row["group_id"] == group_id
    assert row["asset_path"] == f"unassigned/{group_id}/N1/D1"
    node_row = by[(name[T.Int16], 0)]
    assert node_row["device_id"] is None
    assert by[(name[T.Boolean], 0)]["value_num"] == 1.0
    assert by[(name[T.String], 1)]["value_num"] is None


async def test_replay_stores_each_sample_once_but_distinct_values_at_one_ms(
    database_dsn: str, group_id: str
) -> None:
    info = MetricInfo(group_id, "N1", None, "Level", T.Double)
    samples = Samples(
        (Sample(info, T0, 1.0), Sample(info, T0, 2.0), Sample(info, T0, math.nan), Sample(info, T0 + 1, 1.0))
    )
    async with store(database_dsn) as writer:
        await writer.handle([defined(writer, info), samples])
        await writer.flush()
        await writer.handle([samples, samples])  # a replay, and a duplicate inside one batch
        await writer.flush()
        assert writer.stats.samples_written == 4
        assert writer.stats.duplicates == 8
        assert writer.stats.errors == 0
    stored = await stored_values(database_dsn)
    assert sorted((t - T0, canon(v)) for _, t, v in stored) == sorted(
        [(0, canon(1.0)), (0, canon(2.0)), (0, canon(math.nan)), (1, canon(1.0))]
    )


async def test_rejected_row_is_dead_lettered_and_the_rest_written(database_dsn: str, group_id: str) -> None:
    info = MetricInfo(group_id, "N1", None, "Temp", T.Int32)
    far_future = 9_224_318_184_800_000  # ms: a 64-bit µs count, but past PostgreSQL's year 294276
    async with store(database_dsn) as writer:
        await writer.handle(
            [defined(writer, info), Samples(tuple(Sample(info, T0 + i, i) for i in range(50)))]
        )
        await writer.handle([Samples((Sample(info, far_future, 99),))])
        await writer.handle([Samples(tuple(Sample(info, T0 + 100 + i, i) for i in range(50)))])
        await writer.flush()
        assert writer.stats.dead_letters == 1
        assert writer.stats.samples_written == 100
    conn = await asyncpg.connect(database_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM uns.samples WHERE metric = 'Temp'") == 100
        dead = await conn.fetch("SELECT topic, payload, reason FROM uns.dead_letter")
    finally:
        await conn.close()
    assert len(dead) == 1
    assert "timestamp" in dead[0]["reason"] and "out of range" in dead[0]["reason"]
    assert dead[0]["topic"].endswith("/Temp")
    assert json.loads(dead[0]["payload"])["columns"][6] == 99


async def test_lifecycle_current_values_and_dead_letters_from_effects(
    database_dsn: str, group_id: str
) -> None:
    temp = MetricInfo(group_id, "N1", None, "Temp", T.Double, unit="degC", properties=PROPS)
    speed = MetricInfo(group_id, "N1", "D1", "Motor/Speed", T.Float)
    async with store(database_dsn) as writer:
        await writer.handle(
            [
                NodeOnline(group_id, "N1", 3, T0),
                defined(writer, temp),
                DeviceOnline(group_id, "N1", "D1", T0 + 1),
                defined(writer, speed, timestamp=T0 + 1),
                Samples((Sample(temp, T0 + 2, 20.0), Sample(temp, T0 + 5, 21.5), Sample(speed, T0 + 3, 7.0))),
                Anomaly(AnomalyKind.SEQ_GAP, "expected seq 5, got 7", T0 + 6, "spBv1.0/x", group_id, "N1"),
                Anomaly(
                    AnomalyKind.DECODE_ERROR,
                    "not protobuf",
                    T0 + 7,
                    "spBv1.0/x/NDATA/N1",
                    dead_letter=True,
                    payload=b"\x00garbage",
                ),
                RebirthRequested(group_id, "N1", T0 + 8, "seq gap"),
                DeviceOffline(group_id, "N1", "D1", T0 + 9, "DDEATH"),
                MetricsStale((speed,), T0 + 9, "DDEATH"),
                NodeOffline(group_id, "N1", T0 + 10, "NDEATH", 3),
            ]
        )
        await writer.flush()
    conn = await asyncpg.connect(database_dsn)
    try:
        events = [
            (r["event"], r["device_id"], r["reason"])
            for r in await conn.fetch(
                "SELECT * FROM uns.lifecycle WHERE group_id = $1 ORDER BY time", group_id
            )
        ]
        current = {
            r["metric"]: (json.loads(r["value"]), r["quality"])
            for r in await conn.fetch("SELECT metric, value::text AS value, quality FROM uns.current")
        }
        node = await conn.fetchrow("SELECT * FROM uns.edge_node WHERE group_id = $1", group_id)
        device = await conn.fetchrow("SELECT * FROM uns.device")
        metric = await conn.fetchrow("SELECT * FROM uns.metrics WHERE metric = 'Temp'")
        dead = await conn.fetchrow("SELECT * FROM uns.dead_letter")
        assets = await conn.fetch(
            "SELECT level, name, path FROM uns.asset ORDER BY array_length(path, 1), name"
        )
    finally:
        await conn.close()
    assert events == [
        ("node_birth", None, None),
        ("device_birth", "D1", None),
        ("seq_gap", None, "expected seq 5, got 7"),
        ("rebirth_request", None, "seq gap"),
        ("device_death", "D1", "DDEATH"),
        ("stale", "D1", "DDEATH"),
        ("node_death", None, "NDEATH"),
    ]
    assert current == {"Temp": (21.5, "GOOD"), "Motor/Speed": (7.0, "STALE")}
    assert node["online"] is False and node["bd_seq"] == 3 and node["last_birth"] is not None
    assert node["last_death"] is not None
    assert device["online"] is False and device["device_id"] == "D1"
    assert metric["unit"] == "degC" and metric["datatype"] == "Double"
    assert json.loads(metric["properties"])["limit"] == {"datatype": "Double", "value": "NaN"}
    assert metric["uns_topic"] == f"uns/unassigned/{group_id}/_/_/N1/N1/Temp"
    assert metric["asset_path"] == f"unassigned/{group_id}/N1/N1"
    assert (
        dead["payload"] == b"\x00garbage"
        and dead["reason"] == "not protobuf"
        and dead["kind"] == "decode_error"
    )
    levels = [(a["level"], a["name"]) for a in assets]
    assert ("enterprise", "unassigned") in levels and ("site", group_id) in levels
    assert ("equipment", "D1") in levels


async def test_backpressure_bounds_the_queue(database_dsn: str, group_id: str) -> None:
    info = MetricInfo(group_id, "N1", None, "V", T.Int64)
    config = settings(batch_rows=100, queue_rows=300, flush_ms=10)
    gate = asyncio.Event()
    peak = 0
    async with store(database_dsn, config) as writer:
        real = writer.deliver

        async def slow(batch: Batch) -> None:
            await gate.wait()
            await real(batch)

        writer.deliver = slow
        await writer.handle([defined(writer, info)])
        n = 0

        async def producer() -> None:
            nonlocal n, peak
            for _ in range(20):
                await writer.handle([Samples(tuple(Sample(info, T0 + n + i, n + i) for i in range(100)))])
                n += 100
                peak = max(peak, writer.pending_rows)

        task = asyncio.create_task(producer())
        for _ in range(3000):
            await asyncio.sleep(0.01)
            if writer.pending_rows > 300 or task.done():
                break
        for _ in range(20):  # give the producer every chance to run past the bound
            await asyncio.sleep(0.01)
        assert not task.done(), "handle() did not wait although the database stalled"
        assert n < 2000
        assert writer.pending_rows <= 300 + 200  # the bound plus at most one batch in hand
        gate.set()
        await asyncio.wait_for(task, 60)
        await writer.flush()
        assert writer.stats.samples_written == 2000
    assert peak <= 500


def test_batch_codec_round_trips() -> None:
    batch = Batch(
        samples=[(1, -2, 3, 8, 0, False, None, None, None, None, b"\x00", None, [math.nan, -0.0])],
        lifecycle=[(1, "stale", "G", "N\x00", None, None, None, '{"metrics": 1}')],
    )
    codec = BatchCodec()
    back = codec.decode(codec.encode(batch))
    assert canon(back.samples) == canon([tuple(r) for r in batch.samples])
    assert back.lifecycle == batch.lifecycle
    with pytest.raises(ValueError, match="not a store batch"):
        codec.decode(b"garbage")


async def test_deliver_with_token_is_applied_once(database_dsn: str, group_id: str) -> None:
    info = MetricInfo(group_id, "N1", None, "X", T.Int8)
    async with store(database_dsn) as writer:
        delivered: list[Batch] = []

        async def capture(batch: Batch) -> None:
            delivered.append(batch)

        writer.deliver = capture
        await writer.handle(
            [defined(writer, info), NodeOnline(group_id, "N1", 0, T0), Samples((Sample(info, T0, 1),))]
        )
        await writer.flush()
        codec = BatchCodec()
        batch = codec.decode(codec.encode(delivered[0]))
        await writer.deliver_to_db(batch, token=7)
        await writer.deliver_to_db(batch, token=7)
    conn = await asyncpg.connect(database_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM uns.lifecycle") == 1
        assert await conn.fetchval("SELECT count(*) FROM uns.sample") == 1
    finally:
        await conn.close()


async def test_historical_and_quality_are_kept(database_dsn: str, group_id: str) -> None:
    info = MetricInfo(group_id, "N1", None, "Q", T.Int32)
    async with store(database_dsn) as writer:
        await writer.handle(
            [
                defined(writer, info),
                Samples(
                    (Sample(info, T0, 1, Quality.BAD, True), Sample(info, T0 + 1, 2, Quality.STALE, False))
                ),
            ]
        )
        await writer.flush()
    conn = await asyncpg.connect(database_dsn)
    try:
        rows = await conn.fetch("SELECT quality, is_historical FROM uns.samples ORDER BY time")
    finally:
        await conn.close()
    assert [(r["quality"], r["is_historical"]) for r in rows] == [("BAD", True), ("STALE", False)]


async def test_spool_wraps_delivery_while_the_database_is_away(
    database_dsn: str, group_id: str, tmp_path: Path
) -> None:
    """The seam for store-and-forward: batches from a writer whose database is away are spooled as bytes,
    and delivered later by a writer that reaches the database."""
    from uns_bridge.embedded import free_port
    from uns_bridge.placement import Placer
    from uns_bridge.store.forward import Forwarder
    from uns_bridge.store.spool import Spool
    from uns_bridge.store.writer import StoreWriter

    info = MetricInfo(group_id, "N1", None, "X", T.Double)
    async with store(database_dsn) as good:
        away = StoreWriter(f"postgresql://postgres@127.0.0.1:{free_port()}/none", settings(), good.placer)
        await away.start()  # no database needed to start
        spool = Spool.open(tmp_path / "spool")
        forwarder = Forwarder(away.deliver_to_db, spool, BatchCodec(), retry_min_s=30)
        away.deliver = forwarder.deliver
        await away.handle(
            [defined(away, info), Samples(tuple(Sample(info, T0 + i, i * 0.5) for i in range(10)))]
        )
        await away.flush()
        assert forwarder.spooling and spool.pending_count() >= 1
        await forwarder.close()
        await away.close()
        # a later run: a forwarder around a writer that reaches the database drains the spool
        drain = Forwarder(good.deliver_to_db, Spool.open(tmp_path / "spool"), BatchCodec(), retry_min_s=0.05)
        await drain.start()
        assert await drain.wait_drained(60)
        await drain.close()
        assert isinstance(good.placer, Placer)
    stored = await stored_values(database_dsn)
    assert [v for _, _, v in stored] == [i * 0.5 for i in range(10)]


async def test_batches_flush_by_age_and_current_values_coalesce(database_dsn: str, group_id: str) -> None:
    info = MetricInfo(group_id, "N1", None, "Age", T.Int64)
    config = settings(batch_rows=1_000_000, flush_ms=50, current_values_interval_ms=50)
    async with store(database_dsn, config) as writer:
        await writer.handle(
            [defined(writer, info), Samples(tuple(Sample(info, T0 + i, i) for i in range(500)))]
        )
        conn = await asyncpg.connect(database_dsn)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while await conn.fetchval("SELECT count(*) FROM uns.sample") < 500:  # no flush(): the age does it
                assert loop.time() < deadline, "the batch was not flushed by age"
                await asyncio.sleep(0.02)
            while (await conn.fetchval("SELECT count(*) FROM uns.metric_current")) == 0:
                assert loop.time() < deadline, "current values were not written"
                await asyncio.sleep(0.02)
            current = await conn.fetch("SELECT value_num FROM uns.current WHERE metric = 'Age'")
        finally:
            await conn.close()
        assert [r[0] for r in current] == [499.0]
        assert writer.stats.batches <= 3  # not one write per sample


async def test_asset_tree_follows_the_namespace_rules(database_dsn: str) -> None:
    from uns_bridge.config import NamespaceConfig, NamespaceRule
    from uns_bridge.namespace import Namespace
    from uns_bridge.placement import Placer
    from uns_bridge.store.writer import StoreWriter

    rule = NamespaceRule(
        "assembly",
        {"group": "Plant{site}-{area}", "node": "Line{line}-PLC"},
        {
            "enterprise": "Acme",
            "site": "Plant{site}",
            "area": "{area}",
            "line": "Line{line}",
            "equipment": "{device}",
        },
    )
    placer = Placer(Namespace.from_config(NamespaceConfig(rules=(rule,))), prefix="plant")
    config = settings()
    from uns_bridge.store.migrations import migrate

    await migrate(database_dsn, config)
    writer = StoreWriter(database_dsn, config, placer)
    await writer.start()
    press = MetricInfo("Plant1-Assembly", "Line2-PLC", "Press1", "Motor/Speed", T.Float)
    other = MetricInfo("Plant1-Assembly", "Line2-PLC", "Press2", "Count", T.Int32)
    try:
        await writer.handle(
            [
                defined(writer, press),
                defined(writer, other),
                Samples((Sample(press, T0, 1.0), Sample(other, T0, 2))),
            ]
        )
        await writer.flush()
    finally:
        await writer.close()
    conn = await asyncpg.connect(database_dsn)
    try:
        tree = await conn.fetch(
            "WITH RECURSIVE t AS (SELECT id, level, name, 0 AS depth FROM uns.asset WHERE parent_id IS NULL"
            " UNION ALL SELECT a.id, a.level, a.name, t.depth + 1 FROM uns.asset a JOIN t ON a.parent_id = t.id)"
            " SELECT depth, level, name FROM t ORDER BY depth, name"
        )
        samples = await conn.fetch("SELECT asset_path, metric, uns_topic FROM uns.samples ORDER BY metric")
    finally:
        await conn.close()
    assert [(r["depth"], r["level"], r["name"]) for r in tree] == [
        (0, "enterprise", "Acme"),
        (1, "site", "Plant1"),
        (2, "area", "Assembly"),
        (3, "line", "Line2"),
        (4, "equipment", "Line2-PLC"),  # the node itself (its own metrics live there)
        (4, "equipment", "Press1"),
        (4, "equipment", "Press2"),
    ]
    assert [tuple(r) for r in samples] == [
        ("Acme/Plant1/Assembly/Line2/Press2", "Count", "plant/Acme/Plant1/Assembly/Line2/_/Press2/Count"),
        (
            "Acme/Plant1/Assembly/Line2/Press1",
            "Motor/Speed",
            "plant/Acme/Plant1/Assembly/Line2/_/Press1/Motor/Speed",
        ),
    ]


async def test_current_values_wait_until_the_previous_set_is_written(
    database_dsn: str, group_id: str
) -> None:
    """A set of current values still being written holds the next one back (it keeps coalescing)
    instead of riding on every batch; the samples flow past meanwhile and the newest value lands."""
    info = MetricInfo(group_id, "N1", None, "Level", T.Float)
    config = settings(batch_rows=10, flush_ms=60_000, current_values_interval_ms=1)
    async with store(database_dsn, config) as writer:
        await writer.handle([defined(writer, info)])
        await writer.flush()
        gate = asyncio.Event()
        carried: list[int] = []  # current rows of each batch handed to delivery

        async def held(batch: Batch) -> None:
            carried.append(len(batch.current))
            if batch.current:
                await gate.wait()
            await writer.deliver_to_db(batch)

        writer.deliver = held
        for i in range(5):  # batch_rows=10: each call seals one batch, each past the 1 ms interval
            await writer.handle(
                [Samples(tuple(Sample(info, T0 + 10 * i + j, float(10 * i + j)) for j in range(10)))]
            )
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(carried) < 5 or writer.stats.batches < 5:  # the catalog batch and batches 2-5
            assert loop.time() < deadline, f"the samples waited for the held current values: {carried}"
            await asyncio.sleep(0.01)
        assert carried == [1, 0, 0, 0, 0]
        gate.set()
        await writer.flush()
    conn = await asyncpg.connect(database_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM uns.sample") == 50
        assert await conn.fetchval("SELECT value_num FROM uns.current WHERE metric = 'Level'") == 49.0
    finally:
        await conn.close()


async def test_current_rows_repeating_a_metric_keep_its_newest_value(
    database_dsn: str, group_id: str
) -> None:
    """Current rows are unique per metric when this writer builds them; a batch from elsewhere (an old
    spool) that repeats one is still written, with the newest value."""
    info = MetricInfo(group_id, "N1", None, "Twice", T.Float)
    async with store(database_dsn) as writer:
        batches: list[Batch] = []
        deliver = writer.deliver

        async def keep(batch: Batch) -> None:
            batches.append(batch)
            await deliver(batch)

        writer.deliver = keep
        await writer.handle([defined(writer, info), Samples((Sample(info, T0, 1.0),))])
        await writer.flush()
        (row,) = [r for b in batches for r in b.current]
        newer = (*row[:1], row[1] + 2_000, *row[2:6], 3.0, *row[7:])
        older = (*row[:1], row[1] + 1_000, *row[2:6], 2.0, *row[7:])
        await writer.deliver_to_db(Batch(current=[newer, older, newer]))
    conn = await asyncpg.connect(database_dsn)
    try:
        assert await conn.fetchval("SELECT value_num FROM uns.current WHERE metric = 'Twice'") == 3.0
    finally:
        await conn.close()
