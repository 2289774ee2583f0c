"""Escaped UNS topics on real brokers: accepted, delivered under the prefix, and reversible.

Brokers reject what MQTT forbids in topic names (wildcards, NUL, invalid UTF-8); this proves the
escaping produces topics Mosquitto and amqtt accept for the nastiest names, that a subscription to
``<prefix>/#`` sees every one of them, and that the received topics unescape to the original names.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import orjson
import pytest

from tests.services import MqttBroker
from uns_bridge.config import NamespaceConfig
from uns_bridge.host.effects import MetricInfo, Sample
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.uns.contract import render_value, unescape_level

NASTY = [
    "plain",
    "with space",
    "a/b",
    "+",
    "#",
    "$SYS",
    "",
    "_",
    "100%",
    "nul\x00byte",
    "ctrl\x01\x1f\x7f\x9f",
    "lone\ud800surrogate",
    "non\ufffechar",
    "Öl 🛢",
]


async def _round_trip(broker: MqttBroker, prefix: str) -> None:
    placer = Placer(Namespace.from_config(NamespaceConfig()), prefix=prefix)
    infos = [
        MetricInfo("G" + name, "N" + name, name or None, f"Folder/{name}", DataType.String) for name in NASTY
    ]
    expected = {placer.metric_topic(info): info for info in infos}
    assert len(expected) == len(infos)
    received: dict[str, bytes] = {}
    async with (
        aiomqtt.Client(broker.host, broker.port) as sub,
        aiomqtt.Client(broker.host, broker.port) as pub,
    ):
        await sub.subscribe(f"{prefix}/#", qos=1)
        for topic, info in expected.items():
            await pub.publish(topic, render_value(Sample(info, 1, info.name)), qos=1)

        async def collect() -> None:
            async for message in sub.messages:
                received[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]
                if len(received) == len(expected):
                    return

        await asyncio.wait_for(collect(), timeout=20)
    assert set(received) == set(expected)
    for topic, payload in received.items():
        info = expected[topic]
        levels = topic.split("/")[len(prefix.split("/")) :]
        assert [unescape_level(level) for level in levels[:6]] == list(
            placer.place(info.group, info.node, info.device).levels
        )
        assert "/".join(unescape_level(level) for level in levels[6:]) == info.name
        assert orjson.loads(payload)["source"]["group"] == info.group.encode("utf-8", "replace").decode()


async def test_nasty_names_on_the_local_broker(mqtt_broker: MqttBroker, uns_prefix: str) -> None:
    await _round_trip(mqtt_broker, f"{uns_prefix}/plant")


@pytest.mark.timeout(60)
async def test_nasty_names_on_amqtt(amqtt_broker: MqttBroker, uns_prefix: str) -> None:
    await _round_trip(amqtt_broker, uns_prefix)
