"""The live bridge end to end: edge nodes -> broker -> bridge -> PostgreSQL + UNS, on the real services.

Edge nodes encoded by our codec and by the independent pysparkplug publish births, data of every
datatype, a seq gap, a device death and a node death, against the real Mosquitto and the embedded
amqtt broker, with the real PostgreSQL. The tests assert the rows in ``uns.samples`` and
``uns.lifecycle``, the STALE transitions and state topics on the UNS (JSON validated against the
schemas), the rebirth NCMD on the wire and the STATE birth/death of the bridge.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema
import orjson
import pytest

from tests.bridge_helpers import (
    Observer,
    Spec,
    TestEdgeNode,
    clear_retained,
    http_get,
    scalar_specs,
    structured_specs,
)
from tests.services import MqttBroker
from uns_bridge.app import run_bridge
from uns_bridge.config import (
    Config,
    DatabaseConfig,
    HostSettings,
    HttpConfig,
    MqttConfig,
    SpoolConfig,
    UnsConfig,
)
from uns_bridge.embedded import free_port

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
VALUE_SCHEMA = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "uns_value.schema.json").read_text()))
STATE_SCHEMA = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "uns_state.schema.json").read_text()))


def bridge_config(broker: MqttBroker, dsn: str, group: str, prefix: str, tmp: Path, **mqtt: Any) -> Config:
    return Config(
        mqtt=MqttConfig(url=broker.url, groups=(group,), reconnect_min_s=0.1, reconnect_max_s=0.5, **mqtt),
        host=HostSettings(
            id=f"bridge-{uuid.uuid4().hex[:8]}",
            role="active",
            reorder_timeout_ms=300,
            rebirth_interval_ms=200,
        ),
        database=DatabaseConfig(url=dsn, flush_ms=50),
        uns=UnsConfig(prefix=prefix, publish_window_ms=20),
        spool=SpoolConfig(dir=tmp / "spool"),
        http=HttpConfig(port=free_port()),
    )


class RunningBridge:
    """``run_bridge`` in this event loop until :meth:`stop`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    @property
    def state_topic(self) -> str:
        return f"spBv1.0/STATE/{self.config.host.id}"

    async def __aenter__(self) -> RunningBridge:
        self.task = asyncio.create_task(run_bridge(self.config, stop=self.stop_event))
        return self

    async def stop(self) -> int:
        assert self.task is not None
        self.stop_event.set()
        return await asyncio.wait_for(self.task, 60)

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            await self.stop()


def uns_base(prefix: str, group: str, node: str, device: str | None) -> str:
    """The default namespace: unassigned / <group> / _ / _ / <node> / <device, or the node for its own>."""
    return f"{prefix}/unassigned/{group}/_/_/{node}/{device or node}"


def metric_topic(base: str, name: str) -> str:
    return f"{base}/{name}"


def _expected_json(spec: Spec) -> Any:
    return spec.json


