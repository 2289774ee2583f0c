"""Import MQTT PUBLISH packets from packet captures (pcap / pcapng, as tcpdump or Wireshark write them).

What it copes with:

- link layers: Ethernet (with VLAN tags), BSD loopback/null, raw IP, Linux cooked (SLL and SLL2);
  IPv4 and IPv6; TCP on any port (MQTT is recognised by its packets, not by the port).
- TCP reassembly per direction: retransmitted and overlapping segments are trimmed to the bytes not yet
  seen, out-of-order segments wait until the hole before them is filled. A hole that is never filled
  (a lost segment, more than :data:`MAX_PENDING_BYTES` waiting) is skipped and the stream resynchronised
  on the next plausible MQTT packet; the loss is reported.
- MQTT 3.1, 3.1.1 and 5 (the version comes from the connection's CONNECT; without one,
  ``default_version``). MQTT 5 PUBLISH properties are parsed; topic aliases are resolved per direction.
- A packet cut off by the snap length or by the end of the file: every complete PUBLISH before it is kept;
  the incomplete one is reported.

Each PUBLISH becomes a :class:`~uns_bridge.capture.jsonl.CaptureRecord` whose ``t`` is the capture time of
the packet that completed it, with extra keys ``src``, ``dst`` (``"ip:port"``) and ``packet`` (1-based
frame number), plus ``mqtt`` (5) and ``user_properties`` for MQTT 5 messages that carry them.

``direction`` picks which copies of a message to keep: ``"to-broker"`` (default: what publishers sent,
each message once), ``"from-broker"`` (what subscribers received) or ``"all"``. The broker side of a
connection is the one that received the CONNECT; when no CONNECT was captured, the side on port 1883 or
8883; when neither is known the message is kept.
"""

from __future__ import annotations

import gzip
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dpkt

from uns_bridge.capture.jsonl import CaptureError, CaptureRecord, ProblemLog

Direction = Literal["to-broker", "from-broker", "all"]

#: bytes of out-of-order data one direction may hold before the hole in front of them is given up
MAX_PENDING_BYTES = 4 * 1024 * 1024
#: largest MQTT packet accepted while resynchronising (a guess on garbage must not wait forever)
MAX_RESYNC_PACKET = 1024 * 1024
MQTT_PORTS = (1883, 8883)

