"""The live simulator on the real broker: Wills delivered by the broker, bdSeq per connection, rebirths."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pysparkplug

from tests.services import MqttBroker
from uns_bridge.simulator.live import run_fleet
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.payload import decode_payload, encode_payload
from uns_bridge.sparkplug.values import Metric, Payload


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        await asyncio.sleep(0.02)


class Watcher:
    def __init__(self, broker: MqttBroker, filters: list[str]) -> None:
        self.messages: list[tuple[str, bytes, int]] = []
        self.subscribed = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload, m.qos))
        self.client.on_subscribe = lambda *_a: setattr(self, "subscribed", self.subscribed + 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        for f in filters:
            self.client.subscribe(f, qos=1)

    def of(self, kind: str) -> list[tuple[str, bytes, int]]:
        return [m for m in self.messages if m[0].split("/")[2] == kind]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def bd_seq(payload: bytes) -> int:
    value = next(m.value for m in decode_payload(payload).metrics if m.name == "bdSeq")
    assert isinstance(value, int)
    return value


async def test_fleet_births_answers_rebirth_and_dies_cleanly(mqtt_broker: MqttBroker, group_id: str) -> None:
    groups = [f"{group_id}-Assembly", f"{group_id}-Paint"]
    watcher = Watcher(mqtt_broker, [f"spBv1.0/{g}/#" for g in groups])
    stop = asyncio.Event()
    try:
        await wait_for(lambda: watcher.subscribed == 2)
        task = asyncio.create_task(run_fleet(mqtt_broker.url, 2, 2, 4, 20.0, None, {}, group_id, stop))
        await wait_for(lambda: len(watcher.of("NBIRTH")) == 2 and len(watcher.of("DDATA")) >= 8)
        node_topic = f"spBv1.0/{groups[1]}/NCMD/Line1-PLC"
        rebirth = Payload(
            int(time.time() * 1000), (Metric("Node Control/Rebirth", None, None, DataType.Boolean, True),)
        )
        watcher.client.publish(node_topic, encode_payload(rebirth), qos=0)
        await wait_for(lambda: len(watcher.of("NBIRTH")) == 3)
        again = watcher.of("NBIRTH")[-1]
        assert again[0] == f"spBv1.0/{groups[1]}/NBIRTH/Line1-PLC"
        assert decode_payload(again[1]).seq == 0 and bd_seq(again[1]) == 0, (
            "a rebirth keeps the session's bdSeq"
        )
        await wait_for(lambda: len(watcher.of("DDATA")) >= 20)
        stop.set()
        stats = await asyncio.wait_for(task, 20)
        await wait_for(lambda: len(watcher.of("NDEATH")) == 2)
    finally:
        stop.set()
        watcher.close()
    assert stats.rebirths_answered == 1
    for _topic, payload, _ in watcher.of("NDEATH"):
        assert bd_seq(payload) == 0
        assert pysparkplug.NDeath.decode(payload).bd_seq_metric.value == 0
    # seq runs 0.. per node across node and device messages, the rebirth restarting it at 0
    per_node: dict[str, list[int]] = {}
    for topic, payload, _ in watcher.messages:
        parts = topic.split("/")
        if parts[2] in ("NBIRTH", "DBIRTH", "NDATA", "DDATA", "DDEATH"):
            seq = decode_payload(payload).seq
            assert seq is not None
            per_node.setdefault(parts[1] + parts[3], []).append(seq)
    for seqs in per_node.values():
        for a, b in itertools.pairwise(seqs):
            assert b == (a + 1) % 256 or b == 0, seqs


async def test_death_fault_makes_the_broker_deliver_the_will_then_the_next_bd_seq(
    mqtt_broker: MqttBroker, group_id: str
) -> None:
    watcher = Watcher(mqtt_broker, [f"spBv1.0/{group_id}-Assembly/#"])
    stop = asyncio.Event()
    try:
        await wait_for(lambda: watcher.subscribed == 1)
        task = asyncio.create_task(
            run_fleet(mqtt_broker.url, 1, 1, 2, 10.0, None, {"death": 0.3}, group_id, stop, seed=3)
        )
        await wait_for(lambda: len(watcher.of("NBIRTH")) >= 3, timeout=30)
        stop.set()
        stats = await asyncio.wait_for(task, 20)
        await wait_for(lambda: len(watcher.of("NDEATH")) >= len(watcher.of("NBIRTH")), timeout=30)
    finally:
        stop.set()
        watcher.close()
    assert stats.deaths >= 2
    births = [bd_seq(p) for _, p, _ in watcher.of("NBIRTH")]
    assert births == list(range(len(births))), "every connection takes the next bdSeq"
    deaths = [(bd_seq(p), qos) for _, p, qos in watcher.of("NDEATH")]
    # each session ends with exactly one death naming its bdSeq: Wills (from the broker) and the final clean one
    assert sorted(d for d, _ in deaths) == births
    assert all(qos == 1 for _, qos in deaths)


async def test_state_aware_fleet_births_only_while_the_primary_host_is_online(
    mqtt_broker: MqttBroker, group_id: str
) -> None:
    host_id = f"{group_id}-host"
    watcher = Watcher(mqtt_broker, [f"spBv1.0/{group_id}-Assembly/#"])
    stop = asyncio.Event()

    def state(online: bool) -> None:
        body = json.dumps({"online": online, "timestamp": int(time.time() * 1000)})
        watcher.client.publish(f"spBv1.0/STATE/{host_id}", body, qos=1, retain=False).wait_for_publish(10)

    try:
        await wait_for(lambda: watcher.subscribed == 1)
        task = asyncio.create_task(
            run_fleet(mqtt_broker.url, 1, 1, 2, 20.0, None, {}, group_id, stop, primary_host=host_id)
        )
        await asyncio.sleep(1.0)
        assert watcher.of("NBIRTH") == [], "no birth before the primary host is online"
        state(True)
        await wait_for(lambda: len(watcher.of("NBIRTH")) == 1 and len(watcher.of("DDATA")) >= 3)
        state(False)
        await asyncio.sleep(0.5)
        paused_at = len(watcher.of("DDATA"))
        await asyncio.sleep(0.5)
        assert len(watcher.of("DDATA")) == paused_at, "no data while the primary host is offline"
        state(True)
        await wait_for(lambda: len(watcher.of("NBIRTH")) == 2 and len(watcher.of("DDATA")) > paused_at)
        stop.set()
        await asyncio.wait_for(task, 20)
    finally:
        stop.set()
        watcher.close()
    assert [bd_seq(p) for _, p, _ in watcher.of("NBIRTH")] == [0, 1], "back online: a new session, next bdSeq"
