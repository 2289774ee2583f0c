"""Test edge nodes and observers for the live-bridge tests.

:class:`TestEdgeNode` is a Sparkplug edge node on its own MQTT connection (NDEATH as its Will) whose
payloads are encoded either by our codec (``"ours"``) or by the independent ``pysparkplug``
implementation (``"pysparkplug"``). :class:`Observer` records what appears on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import orjson

from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.values import DataSet

Encoder = str  # "ours" | "pysparkplug"


@dataclass(frozen=True)
class Spec:
    """One metric of a test node: name, alias, datatype, value, and its JSON form on the UNS."""

    name: str
    alias: int
    datatype: int
    value: Any
    json: Any
    unit: str | None = None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def scalar_specs(base_alias: int) -> list[Spec]:
    """A metric of every scalar datatype both encoders can carry, with values that trip bad decoders."""
    t = 1_700_000_000_500  # exact through a float seconds conversion (pysparkplug)
    rows = [
        ("Types/Int8", DataType.Int8, -128, -128),
        ("Types/Int16", DataType.Int16, -32768, -32768),
        ("Types/Int32", DataType.Int32, -12, -12),
        ("Types/Int64", DataType.Int64, -(2**63), -(2**63)),
        ("Types/UInt8", DataType.UInt8, 255, 255),
        ("Types/UInt16", DataType.UInt16, 65535, 65535),
        ("Types/UInt32", DataType.UInt32, 4294967295, 4294967295),
        ("Types/UInt64", DataType.UInt64, 2**64 - 1, 2**64 - 1),
        ("Types/Float", DataType.Float, 1.5, 1.5),
        ("Types/Double", DataType.Double, math.nan, "NaN"),
        ("Types/Boolean", DataType.Boolean, True, True),
        ("Types/String", DataType.String, "héllo/+#", "héllo/+#"),
        ("Types/DateTime", DataType.DateTime, t, t),
        ("Types/Text", DataType.Text, "line1\nline2", "line1\nline2"),
        (
            "Types/UUID",
            DataType.UUID,
            "0b6f7a1e-9c43-4e55-9a3e-0c1d2e3f4a5b",
            "0b6f7a1e-9c43-4e55-9a3e-0c1d2e3f4a5b",
        ),
        ("Types/Bytes", DataType.Bytes, b"\x00\x01\xff", "AAH/"),
        ("Types/File", DataType.File, b"%PDF", "JVBERg=="),
    ]
    return [Spec(name, base_alias + i, int(dt), value, js) for i, (name, dt, value, js) in enumerate(rows)]


def structured_specs(base_alias: int) -> list[Spec]:
    """Arrays and a DataSet: only our encoder carries these (pysparkplug 0.3 has no arrays)."""
    dataset = DataSet(("a", "b"), (int(DataType.Int32), int(DataType.String)), ((1, "x"), (-2, "y")))
    rows = [
        ("Arrays/Int8", DataType.Int8Array, (-1, 0, 127), [-1, 0, 127]),
        ("Arrays/Int16", DataType.Int16Array, (-300, 300), [-300, 300]),
        ("Arrays/Int32", DataType.Int32Array, (-(2**31), 2**31 - 1), [-(2**31), 2**31 - 1]),
        ("Arrays/Int64", DataType.Int64Array, (-(2**63), 2**63 - 1), [-(2**63), 2**63 - 1]),
        ("Arrays/UInt8", DataType.UInt8Array, (0, 255), [0, 255]),
        ("Arrays/UInt16", DataType.UInt16Array, (0, 65535), [0, 65535]),
        ("Arrays/UInt32", DataType.UInt32Array, (0, 2**32 - 1), [0, 2**32 - 1]),
        ("Arrays/UInt64", DataType.UInt64Array, (0, 2**64 - 1), [0, 2**64 - 1]),
        ("Arrays/Float", DataType.FloatArray, (0.5, -2.0), [0.5, -2.0]),
        ("Arrays/Double", DataType.DoubleArray, (math.inf, -0.25), ["Infinity", -0.25]),
        ("Arrays/Boolean", DataType.BooleanArray, (True, False, True), [True, False, True]),
        ("Arrays/String", DataType.StringArray, ("a", "b c"), ["a", "b c"]),
        ("Arrays/DateTime", DataType.DateTimeArray, (1, 1_700_000_000_000), [1, 1_700_000_000_000]),
        (
            "Table",
            DataType.DataSet,
            dataset,
            {"columns": ["a", "b"], "types": ["Int32", "String"], "rows": [[1, "x"], [-2, "y"]]},
        ),
    ]
    return [Spec(name, base_alias + i, int(dt), value, js) for i, (name, dt, value, js) in enumerate(rows)]


# ---------------------------------------------------------------------------------------------- encoders


def _ours_metric(spec: Spec, timestamp: int, *, birth: bool, value: Any) -> Any:
    from uns_bridge.sparkplug.values import Metric, PropertySet, PropertyValue

    properties = None
    if birth and spec.unit is not None:
        properties = PropertySet((("engUnit", PropertyValue(int(DataType.String), spec.unit)),))
    return Metric(
        name=spec.name if birth else None,
        alias=spec.alias,
        timestamp=timestamp,
        datatype=spec.datatype,
        value=value,
        properties=properties,
    )


def encode(
    encoder: Encoder,
    kind: str,
    *,
    timestamp: int,
    seq: int | None,
    specs: Sequence[Spec] = (),
    values: Sequence[tuple[Spec, Any]] = (),
    extra: Sequence[tuple[str, int, Any]] = (),
) -> bytes:
    """A payload for ``kind`` ("birth", "data", "ddeath", "ndeath").

    ``specs``: birth metrics (name, alias, datatype, value); ``values``: data metrics (alias only);
    ``extra``: (name, datatype, value) metrics without alias (bdSeq, Node Control/Rebirth).
    """
    if encoder == "ours":
        return _encode_ours(kind, timestamp=timestamp, seq=seq, specs=specs, values=values, extra=extra)
    return _encode_pysparkplug(kind, timestamp=timestamp, seq=seq, specs=specs, values=values, extra=extra)


def _encode_ours(
    kind: str,
    *,
    timestamp: int,
    seq: int | None,
    specs: Sequence[Spec],
    values: Sequence[tuple[Spec, Any]],
    extra: Sequence[tuple[str, int, Any]],
) -> bytes:
    from uns_bridge.sparkplug.payload import encode_payload
    from uns_bridge.sparkplug.values import Metric, Payload

    metrics = [Metric(name, None, timestamp, dt, value) for name, dt, value in extra]
    metrics += [_ours_metric(s, timestamp, birth=True, value=s.value) for s in specs]
    metrics += [_ours_metric(s, timestamp, birth=False, value=v) for s, v in values]
    # DATA without datatypes, as edge nodes usually send it: the birth's datatype decides
    return encode_payload(Payload(timestamp, tuple(metrics), seq), omit_alias_datatypes=True)


def _encode_pysparkplug(
    kind: str,
    *,
    timestamp: int,
    seq: int | None,
    specs: Sequence[Spec],
    values: Sequence[tuple[Spec, Any]],
    extra: Sequence[tuple[str, int, Any]],
) -> bytes:
    import datetime

    import pysparkplug as psp

    def value_for(datatype: int, value: Any) -> Any:
        if datatype == DataType.DateTime and isinstance(value, int):
            return datetime.datetime.fromtimestamp(value / 1000, tz=datetime.UTC).replace(tzinfo=None)
        return value

    metrics = [psp.Metric(timestamp, name, psp.DataType(dt), value_for(dt, v)) for name, dt, v in extra]
    metrics += [
        psp.Metric(timestamp, s.name, psp.DataType(s.datatype), value_for(s.datatype, s.value), alias=s.alias)
        for s in specs
    ]
    metrics += [
        psp.Metric(timestamp, None, psp.DataType(s.datatype), value_for(s.datatype, v), alias=s.alias)
        for s, v in values
    ]
    if kind == "birth":
        return bytes(psp.NBirth(timestamp, seq or 0, tuple(metrics)).encode(include_dtypes=True))
    if kind == "data":
        return bytes(psp.NData(timestamp, seq or 0, tuple(metrics)).encode(include_dtypes=False))
    if kind == "ddeath":
        return bytes(psp.DDeath(timestamp, seq or 0).encode())
    if kind == "ndeath":
        return bytes(psp.NDeath(timestamp, metrics[0]).encode())
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------------- node


class TestEdgeNode:
    """A Sparkplug edge node with its own connection, seq counter and bdSeq; NDEATH as its Will."""

    __test__ = False

    def __init__(
        self, host: str, port: int, group: str, node: str, encoder: Encoder, bd_seq: int = 0
    ) -> None:
        self.host, self.port = host, port
        self.group, self.node, self.encoder = group, node, encoder
        self.bd_seq = bd_seq
        self.seq = 0
        self.client: aiomqtt.Client | None = None

    def topic(self, kind: str, device: str | None = None) -> str:
        return f"spBv1.0/{self.group}/{kind}/{self.node}" + (f"/{device}" if device else "")

    def _death_payload(self) -> bytes:
        return encode(
            self.encoder,
            "ndeath",
            timestamp=now_ms(),
            seq=None,
            extra=[("bdSeq", int(DataType.Int64), self.bd_seq)],
        )

    async def connect(self) -> None:
        will = aiomqtt.Will(self.topic("NDEATH"), self._death_payload(), qos=1, retain=False)
        self.client = aiomqtt.Client(
            self.host, self.port, identifier=f"edge-{uuid.uuid4().hex[:8]}", will=will
        )
        await self.client.__aenter__()

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    def next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) % 256
        return seq

    async def _publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        assert self.client is not None
        await self.client.publish(topic, payload, qos=qos)

    async def nbirth(self, specs: Sequence[Spec]) -> None:
        self.seq = 0
        extra = [
            ("bdSeq", int(DataType.Int64), self.bd_seq),
            ("Node Control/Rebirth", int(DataType.Boolean), False),
        ]
        payload = encode(
            self.encoder, "birth", timestamp=now_ms(), seq=self.next_seq(), specs=specs, extra=extra
        )
        await self._publish(self.topic("NBIRTH"), payload)

    async def dbirth(self, device: str, specs: Sequence[Spec]) -> None:
        payload = encode(self.encoder, "birth", timestamp=now_ms(), seq=self.next_seq(), specs=specs)
        await self._publish(self.topic("DBIRTH", device), payload)

    async def data(
        self, values: Sequence[tuple[Spec, Any]], device: str | None = None, timestamp: int | None = None
    ) -> None:
        kind = "DDATA" if device else "NDATA"
        payload = encode(
            self.encoder, "data", timestamp=timestamp or now_ms(), seq=self.next_seq(), values=values
        )
        await self._publish(self.topic(kind, device), payload)

    def skip(self) -> None:
        """Lose one message: the next one has a seq gap."""
        self.next_seq()

    async def ddeath(self, device: str) -> None:
        payload = encode(self.encoder, "ddeath", timestamp=now_ms(), seq=self.next_seq())
        await self._publish(self.topic("DDEATH", device), payload)

    async def ndeath(self) -> None:
        """An explicit NDEATH (as a clean edge shutdown sends), then disconnect."""
        await self._publish(self.topic("NDEATH"), self._death_payload(), qos=1)
        await self.close()


# ---------------------------------------------------------------------------------------------- observer


class Observer:
    """Subscribes to topic filters and records the last payload per topic (and every message)."""

    def __init__(self, host: str, port: int, filters: Sequence[str]) -> None:
        self.host, self.port, self.filters = host, port, list(filters)
        self.last: dict[str, bytes] = {}
        self.log: list[tuple[str, bytes, bool]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Observer:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client(self.host, self.port, identifier=f"obs-{uuid.uuid4().hex[:8]}") as client:
            for topic_filter in self.filters:
                await client.subscribe(topic_filter, qos=1)
            self._ready.set()
            async for message in client.messages:
                payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
                self.last[str(message.topic)] = payload
                self.log.append((str(message.topic), payload, bool(message.retain)))
                self._changed.set()

    def json(self, topic: str) -> Any:
        return orjson.loads(self.last[topic])

    def field(self, topic: str, name: str) -> Any:
        """``name`` of the last JSON payload on ``topic``; ``None`` when nothing (or no JSON) arrived yet."""
        payload = self.last.get(topic)
        if not payload:
            return None
        return orjson.loads(payload).get(name)

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
        """Wait until ``condition()`` holds (checked after every message), or fail saying ``what``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what or condition}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    """``(status, body)`` of one HTTP/1.1 request to 127.0.0.1:port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def clear_retained(host: str, port: int, filters: Sequence[str]) -> None:
    """Remove the retained messages under ``filters`` from a (shared) broker."""
    topics: set[str] = set()
    async with aiomqtt.Client(host, port, identifier=f"clean-{uuid.uuid4().hex[:8]}") as client:
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for message in client.messages:
                    if message.retain:
                        topics.add(str(message.topic))
        for topic in topics:
            await client.publish(topic, b"", qos=1, retain=True)
