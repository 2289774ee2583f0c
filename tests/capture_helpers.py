"""Builders for the capture tests: MQTT packets by hand, TCP/IP frames and pcap files with dpkt."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import dpkt


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(raw)) + raw


def connect(version: int = 4, client_id: str = "c1") -> bytes:
    body = mqtt_str("MQTT") + bytes([version, 0x02]) + struct.pack(">H", 30)
    if version >= 5:
        body += varint(0)
    body += mqtt_str(client_id)
    return bytes([0x10]) + varint(len(body)) + body


def connack(version: int = 4) -> bytes:
    body = b"\x00\x00" + (varint(0) if version >= 5 else b"")
    return bytes([0x20]) + varint(len(body)) + body


def publish(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    retain: bool = False,
    packet_id: int = 1,
    version: int = 4,
    alias: int | None = None,
    user: list[tuple[str, str]] | None = None,
    extra_props: bytes = b"",
) -> bytes:
    body = mqtt_str(topic)
    if qos:
        body += struct.pack(">H", packet_id)
    if version >= 5:
        props = extra_props
        if alias is not None:
            props += b"\x23" + struct.pack(">H", alias)
        for key, value in user or []:
            props += b"\x26" + mqtt_str(key) + mqtt_str(value)
        body += varint(len(props)) + props
    body += payload
    return bytes([0x30 | (qos << 1) | int(retain)]) + varint(len(body)) + body


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack(">H", packet_id)


def pingreq() -> bytes:
    return b"\xc0\x00"


@dataclass
class Side:
    ip: str
    port: int
    seq: int


@dataclass
class TcpConversation:
    """One TCP connection whose segments are written as Ethernet frames, with control over seq numbers."""

    client: Side
    server: Side
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    ipv6: bool = False

    def frame(self, sender: Side, receiver: Side, data: bytes, flags: int, seq: int | None = None) -> bytes:
        tcp = dpkt.tcp.TCP(
            sport=sender.port,
            dport=receiver.port,
            seq=(sender.seq if seq is None else seq) & 0xFFFFFFFF,
            ack=receiver.seq & 0xFFFFFFFF,
            flags=flags,
            win=65535,
            data=data,
        )
        if self.ipv6:
            ip6 = dpkt.ip6.IP6(
                src=socket.inet_pton(socket.AF_INET6, sender.ip),
                dst=socket.inet_pton(socket.AF_INET6, receiver.ip),
                nxt=dpkt.ip.IP_PROTO_TCP,
                hlim=64,
                data=tcp,
                plen=len(bytes(tcp)),
            )
            return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x86DD, data=ip6))
        ip = dpkt.ip.IP(
            src=socket.inet_aton(sender.ip),
            dst=socket.inet_aton(receiver.ip),
            p=dpkt.ip.IP_PROTO_TCP,
            ttl=64,
            data=tcp,
        )
        ip.len = len(bytes(ip))
        return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))

    def add(self, t: float, frame: bytes) -> None:
        self.frames.append((t, frame))

    def handshake(self, t: float) -> None:
        c, s = self.client, self.server
        self.add(t, self.frame(c, s, b"", dpkt.tcp.TH_SYN))
        c.seq += 1
        self.add(t, self.frame(s, c, b"", dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK))
        s.seq += 1
        self.add(t, self.frame(c, s, b"", dpkt.tcp.TH_ACK))

    def segment(
        self, t: float, from_client: bool, data: bytes, *, advance: bool = True, seq: int | None = None
    ) -> bytes:
        """Send data; ``advance=False`` keeps the sender's seq (for building retransmissions)."""
        sender, receiver = (self.client, self.server) if from_client else (self.server, self.client)
        frame = self.frame(sender, receiver, data, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, seq)
        if advance and seq is None:
            sender.seq += len(data)
        return frame

    def send(self, t: float, from_client: bool, data: bytes) -> None:
        self.add(t, self.segment(t, from_client, data))


def write_pcap(
    path: Path, frames: list[tuple[float, bytes]], *, ng: bool = False, snaplen: int = 65535
) -> None:
    with open(path, "wb") as fh:
        writer: dpkt.pcap.Writer | dpkt.pcapng.Writer = (
            dpkt.pcapng.Writer(fh, snaplen=snaplen) if ng else dpkt.pcap.Writer(fh, snaplen=snaplen)
        )
        for t, frame in frames:
            writer.writepkt(frame, ts=t)
