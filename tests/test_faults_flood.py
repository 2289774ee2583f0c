"""A flood far above capacity: the real bridge process fed 100-metric DDATA as fast as a publisher can
send, many times what it can store.

Promise: the bridge's memory stays under a bound derived from its configured queues
(``mqtt.receive_queue``, ``database.queue_rows``, ``uns.max_pending``), backpressure shows in its
counters (``receive_pauses``), nothing crashes, and once the flood ends it is healthy and stores new
data. What the broker dropped for the slow subscriber is counted, not asserted (no system keeps up
with an unbounded offer). A private Mosquitto, the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from tests.bridge_helpers import http_get
from tests.private_servers import PrivateMosquitto, mosquitto_binary
from tests.services import MqttBroker
from tests.test_bridge_process import BridgeProcess, _env

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="no mosquitto binary")
REPO = Path(__file__).resolve().parents[1]

RECEIVE_QUEUE = 2_000
QUEUE_ROWS = 100_000
UNS_PENDING = 50_000
METRICS = 100
#: generous per-item costs in the bridge's memory: a queued MQTT message of ~2 KB with its paho
#: object, a queued row, a pending UNS value (topic + JSON); plus allocator slack
MESSAGE_BYTES, ROW_BYTES, UNS_BYTES, SLACK_MB = 8_192, 600, 800, 96

FLOODER = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.client as paho
    from uns_bridge.sparkplug.payload import encode_payload
    from uns_bridge.sparkplug.values import Metric, Payload

    host, port, group, nodes, metrics, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="flooder")
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    now = int(time.time() * 1000)
    for n in range(nodes):
        birth = Payload(now, (Metric("bdSeq", None, now, 4, 0), Metric("Node Control/Rebirth", None, now, 11, False)), 0)
        client.publish(f"spBv1.0/{group}/NBIRTH/N{n}", encode_payload(birth), qos=1).wait_for_publish(10)
        dbirth = Payload(now, tuple(Metric(f"M{i}", i + 1, now, 10, 0.0) for i in range(metrics)), 1)
        client.publish(f"spBv1.0/{group}/DBIRTH/N{n}/D1", encode_payload(dbirth), qos=1).wait_for_publish(10)
    print("BORN", flush=True)
    sys.stdin.readline()
    sent = 0
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        k += 1
        t = now + k
        body = encode_payload(Payload(t, tuple(Metric(None, i + 1, t, 10, float(k)) for i in range(metrics)), (k + 1) % 256), omit_alias_datatypes=True)
        for n in range(nodes):
            client.publish(f"spBv1.0/{group}/DDATA/N{n}/D1", body, qos=0)
            sent += 1
    print("SENT", sent, flush=True)
    client.disconnect()
    client.loop_stop()
    """
)


def memory_bound_mb(baseline_mb: float) -> float:
    queued = RECEIVE_QUEUE * MESSAGE_BYTES + QUEUE_ROWS * ROW_BYTES + UNS_PENDING * UNS_BYTES
    return baseline_mb + queued / 1e6 + SLACK_MB


