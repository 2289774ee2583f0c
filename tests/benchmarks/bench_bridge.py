"""The live bridge's MQTT paths on the real local broker, next to bare-client ceilings.

* receive: CPU µs per Sparkplug DDATA message in the bridge process (FlowClient -> Pipeline -> Host ->
  Placer -> UNS sink), the stream coming from a separate publisher process; ceiling: a bare aiomqtt
  subscriber doing nothing with the same stream.
* pipeline: µs per message of ``Pipeline.feed`` alone (no MQTT), host + placer + UNS coalescing.
* UNS publish: retained QoS 1 JSON messages per second acknowledged by the broker through
  ``UnsPublisher.publish_many``; ceiling: bare paho publishing the same messages with the same window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import aiomqtt

from tests.benchmarks._figures import Figure
from uns_bridge.embedded import port_is_open

SUITE = "bridge"
HOST, PORT = "127.0.0.1", 1883

_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    host, port, group, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    payloads = [open(p, "rb").read() for p in sys.argv[5:]]
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    birth_n, birth_d = payloads[0], payloads[1]
    client.publish(f"spBv1.0/{group}/NBIRTH/N1", birth_n, qos=1).wait_for_publish()
    client.publish(f"spBv1.0/{group}/DBIRTH/N1/D1", birth_d, qos=1).wait_for_publish()
    data = payloads[2:]
    info = None
    for i in range(count):
        info = client.publish(f"spBv1.0/{group}/DDATA/N1/D1", data[i % len(data)], qos=1)
        while len(client._out_messages) > 2000:
            time.sleep(0.001)
    info.wait_for_publish()
    client.disconnect()
    client.loop_stop()
    """
)


def _payloads(directory: Path, metrics: int) -> list[Path]:
    """NBIRTH, DBIRTH (``metrics`` Doubles) and 256 DDATA payloads (seq 2.. wrapping), our codec."""
    from uns_bridge.sparkplug.payload import encode_payload
    from uns_bridge.sparkplug.values import Metric, Payload

    now = int(time.time() * 1000)
    births = [
        Payload(
            now, (Metric("bdSeq", None, now, 4, 0), Metric("Node Control/Rebirth", None, now, 11, False)), 0
        ),
        Payload(now, tuple(Metric(f"Line/M{i}", i + 1, now, 10, 0.0) for i in range(metrics)), 1),
    ]
    data = [
        Payload(
            now + k,
            tuple(Metric(None, i + 1, now + k, 10, float(k + i)) for i in range(metrics)),
            (k + 2) % 256,
        )
        for k in range(256)
    ]
    paths = []
    for index, payload in enumerate(births + data):
        path = directory / f"p{index}.bin"
        path.write_bytes(encode_payload(payload, omit_alias_datatypes=True))
        paths.append(path)
    return paths


def _publisher(group: str, count: int, payloads: list[Path]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _PUBLISHER, HOST, str(PORT), group, str(count), *map(str, payloads)]
    )


async def _bare_receive(group: str, count: int, payloads: list[Path]) -> tuple[float, int]:
    """(CPU seconds per message, messages the broker dropped) of a subscriber that only counts.

    Ends when everything arrived, or when the publisher is done and nothing came for a second: the
    broker drops QoS 1 messages beyond its per-client queue when even a bare subscriber falls behind.
    """
    async with aiomqtt.Client(HOST, PORT, identifier=f"bench-bare-{uuid.uuid4().hex[:6]}") as client:
        await client.subscribe(f"spBv1.0/{group}/#", qos=1)
        publisher = _publisher(group, count, payloads)
        seen = 0
        last_change = time.perf_counter()

        async def count_messages() -> None:
            nonlocal seen, last_change
            async for _ in client.messages:
                seen += 1
                last_change = time.perf_counter()
                if seen == count + 2:
                    return

        cpu = time.process_time()
        reader = asyncio.create_task(count_messages())
        while not reader.done():
            await asyncio.sleep(0.05)
            if publisher.poll() is not None and time.perf_counter() - last_change > 1.0:
                reader.cancel()
                break
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        cpu = time.process_time() - cpu
        publisher.wait(60)
    return cpu / max(seen, 1), count + 2 - seen


