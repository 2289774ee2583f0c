"""The real host core, placer and pipeline into the store: births, data, deaths, bad payloads, a replay."""

from __future__ import annotations

import math

import asyncpg

from tests.store_helpers import T0, settings
from uns_bridge.config import NamespaceConfig
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.namespace import Namespace
from uns_bridge.pipeline import Pipeline
from uns_bridge.placement import Placer
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import encode_payload
from uns_bridge.sparkplug.values import Metric, Payload
from uns_bridge.store.migrations import migrate
from uns_bridge.store.writer import StoreWriter


def _messages(group: str) -> list[tuple[str, bytes, int]]:
    birth = Payload(
        T0,
        (
            Metric("bdSeq", None, T0, T.Int64, 0),
            Metric("Temp", 1, T0, T.Double, 1.5),
            Metric("Big", 2, T0, T.UInt64, 2**64 - 1),
        ),
        seq=0,
    )
    data = Payload(
        T0 + 1,
        (Metric(None, 1, T0 + 1, T.Double, math.nan), Metric(None, 1, T0 + 1, T.Double, 2.5),
         Metric(None, 2, T0 + 1, T.UInt64, 2**63)),
        seq=1,
    )  # fmt: skip
    death = Payload(T0 + 3, (Metric("bdSeq", None, None, T.Int64, 0),))
    return [
        (f"spBv1.0/{group}/NBIRTH/N", encode_payload(birth), T0),
        (f"spBv1.0/{group}/NDATA/N", encode_payload(data), T0 + 1),
        (f"spBv1.0/{group}/NDATA/N", b"\x08garbage", T0 + 2),
        (f"spBv1.0/{group}/NDEATH/N", encode_payload(death), T0 + 3),
    ]


async def _run(dsn: str, group: str) -> StoreWriter:
    placer = Placer(Namespace.from_config(NamespaceConfig()))
    writer = StoreWriter(dsn, settings(), placer)
    await writer.start()
    pipeline = Pipeline(Host(HostConfig()), placer, writer, None)
    await pipeline.connected(T0)
    for topic, payload, now in _messages(group):
        await pipeline.feed(topic, payload, now)
    await pipeline.close()
    return writer


async def test_host_effects_land_in_the_store_and_a_replay_adds_nothing(
    database_dsn: str, group_id: str
) -> None:
    await migrate(database_dsn, settings())
    first = await _run(database_dsn, group_id)
    assert first.stats.samples_written == 6 and first.stats.dead_letters == 1
    second = await _run(database_dsn, group_id)  # the same capture again
    assert second.stats.samples_written == 0 and second.stats.duplicates == 6
    conn = await asyncpg.connect(database_dsn)
    try:
        samples = [
            (r["metric"], r["datatype"], r["value"], r["ms"] - T0)
            for r in await conn.fetch(
                "SELECT metric, datatype, value::text AS value, (extract(epoch FROM time) * 1000)::bigint AS ms"
                " FROM uns.samples WHERE group_id = $1 ORDER BY time, metric, value::text",
                group_id,
            )
        ]
        events = [
            r[0]
            for r in await conn.fetch(
                "SELECT event FROM uns.lifecycle WHERE group_id = $1 ORDER BY time", group_id
            )
        ]
        current = {r[0]: r[1] for r in await conn.fetch("SELECT metric, quality FROM uns.current")}
        node = await conn.fetchrow("SELECT online, bd_seq FROM uns.edge_node WHERE group_id = $1", group_id)
        dead = await conn.fetch("SELECT topic, kind FROM uns.dead_letter")
    finally:
        await conn.close()
    assert samples == [
        ("Big", "UInt64", str(2**64 - 1), 0),
        ("Temp", "Double", "1.5", 0),
        ("bdSeq", "Int64", "0", 0),
        ("Big", "UInt64", str(2**63), 1),
        ("Temp", "Double", '"NaN"', 1),  # two different values of one metric in one millisecond
        ("Temp", "Double", "2.5", 1),
    ]
    assert events[0] == "node_birth" and "node_death" in events and "stale" in events
    assert len(events) == len(set(events))  # the replay added no lifecycle rows either
    assert set(current.values()) == {"STALE"}
    assert tuple(node) == (False, 0)
    assert [tuple(r) for r in dead] == [(f"spBv1.0/{group_id}/NDATA/N", "decode_error")]
