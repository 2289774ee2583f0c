"""A lean MQTT 3.1.1 session that only publishes: the UNS publisher's connection.

``session = await PublishSession.open(address, client_id=..., keepalive_s=..., username=...,
password=..., tls=ssl_context)``; ``session.publish_nowait(topic, payload, qos, retain)``;
``await session.wait_unacked(n)``; ``await session.drain()``; ``await session.close()``.

Why the UNS does not use paho (through aiomqtt) like the Sparkplug session does: the UNS republishes
one message per topic per window, so at plant scale it sends as many messages as the bridge receives
metrics. Measured on the 2-core development box, paho costs about 60 µs of CPU per QoS 1 message and
25 µs per QoS 0 message (a Python object, a lock, a log call and a socket write per message; three
to four ``recv`` calls and a properties object per acknowledgement). This session writes every
PUBLISH queued in one event-loop turn with a single transport write and parses acknowledgements in
bulk, for a few µs per message. It implements exactly the client side MQTT 3.1.1 needs for
publishing: CONNECT/CONNACK (clean session, user name and password), PUBLISH at QoS 0, 1 and 2
(PUBACK; PUBREC -> PUBREL -> PUBCOMP), PINGREQ/PINGRESP keepalive and DISCONNECT. It never
subscribes; a PUBLISH the broker sends anyway is acknowledged and dropped. MQTT 5 connections keep using aiomqtt.

Delivery bookkeeping matches what :class:`~uns_bridge.uns.publisher.UnsPublisher` expects:
``unacked`` maps packet ids to the ``(topic, payload)`` of QoS 1/2 messages not yet acknowledged, so
whatever a dropped connection left unacknowledged can be sent again; ``lost`` is set (with
``lost_reason``) when the connection ends for any reason.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl

from uns_bridge.mqttlink import BrokerAddress

log = logging.getLogger(__name__)

_CONNECT, _CONNACK, _PUBLISH, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70
_PINGREQ, _PINGRESP, _DISCONNECT = 0xC0, 0xD0, 0xE0
_MAX_REMAINING = 268_435_455
#: the transport pauses our writes above this many buffered bytes (see :meth:`PublishSession.drain`)
WRITE_HIGH_WATER = 4 * 1024 * 1024

#: CONNACK return codes of MQTT 3.1.1, worded so :func:`uns_bridge.mqttlink.explain_connect_error` reads them
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class SessionError(ConnectionError):
    """The session cannot be used: the connection is lost, was refused, or the broker broke the protocol."""


class ConnectRefused(SessionError):
    """The broker answered CONNECT with a non-zero return code (``rc``)."""

    def __init__(self, rc: int) -> None:
        self.rc = rc
        super().__init__(f"connection refused by the broker: {CONNACK_REASONS.get(rc, f'return code {rc}')}")


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer (1 to 4 bytes, 7 bits each, least significant first)."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError(f"MQTT strings hold at most 65,535 bytes, not {len(data):,}")
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, keepalive_s: int, username: str | None, password: str | None) -> bytes:
    """CONNECT for MQTT 3.1.1 with a clean session."""
    flags = 0x02
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password.encode("utf-8"))
    variable = _string("MQTT") + bytes((4, flags)) + min(max(keepalive_s, 0), 0xFFFF).to_bytes(2, "big")
    body = variable + payload
    return bytes((_CONNECT,)) + remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> bytes:
    """One PUBLISH packet (``mid`` is ignored at QoS 0)."""
    name = topic.encode("utf-8")
    if not name or len(name) > 0xFFFF or "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"not a valid MQTT topic name to publish to: {topic!r}")
    size = 2 + len(name) + len(payload) + (2 if qos else 0)
    if size > _MAX_REMAINING:
        raise ValueError(f"a {len(payload):,}-byte payload is larger than MQTT allows")
    header = bytes((_PUBLISH | (qos << 1) | (1 if retain else 0),)) + remaining_length(size)
    head = header + len(name).to_bytes(2, "big") + name
    if qos:
        return head + mid.to_bytes(2, "big") + payload
    return head + payload


class _Protocol(asyncio.Protocol):
    def __init__(self, session: PublishSession) -> None:
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.session._made(transport)

    def data_received(self, data: bytes) -> None:
        self.session._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session._lost(exc or SessionError("the broker closed the connection"))

    def pause_writing(self) -> None:
        self.session._writable.clear()

    def resume_writing(self) -> None:
        self.session._writable.set()


class PublishSession:
    """One publishing connection; see the module docstring. Build it with :meth:`open`."""

    def __init__(self, keepalive_s: int, max_inflight_qos2: int = 20) -> None:
        self.keepalive_s = keepalive_s
        self.max_inflight_qos2 = max(1, max_inflight_qos2)
        #: packet id -> (topic, payload) of QoS 1/2 messages the broker has not acknowledged yet
        self.unacked: dict[int, tuple[str, bytes]] = {}
        self.lost = asyncio.Event()
        self.lost_reason: BaseException | None = None
        self.published = 0
        #: PUBLISH packets the broker sent anyway (acknowledged and dropped)
        self.unexpected_publishes = 0
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.WriteTransport | None = None
        self._inbox = bytearray()
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._next_mid = 0
        self._acked = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._connack: asyncio.Future[int] = self._loop.create_future()
        self._ping_outstanding = False
        self._keepalive_task: asyncio.Task[None] | None = None
        #: QoS 2 packet ids between PUBLISH and PUBCOMP, and QoS 2 packets queued behind them
        self._qos2_in_flight: set[int] = set()
        self._qos2_waiting: collections.deque[tuple[int, bytes]] = collections.deque()

    # ---------------------------------------------------------------------------------- life cycle
    @classmethod
    async def open(
        cls,
        address: BrokerAddress,
        *,
        client_id: str,
        keepalive_s: int = 30,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        max_inflight_qos2: int = 20,
    ) -> PublishSession:
        """Connect, send CONNECT and wait for CONNACK; raises :class:`ConnectRefused`, ``OSError``
        (refused, unreachable, TLS) or ``TimeoutError``.

        ``max_inflight_qos2`` caps the QoS 2 messages between PUBLISH and PUBCOMP; later ones wait
        in order. MQTT 3.1.1 has no receive maximum to negotiate, and Mosquitto 2.0 silently drops
        an incoming QoS 2 message beyond its ``max_inflight_messages`` (20 by default) while still
        answering PUBREC, so the default matches that.
        """
        session = cls(keepalive_s, max_inflight_qos2)
        loop = session._loop
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: _Protocol(session),
                    address.host,
                    address.port,
                    ssl=tls,
                    server_hostname=address.host if tls is not None else None,
                )
                session._write(connect_packet(client_id, keepalive_s, username, password))
                rc = await session._connack
        except TimeoutError:
            session.abort()
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for the broker's CONNACK") from None
        except BaseException:
            session.abort()
            raise
        if rc != 0:
            session.abort()
            raise ConnectRefused(rc)
        if keepalive_s > 0:
            session._keepalive_task = loop.create_task(session._keepalive(), name="uns-keepalive")
        return session

    async def close(self, timeout: float = 5.0) -> None:
        """DISCONNECT and close (what is queued is written first); never raises."""
        if self._transport is not None and not self.lost.is_set():
            self._write(bytes((_DISCONNECT, 0)))
            self._flush()
            self._transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lost.wait(), timeout)
        self.abort()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        if self._transport is not None:
            self._transport.abort()
        if not self._connack.done():
            self._connack.set_exception(SessionError("the connection closed before CONNACK"))
            self._connack.exception()  # retrieved: open() reports it

    # ------------------------------------------------------------------------------------- publish
    def publish_nowait(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Queue one PUBLISH (written with everything else queued in this event-loop turn).

        Raises :class:`SessionError` when the connection is lost, ``ValueError`` for a topic or
        payload MQTT cannot carry.
        """
        if self.lost.is_set():
            raise SessionError("the UNS connection is lost")
        mid = 0
        if qos:
            mid = self._mid()
            self.unacked[mid] = (topic, payload)
        try:
            packet = publish_packet(topic, payload, qos, retain, mid)
        except ValueError:
            self.unacked.pop(mid, None)
            raise
        if qos == 2:
            self._qos2_waiting.append((mid, packet))
            self._release_qos2()
        else:
            self._write(packet)
        self.published += 1

    async def wait_unacked(self, at_most: int) -> None:
        """Wait until no more than ``at_most`` messages await acknowledgement; :class:`SessionError`
        when the connection is lost meanwhile."""
        self._flush()
        while len(self.unacked) > at_most:
            if self.lost.is_set():
                raise SessionError("the UNS connection was lost with messages unacknowledged")
            self._acked.clear()
            await self._acked.wait()

    async def drain(self) -> None:
        """Wait while the transport holds more than :data:`WRITE_HIGH_WATER` unsent bytes."""
        self._flush()
        while not self._writable.is_set():
            if self.lost.is_set():
                raise SessionError("the UNS connection is lost")
            waiter = asyncio.ensure_future(self._writable.wait())
            lost = asyncio.ensure_future(self.lost.wait())
            await asyncio.wait((waiter, lost), return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            lost.cancel()

    # ------------------------------------------------------------------------------------ internals
    def _mid(self) -> int:
        unacked = self.unacked
        if len(unacked) >= 0xFFFF:
            raise SessionError("65,535 messages unacknowledged: the broker stopped acknowledging")
        mid = self._next_mid
        while True:
            mid = mid + 1 if mid < 0xFFFF else 1
            if mid not in unacked:
                self._next_mid = mid
                return mid

    def _write(self, packet: bytes) -> None:
        self._outbox.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def _lost(self, exc: BaseException) -> None:
        if self.lost_reason is None:
            self.lost_reason = exc
        self.lost.set()
        self._acked.set()
        self._writable.set()
        if not self._connack.done():
            self._connack.set_exception(exc)
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None

    def _protocol_error(self, reason: str) -> None:
        log.error("UNS broker broke the MQTT protocol (%s); closing the connection", reason)
        self._lost(SessionError(f"protocol error: {reason}"))
        if self._transport is not None:
            self._transport.abort()

    def _received(self, data: bytes) -> None:
        inbox = self._inbox
        inbox += data
        size = len(inbox)
        pos = 0
        unacked = self.unacked
        acked = False
        while size - pos >= 2:
            kind = inbox[pos] & 0xF0
            length = inbox[pos + 1]
            start = pos + 2
            if length & 0x80:  # a multi-byte remaining length: only a broken broker sends one to us
                length, start = self._long_length(inbox, pos + 1)
                if length < 0:
                    if length == -2:
                        return self._protocol_error("remaining length longer than 4 bytes")
                    break
            end = start + length
            if end > size:
                break
            if kind in (_PUBACK, _PUBCOMP):
                if length != 2:
                    return self._protocol_error(f"acknowledgement of {length} bytes")
                mid = (inbox[start] << 8) | inbox[start + 1]
                if unacked.pop(mid, None) is not None:
                    acked = True
                if kind == _PUBCOMP and mid in self._qos2_in_flight:
                    self._qos2_in_flight.discard(mid)
                    self._release_qos2()
            elif kind == _PUBREC:
                if length != 2:
                    return self._protocol_error(f"PUBREC of {length} bytes")
                self._write(bytes((_PUBREL | 0x02, 2, inbox[start], inbox[start + 1])))
            elif kind == _CONNACK:
                if length != 2 or self._connack.done():
                    return self._protocol_error("unexpected CONNACK")
                self._connack.set_result(inbox[start + 1])
            elif kind == _PINGRESP:
                self._ping_outstanding = False
            elif kind == _PUBLISH:
                if not self._discard_publish(inbox[pos], inbox, start, end):
                    return self._protocol_error("malformed PUBLISH")
            elif kind == _PUBREL:
                if length != 2:
                    return self._protocol_error(f"PUBREL of {length} bytes")
                self._write(bytes((_PUBCOMP, 2, inbox[start], inbox[start + 1])))
            else:
                return self._protocol_error(f"unexpected packet type {kind >> 4}")
            pos = end
        if pos:
            del inbox[:pos]
        if acked:
            self._acked.set()

    def _discard_publish(self, first: int, inbox: bytearray, start: int, end: int) -> bool:
        """Acknowledge and drop a PUBLISH the broker should not have sent (this session never
        subscribes; amqtt 0.12 has been seen to route other clients' deliveries here). False when
        the packet is malformed."""
        qos = (first >> 1) & 3
        if end - start < 2 or qos == 3:
            return False
        at = start + 2 + ((inbox[start] << 8) | inbox[start + 1])
        if qos and at + 2 > end:
            return False
        self.unexpected_publishes += 1
        if self.unexpected_publishes == 1:
            log.warning(
                "the UNS broker sent a PUBLISH to the publish-only UNS session; acknowledged and dropped"
            )
        if qos:
            self._write(bytes((_PUBACK if qos == 1 else _PUBREC, 2, inbox[at], inbox[at + 1])))
        return True

    def _release_qos2(self) -> None:
        """Send queued QoS 2 packets while the in-flight window has room."""
        waiting = self._qos2_waiting
        while waiting and len(self._qos2_in_flight) < self.max_inflight_qos2:
            mid, packet = waiting.popleft()
            self._qos2_in_flight.add(mid)
            self._write(packet)

    @staticmethod
    def _long_length(buf: bytearray, at: int) -> tuple[int, int]:
        """(remaining length, where the packet body starts); (-1, 0) if incomplete, (-2, 0) if invalid."""
        value = shift = 0
        for i in range(at, min(at + 4, len(buf))):
            byte = buf[i]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, i + 1
            shift += 7
        return (-2, 0) if len(buf) >= at + 4 else (-1, 0)

    async def _keepalive(self) -> None:
        """PINGREQ every half keepalive; no PINGRESP by the next one means the connection is dead."""
        interval = self.keepalive_s / 2
        while not self.lost.is_set():
            await asyncio.sleep(interval)
            if self._ping_outstanding:
                log.warning("UNS broker did not answer PINGREQ within %.1f s; reconnecting", interval)
                self._lost(SessionError("no PINGRESP from the broker within the keepalive"))
                if self._transport is not None:
                    self._transport.abort()
                return
            self._ping_outstanding = True
            self._write(bytes((_PINGREQ, 0)))