async def _samples(dsn: str, group: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(
            await connection.fetch(
                "SELECT time, asset_path, group_id, edge_node_id, device_id, metric, datatype, unit, value, "
                "value_num, quality, is_historical FROM uns.samples WHERE group_id = $1 ORDER BY time",
                group,
            )
        )
    finally:
        await connection.close()


async def _lifecycle(dsn: str) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(dsn)
    try:
        return [dict(row) for row in await connection.fetch("SELECT * FROM uns.lifecycle")]
    finally:
        await connection.close()


async def _wait_db(dsn: str, group: str, condition: Any, timeout: float = 20.0) -> list[asyncpg.Record]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await _samples(dsn, group)
        if condition(rows):
            return rows
        if loop.time() > deadline:
            raise AssertionError(f"database condition not met; {len(rows)} sample rows")
        await asyncio.sleep(0.1)


async def _wait_lifecycle(
    dsn: str, group: str, condition: Any, timeout: float = 20.0
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = [row for row in await _lifecycle(dsn) if row["group_id"] == group]
        if condition(rows):
            return rows
        if loop.time() > deadline:
            raise AssertionError(f"lifecycle condition not met: {[(r['event'], r['reason']) for r in rows]}")
        await asyncio.sleep(0.1)


def _decode_rebirth(payload: bytes) -> bool:
    from uns_bridge.sparkplug.payload import decode_payload

    decoded = decode_payload(payload)
    return any(m.name == "Node Control/Rebirth" and m.value is True for m in decoded.metrics)


async def _scenario(broker: MqttBroker, dsn: str, group: str, prefix: str, tmp: Path, encoder: str) -> None:
    config = bridge_config(broker, dsn, group, prefix, tmp)
    node_specs = scalar_specs(100)
    device_specs = scalar_specs(200) + (structured_specs(300) if encoder == "ours" else [])
    node_base, device_base = uns_base(prefix, group, "N1", None), uns_base(prefix, group, "N1", "D1")
    filters = [f"{prefix}/#", f"spBv1.0/{group}/NCMD/#", f"spBv1.0/STATE/{config.host.id}"]
    async with Observer(broker.host, broker.port, filters) as seen, RunningBridge(config) as bridge:
        await seen.wait_for(lambda: seen.field(bridge.state_topic, "online") is True, what="STATE online")
        online_ts = seen.json(bridge.state_topic)["timestamp"]
        edge = TestEdgeNode(broker.host, broker.port, group, "N1", encoder, bd_seq=3)
        await edge.connect()
        try:
            await edge.nbirth(node_specs)
            await edge.dbirth("D1", device_specs)
            # births are data: every birth value reaches the UNS
            every = [metric_topic(node_base, s.name) for s in node_specs] + [
                metric_topic(device_base, s.name) for s in device_specs
            ]
            await seen.wait_for(
                lambda: all(t in seen.last for t in every), what="every birth value on the UNS"
            )
            for spec in node_specs:
                doc = seen.json(metric_topic(node_base, spec.name))
                VALUE_SCHEMA.validate(doc)
                assert doc["value"] == spec.json, spec.name
                assert doc["quality"] == "GOOD" and doc["source"]["device"] is None
            for spec in device_specs:
                doc = seen.json(metric_topic(device_base, spec.name))
                VALUE_SCHEMA.validate(doc)
                assert doc["value"] == spec.json, (spec.name, doc["value"])
                assert doc["source"] == {"group": group, "node": "N1", "device": "D1", "metric": spec.name}
            assert seen.json(f"{node_base}/$state")["online"] is True
            assert seen.json(f"{device_base}/$state")["online"] is True

            # DATA by alias only, no datatype: the birth's datatype decides (signed, 64-bit, NaN)
            by_name = {s.name: s for s in device_specs}
            int8, uint64, double = by_name["Types/Int8"], by_name["Types/UInt64"], by_name["Types/Double"]
            await edge.data([(int8, -1), (uint64, 2**63), (double, -math.inf)], device="D1")
            int8_topic = metric_topic(device_base, "Types/Int8")
            uint64_topic, double_topic = (
                metric_topic(device_base, "Types/UInt64"),
                metric_topic(device_base, "Types/Double"),
            )
            await seen.wait_for(
                lambda: (
                    seen.field(int8_topic, "value") == -1
                    and seen.field(uint64_topic, "value") == 2**63
                    and seen.field(double_topic, "value") == "-Infinity"
                ),
                what="DDATA values",
            )
            assert isinstance(seen.json(int8_topic)["seq"], int)

            # a seq gap: after the reorder timeout an active host asks for a rebirth
            edge.skip()
            await edge.data([(int8, 5)], device="D1")
            ncmd = f"spBv1.0/{group}/NCMD/N1"
            await seen.wait_for(lambda: ncmd in seen.last, timeout=20, what="rebirth NCMD")
            assert _decode_rebirth(seen.last[ncmd])
            # the node answers with a new birth (same MQTT session, same bdSeq)
            await edge.nbirth(node_specs)
            await edge.dbirth("D1", device_specs)
            await edge.data([(int8, 7)], device="D1")
            await seen.wait_for(lambda: seen.field(int8_topic, "value") == 7, what="data after the rebirth")

            # a device death: its values STALE, its state offline; node values stay GOOD
            await edge.ddeath("D1")
            device_topics = [metric_topic(device_base, s.name) for s in device_specs]
            await seen.wait_for(
                lambda: (
                    all(seen.field(t, "quality") == "STALE" for t in device_topics)
                    and seen.field(f"{device_base}/$state", "online") is False
                ),
                what="device values STALE after DDEATH",
            )
            for topic in device_topics:
                VALUE_SCHEMA.validate(seen.json(topic))
            assert seen.json(int8_topic)["value"] == 7
            STATE_SCHEMA.validate(seen.json(f"{device_base}/$state"))
            assert all(seen.field(metric_topic(node_base, s.name), "quality") == "GOOD" for s in node_specs)

            # a node death: everything STALE, node state offline
            await edge.ndeath()
            node_topics = [metric_topic(node_base, s.name) for s in node_specs]
            await seen.wait_for(
                lambda: (
                    all(seen.field(t, "quality") == "STALE" for t in node_topics)
                    and seen.field(f"{node_base}/$state", "online") is False
                ),
                what="node values STALE after NDEATH",
            )
            STATE_SCHEMA.validate(seen.json(f"{node_base}/$state"))
        finally:
            await edge.close()

        # the database has every value, births included, exactly
        names = {s.name for s in node_specs} | {s.name for s in device_specs}
        rows = await _wait_db(
            dsn, group, lambda rs: names <= {r["metric"] for r in rs} and any(r["value_num"] == 7 for r in rs)
        )
        _check_rows(rows, group, node_specs, device_specs)
        lifecycle = await _wait_lifecycle(
            dsn, group, lambda rows: any(r["event"] == "node_death" and r["reason"] == "NDEATH" for r in rows)
        )
        events = {(row["event"], row["device_id"]) for row in lifecycle}
        for expected in [
            ("node_birth", None),
            ("device_birth", "D1"),
            ("seq_gap", "D1"),  # the gap showed on the DDATA topic
            ("rebirth_request", None),
            ("device_death", "D1"),
            ("node_death", None),
        ]:
            assert expected in events, (expected, events)
        births = [row for row in lifecycle if row["event"] == "node_birth"]
        assert len(births) == 2 and all(row["bd_seq"] == 3 for row in births)
        deaths = [row for row in lifecycle if row["event"] == "node_death" and row["bd_seq"] == 3]
        assert any(row["reason"] == "NDEATH" for row in deaths), deaths

        await _check_operations(config.http.port)

        assert await bridge.stop() == 0
        await seen.wait_for(lambda: seen.field(bridge.state_topic, "online") is False, what="STATE offline")
        assert seen.json(bridge.state_topic)["timestamp"] == online_ts
    await clear_retained(broker.host, broker.port, [f"{prefix}/#", f"spBv1.0/STATE/{config.host.id}"])


async def _check_operations(port: int) -> None:
    """/health is 200 and /metrics counts what the scenario did."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = await http_get(port, "/health")
    assert status == 200, body
    assert orjson.loads(body)["checks"] == {"database": True, "mqtt": True}
    status, body = await http_get(port, "/metrics")
    assert status == 200
    values = {
        s.name: s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if not s.labels
    }
    assert values["uns_bridge_messages_total"] >= 8
    assert values["uns_bridge_seq_gaps_total"] >= 1
    assert values["uns_bridge_rebirth_requests_total"] >= 1
    assert values["uns_bridge_node_deaths_total"] >= 1
    assert values["uns_bridge_store_samples_written_total"] > 0
    assert values["uns_bridge_uns_published_total"] > 0
    assert values["uns_bridge_mqtt_connected"] == 1


def _check_rows(
    rows: list[asyncpg.Record], group: str, node_specs: list[Spec], device_specs: list[Spec]
) -> None:
    first: dict[tuple[str | None, str], asyncpg.Record] = {}
    for row in rows:
        first.setdefault((row["device_id"], row["metric"]), row)
    for device, specs in ((None, node_specs), ("D1", device_specs)):
        for spec in specs:
            row = first[(device, spec.name)]
            assert row["group_id"] == group and row["edge_node_id"] == "N1"
            value = orjson.loads(row["value"]) if isinstance(row["value"], str | bytes) else row["value"]
            assert value == spec.json, (spec.name, value)
            if isinstance(spec.value, int) and not isinstance(spec.value, bool):
                assert row["value_num"] == float(spec.value), spec.name  # a double; "value" is exact
    int8 = [r for r in rows if r["device_id"] == "D1" and r["metric"] == "Types/Int8"]
    assert {-128, -1, 7} <= {r["value_num"] for r in int8}


@pytest.mark.parametrize("encoder", ["ours", "pysparkplug"])
async def test_bridge_on_mosquitto(
    mqtt_broker: MqttBroker, database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path, encoder: str
) -> None:
    await _scenario(mqtt_broker, database_dsn, group_id, uns_prefix, tmp_path, encoder)


@pytest.mark.parametrize("encoder", ["ours", "pysparkplug"])
async def test_bridge_on_embedded_amqtt(
    amqtt_broker: MqttBroker, database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path, encoder: str
) -> None:
    await _scenario(amqtt_broker, database_dsn, group_id, uns_prefix, tmp_path, encoder)
