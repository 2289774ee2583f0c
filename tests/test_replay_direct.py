"""record -> replay --direct -> the database equals a live ingest of the same traffic; replaying twice stores once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from tests.services import MqttBroker, unique_name, with_database
from tests.test_replay_broker import CLI, Subscriber, run_cli, wait_for
from uns_bridge.app import run_bridge
from uns_bridge.capture import CaptureRecord, JsonlReader, JsonlWriter
from uns_bridge.config import (
    Config,
    DatabaseConfig,
    HostSettings,
    HttpConfig,
    MqttConfig,
    SpoolConfig,
    UnsConfig,
)
from uns_bridge.simulator import FleetGenerator
from uns_bridge.simulator.live import run_fleet

SAMPLES = """
    SELECT group_id, edge_node_id, coalesce(device_id, ''), metric, time, value::text, quality, is_historical
    FROM uns.samples ORDER BY 1, 2, 3, 4, 5, 6
"""


async def rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def lifecycle(dsn: str) -> list[tuple[object, ...]]:
    """Lifecycle rows without their receive times (live and recorded receive times differ by a few ms)."""
    conn = await asyncpg.connect(dsn)
    try:
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'uns' AND table_name = 'lifecycle'"
                " ORDER BY ordinal_position"
            )
        ]
        keep = [
            c for c in columns if c not in ("id", "time", "received", "received_at", "created_at", "detail")
        ]
        order = ", ".join(f'"{c}"' for c in keep)
        return [tuple(r) for r in await conn.fetch(f"SELECT {order} FROM uns.lifecycle ORDER BY {order}")]
    finally:
        await conn.close()


@pytest.fixture
async def second_database(database_dsn: str) -> str:
    from tests import services

    admin = services.postgres_admin_dsn()
    name = unique_name("uns_test_b")
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(admin, name)  # type: ignore[misc]
    conn = await asyncpg.connect(admin)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def bridge_config(broker: MqttBroker, dsn: str, groups: tuple[str, ...], tmp_path: Path) -> Config:
    return Config(
        mqtt=MqttConfig(url=broker.url, groups=groups),
        host=HostSettings(id=unique_name("host")),
        database=DatabaseConfig(url=dsn),
        uns=UnsConfig(enabled=False),
        spool=SpoolConfig(dir=tmp_path / "spool"),
        http=HttpConfig(enabled=False),
    )


async def test_record_then_direct_replay_equals_live_ingest(
    tmp_path: Path, mqtt_broker: MqttBroker, group_id: str, database_dsn: str, second_database: str
) -> None:
    groups = (f"{group_id}-Assembly", f"{group_id}-Paint")
    capture = tmp_path / "live.jsonl.zst"
    recorder = await asyncio.create_subprocess_exec(
        *CLI,
        "record",
        "--out",
        str(capture),
        "--url",
        mqtt_broker.url,
        *[a for g in groups for a in ("--filter", f"spBv1.0/{g}/#")],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stop_bridge = asyncio.Event()
    config = bridge_config(mqtt_broker, database_dsn, groups, tmp_path)
    state = Subscriber(mqtt_broker, f"spBv1.0/STATE/{config.host.id}")
    watch = Subscriber(mqtt_broker, f"spBv1.0/{groups[0]}/#")
    watch.client.subscribe(f"spBv1.0/{groups[1]}/#", qos=1)
    bridge = asyncio.create_task(run_bridge(config, stop=stop_bridge))
    try:
        assert recorder.stderr is not None
        while b"subscribed to" not in (line := await asyncio.wait_for(recorder.stderr.readline(), 20)):
            assert line
        await wait_for(
            lambda: any(b'"online":true' in p.replace(b" ", b"") for _, p, _ in state.messages), 30
        )
        stats = await run_fleet(
            mqtt_broker.url, 2, 2, 11, 10.0, 2.0, {"death": 0.1, "devicedeath": 0.1}, group_id, None, seed=5
        )
        assert stats.published > 50
        # the bridge has stored every death the broker delivered before it is stopped
        deaths = sum(1 for t, _, _ in watch.messages if t.split("/")[2] == "NDEATH")
        for _ in range(300):
            stored = await rows(database_dsn, "SELECT count(*) FROM uns.lifecycle WHERE event = 'node_death'")
            if stored[0][0] >= deaths > 0:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # and the writes that follow them
    finally:
        stop_bridge.set()
        await asyncio.wait_for(bridge, 30)
        recorder.send_signal(2)
        await asyncio.wait_for(recorder.communicate(), 20)
        state.close()
        watch.close()
    recorded = list(JsonlReader(capture))
    assert any(r.topic.split("/")[2] == "NDEATH" for r in recorded)

    result = await run_cli("replay", str(capture), "--direct", "--database", second_database)
    assert result.returncode == 0, result.stderr
    assert "messages" in result.stdout and "samples" in result.stdout
    live_samples = await rows(database_dsn, SAMPLES)
    replayed = await rows(second_database, SAMPLES)
    assert len(live_samples) > 100
    assert replayed == live_samples
    live_lifecycle = await lifecycle(database_dsn)
    events = {row[0] for row in live_lifecycle}
    assert {"node_birth", "device_birth", "node_death"} <= events, events
    replayed_lifecycle = await lifecycle(second_database)
    assert replayed_lifecycle == live_lifecycle, (
        sorted(set(replayed_lifecycle) - set(live_lifecycle), key=str),
        sorted(set(live_lifecycle) - set(replayed_lifecycle), key=str),
    )

    again = await run_cli("replay", str(capture), "--direct", "--database", second_database)
    assert again.returncode == 0, again.stderr
    assert await rows(second_database, SAMPLES) == live_samples, "a second replay stores no sample twice"


async def test_direct_replay_summary_and_bad_records(tmp_path: Path, database_dsn: str) -> None:
    fleet = FleetGenerator(nodes=1, devices=2, metrics=5, seed=3, faults={"gap": 0.1, "death": 0.05})
    path = tmp_path / "gen.jsonl"
    with JsonlWriter(path) as writer:
        for m in fleet.messages(1_767_225_600_000, 60):
            writer.write(CaptureRecord(m.t_ms / 1000, m.topic, m.payload, m.qos, m.retain))
    with path.open("a") as fh:
        fh.write('{"t": 1767225700.0, "topic": "spBv1.0/x/NDATA/y", "payload_b64": "@@"}\n')
        fh.write(json.dumps({"t": 1767225700.0, "topic": "spBv1.0/G/NDATA/N", "payload_b64": "////"}) + "\n")
    result = await run_cli("replay", str(path), "--direct", "--database", database_dsn)
    assert result.returncode == 3, result.stderr
    good = sum(1 for _ in path.open()) - 2
    assert f"line {good + 1}: field 'payload_b64' is not valid base64" in result.stderr
    line = result.stdout.strip().splitlines()[-1]
    fields = dict(zip(line.split()[0::2], line.split()[1::2], strict=False))
    assert fields["messages"] == f"{sum(1 for _ in JsonlReader(path)):,}"
    assert int(fields["samples"].replace(",", "")) > 0
    assert int(fields["gaps"].replace(",", "")) >= 1
    assert "dead" in line
    count = (await rows(database_dsn, "SELECT count(*) FROM uns.samples"))[0][0]
    again = await run_cli("replay", str(path), "--direct", "--database", database_dsn)
    assert again.returncode == 3
    assert (await rows(database_dsn, "SELECT count(*) FROM uns.samples"))[0][0] == count
