"""The broker restarted under load, with the live bridge (``run_bridge``) in this process.

A private Mosquitto (with persistence, like a production broker) and the real PostgreSQL
(``database_dsn``). Counted edge nodes (``tests/fault_edge.py``) publish steadily; the broker is
restarted. Promise: the bridge reconnects, its STATE online is retained on the broker again (a new
timestamp), every node's values go STALE on the UNS, the active bridge asks for rebirths, the nodes
rebirth, values are GOOD again, and every sample the nodes published after their rebirth is stored.
The test prints sent/stored/duplicated/lost and the reconnect time. The soak variant restarts the
broker three times during 60 s.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from pathlib import Path

import aiomqtt
import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest

from tests.fault_live import Load, Recorder, stored_rows, tally, until, until_stored
from tests.private_servers import PrivateMosquitto, mosquitto_binary
from tests.services import MqttBroker
from tests.test_bridge_e2e import RunningBridge, bridge_config
from uns_bridge.sparkplug.payload import decode_payload

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="no mosquitto binary")

NODES = 3


async def retained_state(broker: PrivateMosquitto, topic: str) -> dict[str, object] | None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(3):
                async for message in client.messages:
                    if message.retain and isinstance(message.payload, bytes) and message.payload:
                        doc: dict[str, object] = orjson.loads(message.payload)
                        return doc
        except TimeoutError:
            return None
    return None


async def broker_restarts(
    dsn: str, group: str, prefix: str, tmp: Path, *, restarts: int, load_s: float, interval_s: float
) -> None:
    with PrivateMosquitto(persistence=True) as mosquitto:
        broker = MqttBroker(mosquitto.host, mosquitto.port, "mosquitto")
        config = bridge_config(broker, dsn, group, prefix, tmp)
        state_topic = f"spBv1.0/STATE/{config.host.id}"
        base = f"{prefix}/unassigned/{group}/_/_"
        counters = [f"{base}/E{k}/E{k}/counter" for k in range(NODES)]
        recorder = Recorder(broker.host, broker.port, [f"{prefix}/#", state_topic, f"spBv1.0/{group}/NCMD/#"])
        load = Load(broker.host, broker.port, group, NODES, interval_s)
        reconnects: list[float] = []
        rebirth_requests = 0
        try:
            async with RunningBridge(config) as bridge:
                recorder.start()
                await until(lambda: online_since(recorder, state_topic, 0.0), 60, "STATE online")
                load.start()
                await until(
                    lambda: all(recorder.messages(t) for t in counters), 30, "values of every node on the UNS"
                )
                for _ in range(restarts):
                    await asyncio.sleep(load_s / (restarts + 1))  # load between restarts
                    before = await retained_state(mosquitto, state_topic)
                    assert before is not None and before["online"] is True
                    births = [len(e.birth_marks) for e in load.edges]
                    wall_down = datetime.datetime.now(datetime.UTC)
                    await asyncio.to_thread(mosquitto.restart)
                    back = time.monotonic()
                    await restart_checks(
                        dsn, wall_down, recorder, load, state_topic, counters, back, births, reconnects
                    )
                    after = await retained_state(mosquitto, state_topic)
                    assert after is not None and after["online"] is True, after
                    assert after["timestamp"] != before["timestamp"], "a new STATE birth per connection"
                    rebirth_requests += sum(
                        rebirth_requested(recorder, f"spBv1.0/{group}/NCMD/E{k}", back) for k in range(NODES)
                    )
                await asyncio.sleep(load_s / (restarts + 1))
                load.stop_sending()
                promised = [i for e in load.edges for i in e.after_last_birth()]
                await until(lambda: set(promised) <= set(load.acked), 30, "the broker to acknowledge")
                await until_stored(dsn, group, promised, 60)
                assert await bridge.stop() == 0
        finally:
            load.close()
            recorder.close()
        rows = await stored_rows(dsn, group)
        everything = tally(load.sent, rows)
        after_rebirth = tally(promised, rows)
        print(everything.line(f"broker restarted {restarts}x under load (all samples)"))
        print(after_rebirth.line("  published after the last rebirth"))
        print(
            f"  reconnect (broker up -> STATE online) s: {', '.join(f'{r:.2f}' for r in reconnects)};"
            f" rebirth NCMDs on the wire: {rebirth_requests} for {NODES * restarts} node restarts; sends refused while down: {load.refused}"
        )
        assert after_rebirth.lost == 0
        assert everything.duplicated == 0


async def lifecycle_nodes(
    dsn: str, group: str, since: datetime.datetime, event: str = "node_death", reason: str = "NDEATH"
) -> set[str]:
    """Nodes with an ``event`` (``reason``) in ``uns.lifecycle`` from shortly before ``since`` on."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT edge_node_id FROM uns.lifecycle WHERE group_id = $1 AND event = $3"
            " AND reason = $4 AND time >= $2::timestamptz - interval '10 seconds'",
            group,
            since,
            event,
            reason,
        )
    finally:
        await conn.close()
    return {r["edge_node_id"] for r in rows}