async def _bridge_receive(group: str, count: int, payloads: list[Path]) -> tuple[float, float, int]:
    """(CPU seconds per message, wall seconds, messages the broker dropped) of session + pipeline + sink."""
    from uns_bridge.config import MqttConfig, NamespaceConfig, UnsConfig
    from uns_bridge.host.host import Host, HostConfig
    from uns_bridge.mqtt import HostSession
    from uns_bridge.namespace import Namespace
    from uns_bridge.pipeline import Pipeline
    from uns_bridge.placement import Placer
    from uns_bridge.uns.sink import UnsSink

    class NoPublisher:
        """The UNS sink coalesces as usual; its batches go nowhere (the UNS figure is measured apart)."""

        is_connected = True
        published = 0

        async def publish_many(self, items: object) -> None:
            return None

        async def close(self) -> None:
            return None

    placer = Placer(Namespace.from_config(NamespaceConfig()), prefix="bench")
    sink = UnsSink(placer, NoPublisher(), UnsConfig(prefix="bench"))
    await sink.start()
    host = Host(HostConfig(host_id=f"bench-{uuid.uuid4().hex[:6]}", role="passive", groups=(group,)))
    pipeline = Pipeline(host, placer, None, sink)
    session = HostSession(MqttConfig(url=f"mqtt://{HOST}:{PORT}", groups=(group,)), pipeline, host_id="bench")
    task = asyncio.create_task(session.run())
    await asyncio.wait_for(session.connected.wait(), 10)
    publisher = _publisher(group, count, payloads)
    start_messages = pipeline.metrics.messages
    cpu, wall = time.process_time(), time.perf_counter()
    last, last_change = start_messages, time.perf_counter()
    # until everything arrived, or the publisher is done and nothing came for a second: a broker drops
    # QoS 1 messages beyond its per-client queue (Mosquitto: max_queued_messages) when we fall behind
    while pipeline.metrics.messages < start_messages + count + 2:
        await asyncio.sleep(0.005)
        if pipeline.metrics.messages != last:
            last, last_change = pipeline.metrics.messages, time.perf_counter()
        elif publisher.poll() is not None and time.perf_counter() - last_change > 1.0:
            break
    received = pipeline.metrics.messages - start_messages
    cpu, wall = time.process_time() - cpu, last_change - wall
    publisher.wait(60)
    await session.stop()
    await task
    await sink.close()
    return cpu / received, wall, count + 2 - received


async def _feed_only(count: int, metrics: int) -> float:
    """Seconds per message of Pipeline.feed with the same payloads, no MQTT."""
    from uns_bridge.config import NamespaceConfig, UnsConfig
    from uns_bridge.host.host import Host, HostConfig
    from uns_bridge.namespace import Namespace
    from uns_bridge.pipeline import Pipeline
    from uns_bridge.placement import Placer
    from uns_bridge.uns.sink import UnsSink

    class NoPublisher:
        is_connected = True

        async def publish_many(self, items: object) -> None:
            return None

        async def close(self) -> None:
            return None

    with tempfile.TemporaryDirectory() as tmp:
        payloads = [p.read_bytes() for p in _payloads(Path(tmp), metrics)]
    placer = Placer(Namespace.from_config(NamespaceConfig()), prefix="bench")
    sink = UnsSink(placer, NoPublisher(), UnsConfig(prefix="bench", publish_window_ms=100))
    pipeline = Pipeline(Host(HostConfig(host_id="bench", role="passive")), placer, None, sink)
    now = int(time.time() * 1000)
    await pipeline.feed("spBv1.0/G/NBIRTH/N1", payloads[0], now)
    await pipeline.feed("spBv1.0/G/DBIRTH/N1/D1", payloads[1], now)
    data = payloads[2:]
    started = time.perf_counter()
    for i in range(count):
        await pipeline.feed("spBv1.0/G/DDATA/N1/D1", data[i % len(data)], now)
    return (time.perf_counter() - started) / count


