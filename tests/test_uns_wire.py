"""The lean MQTT 3.1.1 publish session (uns_bridge/uns/wire.py): spec byte vectors, real brokers
(Mosquitto, amqtt, private Mosquitto with a password file, TLS, killed), and a hand-written peer
for keepalive and protocol errors."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests import services
from tests.private_servers import PrivateMosquitto, mosquitto_binary
from uns_bridge.config import MqttConfig, UnsConfig
from uns_bridge.mqttlink import BrokerAddress, explain_connect_error
from uns_bridge.uns.publisher import PublishInterrupted, UnsPublisher
from uns_bridge.uns.wire import (
    ConnectRefused,
    PublishSession,
    SessionError,
    connect_packet,
    publish_packet,
    remaining_length,
)

needs_mosquitto = pytest.mark.skipif(mosquitto_binary() is None, reason="no mosquitto binary")


# ------------------------------------------------------------------------------ spec byte vectors
@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_matches_the_spec_table(value: int, encoded: bytes) -> None:
    assert remaining_length(value) == encoded


@pytest.mark.timeout(10)
def test_connect_packet_bytes() -> None:
    # fixed header, remaining length 13; "MQTT", level 4, flags clean session, keepalive 60; client id "c"
    assert connect_packet("c", 60, None, None) == (b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c")
    # flags: user name + password + clean session; payload client id, user name, password
    assert connect_packet("c", 60, "u", "p") == (
        b"\x10\x13\x00\x04MQTT\x04\xc2\x00\x3c\x00\x01c\x00\x01u\x00\x01p"
    )


@pytest.mark.timeout(10)
def test_publish_packet_bytes() -> None:
    # QoS 0, retain: no packet id even when one is given
    assert publish_packet("a/b", b"hi", 0, True, 7) == b"\x31\x07\x00\x03a/bhi"
    # QoS 1, retain: packet id 10 after the topic
    assert publish_packet("a/b", b"hi", 1, True, 10) == b"\x33\x09\x00\x03a/b\x00\x0ahi"
    # QoS 2, no retain
    assert publish_packet("a/b", b"", 2, False, 0x0102) == b"\x34\x07\x00\x03a/b\x01\x02"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "", "a/\x00b"])
def test_invalid_topics_raise(topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        publish_packet(topic, b"x", 1, True, 1)


@pytest.mark.timeout(30)
def test_oversized_payload_raises() -> None:
    # 2 (topic length) + 1 (topic) + payload = 268,435,456: one byte over the limit (bytes(n) is not touched)
    with pytest.raises(ValueError, match="larger than MQTT allows"):
        publish_packet("a", bytes(268_435_453), 0, False, 0)


# ---------------------------------------------------------------------------------------- helpers
def _address(host: str, port: int, tls: bool = False) -> BrokerAddress:
    return BrokerAddress(host, port, tls)


class Seen:
    """Messages one aiomqtt subscriber received: topic -> payloads in arrival order, plus retain flags."""

    def __init__(self) -> None:
        self.by_topic: dict[str, list[bytes]] = defaultdict(list)
        self.retained: dict[str, bool] = {}
        self.count = 0
        self.changed = asyncio.Event()


@asynccontextmanager
async def subscriber(
    host: str, port: int, topic_filter: str, qos: int, ca: Path | None = None
) -> AsyncIterator[Seen]:
    seen = Seen()
    tls = aiomqtt.TLSParameters(ca_certs=str(ca)) if ca is not None else None
    async with aiomqtt.Client(host, port, identifier=services.unique_name("sub"), tls_params=tls) as client:
        await client.subscribe(topic_filter, qos=qos)

        async def read() -> None:
            async for message in client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                topic = str(message.topic)
                seen.by_topic[topic].append(payload)
                seen.retained[topic] = bool(message.retain)
                seen.count += 1
                seen.changed.set()

        reader = asyncio.create_task(read())
        try:
            yield seen
        finally:
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader


async def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, seen: Seen | None = None
) -> None:
    async def poll() -> None:
        while not condition():
            if seen is not None:
                seen.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(seen.changed.wait(), 0.2)
            else:
                await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what}"
            + (f" (received {seen.count})" if seen is not None else "")
        ) from None


def workload(prefix: str, n: int, topics: int = 20) -> list[tuple[str, bytes]]:
    """``n`` messages over ``topics`` topics, each payload unique (topic index and sequence number)."""
    return [(f"{prefix}/t{i % topics}", f"{i % topics}:{i}".encode()) for i in range(n)]


def per_topic(items: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for topic, payload in items:
        out[topic].append(payload)
    return dict(out)


async def clear_retained(host: str, port: int, topics: set[str]) -> None:
    session = await PublishSession.open(_address(host, port), client_id=services.unique_name("clear"))
    try:
        for topic in topics:
            session.publish_nowait(topic, b"", 1, True)
        await asyncio.wait_for(session.wait_unacked(0), 20)
    finally:
        await session.close()


#: a live subscriber's broker queue holds 1,000 QoS 1/2 messages (Mosquitto's max_queued_messages);
#: publishing in batches of this size keeps the subscriber, not the session under test, from dropping
BATCH = 500

Publish = Callable[[list[tuple[str, bytes]], Callable[[int], Awaitable[None]]], Awaitable[None]]


async def check_delivery(host: str, port: int, prefix: str, qos: int, n: int, publish: Publish) -> None:
    """Publish through ``publish`` with a live subscriber; every payload arrives in order per topic,
    and a late subscriber gets the last one per topic with the retain flag."""
    items = workload(prefix, n)
    expected = per_topic(items)
    # the subscribers take QoS 2 deliveries at QoS 1: paho behind aiomqtt stalls after the broker's
    # 20 in-flight QoS 2 deliveries; the publishing side still runs PUBREC -> PUBREL -> PUBCOMP
    sub_qos = min(qos, 1)
    try:
        async with subscriber(host, port, f"{prefix}/#", sub_qos) as live:

            async def caught_up(count: int) -> None:
                await wait_until(
                    lambda: live.count >= count, 15, f"{count} of {n} messages at QoS {qos}", live
                )

            await publish(items, caught_up)
            await caught_up(n)
            await asyncio.sleep(0.2)  # anything extra (a duplicate) would arrive now
            assert dict(live.by_topic) == expected
            assert live.count == n
        async with subscriber(host, port, f"{prefix}/#", sub_qos) as late:
            await wait_until(lambda: late.count >= len(expected), 20, "retained messages", late)
            assert {topic: payloads[-1:] for topic, payloads in late.by_topic.items()} == {
                topic: payloads[-1:] for topic, payloads in expected.items()
            }
            assert all(late.retained.values())
    finally:
        await clear_retained(host, port, set(expected))


def session_publisher(host: str, port: int, qos: int) -> Publish:
    async def publish(items: list[tuple[str, bytes]], caught_up: Callable[[int], Awaitable[None]]) -> None:
        session = await PublishSession.open(_address(host, port), client_id=services.unique_name("pub"))
        try:
            for start in range(0, len(items), BATCH):
                for topic, payload in items[start : start + BATCH]:
                    session.publish_nowait(topic, payload, qos, True)
                await asyncio.wait_for(session.wait_unacked(0), 60)
                assert session.unacked == {}
                await caught_up(min(start + BATCH, len(items)))
            assert session.unacked == {}
            assert session.published == len(items)
            assert not session.lost.is_set()
        finally:
            await session.close()

    return publish


def uns_publisher(url: str, prefix: str, qos: int) -> Publish:
    async def publish(items: list[tuple[str, bytes]], caught_up: Callable[[int], Awaitable[None]]) -> None:
        publisher = UnsPublisher(MqttConfig(url=url), UnsConfig(prefix=prefix, qos=qos), window=200)
        await publisher.start()
        try:
            await asyncio.wait_for(publisher.connected.wait(), 20)
            for start in range(0, len(items), BATCH):
                await asyncio.wait_for(publisher.publish_many(items[start : start + BATCH]), 60)
                await caught_up(min(start + BATCH, len(items)))
            assert publisher.published == len(items)
        finally:
            await publisher.close()

    return publish


# ------------------------------------------------------------------------------------ real brokers
@pytest.mark.timeout(120)
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("through", ["session", "uns publisher"])
async def test_mosquitto_delivers_everything(through: str, qos: int, uns_prefix: str) -> None:
    broker = services.local_mosquitto()
    if broker is None:
        pytest.skip("no local Mosquitto")
    publish = (
        session_publisher(broker.host, broker.port, qos)
        if through == "session"
        else uns_publisher(broker.url, uns_prefix, qos)
    )
    await check_delivery(broker.host, broker.port, uns_prefix, qos, 2000, publish)


@pytest.mark.timeout(120)
async def test_amqtt_session_and_publisher_at_qos_1(
    amqtt_broker: services.MqttBroker, uns_prefix: str
) -> None:
    host, port = amqtt_broker.host, amqtt_broker.port
    await check_delivery(host, port, f"{uns_prefix}/s", 1, 300, session_publisher(host, port, 1))
    await check_delivery(
        host, port, f"{uns_prefix}/p", 1, 300, uns_publisher(amqtt_broker.url, uns_prefix, 1)
    )


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None or mosquitto_binary() is None:
        pytest.skip("no mosquitto / mosquitto_passwd")
    users = tmp_path / "users"
    subprocess.run([passwd, "-b", "-c", str(users), "svc", "right horse"], check=True, capture_output=True)
    users.chmod(0o644)
    with PrivateMosquitto(
        persistence=False, extra_config=f"allow_anonymous false\npassword_file {users}\n"
    ) as b:
        yield b


@pytest.mark.timeout(60)
async def test_password_file_broker(auth_broker: PrivateMosquitto, tmp_path: Path) -> None:
    address = _address(auth_broker.host, auth_broker.port)
    good = await PublishSession.open(address, client_id="auth-ok", username="svc", password="right horse")
    try:
        good.publish_nowait("auth/x", b"1", 1, False)
        await asyncio.wait_for(good.wait_unacked(0), 10)
    finally:
        await good.close()
    config = MqttConfig(url=auth_broker.url, username="svc")
    for username, password in (("svc", "battery staple"), (None, None)):
        with pytest.raises(ConnectRefused) as refused:
            await PublishSession.open(address, client_id="auth-bad", username=username, password=password)
        assert refused.value.rc in (4, 5)
        sentence = explain_connect_error(refused.value, str(address), config)
        assert "rejected the credentials" in sentence or "not authorised" in sentence, sentence

    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple\n")
    publisher = UnsPublisher(
        MqttConfig(url=auth_broker.url, username="svc", password_file=wrong, reconnect_min_s=5),
        UnsConfig(prefix="auth"),
    )
    await publisher.start()
    try:
        await wait_until(lambda: publisher.last_error is not None, 15, "the publisher's last_error")
        error = publisher.last_error or ""
        assert ("rejected the credentials" in error or "not authorised" in error) and "'svc'" in error, error
        assert not publisher.is_connected
    finally:
        await publisher.close()


@needs_mosquitto
@pytest.mark.timeout(60)
async def test_tls(pki: tuple[Path, Path, Path, Path]) -> None:
    ca, cert, key, other_ca = pki
    with PrivateMosquitto(persistence=False, tls=(ca, cert, key)) as broker:
        address = _address(broker.host, broker.port, tls=True)
        session = await PublishSession.open(
            address, client_id="tls-ok", tls=ssl.create_default_context(cafile=str(ca))
        )
        try:
            async with subscriber("127.0.0.1", broker.port, "tls/#", 1, ca) as seen:
                session.publish_nowait("tls/x", b"over tls", 1, False)
                await asyncio.wait_for(session.wait_unacked(0), 10)
                await wait_until(lambda: seen.count >= 1, 10, "the TLS message", seen)
                assert seen.by_topic["tls/x"] == [b"over tls"]
        finally:
            await session.close()
        with pytest.raises(ssl.SSLError) as failed:
            await PublishSession.open(
                address, client_id="tls-bad", tls=ssl.create_default_context(cafile=str(other_ca)), timeout=10
            )
        sentence = explain_connect_error(
            failed.value, str(address), MqttConfig(url=f"mqtts://{address.host}")
        )
        assert "certificate is not trusted" in sentence, sentence


@needs_mosquitto
@pytest.mark.timeout(120)
async def test_broker_killed_with_messages_unacknowledged() -> None:
    with PrivateMosquitto(persistence=False) as broker:
        session = await PublishSession.open(_address(broker.host, broker.port), client_id="loss")
        broker.kill()  # synchronous: the event loop cannot see the acknowledgements (there are none) meanwhile
        for i in range(50):
            session.publish_nowait(f"loss/{i}", b"x", 1, True)
        assert len(session.unacked) == 50
        with pytest.raises(SessionError):
            await asyncio.wait_for(session.wait_unacked(0), 20)
        assert session.lost.is_set() and session.lost_reason is not None
        assert len(session.unacked) == 50
        with pytest.raises(SessionError):
            session.publish_nowait("loss/after", b"x", 1, True)
        await session.close()

        broker.start()
        publisher = UnsPublisher(
            MqttConfig(url=broker.url, reconnect_min_s=0.05, reconnect_max_s=0.3), UnsConfig(prefix="loss")
        )
        await publisher.start()
        try:
            await asyncio.wait_for(publisher.connected.wait(), 20)
            items = [(f"loss/{i}", f"v{i}".encode()) for i in range(50)]
            broker.kill()
            with pytest.raises(PublishInterrupted) as interrupted:
                await asyncio.wait_for(publisher.publish_many(items), 20)
            assert sorted(interrupted.value.unsent) == sorted(items)
            await wait_until(lambda: not publisher.is_connected, 20, "the publisher to notice the loss")

            broker.start()  # same port
            await asyncio.wait_for(publisher.connected.wait(), 30)
            async with subscriber(broker.host, broker.port, "loss/#", 1) as seen:
                await asyncio.wait_for(publisher.publish_many(items), 20)
                await wait_until(lambda: seen.count >= 50, 20, "the messages after the reconnect", seen)
                assert {t: p for t, (p,) in seen.by_topic.items()} == dict(items)
            assert publisher.last_error is None
        finally:
            await publisher.close()


# --------------------------------------------------------------------------- a hand-written peer
async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length = shift = 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, await reader.readexactly(length)


@asynccontextmanager
async def fake_broker(
    after_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
) -> AsyncIterator[tuple[BrokerAddress, list[int]]]:
    """A TCP server that reads CONNECT and hands the connection to ``after_connect``; yields its
    address and the first bytes of every packet the client sent after CONNECT."""
    received: list[int] = []
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            first, _ = await _read_packet(reader)
            assert first == 0x10
            await after_connect(reader, writer)
            while True:
                first, _ = await _read_packet(reader)
                received.append(first)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield _address("127.0.0.1", port), received
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reached the event loop's exception handler during the test (must stay empty)."""
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)


