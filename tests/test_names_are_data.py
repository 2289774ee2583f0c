"""Names are data, never code: hostile group, node, device and metric names through the live bridge.

A private Mosquitto (so the test can subscribe to ``#`` and see every topic anything publishes) and
the real PostgreSQL (``database_dsn``). Ids carry quotes, SQL, backslashes, control characters (those
MQTT allows in topics), 4-byte Unicode and long text, but never ``+ # /`` (Sparkplug forbids them in
ids); metric names additionally carry ``/`` ``+`` ``#`` ``$`` ``%`` and a lone ``_``. Everything must be
stored exactly as sent (``uns.metrics``, ``uns.samples``) and appear on the UNS escaped, under the
configured prefix and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest

from tests.bridge_helpers import Observer, Spec, TestEdgeNode
from tests.private_servers import PrivateMosquitto, mosquitto_binary
from tests.services import MqttBroker
from tests.test_bridge_e2e import RunningBridge, bridge_config
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.uns.contract import unescape_level

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="no mosquitto binary")

SQL = "'; DROP TABLE uns.sample; --"
# Mosquitto refuses U+0000-U+001F and U+007F-U+009F in topics, so ids get only what a broker carries
ID_TEXT = f"q'\"`\\ {SQL} $x %41 _ 😀𝄞 ẞ ǅ \u200b\u00a0"
LONG = "".join(chr(0x1F300 + i % 700) for i in range(500))  # 500 distinct-ish 4-byte characters
CONTROL = "".join(chr(c) for c in (*range(1, 32), 0x7F, 0x85, 0x9F))


def hostile_metrics(base_alias: int) -> list[Spec]:
    """String metrics with hostile names (and one Int64); aliases from ``base_alias`` (unique per node)."""
    names = [
        f"{SQL}",
        "Folder/Sub/Value",
        "plus+and#hash",
        "+",
        "#",
        "/leading/slash",
        "trailing/",
        "double//slash",
        "$SYS/broker/uptime",
        "x/$state",
        "_",
        "%2F not an escape %",
        f"ctl{CONTROL}end",
        f"quote'\"\\{SQL}",
        LONG,
        "../../etc/passwd",
        "\ufeffBOM and \U0010fffd private use",
    ]
    specs = [
        Spec(name, base_alias + i, int(DataType.String), f"value of {name}", None)
        for i, name in enumerate(names)
    ]
    specs.append(Spec(f"num{SQL}", base_alias + 99, int(DataType.Int64), -(2**63), None))
    return specs


async def _catalog(dsn: str, group: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetch(
                "SELECT group_id, edge_node_id, device_id, metric, uns_topic FROM uns.metrics WHERE group_id = $1",
                group,
            )
        )
    finally:
        await conn.close()


async def _samples(dsn: str, group: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetch(
                "SELECT group_id, edge_node_id, device_id, metric, value, uns_topic FROM uns.samples"
                " WHERE group_id = $1",
                group,
            )
        )
    finally:
        await conn.close()


async def _tables_intact(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM uns.sample")
        return count
    finally:
        await conn.close()


async def test_hostile_names_stored_exactly_and_escaped_under_the_prefix(
    database_dsn: str, uns_prefix: str, tmp_path: Path
) -> None:
    group = f"G{ID_TEXT}{uuid.uuid4().hex[:6]}"
    node = f"N{ID_TEXT}{LONG[:100]}"
    device = f"D{SQL}😀"
    prefix = f"{uns_prefix}/names"
    specs, device_specs = hostile_metrics(100), hostile_metrics(300)
    with PrivateMosquitto(persistence=False) as mosquitto:
        broker = MqttBroker(mosquitto.host, mosquitto.port, "mosquitto")
        config = bridge_config(broker, database_dsn, group, prefix, tmp_path)
        async with Observer(broker.host, broker.port, ["#"]) as seen, RunningBridge(config) as bridge:
            await seen.wait_for(
                lambda: seen.field(bridge.state_topic, "online") is True, timeout=60, what="STATE online"
            )
            edge = TestEdgeNode(broker.host, broker.port, group, node, "ours")
            await edge.connect()
            try:
                await edge.nbirth(specs)
                await edge.dbirth(device, device_specs)
                await edge.data([(s, f"data {s.name}") for s in specs if s.datatype == DataType.String])
                await edge.data(
                    [(s, f"device data {s.name}") for s in device_specs if s.datatype == DataType.String],
                    device,
                )

                def arrived() -> bool:
                    docs = [
                        (str(src.get("device")), src.get("metric"))
                        for t, p, _r in seen.log
                        if t.startswith(prefix + "/") and not t.endswith("/$state")
                        for src in [_source(p)]
                    ]
                    return len({d for d in docs if d[1] is not None}) >= 2 * len(specs)

                await seen.wait_for(
                    arrived, timeout=30, what="every metric of the node and the device on the UNS"
                )

                # births of both entities and one DATA each (strings only)
                expected_rows = 2 * len(specs) + 2 * sum(s.datatype == DataType.String for s in specs)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                rows = await _samples(database_dsn, group)
                while len(rows) < expected_rows and loop.time() < deadline:
                    await asyncio.sleep(0.2)
                    rows = await _samples(database_dsn, group)
            finally:
                await edge.close()
            assert await bridge.stop() == 0

        # ---- the database: every name exactly as sent
        catalog = await _catalog(database_dsn, group)
        names = {s.name for s in specs}
        for dev in (None, device):
            got = {r["metric"] for r in catalog if r["device_id"] == dev}
            missing = names - got
            assert not missing, f"metrics missing for device {dev!r}: {sorted(map(repr, missing))[:5]}"
        assert all(r["group_id"] == group and r["edge_node_id"] == node for r in catalog)
        values = {(r["device_id"], r["metric"], json.loads(r["value"])) for r in rows}
        for spec in specs:
            if spec.datatype != DataType.String:
                continue
            for dev, text in ((None, "data"), (device, "device data")):
                assert (dev, spec.name, f"value of {spec.name}") in values, (dev, spec.name)
                assert (dev, spec.name, f"{text} {spec.name}") in values, (dev, spec.name)
        assert await _tables_intact(database_dsn) >= len(rows)  # uns.sample is still there

        # ---- the UNS: every topic a bridge published is under the prefix; names come back exactly
        bridge_topics = [t for t, _p, _r in seen.log if not t.startswith("spBv1.0/")]
        outside = [t for t in bridge_topics if not t.startswith(prefix + "/")]
        assert not outside, f"published outside the prefix {prefix!r}: {outside[:5]}"
        depth = prefix.count("/") + 1
        seen_names: set[tuple[str | None, str]] = set()
        for topic, payload, _retain in seen.log:
            if not topic.startswith(prefix + "/") or topic.endswith("/$state"):
                continue
            levels = topic.split("/")[depth:]
            assert all(lv and "+" not in lv and "#" not in lv for lv in levels), topic
            src = _source(payload)
            metric = src["metric"]
            assert isinstance(metric, str)
            # six ISA-95 levels, then the metric's folders: unescaping them gives the name back
            assert [unescape_level(lv) for lv in levels[:6]] == [
                "unassigned",
                group,
                "",
                "",
                node,
                device if src["device"] else node,
            ]
            assert "/".join(unescape_level(lv) for lv in levels[6:]) == metric, topic
            assert src["group"] == group and src["node"] == node
            seen_names.add((src["device"] if isinstance(src["device"], str) else None, metric))
        assert seen_names - {(None, "bdSeq"), (None, "Node Control/Rebirth")} == {
            (d, s.name) for d in (None, device) for s in specs
        }
        for r in catalog:
            assert r["uns_topic"].startswith(prefix + "/"), r["uns_topic"]
        print(
            f"names are data: {len(specs)} hostile metric names x 2 entities, {len(rows)} sample rows, "
            f"{len(bridge_topics)} UNS messages, 0 outside {prefix!r}"
        )


def _source(payload: bytes) -> dict[str, object]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(doc, dict):
        return {}
    src = doc.get("source")
    return src if isinstance(src, dict) else {}