_PCAP_MAGICS = {b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1"}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"

Endpoint = tuple[str, int]


@dataclass
class _Connection:
    """What is known of one TCP connection (both directions)."""

    version: int | None = None
    client: Endpoint | None = None


@dataclass
class _Flow:
    """One direction of one TCP connection: reassembly state and MQTT parsing state."""

    src: Endpoint
    dst: Endpoint
    conn: _Connection
    next_seq: int | None = None
    buffer: bytearray = field(default_factory=bytearray)
    #: absolute seq -> data, waiting for the hole before it
    pending: dict[int, bytes] = field(default_factory=dict)
    pending_bytes: int = 0
    #: the buffer starts at an MQTT packet boundary we are sure of (False: hunting for one)
    synced: bool = False
    aliases: dict[int, str] = field(default_factory=dict)
    #: packet number and capture time of the last data added (for what the end of the capture completes)
    last_packet: int = 0
    last_ts: float = 0.0

    def name(self) -> str:
        return f"{_ep(self.src)} -> {_ep(self.dst)}"


def _ep(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class PcapReader:
    """Streams the MQTT PUBLISH messages of a pcap or pcapng file as capture records."""

    def __init__(
        self,
        path: Path | str,
        *,
        direction: Direction = "to-broker",
        default_version: int = 4,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CaptureError(f"{self.path}: no such file")
        if direction not in ("to-broker", "from-broker", "all"):
            raise CaptureError(f"direction must be to-broker, from-broker or all, not {direction!r}")
        self.direction = direction
        self.default_version = default_version
        self.problems = ProblemLog()
        #: frames read, frames that were TCP, PUBLISH packets seen (before the direction filter)
        self.packets = 0
        self.tcp_packets = 0
        self.publishes = 0
        self._flows: dict[tuple[Endpoint, Endpoint], _Flow] = {}
        self._conns: dict[tuple[Endpoint, Endpoint], _Connection] = {}
        self._fh: Any = None

    # ----------------------------------------------------------------------------------------- files
    def _open(self) -> tuple[Any, int]:
        raw: Any = (
            gzip.open(self.path, "rb") if self.path.suffix.lower() == ".gz" else open(self.path, "rb")  # noqa: SIM115
        )
        self._fh = raw
        magic = raw.read(4)
        raw.seek(0)
        try:
            if magic == _PCAPNG_MAGIC:
                reader: Any = dpkt.pcapng.Reader(raw)
            elif magic in _PCAP_MAGICS:
                reader = dpkt.pcap.Reader(raw)
            else:
                raise CaptureError(
                    f"{self.path}: not a pcap or pcapng file (starts with {magic.hex() or 'nothing'})"
                )
        except (ValueError, dpkt.UnpackError, struct.error) as exc:
            raise CaptureError(f"{self.path}: unreadable packet capture header ({exc})") from None
        return reader, int(reader.datalink())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __iter__(self) -> Iterator[CaptureRecord]:
        reader, linktype = self._open()
        frames = iter(reader)
        try:
            while True:
                try:
                    ts, frame = next(frames)
                except StopIteration:
                    break
                except (dpkt.UnpackError, struct.error, ValueError) as exc:
                    self.problems.add(
                        f"packet {self.packets + 1}", f"capture file cut off or damaged ({exc})"
                    )
                    break
                self.packets += 1
                yield from self._frame(float(ts), bytes(frame), linktype, self.packets)
            yield from self._finish()
        finally:
            self.close()

    # ---------------------------------------------------------------------------------------- frames
    def _frame(self, ts: float, frame: bytes, linktype: int, number: int) -> Iterator[CaptureRecord]:
        try:
            ip = _network_layer(frame, linktype)
        except (dpkt.UnpackError, struct.error, ValueError, IndexError) as exc:
            self.problems.add(f"packet {number}", f"undecodable frame ({type(exc).__name__}: {exc})")
            return
        if ip is None:
            return
        if isinstance(ip, dpkt.ip.IP):
            if ip.offset != 0 or ip.mf:
                return  # IP fragments: not reassembled (never seen for MQTT in practice)
            src_ip, dst_ip = (
                socket.inet_ntop(socket.AF_INET, ip.src),
                socket.inet_ntop(socket.AF_INET, ip.dst),
            )
        else:
            src_ip, dst_ip = (
                socket.inet_ntop(socket.AF_INET6, ip.src),
                socket.inet_ntop(socket.AF_INET6, ip.dst),
            )
        tcp = ip.data
        if not isinstance(tcp, dpkt.tcp.TCP):
            if (ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt) == dpkt.ip.IP_PROTO_TCP:
                self.problems.add(f"packet {number}", "TCP segment too short for its header (cut off?)")
            return
        self.tcp_packets += 1
        src, dst = (src_ip, int(tcp.sport)), (dst_ip, int(tcp.dport))
        flow = self._flow(src, dst)
        yield from self._segment(flow, tcp, bytes(tcp.data), ts, number)

    def _flow(self, src: Endpoint, dst: Endpoint) -> _Flow:
        flow = self._flows.get((src, dst))
        if flow is None:
            key = (src, dst) if src <= dst else (dst, src)
            conn = self._conns.setdefault(key, _Connection())
            flow = self._flows[(src, dst)] = _Flow(src, dst, conn)
        return flow

    # ------------------------------------------------------------------------------------ reassembly
    def _segment(self, flow: _Flow, tcp: Any, data: bytes, ts: float, number: int) -> Iterator[CaptureRecord]:
        seq = int(tcp.seq)
        if tcp.flags & dpkt.tcp.TH_SYN:
            # a new connection in this direction (or a SYN retransmission): start afresh
            if flow.next_seq != (seq + 1) & 0xFFFFFFFF:
                if flow.buffer:
                    self._report_leftover(flow)
                flow.buffer.clear()
                flow.pending.clear()
                flow.pending_bytes = 0
                flow.aliases.clear()
                if tcp.flags & dpkt.tcp.TH_ACK == 0:
                    flow.conn.version = None
                    flow.conn.client = None
            flow.next_seq = (seq + 1) & 0xFFFFFFFF
            flow.synced = True
            seq = (seq + 1) & 0xFFFFFFFF  # data on a SYN (TCP Fast Open) follows the SYN's own seq
        if not data:
            return
        if flow.next_seq is None:
            # the capture started in the middle of this stream: hunt for a packet boundary
            flow.next_seq = seq
            flow.synced = False
        flow.last_packet = number
        flow.last_ts = ts
        offset = _signed32(seq - flow.next_seq)
        if offset + len(data) <= 0:
            return  # a retransmission of bytes already used
        if offset > 0:
            if seq not in flow.pending or len(flow.pending[seq]) < len(data):
                flow.pending_bytes += len(data) - len(flow.pending.get(seq, b""))
                flow.pending[seq] = data
            if flow.pending_bytes > MAX_PENDING_BYTES:
                self._skip_hole(flow, number)
                yield from self._parse(flow, ts, number)
            return
        self._append(flow, data[-offset:] if offset < 0 else data)
        self._drain_pending(flow)
        yield from self._parse(flow, ts, number)

    def _append(self, flow: _Flow, data: bytes) -> None:
        flow.buffer += data
        assert flow.next_seq is not None
        flow.next_seq = (flow.next_seq + len(data)) & 0xFFFFFFFF

    def _drain_pending(self, flow: _Flow) -> None:
        progress = True
        while progress and flow.pending:
            progress = False
            for seq in list(flow.pending):
                assert flow.next_seq is not None
                data = flow.pending[seq]
                offset = _signed32(seq - flow.next_seq)
                if offset > 0:
                    continue
                del flow.pending[seq]
                flow.pending_bytes -= len(data)
                if offset + len(data) > 0:
                    self._append(flow, data[-offset:] if offset < 0 else data)
                    progress = True

    def _skip_hole(self, flow: _Flow, number: int) -> None:
        """Give up on missing bytes: drop the partial packet, continue at the first waiting segment."""
        assert flow.next_seq is not None
        start = flow.next_seq
        first = min(flow.pending, key=lambda s: _signed32(s - start))
        missing = _signed32(first - start)
        self.problems.add(
            f"packet {number}",
            f"stream {flow.name()}: {missing} bytes never captured (lost segment); "
            f"{len(flow.buffer)} buffered bytes dropped, resynchronising",
        )
        flow.buffer.clear()
        flow.synced = False
        flow.next_seq = first
        self._drain_pending(flow)

    def _finish(self) -> Iterator[CaptureRecord]:
        """End of the capture: use what waits behind holes, then report incomplete packets."""
        for flow in self._flows.values():
            if flow.pending:
                self._skip_hole(flow, flow.last_packet)
                yield from self._parse(flow, flow.last_ts, flow.last_packet)
            if flow.buffer:
                self._report_leftover(flow)
                flow.buffer.clear()

    def _report_leftover(self, flow: _Flow) -> None:
        self.problems.add(
            f"packet {flow.last_packet}",
            f"stream {flow.name()}: capture ends inside an MQTT packet ({len(flow.buffer)} bytes of it captured)",
        )

    # ------------------------------------------------------------------------------------------ MQTT
    def _parse(self, flow: _Flow, ts: float, number: int) -> Iterator[CaptureRecord]:
        buf = flow.buffer
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            header = _fixed_header(buf, pos)
            if header is None:
                break  # remaining length not complete yet
            plausible = header[0] >= 0 and (flow.synced or _plausible(buf, header, flow.conn.version))
            if plausible is None:
                break  # cannot judge yet: wait for more bytes
            if not plausible:
                if flow.synced:
                    self.problems.add(
                        f"packet {number}", f"stream {flow.name()}: not MQTT data here; resynchronising"
                    )
                    flow.synced = False
                pos += 1
                continue
            kind, length, body_at = header
            end = body_at + length
            if end > size:
                break
            body = bytes(buf[body_at:end])
            record = self._packet(flow, kind, buf[pos] & 0x0F, body, ts, number)
            flow.synced = True
            pos = end
            if record is not None:
                yield record
        del buf[:pos]

    def _packet(
        self, flow: _Flow, kind: int, flags: int, body: bytes, ts: float, number: int
    ) -> CaptureRecord | None:
        if kind == 1:
            self._connect(flow, body)
            return None
        if kind != 3:
            return None
        self.publishes += 1
        try:
            return self._publish(flow, flags, body, ts, number)
        except (IndexError, struct.error, ValueError) as exc:
            self.problems.add(f"packet {number}", f"stream {flow.name()}: malformed PUBLISH ({exc})")
            return None

    def _connect(self, flow: _Flow, body: bytes) -> None:
        if len(body) < 7:
            return
        name_len = struct.unpack_from(">H", body, 0)[0]
        if body[2 : 2 + name_len] not in (b"MQTT", b"MQIsdp") or len(body) < 3 + name_len:
            return
        flow.conn.version = body[2 + name_len]
        flow.conn.client = flow.src
        flow.aliases.clear()
        peer = self._flows.get((flow.dst, flow.src))
        if peer is not None:
            peer.aliases.clear()

    def _publish(self, flow: _Flow, flags: int, body: bytes, ts: float, number: int) -> CaptureRecord | None:
        qos = (flags >> 1) & 3
        retain = bool(flags & 1)
        (topic_len,) = struct.unpack_from(">H", body, 0)
        if 2 + topic_len > len(body):
            raise ValueError("topic runs past the packet")
        topic = body[2 : 2 + topic_len].decode("utf-8")
        pos = 2 + topic_len
        if qos:
            pos += 2
        version = flow.conn.version or self.default_version
        extra: dict[str, Any] = {"src": _ep(flow.src), "dst": _ep(flow.dst), "packet": number}
        if version >= 5:
            props_len, pos = _varint(body, pos)
            end = pos + props_len
            if end > len(body):
                raise ValueError("properties run past the packet")
            alias, user = _publish_properties(body, pos, end)
            pos = end
            extra["mqtt"] = 5
            if user:
                extra["user_properties"] = user
            if alias is not None:
                if alias == 0:
                    raise ValueError("topic alias 0 is not allowed")
                if topic:
                    flow.aliases[alias] = topic
                elif alias in flow.aliases:
                    topic = flow.aliases[alias]
                else:
                    raise ValueError(f"topic alias {alias} used before it was defined")
        if pos > len(body):
            raise ValueError("packet too short for its header")
        if not topic:
            raise ValueError("empty topic")
        if not self._wanted(flow):
            return None
        return CaptureRecord(ts, topic, body[pos:], qos, retain, extra)

    def _wanted(self, flow: _Flow) -> bool:
        if self.direction == "all":
            return True
        client = flow.conn.client
        if client is not None:
            to_broker = flow.src == client
        elif flow.dst[1] in MQTT_PORTS and flow.src[1] not in MQTT_PORTS:
            to_broker = True
        elif flow.src[1] in MQTT_PORTS and flow.dst[1] not in MQTT_PORTS:
            to_broker = False
        else:
            return True
        return to_broker == (self.direction == "to-broker")


# ---------------------------------------------------------------------------------------- helpers
#: fixed-header flag nibble each MQTT packet type must carry (PUBLISH: any but QoS 3)
_FIXED_FLAGS = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0}


_NOT_MQTT = (-1, 0, 0)


def _fixed_header(buf: bytearray, pos: int) -> tuple[int, int, int] | None:
    """``(type, remaining length, body offset)``; ``None`` if incomplete; type -1 if not MQTT."""
    first = buf[pos]
    kind, flags = first >> 4, first & 0x0F
    if kind == 3:
        if (flags >> 1) & 3 == 3:
            return _NOT_MQTT
    elif kind == 0 or _FIXED_FLAGS.get(kind) != flags:
        return _NOT_MQTT
    length = 0
    shift = 0
    at = pos + 1
    for _ in range(4):
        if at >= len(buf):
            return None
        byte = buf[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return kind, length, at
        shift += 7
    return _NOT_MQTT


def _plausible(buf: bytearray, header: tuple[int, int, int], version: int | None) -> bool | None:
    """While hunting for a packet boundary: does a real MQTT packet start here? ``None``: can't tell yet.

    Stricter than the fixed header alone, so that garbage rarely passes for a packet (and never makes
    the hunt wait for a huge made-up packet): a PUBLISH must start with a sane UTF-8 topic, other packet
    types must be short.
    """
    kind, length, body_at = header
    if kind == 3:
        if length > MAX_RESYNC_PACKET or length < 2:
            return False
        if body_at + 2 > len(buf):
            return None
        topic_len = (buf[body_at] << 8) | buf[body_at + 1]
        if topic_len + 2 > length or (topic_len == 0 and version is not None and version < 5):
            return False
        end = body_at + 2 + topic_len
        if end > len(buf):
            return None if topic_len <= 1024 else False
        try:
            topic = bytes(buf[body_at + 2 : end]).decode("utf-8")
        except UnicodeDecodeError:
            return False
        return not any(c in topic for c in "+#\x00") and topic.isprintable()
    if body_at + length > len(buf):
        return False  # only a PUBLISH with a sane topic is worth waiting for
    v5 = version is None or version >= 5
    if kind in (12, 13):
        ok = length == 0
    elif kind == 14:
        ok = length == 0 or (v5 and length < 64)
    elif kind in (2, 4, 5, 6, 7, 11):
        ok = length == 2 or (v5 and 2 < length <= 64)
    elif kind == 1:
        ok = bytes(buf[body_at : body_at + 6]) in (b"\x00\x04MQTT", b"\x00\x06MQIsdp")
    else:
        ok = 3 <= length <= 1024
    if not ok:
        return False
    # and the bytes after it, if any, must start a packet too
    after = body_at + length
    return after >= len(buf) or (_fixed_header(buf, after) or (0, 0, 0))[0] >= 0


def _varint(body: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for _ in range(4):
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("variable byte integer longer than 4 bytes")


_PROP_BYTE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
_PROP_U16 = {0x13, 0x21, 0x22, 0x23}
_PROP_U32 = {0x02, 0x11, 0x18, 0x27}
_PROP_STR = {0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F}
_PROP_BIN = {0x09, 0x16}


def _publish_properties(body: bytes, pos: int, end: int) -> tuple[int | None, list[list[str]]]:
    """The topic alias and the user properties of an MQTT 5 property block; other properties skipped."""
    alias: int | None = None
    user: list[list[str]] = []
    while pos < end:
        ident, pos = _varint(body, pos)
        if ident in _PROP_BYTE:
            pos += 1
        elif ident in _PROP_U16:
            if ident == 0x23:
                alias = struct.unpack_from(">H", body, pos)[0]
            pos += 2
        elif ident in _PROP_U32:
            pos += 4
        elif ident == 0x0B:
            _, pos = _varint(body, pos)
        elif ident in _PROP_STR or ident in _PROP_BIN:
            (n,) = struct.unpack_from(">H", body, pos)
            pos += 2 + n
        elif ident == 0x26:
            (n,) = struct.unpack_from(">H", body, pos)
            key = body[pos + 2 : pos + 2 + n].decode("utf-8")
            pos += 2 + n
            (m,) = struct.unpack_from(">H", body, pos)
            value = body[pos + 2 : pos + 2 + m].decode("utf-8")
            pos += 2 + m
            user.append([key, value])
        else:
            raise ValueError(f"unknown MQTT 5 property 0x{ident:02x}")
        if pos > end:
            raise ValueError("property runs past the property block")
    return alias, user


_ETH_IP4, _ETH_IP6 = 0x0800, 0x86DD


def _network_layer(frame: bytes, linktype: int) -> Any:
    """The IPv4/IPv6 packet of a frame, ``None`` for other traffic; dpkt errors for garbage."""
    if linktype == dpkt.pcap.DLT_EN10MB:
        eth = dpkt.ethernet.Ethernet(frame)
        ip = eth.data
        if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6):
            return ip
        if eth.type in (_ETH_IP4, _ETH_IP6):
            raise dpkt.UnpackError("Ethernet frame says IP but carries no decodable IP header")
        return None
    if linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        if len(frame) < 4:
            raise dpkt.NeedData("loopback header cut off")
        return _ip_by_version(frame[4:])
    if linktype in (dpkt.pcap.DLT_RAW, 101, 12, 14, 228, 229):  # LINKTYPE_RAW, DLT_RAW variants, IPV4, IPV6
        return _ip_by_version(frame)
    if linktype == dpkt.pcap.DLT_LINUX_SLL:
        if len(frame) < 16:
            raise dpkt.NeedData("Linux cooked header cut off")
        proto = struct.unpack_from(">H", frame, 14)[0]
        return _ip_by_type(proto, frame[16:])
    if linktype == 276:  # LINUX_SLL2
        if len(frame) < 20:
            raise dpkt.NeedData("Linux cooked v2 header cut off")
        proto = struct.unpack_from(">H", frame, 0)[0]
        return _ip_by_type(proto, frame[20:])
    raise ValueError(f"link type {linktype} is not supported")


def _ip_by_type(proto: int, data: bytes) -> Any:
    if proto == _ETH_IP4:
        return dpkt.ip.IP(data)
    if proto == _ETH_IP6:
        return dpkt.ip6.IP6(data)
    return None


def _ip_by_version(data: bytes) -> Any:
    if not data:
        raise dpkt.NeedData("empty packet")
    version = data[0] >> 4
    if version == 4:
        return dpkt.ip.IP(data)
    if version == 6:
        return dpkt.ip6.IP6(data)
    raise dpkt.UnpackError(f"IP version {version}")
