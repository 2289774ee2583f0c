"""pcap/pcapng import: TCP reassembly, MQTT 3.1.1 and 5, damaged captures. Pcaps written here with dpkt."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.capture_helpers import (
    Side,
    TcpConversation,
    connack,
    connect,
    pingreq,
    puback,
    publish,
    write_pcap,
)
from tests.services import MqttBroker
from uns_bridge.capture import CaptureError, open_capture
from uns_bridge.capture.pcap import PcapReader


def conversation(port: int = 1883, *, ipv6: bool = False, version: int = 4) -> TcpConversation:
    if ipv6:
        conv = TcpConversation(Side("fd00::1", 50123, 1000), Side("fd00::2", port, 900_000), ipv6=True)
    else:
        conv = TcpConversation(Side("10.1.1.1", 50123, 4_294_967_000), Side("10.1.1.2", port, 7))  # seq wraps
    conv.handshake(100.0)
    conv.send(100.001, True, connect(version))
    conv.send(100.002, False, connack(version))
    return conv


def topics_and_payloads(path: Path, **kw: object) -> tuple[list[tuple[str, bytes]], PcapReader]:
    reader = open_capture(path, **kw)
    assert isinstance(reader, PcapReader)
    return [(r.topic, r.payload) for r in reader], reader


def test_segmentation_across_and_within_publish_boundaries(tmp_path: Path) -> None:
    conv = conversation(port=31883)  # non-standard port
    messages = [
        publish(f"spBv1.0/G/NDATA/N{i}", bytes([i]) * (i * 37 + 5), qos=i % 2, packet_id=i + 1)
        for i in range(8)
    ]
    stream = b"".join(messages)
    # cut the stream at arbitrary points: inside a fixed header, inside a topic, inside a payload, and
    # one segment holding several whole PUBLISHes
    cuts = [
        1,
        3,
        len(messages[0]) + 2,
        len(messages[0]) + len(messages[1]) + len(messages[2]) + 1,
        len(stream) - 4,
    ]
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    t = 101.0
    for piece in pieces:
        conv.send(t, True, piece)
        t += 0.01
    conv.send(t, False, puback(2))  # broker traffic in between
    conv.send(t + 0.01, True, pingreq())
    path = tmp_path / "seg.pcap"
    write_pcap(path, conv.frames)
    got, reader = topics_and_payloads(path)
    assert got == [(f"spBv1.0/G/NDATA/N{i}", bytes([i]) * (i * 37 + 5)) for i in range(8)]
    assert reader.problems.count == 0
    records = list(open_capture(path))
    # timestamps are those of the packet that completed each PUBLISH
    assert records[0].t == pytest.approx(101.02)
    assert records[-1].t == pytest.approx(101.05)
    assert records[1].qos == 1 and records[0].qos == 0
    assert records[0].extra is not None and records[0].extra["dst"] == "10.1.1.2:31883"


def test_retransmissions_overlaps_and_out_of_order_segments(tmp_path: Path) -> None:
    conv = conversation()
    messages = [publish(f"t/{i}", f"payload-{i}".encode() * 3, retain=i == 2) for i in range(6)]
    stream = b"".join(messages)
    base = conv.client.seq
    chunks = [(0, 20), (20, 55), (55, 90), (90, 140), (140, len(stream))]
    frames = {
        i: conv.segment(0, True, stream[a:b], seq=(base + a) & 0xFFFFFFFF) for i, (a, b) in enumerate(chunks)
    }
    overlap = conv.segment(0, True, stream[10:70], seq=(base + 10) & 0xFFFFFFFF)  # covers 0..2 partly
    t = 102.0
    order = [frames[0], frames[0], frames[2], overlap, frames[1], frames[4], frames[3], frames[3], frames[4]]
    for frame in order:
        conv.add(t, frame)
        t += 0.01
    path = tmp_path / "retx.pcapng"
    write_pcap(path, conv.frames, ng=True)
    got, reader = topics_and_payloads(path)
    assert got == [(f"t/{i}", f"payload-{i}".encode() * 3) for i in range(6)]
    assert reader.problems.count == 0
    assert [r.retain for r in open_capture(path)] == [False, False, True, False, False, False]


def test_mqtt5_properties_topic_aliases_and_both_directions(tmp_path: Path) -> None:
    conv = conversation(version=5, ipv6=True)
    conv.send(
        103.0,
        True,
        publish(
            "spBv1.0/G/NBIRTH/N",
            b"birth",
            version=5,
            alias=3,
            user=[("k", "v")],
            extra_props=b"\x01\x00" + b"\x02\x00\x00\x00\x3c" + b"\x03\x00\x03app",
        ),
    )
    conv.send(103.1, True, publish("", b"data1", version=5, alias=3, qos=1, packet_id=9))
    conv.send(103.2, True, publish("other/topic", b"x", version=5))
    # the broker's own aliases in the other direction are separate
    conv.send(103.3, False, publish("sub/topic", b"to-client", version=5, alias=3))
    conv.send(103.4, False, publish("", b"to-client-2", version=5, alias=3))
    conv.send(103.5, True, publish("", b"bad", version=5, alias=4))  # alias never defined
    path = tmp_path / "v5.pcap"
    write_pcap(path, conv.frames)
    got, reader = topics_and_payloads(path)
    assert got == [("spBv1.0/G/NBIRTH/N", b"birth"), ("spBv1.0/G/NBIRTH/N", b"data1"), ("other/topic", b"x")]
    assert reader.problems.count == 1 and "alias 4" in reader.problems.kept[0].message
    assert reader.problems.kept[0].where == f"packet {len(conv.frames)}"
    first = next(iter(open_capture(path)))
    assert (
        first.extra is not None
        and first.extra["mqtt"] == 5
        and first.extra["user_properties"] == [["k", "v"]]
    )
    got_from, _ = topics_and_payloads(path, direction="from-broker")
    assert got_from == [("sub/topic", b"to-client"), ("sub/topic", b"to-client-2")]
    got_all, _ = topics_and_payloads(path, direction="all")
    assert len(got_all) == 5


def test_truncated_last_packet_by_snaplen_and_by_end_of_file(tmp_path: Path) -> None:
    conv = conversation()
    for i in range(5):
        conv.send(104.0 + i, True, publish(f"t/{i}", b"v" * 300))
    path = tmp_path / "snap.pcap"
    frames = list(conv.frames)
    frames[-1] = (frames[-1][0], frames[-1][1][:200])  # cut by a snap length: caplen < len
    write_pcap(path, frames)
    got, reader = topics_and_payloads(path)
    assert [t for t, _ in got] == ["t/0", "t/1", "t/2", "t/3"]
    assert reader.problems.count == 1 and "ends inside an MQTT packet" in reader.problems.kept[0].message

    whole = tmp_path / "whole.pcap"
    write_pcap(whole, conv.frames)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole.read_bytes()[:-150])  # the file ends in the middle of the last record
    got, reader = topics_and_payloads(cut)
    assert [t for t, _ in got] == ["t/0", "t/1", "t/2", "t/3"]
    assert reader.problems.count >= 1


def test_garbage_is_reported_with_packet_numbers_and_the_rest_imported(tmp_path: Path) -> None:
    conv = conversation()
    conv.send(105.0, True, publish("t/before", b"1"))
    rng = random.Random(7)
    # an Ethernet frame that claims IPv4 but carries garbage
    conv.add(105.1, b"\x04" * 6 + b"\x02" * 6 + b"\x08\x00" + bytes([0x41]) + rng.randbytes(10))
    garbage_at = len(conv.frames) + 1
    conv.send(105.2, True, b"\x00\x00" + rng.randbytes(40))  # not MQTT inside the stream
    conv.send(105.3, True, publish("t/after", b"2"))
    # a second, healthy connection at the same time
    other = TcpConversation(Side("10.9.9.9", 40000, 1), Side("10.1.1.2", 1883, 5))
    other.handshake(105.0)
    other.send(105.05, True, connect())
    other.send(105.4, True, publish("t/other", b"3"))
    path = tmp_path / "garbage.pcap"
    write_pcap(path, sorted(conv.frames + other.frames, key=lambda f: f[0]))
    path.write_bytes(path.read_bytes() + b"\x13\x37garbage-tail")
    got, reader = topics_and_payloads(path)
    assert ("t/before", b"1") in got and ("t/after", b"2") in got and ("t/other", b"3") in got
    wheres = [p.where for p in reader.problems.kept]
    messages = " | ".join(str(p) for p in reader.problems.kept)
    assert "undecodable frame" in messages, messages
    assert "not MQTT data" in messages, messages
    assert "cut off or damaged" in messages, messages
    assert all(w.startswith("packet ") for w in wheres)
    assert any(int(w.split()[1]) >= garbage_at for w in wheres)


def test_not_a_capture_is_a_capture_error(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(b"hello world, not a pcap")
    with pytest.raises(CaptureError, match="not a pcap"):
        list(open_capture(path))


def test_capture_started_mid_stream_resynchronises(tmp_path: Path) -> None:
    stream = b"".join(publish(f"t/{i}", b"z" * 50) for i in range(4))
    # neither handshake nor CONNECT captured; the stream starts in the middle of a packet
    mid = TcpConversation(Side("10.1.1.1", 50123, 0), Side("10.1.1.2", 1883, 0))
    frames = [(106.0, mid.frame(mid.client, mid.server, stream[30:], 0x18, seq=30))]
    path = tmp_path / "mid.pcap"
    write_pcap(path, frames)
    got, _ = topics_and_payloads(path)
    assert [t for t, _ in got] == ["t/1", "t/2", "t/3"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=12),
    cut_seed=st.integers(0, 2**32),
    version=st.sampled_from([4, 5]),
)
def test_any_segmentation_shuffle_and_duplication_yields_every_publish(
    tmp_path: Path, sizes: list[int], cut_seed: int, version: int
) -> None:
    rng = random.Random(cut_seed)
    conv = conversation(version=version)
    expected = [(f"g/{i}/{n}", rng.randbytes(n)) for i, n in enumerate(sizes)]
    stream = b"".join(publish(t, p, version=version, qos=rng.choice([0, 1])) for t, p in expected)
    base = conv.client.seq
    points = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 15))))
    bounds = list(zip([0, *points], [*points, len(stream)], strict=True))
    segments = [conv.segment(0, True, stream[a:b], seq=(base + a) & 0xFFFFFFFF) for a, b in bounds]
    extra = [rng.choice(segments) for _ in range(rng.randint(0, 4))]  # retransmissions
    rng.shuffle(order := segments + extra)
    for k, frame in enumerate(order):
        conv.add(200.0 + k / 100, frame)
    path = tmp_path / f"fuzz{cut_seed}.pcap"
    write_pcap(path, conv.frames)
    got, reader = topics_and_payloads(path)
    assert got == expected
    assert reader.problems.count == 0


async def _wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
@pytest.mark.parametrize("protocol", [4, 5])
async def test_real_tcpdump_capture_of_the_local_broker(
    tmp_path: Path, mqtt_broker: MqttBroker, uns_prefix: str, protocol: int
) -> None:
    import paho.mqtt.client as mqtt

    path = tmp_path / "real.pcap"
    proc = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-U", "-n", "-s", "0", "-w", str(path), f"tcp port {mqtt_broker.port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 15)
        assert b"listening on" in line, line
        version = mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311
        received: list[tuple[str, bytes]] = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=version)
        sub.on_message = lambda _c, _u, m: received.append((m.topic, m.payload))
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=version)
        for client in (sub, pub):
            client.connect(mqtt_broker.host, mqtt_broker.port)
            client.loop_start()
        sub.subscribe(f"{uns_prefix}/#", qos=1)
        await asyncio.sleep(0.3)  # let the SUBACK through; any loss shows as a failure below
        sent = [(f"{uns_prefix}/m/{i}", bytes([i % 256]) * (i * 97 % 3000)) for i in range(60)]
        for i, (topic, payload) in enumerate(sent):
            pub.publish(topic, payload, qos=i % 2).wait_for_publish(10)
        await _wait_for(lambda: len(received) >= len(sent))
        for client in (sub, pub):
            client.loop_stop()
            client.disconnect()
        await asyncio.sleep(0.3)  # tcpdump -U writes each packet as it comes; give the last ones a moment
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 15)
    to_broker = [r for r in open_capture(path) if r.topic.startswith(uns_prefix)]
    from_broker = [r for r in open_capture(path, direction="from-broker") if r.topic.startswith(uns_prefix)]
    assert [(r.topic, r.payload) for r in to_broker] == sent
    assert [(r.topic, r.payload) for r in from_broker] == sent
    assert all(a.t <= b.t for a, b in zip(to_broker, from_broker, strict=True))
    if protocol == 5:
        assert all(r.extra and r.extra.get("mqtt") == 5 for r in to_broker)


@pytest.mark.parametrize("linktype", ["sll", "sll2", "raw", "null"])
def test_other_link_layers(tmp_path: Path, linktype: str) -> None:
    import struct

    import dpkt

    conv = conversation(port=8883)
    conv.send(107.0, True, publish("t/link", b"ok", qos=1))
    frames = []
    for t, frame in conv.frames:
        ip = bytes(dpkt.ethernet.Ethernet(frame).data)
        if linktype == "sll":
            frames.append((t, struct.pack(">HHH8sH", 0, 1, 6, b"\x02" * 8, 0x0800) + ip))
        elif linktype == "sll2":
            frames.append((t, struct.pack(">HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"\x02" * 8) + ip))
        elif linktype == "raw":
            frames.append((t, ip))
        else:
            frames.append((t, struct.pack("<I", 2) + ip))
    dlt = {"sll": 113, "sll2": 276, "raw": 101, "null": 0}[linktype]
    path = tmp_path / f"{linktype}.pcap"
    with open(path, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=dlt)
        for t, frame in frames:
            writer.writepkt(frame, ts=t)
    got, reader = topics_and_payloads(path)
    assert got == [("t/link", b"ok")]
    assert reader.problems.count == 0