async def _connack(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x20\x02\x00\x00")
    await writer.drain()


@pytest.mark.timeout(30)
async def test_no_pingresp_loses_the_session() -> None:
    async with fake_broker(_connack) as (address, received):
        session = await PublishSession.open(address, client_id="ka", keepalive_s=1)
        try:
            await asyncio.wait_for(session.lost.wait(), 10)
            assert "PINGRESP" in str(session.lost_reason)
            assert 0xC0 in received  # it did send PINGREQ
            with pytest.raises(SessionError):
                session.publish_nowait("x", b"1", 1, False)
        finally:
            await session.close()


@pytest.mark.timeout(30)
async def test_pingresp_keeps_the_session() -> None:
    async def answer_pings(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _connack(reader, writer)
        while True:
            first, _ = await _read_packet(reader)
            if first == 0xC0:
                writer.write(b"\xd0\x00")

    async with fake_broker(answer_pings) as (address, _):
        session = await PublishSession.open(address, client_id="ka-ok", keepalive_s=1)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(session.lost.wait(), 2.5)
        finally:
            await session.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("rc", [4, 5])
async def test_connack_return_code_refuses(rc: int) -> None:
    async def refuse(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes((0x20, 2, 0, rc)))
        await writer.drain()

    async with fake_broker(refuse) as (address, _):
        with pytest.raises(ConnectRefused) as refused:
            await PublishSession.open(address, client_id="rc", timeout=10)
        assert refused.value.rc == rc


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"\x32\x02\x00\x05", "malformed PUBLISH"),  # QoS 1, topic length past the packet end
        (b"\xf0\x00", "unexpected packet type 15"),
        (b"\x20\x02\x00\x00", "unexpected CONNACK"),  # a second CONNACK
        (b"\x40\x03\x00\x01\x00", "acknowledgement of 3 bytes"),
        (b"\x40\xff\xff\xff\xff\x01", "remaining length"),
    ],
)
async def test_protocol_error_loses_the_session(
    garbage: bytes, reason: str, loop_errors: list[dict[str, Any]]
) -> None:
    async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _connack(reader, writer)
        writer.write(garbage)
        await writer.drain()

    async with fake_broker(misbehave) as (address, _):
        session = await PublishSession.open(address, client_id="proto", keepalive_s=0)
        try:
            await asyncio.wait_for(session.lost.wait(), 10)
            assert "protocol error" in str(session.lost_reason) and reason in str(session.lost_reason)
            with pytest.raises(SessionError):
                session.publish_nowait("x", b"1", 1, False)
        finally:
            await session.close()
        await asyncio.sleep(0.1)  # let any callback scheduled by the abort run
    assert loop_errors == []