def scrape(text: str, name: str) -> float:
    match = re.search(rf"^uns_bridge_{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match is not None, f"uns_bridge_{name} missing from /metrics"
    return float(match.group(1))


async def stored_count(dsn: str, group: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM uns.samples WHERE group_id = $1", group)
        return count
    finally:
        await conn.close()


async def flood(dsn: str, group: str, prefix: str, tmp: Path, seconds: float, nodes: int) -> None:
    host_id = f"flood-{uuid.uuid4().hex[:8]}"
    with PrivateMosquitto(persistence=False) as mosquitto:
        broker = MqttBroker(mosquitto.host, mosquitto.port, "mosquitto")
        env = _env(broker, dsn, group, prefix, host_id, tmp)
        env.update(
            {
                "UNS_MQTT_RECEIVE_QUEUE": str(RECEIVE_QUEUE),
                "UNS_DATABASE_QUEUE_ROWS": str(QUEUE_ROWS),
                "UNS_UNS_MAX_PENDING": str(UNS_PENDING),
                "UNS_LOG_LEVEL": "WARNING",
            }
        )
        http_port = int(env["UNS_HTTP_PORT"])
        bridge = BridgeProcess(env, tmp)
        flooder: subprocess.Popen[str] | None = None
        try:
            await _until(lambda: _is(_health(http_port), 200), 60, "the bridge healthy", bridge.output)
            flooder = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    FLOODER,
                    broker.host,
                    str(broker.port),
                    group,
                    str(nodes),
                    str(METRICS),
                    str(seconds),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            assert flooder.stdout is not None and flooder.stdin is not None
            assert flooder.stdout.readline().strip() == "BORN"
            catalog = nodes * METRICS
            await _until(
                lambda: _at_least(_device_metrics(dsn, group), catalog),
                60,
                "the births stored",
                bridge.output,
            )
            process = psutil.Process(bridge.process.pid)
            baseline_mb = process.memory_info().rss / 1e6
            peak_mb = baseline_mb
            flooder.stdin.write("go\n")
            flooder.stdin.flush()
            started = time.monotonic()
            while flooder.poll() is None:
                peak_mb = max(peak_mb, process.memory_info().rss / 1e6)
                assert bridge.process.poll() is None, f"the bridge died:\n{bridge.output()[-3000:]}"
                await asyncio.sleep(0.05)
            flood_s = time.monotonic() - started
            sent = int(flooder.stdout.read().split()[1])
            # the bridge works off what it holds, its memory still bounded
            settle_until = time.monotonic() + min(30 + 15 * seconds, 120)
            metrics = ""
            while time.monotonic() < settle_until:
                peak_mb = max(peak_mb, process.memory_info().rss / 1e6)
                _status, body = await http_get(http_port, "/metrics")
                metrics = body.decode()
                if scrape(metrics, "receive_queue_depth") == 0 and scrape(metrics, "store_queue_depth") == 0:
                    break
                await asyncio.sleep(0.1)
            stored = await stored_count(dsn, group) - nodes * (METRICS + 2)  # less the births
            pauses = scrape(metrics, "receive_pauses_total")
            bound = memory_bound_mb(baseline_mb)
            print(
                f"flood {flood_s:.1f} s, {nodes} nodes x {METRICS} metrics: sent {sent} messages "
                f"({sent * METRICS / flood_s:,.0f} metrics/s offered), stored {stored} samples "
                f"({stored / max(sent * METRICS, 1):.1%}; the rest dropped by the broker for a slow "
                f"subscriber or still queued when the wait ended), receive pauses {pauses:.0f}; bridge RSS {baseline_mb:.0f} MB -> peak "
                f"{peak_mb:.0f} MB (bound {bound:.0f} MB)"
            )
            assert peak_mb <= bound, f"peak RSS {peak_mb:.0f} MB above the bound {bound:.0f} MB"
            assert pauses > 0, "a flood this size must have paused reading (backpressure)"
            assert stored > 0
            assert await _health(http_port) == 200, "the bridge is not healthy after the flood"
            assert bridge.process.poll() is None
            log = bridge.output()
            assert "Traceback" not in log, log[-3000:]
        finally:
            if flooder is not None and flooder.poll() is None:
                flooder.kill()
                flooder.wait(10)
            bridge.process.terminate()
            try:
                await bridge.wait(60)
            finally:
                bridge.close()


async def _health(port: int) -> int:
    try:
        return (await http_get(port, "/health"))[0]
    except OSError:
        return 0


async def _device_metrics(dsn: str, group: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM uns.metrics WHERE group_id = $1 AND device_id IS NOT NULL", group
        )
        return count
    finally:
        await conn.close()


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _at_least(value: Awaitable[int], least: int) -> bool:
    return await value >= least


async def _until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, detail: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{detail()[-3000:]}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(300)
async def test_flood_far_above_capacity_keeps_memory_bounded(
    database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path
) -> None:
    await flood(database_dsn, group_id, uns_prefix, tmp_path, seconds=3.0, nodes=10)


@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_flood_60s(database_dsn: str, group_id: str, uns_prefix: str, tmp_path: Path) -> None:
    await flood(database_dsn, group_id, uns_prefix, tmp_path, seconds=60.0, nodes=50)