async def _uns_publish(count: int) -> float:
    from uns_bridge.config import MqttConfig, UnsConfig
    from uns_bridge.uns.publisher import UnsPublisher

    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    payload = b'{"value":21.5,"timestamp":1700000000000,"quality":"GOOD","datatype":"Double","unit":null}'
    items = [(f"{prefix}/a/b/c/d/e/m{i}", payload) for i in range(count)]
    publisher = UnsPublisher(MqttConfig(url=f"mqtt://{HOST}:{PORT}"), UnsConfig(prefix=prefix))
    await publisher.start()
    await asyncio.wait_for(publisher.connected.wait(), 10)
    started = time.perf_counter()
    await publisher.publish_many(items)
    elapsed = time.perf_counter() - started
    # clean the retained messages again
    await publisher.publish_many([(topic, b"") for topic, _ in items])
    await publisher.close()
    return count / elapsed


def _paho_publish(count: int, window: int = 1000) -> float:
    """Bare paho driven by its own select loop in this thread (no asyncio, no threads)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    payload = b'{"value":21.5,"timestamp":1700000000000,"quality":"GOOD","datatype":"Double","unit":null}'
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(window)
    client.connect(HOST, PORT)
    while not client.is_connected():
        client.loop(0.1)

    def publish_all(body: bytes) -> float:
        acked = [0]
        client.on_publish = lambda *args: acked.__setitem__(0, acked[0] + 1)
        started = time.perf_counter()
        sent = 0
        while acked[0] < count:
            while sent < count and sent - acked[0] < window:
                client.publish(f"{prefix}/a/b/c/d/e/m{sent}", body, qos=1, retain=True)
                sent += 1
            client.loop(0.01)
        return time.perf_counter() - started

    elapsed = publish_all(payload)
    publish_all(b"")
    client.disconnect()
    return count / elapsed


def run(quick: bool) -> list[Figure]:
    if not port_is_open(HOST, PORT):
        return [Figure(SUITE, "skipped: no broker on 127.0.0.1:1883", 0, "-")]
    count = 5_000 if quick else 50_000
    metrics = 10
    figures: list[Figure] = []
    feed_s = asyncio.run(_feed_only(count, metrics))
    figures.append(
        Figure(
            SUITE,
            f"Pipeline.feed, DDATA of {metrics} Doubles",
            feed_s * 1e6,
            "µs/msg",
            note=f"{1 / feed_s:,.0f} msg/s",
        )
    )
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        payloads = _payloads(Path(tmp), metrics)
        bare, bare_dropped = asyncio.run(_bare_receive(f"Bare{uuid.uuid4().hex[:6]}", count, payloads))
        cpu, wall, dropped = asyncio.run(_bridge_receive(f"Bench{uuid.uuid4().hex[:6]}", count, payloads))
    figures.append(
        Figure(
            SUITE,
            f"session receive, DDATA of {metrics} Doubles (CPU)",
            cpu * 1e6,
            "µs/msg",
            ceiling=bare * 1e6,
            ceiling_name="bare aiomqtt subscriber",
            note=(
                f"lower is better; {(count - dropped) / wall:,.0f} msg/s wall; dropped by the broker: "
                f"{dropped} (bare subscriber: {bare_dropped})"
            ),
        )
    )
    uns_count = 5_000 if quick else 50_000
    uns_rate = asyncio.run(_uns_publish(uns_count))
    paho_rate = _paho_publish(uns_count)
    figures.append(
        Figure(
            SUITE,
            "UNS publish, retained QoS 1 JSON",
            uns_rate,
            "msg/s",
            ceiling=paho_rate,
            ceiling_name="bare paho loop, same window",
        )
    )
    return figures


if __name__ == "__main__":
    for figure in run(quick="--quick" in sys.argv):
        print(figure.line())
    os._exit(0)
