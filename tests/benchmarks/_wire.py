"""Fast Sparkplug traffic for benchmarks: payloads encoded once, patched per message; a minimal MQTT client.

A DDATA payload is encoded once with a sentinel timestamp and a sentinel ``seq``. Protobuf writes the
fields in number order (timestamp 1, metrics 2, seq 3), so the payload ends with the ``seq`` field and
every timestamp is the same 6-byte varint (any ms time between 1971 and 2109). A message is then
``ts.join(segments) + SEQ[seq]``: one C-level join, no encoder in the loop.

The payload encoder is ``uns_bridge.sparkplug.payload.encode_payload``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.values import Metric, Payload

SENTINEL_MS = 1_777_777_777_777
SENTINEL_SEQ = 200


def varint(value: int) -> bytes:
    """Protobuf / MQTT-style base-128 varint (little-endian groups, high bit = more)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


#: the encoded ``seq`` field (tag 3, varint) for every seq value
SEQ_FIELD: tuple[bytes, ...] = tuple(b"\x18" + varint(s) for s in range(256))


def ts_bytes(ms: int) -> bytes:
    """The varint of a ms timestamp; always 6 bytes for times between 1971 and 2109."""
    encoded = varint(ms)
    if len(encoded) != 6:
        raise ValueError(f"timestamp {ms} does not encode to 6 bytes")
    return encoded


def payload_encoder() -> tuple[Callable[[Payload], bytes], str]:
    """(encode, which): the project's own encoder, named for the benchmark report."""
    from uns_bridge.sparkplug.payload import encode_payload

    encoder: Callable[[Payload], bytes] = encode_payload
    return encoder, "uns_bridge"


def parse_module() -> Any:
    """The generated protobuf module with ``Payload``, for minimal parsers."""
    from uns_bridge.sparkplug import sparkplug_b_pb2

    return sparkplug_b_pb2


@dataclass(frozen=True)
class Template:
    """A payload split at its timestamp varints; ``render`` patches timestamp and seq."""

    segments: tuple[bytes, ...]

    def render(self, ts: bytes, seq: int) -> bytes:
        return ts.join(self.segments) + SEQ_FIELD[seq]

    @property
    def size(self) -> int:
        return sum(map(len, self.segments)) + 6 * (len(self.segments) - 1) + 2


def make_template(encode: Callable[[Payload], bytes], metrics: Sequence[Metric]) -> Template:
    """Encode ``metrics`` (timestamps set to the sentinel) once and split the bytes for patching."""
    stamped = tuple(m._replace(timestamp=SENTINEL_MS) for m in metrics)
    raw = encode(Payload(timestamp=SENTINEL_MS, metrics=stamped, seq=SENTINEL_SEQ))
    tail = SEQ_FIELD[SENTINEL_SEQ]
    if not raw.endswith(tail):
        raise ValueError("encoded payload does not end with its seq field")
    segments = tuple(raw[: -len(tail)].split(ts_bytes(SENTINEL_MS)))
    if len(segments) != len(metrics) + 2:
        raise ValueError(f"found {len(segments) - 1} timestamp slots, expected {len(metrics) + 1}")
    return Template(segments)


def data_metrics(aliases: Sequence[int], variant: int) -> list[Metric]:
    """DDATA metrics: alias only, Double values (variant shifts the values)."""
    return [Metric(None, a, None, DataType.Double, float(a) + 0.25 + variant) for a in aliases]


# ---------------------------------------------------------------- MQTT 3.1.1, just enough to publish


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _remaining(length: int) -> bytes:
    return varint(length)


def publish_header(topic: str, payload_len: int, *, retain: bool = False) -> bytes:
    """Fixed header + topic of a QoS 0 PUBLISH whose payload has ``payload_len`` bytes."""
    topic_field = _utf8(topic)
    return bytes([0x31 if retain else 0x30]) + _remaining(len(topic_field) + payload_len) + topic_field


def publish_packet(topic: str, payload: bytes, *, retain: bool = False) -> bytes:
    return publish_header(topic, len(payload), retain=retain) + payload


class RawMqtt:
    """A blocking MQTT 3.1.1 connection that only publishes at QoS 0 (keepalive off, so no pings)."""

    def __init__(self, host: str, port: int, client_id: str, will: tuple[str, bytes] | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        flags = 0x02  # clean session
        body = _utf8("MQTT") + bytes([4])
        payload = _utf8(client_id)
        if will is not None:
            flags |= 0x04 | (1 << 3)  # will, will QoS 1
            payload += _utf8(will[0]) + struct.pack("!H", len(will[1])) + will[1]
        body += bytes([flags]) + struct.pack("!H", 0) + payload
        self.sock.sendall(bytes([0x10]) + _remaining(len(body)) + body)
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"MQTT CONNACK refused: {connack.hex()}")

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT: no Will
        self.sock.close()


class SharedCounter:
    """A uint64 in a small mmap'd file: a sink process publishes how far it got, the publisher reads it."""

    def __init__(self, path: str) -> None:
        import mmap

        with open(path, "a+b") as f:
            if f.seek(0, 2) < 8:
                f.write(b"\0" * 8)
        self._file = open(path, "r+b")  # noqa: SIM115 - kept open for the mapping's life
        self._map = mmap.mmap(self._file.fileno(), 8)

    def set(self, value: int) -> None:
        struct.pack_into("<Q", self._map, 0, value)

    def get(self) -> int:
        value: int = struct.unpack_from("<Q", self._map, 0)[0]
        return value

    def close(self) -> None:
        self._map.close()
        self._file.close()
