"""Helpers for fault tests on the live bridge: a load of counted edge nodes, a broker recorder that
survives broker restarts, and sent/stored/duplicated/lost counting from ``uns.sample``."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]
import orjson
import paho.mqtt.client as paho

from tests.fault_edge import EdgeNode


class MarkedEdge(EdgeNode):
    """An :class:`EdgeNode` that remembers how many samples it had sent at each of its births."""

    def __init__(self, host: str, port: int, group: str, node: str) -> None:
        self.birth_marks: list[int] = []
        super().__init__(host, port, group, node)

    def _birth(self) -> None:
        with self._lock:
            self.birth_marks.append(len(self.sent))
        super()._birth()

    def after_last_birth(self) -> list[int]:
        """The ids sent after the newest birth."""
        with self._lock:
            return self.sent[self.birth_marks[-1] :] if self.birth_marks else list(self.sent)


class Load:
    """``nodes`` counted edge nodes sending one sample each every ``interval_s`` from a thread.

    Ids are globally unique and increasing: node ``k`` sends ``k, k + n, k + 2n, ...``.
    """

    def __init__(self, host: str, port: int, group: str, nodes: int, interval_s: float) -> None:
        self.edges = [MarkedEdge(host, port, group, f"E{k}") for k in range(nodes)]
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)
        self.refused = 0  # sends skipped because the node was not connected

    def start(self) -> None:
        for edge in self.edges:
            edge.start()
        self._thread.start()

    def _run(self) -> None:
        n = len(self.edges)
        i = 0
        while not self._stop.is_set():
            for k, edge in enumerate(self.edges):
                if not edge.send(i * n + k):
                    self.refused += 1
            i += 1
            time.sleep(self.interval_s)

    def stop_sending(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def close(self) -> None:
        self.stop_sending()
        for edge in self.edges:
            edge.stop()

    @property
    def sent(self) -> list[int]:
        return [i for edge in self.edges for i in edge.sent]

    @property
    def acked(self) -> list[int]:
        return [i for edge in self.edges for i in edge.acked]


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Recorder:
    """A paho client with a persistent session (so a broker with persistence queues for it while it
    reconnects after a restart) recording every message on ``filters`` with its arrival time."""

    def __init__(self, host: str, port: int, filters: Sequence[str]) -> None:
        self.filters = list(filters)
        self.log: list[Seen] = []
        self._lock = threading.Lock()
        self.connects = 0
        self._subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"rec-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.host, self.port = host, port

    def _on_connect(self, client: paho.Client, *_args: object) -> None:
        self.connects += 1
        client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, _c: object, _u: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.log.append(
                Seen(message.topic, bytes(message.payload), bool(message.retain), time.monotonic())
            )

    def start(self) -> None:
        self.client.connect(self.host, self.port, keepalive=5)
        self.client.loop_start()
        if not self._subscribed.wait(30):
            raise TimeoutError("recorder did not subscribe")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def raw(self, topic: str, since: float = 0.0) -> list[bytes]:
        """The non-empty payloads that arrived on ``topic`` at or after ``since``."""
        with self._lock:
            return [s.payload for s in self.log if s.topic == topic and s.at >= since and s.payload]

    def messages(self, topic: str, since: float = 0.0) -> list[dict[str, object]]:
        """The JSON payloads that arrived on ``topic`` at or after ``since``."""
        return [orjson.loads(p) for p in self.raw(topic, since)]


async def until(
    condition: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] | None = None
) -> float:
    """Wait for ``condition``; returns the seconds it took. ``detail()`` is added to a timeout's message."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        if loop.time() - start > timeout:
            extra = f" ({detail()})" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        await asyncio.sleep(0.02)
    return loop.time() - start


async def stored_rows(dsn: str, group: str) -> list[tuple[int, int, int]]:
    """``(value, time in µs, metric id)`` of every stored ``counter`` sample of ``group``."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT s.metric_id, s.v_int, (extract(epoch FROM s.time) * 1000000)::bigint AS t FROM uns.sample s"
            " JOIN uns.metric m ON m.id = s.metric_id JOIN uns.edge_node n ON n.id = m.node_id"
            " WHERE n.group_id = $1 AND m.name = 'counter'",
            group,
        )
    finally:
        await conn.close()
    return [(r["v_int"], r["t"], r["metric_id"]) for r in rows]


async def until_stored(dsn: str, group: str, ids: Sequence[int], timeout: float) -> float:
    """Wait until every id in ``ids`` is a stored ``counter`` value of ``group``; returns the seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    wanted = set(ids)
    while True:
        missing = wanted - {v for v, _t, _m in await stored_rows(dsn, group)}
        if not missing:
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"{len(missing)} of {len(wanted)} samples not stored after {timeout:.0f} s")
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class Tally:
    sent: int
    stored: int
    duplicated: int
    lost: int

    def line(self, label: str) -> str:
        return f"{label}: sent={self.sent} stored={self.stored} duplicated={self.duplicated} lost={self.lost}"


def tally(sent: Sequence[int], rows: Sequence[tuple[int, int, int]]) -> Tally:
    """Count ``sent`` ids in the stored rows. A birth repeats the node's last value at a new time, so a
    duplicate is the same value at the same time stored twice for the same metric."""
    expected = set(sent)
    values = {v for v, _t, _m in rows}
    counted = collections.Counter(rows)
    twice = [row for row, n in counted.items() if n > 1]
    if twice:
        print(f"  duplicated (value, time µs, metric): {twice[:10]}")
    return Tally(
        sent=len(expected),
        stored=len(values & expected),
        duplicated=len(rows) - len(set(rows)),
        lost=len(expected - values),
    )