@pytest.mark.timeout(30)
async def test_unsolicited_publish_is_acknowledged_and_dropped() -> None:
    """A broker delivering to a client that never subscribed (amqtt does) costs nothing: QoS 1 gets
    PUBACK, QoS 2 gets PUBREC and, after PUBREL, PUBCOMP; the session stays up and keeps publishing."""

    async def deliver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _connack(reader, writer)
        # QoS 0 "a" "hi"; QoS 1 "a" id 7 "hi"; QoS 2 "a" id 8 "hi"; then PUBREL id 8
        writer.write(b"\x30\x05\x00\x01ahi\x32\x07\x00\x01a\x00\x07hi\x34\x07\x00\x01a\x00\x08hi")
        writer.write(b"\x62\x02\x00\x08")
        await writer.drain()

    async with fake_broker(deliver) as (address, received):
        session = await PublishSession.open(address, client_id="unsolicited", keepalive_s=0)
        try:
            await wait_until(lambda: len(received) >= 3, 10, "the three acknowledgements")
            assert received[:3] == [0x40, 0x50, 0x70]  # PUBACK 7, PUBREC 8, PUBCOMP 8
            assert session.unexpected_publishes == 3
            session.publish_nowait("x", b"1", 0, False)
            await wait_until(lambda: len(received) >= 4, 10, "our own PUBLISH")
            assert received[3] == 0x30
            assert not session.lost.is_set()
        finally:
            await session.close()


@pytest.mark.timeout(30)
async def test_no_connack_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    async with fake_broker(silent) as (address, _):
        with pytest.raises(TimeoutError, match="CONNACK"):
            await PublishSession.open(address, client_id="silent", timeout=0.5)
