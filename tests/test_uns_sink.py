"""The UNS sink and publisher against a real broker: coalescing, retained JSON, STALE, state topics, bounds."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.bridge_helpers import Observer, clear_retained
from tests.services import MqttBroker
from uns_bridge.config import MqttConfig, NamespaceConfig, UnsConfig
from uns_bridge.embedded import free_port
from uns_bridge.host.effects import (
    DeviceOffline,
    DeviceOnline,
    MetricInfo,
    MetricsDefined,
    MetricsStale,
    NodeOffline,
    NodeOnline,
    Quality,
    Sample,
    Samples,
)
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer
from uns_bridge.uns.publisher import UnsPublisher
from uns_bridge.uns.sink import UnsSink

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
VALUE_SCHEMA = json.loads((SCHEMAS / "uns_value.schema.json").read_text())
STATE_SCHEMA = json.loads((SCHEMAS / "uns_state.schema.json").read_text())


def _validate_value(doc: Any) -> None:
    jsonschema.Draft202012Validator(VALUE_SCHEMA).validate(doc)


def _validate_state(doc: Any) -> None:
    jsonschema.Draft202012Validator(STATE_SCHEMA).validate(doc)


async def _sink(broker: MqttBroker, prefix: str, **uns: Any) -> tuple[UnsSink, Placer]:
    settings = UnsConfig(prefix=prefix, **uns)
    placer = Placer(Namespace.from_config(NamespaceConfig()), prefix=prefix)
    publisher = UnsPublisher(MqttConfig(url=broker.url), settings)
    await publisher.start()
    await asyncio.wait_for(publisher.connected.wait(), 10)
    sink = UnsSink(placer, publisher, settings)
    await sink.start()
    return sink, placer


def _infos(group: str) -> tuple[MetricInfo, MetricInfo, MetricInfo]:
    temp = MetricInfo(group, "N1", "D1", "Motor/Temp", 10, alias=1, unit="degC")
    count = MetricInfo(group, "N1", "D1", "Count", 8, alias=2)
    node_metric = MetricInfo(group, "N1", None, "Uptime", 4, alias=3)
    return temp, count, node_metric


async def test_newest_value_per_topic_retained_valid_json(
    mqtt_broker: MqttBroker, group_id: str, uns_prefix: str
) -> None:
    sink, placer = await _sink(mqtt_broker, uns_prefix, publish_window_ms=200)
    temp, count, node_metric = _infos(group_id)
    try:
        defined = MetricsDefined(group_id, "N1", "D1", (temp, count), 1)
        placer.observe(defined)
        await sink.handle([defined])
        async with Observer(mqtt_broker.host, mqtt_broker.port, [f"{uns_prefix}/#"]) as seen:
            # 500 values of one metric in one window: only the newest needs to go out
            for i in range(500):
                await sink.handle([Samples((Sample(temp, 1_000 + i, float(i)),), seq=i % 256)])
            await sink.handle(
                [Samples((Sample(count, 5_000, 2**64 - 1), Sample(node_metric, 5_001, math.inf)))]
            )
            temp_topic, count_topic = placer.metric_topic(temp), placer.metric_topic(count)
            node_topic = placer.metric_topic(node_metric)
            await sink.flush()
            await seen.wait_for(
                lambda: node_topic in seen.last and seen.json(temp_topic)["value"] == 499.0,
                what="newest values",
            )
            temp_messages = [t for t, _, _ in seen.log if t == temp_topic]
            assert len(temp_messages) < 10, f"{len(temp_messages)} messages for one topic: no coalescing"
            assert sink.coalesced >= 490
            doc = seen.json(temp_topic)
            _validate_value(doc)
            assert doc["quality"] == "GOOD" and doc["timestamp"] == 1_499 and doc["seq"] == 499 % 256
            assert doc["unit"] == "degC" and doc["datatype"] == "Double"
            assert doc["source"] == {"group": group_id, "node": "N1", "device": "D1", "metric": "Motor/Temp"}
            assert seen.json(count_topic)["value"] == 2**64 - 1
            assert seen.json(node_topic)["value"] == "Infinity"
            assert seen.json(node_topic)["source"]["device"] is None
            assert temp_topic == f"{uns_prefix}/unassigned/{group_id}/_/_/N1/D1/Motor/Temp"
        # retained: a client that subscribes later gets the last value
        async with Observer(mqtt_broker.host, mqtt_broker.port, [temp_topic]) as late:
            await late.wait_for(lambda: temp_topic in late.last, what="retained value")
            assert late.json(temp_topic)["value"] == 499.0
            assert all(retained for _, _, retained in late.log)
    finally:
        await sink.close()
        await clear_retained(mqtt_broker.host, mqtt_broker.port, [f"{uns_prefix}/#"])


async def test_deaths_republish_stale_and_state_topics(
    mqtt_broker: MqttBroker, group_id: str, uns_prefix: str
) -> None:
    sink, placer = await _sink(mqtt_broker, uns_prefix, publish_window_ms=20)
    temp, count, node_metric = _infos(group_id)
    try:
        async with Observer(mqtt_broker.host, mqtt_broker.port, [f"{uns_prefix}/#"]) as seen:
            await sink.handle(
                [
                    NodeOnline(group_id, "N1", 3, 10),
                    DeviceOnline(group_id, "N1", "D1", 11),
                    Samples((Sample(temp, 12, 20.5), Sample(count, 12, 7), Sample(node_metric, 12, 99))),
                    # history: stored, never republished as the live value
                    Samples((Sample(temp, 5, -1.0, is_historical=True),)),
                ]
            )
            node_state, device_state = (
                placer.state_topic(group_id, "N1"),
                placer.state_topic(group_id, "N1", "D1"),
            )
            temp_topic = placer.metric_topic(temp)
            await seen.wait_for(lambda: temp_topic in seen.last and device_state in seen.last, what="values")
            assert seen.json(temp_topic)["value"] == 20.5
            assert seen.json(node_state)["online"] is True and seen.json(node_state)["bd_seq"] == 3
            assert seen.json(device_state)["online"] is True
            await sink.handle(
                [DeviceOffline(group_id, "N1", "D1", 20, "DDEATH"), MetricsStale((temp, count), 20, "DDEATH")]
            )
            count_topic = placer.metric_topic(count)
            await seen.wait_for(
                lambda: (
                    seen.field(temp_topic, "quality") == seen.field(count_topic, "quality") == "STALE"
                    and seen.field(device_state, "online") is False
                ),
                what="STALE after DDEATH",
            )
            stale = seen.json(temp_topic)
            _validate_value(stale)
            assert stale["value"] == 20.5 and stale["timestamp"] == 20
            assert seen.json(placer.metric_topic(node_metric))["quality"] == "GOOD"
            device_doc = seen.json(device_state)
            _validate_state(device_doc)
            assert device_doc["online"] is False and device_doc["reason"] == "DDEATH"
            await sink.handle(
                [NodeOffline(group_id, "N1", 30, "NDEATH", 3), MetricsStale((node_metric,), 30, "NDEATH")]
            )
            node_topic = placer.metric_topic(node_metric)
            await seen.wait_for(
                lambda: (
                    seen.field(node_topic, "quality") == Quality.STALE
                    and seen.field(node_state, "online") is False
                ),
                what="node STALE",
            )
            assert seen.json(node_state)["online"] is False
            _validate_state(seen.json(node_state))
            assert all(json.loads(p)["value"] != -1.0 for t, p, _ in seen.log if t == temp_topic)
    finally:
        await sink.close()
        await clear_retained(mqtt_broker.host, mqtt_broker.port, [f"{uns_prefix}/#"])


async def test_pending_set_is_bounded_while_the_uns_broker_is_away(uns_prefix: str, group_id: str) -> None:
    settings = UnsConfig(prefix=uns_prefix, publish_window_ms=10, max_pending=50)
    placer = Placer(Namespace.from_config(NamespaceConfig()), prefix=uns_prefix)
    # nothing listens on this port: the publisher keeps retrying in the background
    publisher = UnsPublisher(
        MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}", reconnect_min_s=0.05, reconnect_max_s=0.2), settings
    )
    await publisher.start()
    sink = UnsSink(placer, publisher, settings)
    await sink.start()
    try:
        infos = [MetricInfo(group_id, "N", None, f"m{i}", 3) for i in range(200)]
        await asyncio.wait_for(
            sink.handle([Samples(tuple(Sample(info, 1, i) for i, info in enumerate(infos)))]), 5
        )
        assert sink.pending == 50
        assert sink.dropped == 150
        await asyncio.sleep(0.1)
        assert publisher.last_error is not None and "connection refused" in publisher.last_error
    finally:
        await asyncio.wait_for(sink.close(), 15)


async def test_a_full_pending_set_waits_for_the_window_and_loses_nothing(
    mqtt_broker: MqttBroker, group_id: str, uns_prefix: str
) -> None:
    """More new topics in one effect than ``max_pending``: each value waits for room, none is lost (the
    values after a wait go into the pending set the window left, not the one it took)."""
    sink, placer = await _sink(mqtt_broker, uns_prefix, publish_window_ms=10, max_pending=5)
    infos = [MetricInfo(group_id, "N", None, f"m{i}", 10) for i in range(40)]
    try:
        async with Observer(mqtt_broker.host, mqtt_broker.port, [f"{uns_prefix}/#"]) as seen:
            await asyncio.wait_for(
                sink.handle([Samples(tuple(Sample(info, 1, float(i)) for i, info in enumerate(infos)))]), 10
            )
            await sink.flush()
            topics = [placer.metric_topic(info) for info in infos]
            await seen.wait_for(lambda: all(t in seen.last for t in topics), what="all 40 values")
            assert [seen.json(t)["value"] for t in topics] == [float(i) for i in range(40)]
            assert sink.dropped == 0
    finally:
        await sink.close()
        await clear_retained(mqtt_broker.host, mqtt_broker.port, [f"{uns_prefix}/#"])


async def test_values_queued_during_a_uns_broker_restart_arrive(group_id: str, uns_prefix: str) -> None:
    from tests.private_servers import PrivateMosquitto, ServerError

    try:
        broker = PrivateMosquitto(persistence=False)
    except ServerError as exc:
        pytest.skip(str(exc))
    with broker:
        service = MqttBroker(broker.host, broker.port, "mosquitto")
        settings = UnsConfig(prefix=uns_prefix, publish_window_ms=10)
        placer = Placer(Namespace.from_config(NamespaceConfig()), prefix=uns_prefix)
        publisher = UnsPublisher(
            MqttConfig(url=service.url, reconnect_min_s=0.05, reconnect_max_s=0.3), settings
        )
        await publisher.start()
        await asyncio.wait_for(publisher.connected.wait(), 10)
        sink = UnsSink(placer, publisher, settings)
        await sink.start()
        info = MetricInfo(group_id, "N", None, "Level", 3)
        try:
            await sink.handle([Samples((Sample(info, 1, 1),))])
            await asyncio.wait_for(sink.flush(), 10)
            broker.stop()
            await _wait(lambda: not publisher.is_connected)
            await sink.handle([Samples((Sample(info, 2, 2),))])
            await sink.handle([Samples((Sample(info, 3, 3),))])
            assert sink.pending == 1
            broker.start()
            async with Observer(service.host, service.port, [f"{uns_prefix}/#"]) as seen:
                topic = placer.metric_topic(info)
                await seen.wait_for(
                    lambda: topic in seen.last and seen.json(topic)["value"] == 3, what="after restart"
                )
        finally:
            await sink.close()


async def _wait(condition: Any, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_flush_publishes_what_is_pending_when_the_window_task_is_gone(
    mqtt_broker: MqttBroker, group_id: str, uns_prefix: str
) -> None:
    """At shutdown the window task may be cancelled before the last flush: flush then publishes the
    pending values itself (it used to spin at full CPU, waiting for a task that was gone)."""
    sink, placer = await _sink(mqtt_broker, uns_prefix, publish_window_ms=60_000)
    temp, count, _ = _infos(group_id)
    try:
        async with Observer(mqtt_broker.host, mqtt_broker.port, [f"{uns_prefix}/#"]) as seen:
            await sink.handle([Samples((Sample(temp, 12, 20.5), Sample(count, 12, 7)), 4)])
            assert sink._task is not None
            sink._task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sink._task
            assert sink.pending == 2
            await asyncio.wait_for(sink.flush(), 10)
            assert sink.pending == 0
            topic = placer.metric_topic(temp)
            await seen.wait_for(lambda: topic in seen.last, what="the flushed value")
            assert seen.json(topic)["value"] == 20.5
    finally:
        await sink.close()
        await clear_retained(mqtt_broker.host, mqtt_broker.port, [f"{uns_prefix}/#"])