async def restart_checks(
    dsn: str,
    wall_back: datetime.datetime,
    recorder: Recorder,
    load: Load,
    state_topic: str,
    counters: list[str],
    back: float,
    births: list[int],
    reconnects: list[float],
) -> None:
    """After a broker restart: STATE online again, STALE, rebirth requests, births, GOOD again."""
    group = load.edges[0].group
    reconnects.append(
        await until(lambda: online_since(recorder, state_topic, back), 60, "STATE online again")
    )
    await until(
        lambda: all(quality_seen(recorder, t, back, "STALE") for t in counters),
        30,
        "every node's values STALE on the UNS",
    )
    # a node whose NDEATH (its Will, published by the stopping broker) reached the bridge first is
    # offline and needs no request: it births when it reconnects; every other node is asked. The NCMD
    # goes out at QoS 0 right after the bridge resubscribes, so a client that reconnects later (our
    # recorder, the node itself) may miss it on the wire: the bridge's lifecycle record counts too.
    deaths: set[str] = set()
    asked: set[str] = set()

    def accounted() -> bool:
        return all(
            rebirth_requested(recorder, f"spBv1.0/{group}/NCMD/{e.node}", back)
            or e.node in deaths
            or e.node in asked
            for e in load.edges
        )

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not accounted():
        deaths = await lifecycle_nodes(dsn, group, wall_back)
        asked = await lifecycle_nodes(dsn, group, wall_back, "rebirth_request", "host reconnected")
        if loop.time() > deadline:
            seen = sorted({x.topic for x in recorder.log if "NCMD" in x.topic})
            raise AssertionError(
                f"nodes neither asked to rebirth nor dead: NCMDs {seen}, NDEATHs {deaths}, requests logged {asked}"
            )
        await asyncio.sleep(0.1)
    print(f"  restart: rebirth requested (lifecycle) {sorted(asked)}, NDEATH first {sorted(deaths)}")
    await until(
        lambda: all(len(e.birth_marks) > b for e, b in zip(load.edges, births, strict=True)),
        30,
        "every node reborn",
    )
    await until(
        lambda: all(last_quality(recorder, t) == "GOOD" for t in counters),
        30,
        "values GOOD again after the rebirths",
    )


def rebirth_requested(recorder: Recorder, topic: str, since: float) -> int:
    """How many rebirth NCMDs arrived on ``topic`` since ``since`` (decoded with our codec)."""
    count = 0
    for seen in recorder.raw(topic, since):
        payload = decode_payload(seen)
        count += any(m.name == "Node Control/Rebirth" and m.value is True for m in payload.metrics)
    return count


def online_since(recorder: Recorder, topic: str, since: float) -> bool:
    return any(doc.get("online") is True for doc in recorder.messages(topic, since))


def quality_seen(recorder: Recorder, topic: str, since: float, quality: str) -> bool:
    return any(doc.get("quality") == quality for doc in recorder.messages(topic, since))


def last_quality(recorder: Recorder, topic: str) -> object:
    docs = recorder.messages(topic)
    return docs[-1].get("quality") if docs else None


async def test_broker_restart_under_load(
    database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path
) -> None:
    await broker_restarts(
        database_dsn, group_id, uns_prefix, tmp_path, restarts=1, load_s=3.0, interval_s=0.005
    )


@pytest.mark.soak
async def test_broker_restarts_60s(database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path) -> None:
    await broker_restarts(
        database_dsn, group_id, uns_prefix, tmp_path, restarts=3, load_s=60.0, interval_s=0.002
    )
