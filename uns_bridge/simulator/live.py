"""Running a simulated fleet against a real broker: one MQTT connection per edge node.

Each node connects with its NDEATH as the MQTT Will (QoS 1, not retained), subscribes to its NCMD and
DCMD topics and answers a rebirth request with NBIRTH + DBIRTHs. A ``death`` fault drops the TCP
connection without DISCONNECT so that the broker itself publishes the Will; ``reconnect`` publishes the
NDEATH first and disconnects cleanly. Either way the node reconnects with the next bdSeq.

With ``primary_host`` set the fleet is STATE-aware: it births only once that host's
``spBv1.0/STATE/<id>`` says ``online: true``, pauses while it says ``false`` and births again (new
connection, next bdSeq) when the host returns.

Messages of one node go out through one queue and one writer task, so the broker sees them in the
order (and with the seq) the node produced them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt

from uns_bridge.capture.live import parse_mqtt_url
from uns_bridge.simulator.fleet import FleetEvent, FleetGenerator
from uns_bridge.simulator.model import EdgeNode, SimMessage

log = logging.getLogger(__name__)


def now_ms() -> int:
    return round(time.time() * 1000)


@dataclass
class FleetStats:
    published: int = 0
    births: int = 0
    rebirths_answered: int = 0
    deaths: int = 0
    reconnects: int = 0
    rounds: int = 0
    injected: dict[str, int] = field(default_factory=dict)


class NodeLink:
    """The MQTT side of one simulated edge node."""

    def __init__(self, url: str, node: EdgeNode, stats: FleetStats, primary_host: str | None) -> None:
        self.address = parse_mqtt_url(url)
        self.node = node
        self.stats = stats
        self.primary_host = primary_host
        self.queue: asyncio.Queue[FleetEvent] = asyncio.Queue()
        self.client: aiomqtt.Client | None = None
        self.reader: asyncio.Task[None] | None = None
        self.host_online = asyncio.Event()
        self.host_offline = asyncio.Event()
        self.connected = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        will = self.node.will(now_ms())
        client = aiomqtt.Client(
            self.address.host,
            self.address.port,
            identifier=f"sim-{self.node.identity.node}-{uuid.uuid4().hex[:6]}",
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain),
            clean_session=True,
            keepalive=30,
            max_queued_outgoing_messages=100_000,
        )
        await client.__aenter__()
        self.client = client
        base = f"spBv1.0/{self.node.identity.group}"
        await client.subscribe(f"{base}/NCMD/{self.node.identity.node}", qos=1)
        await client.subscribe(f"{base}/DCMD/{self.node.identity.node}/+", qos=1)
        if self.primary_host:
            await client.subscribe(f"spBv1.0/STATE/{self.primary_host}", qos=1)
        self.reader = asyncio.create_task(self._read(client))
        self.node.connection_made()
        self.connected.set()

    async def _read(self, client: aiomqtt.Client) -> None:
        from uns_bridge.sparkplug.payload import PayloadError, decode_payload

        try:
            async for message in client.messages:
                topic = str(message.topic)
                data = message.payload if isinstance(message.payload, bytes) else b""
                if topic.startswith("spBv1.0/STATE/"):
                    self._state(data)
                    continue
                try:
                    payload = decode_payload(data)
                except PayloadError as exc:
                    log.warning(
                        "simulator %s: undecodable command on %s: %s", self.node.identity.node, topic, exc
                    )
                    continue
                replies = self.node.command(topic, payload.metrics, now_ms())
                if replies:
                    self.stats.rebirths_answered += 1
                for reply in replies:
                    self.queue.put_nowait(FleetEvent("publish", 0, reply))
        except aiomqtt.MqttError:
            pass  # the connection went away; the writer decides what comes next

    def _state(self, data: bytes) -> None:
        try:
            online = bool(json.loads(data).get("online"))
        except (ValueError, AttributeError):
            online = data == b"ONLINE"
        if online:
            self.host_offline.clear()
            self.host_online.set()
        else:
            self.host_online.clear()
            self.host_offline.set()

    async def _drop(self, clean: bool) -> None:
        client, self.client = self.client, None
        self.connected.clear()
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
            self.reader = None
        if client is None:
            return
        if not clean:
            # close the socket under the client: no DISCONNECT, so the broker publishes the Will
            sock = client._client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            await client.__aexit__(None, None, None)

    async def write(self) -> None:
        """Publish this node's events in order; act on deaths and reconnects."""
        while True:
            event = await self.queue.get()
            if event.kind == "die":
                self.stats.deaths += 1
                await self._drop(clean=False)
                await self.connect()
            elif event.kind == "reconnect":
                self.stats.reconnects += 1
                await self._drop(clean=True)
                await self.connect()
            elif event.message is not None:
                await self._publish(event.message)
            self.queue.task_done()

    async def _publish(self, message: SimMessage) -> None:
        if self.client is None:
            return
        try:
            await self.client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        except aiomqtt.MqttError as exc:
            log.warning("simulator %s: publish failed: %s", self.node.identity.node, exc)
            return
        self.stats.published += 1
        kind = message.topic.split("/")[2]
        if kind in ("NBIRTH", "DBIRTH"):
            self.stats.births += 1

    async def close(self, clean_death: bool = True) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.queue.join(), 10)
            self.writer.cancel()
            await asyncio.gather(self.writer, return_exceptions=True)
        if clean_death and self.client is not None:
            await self._publish(self.node.clean_death(now_ms()))
        await self._drop(clean=True)
        self.node.connection_closed()


async def run_fleet(
    url: str,
    nodes: int = 1,
    devices: int = 2,
    metrics: int = 10,
    rate: float = 1.0,
    duration: float | None = None,
    faults: dict[str, float] | None = None,
    group_prefix: str = "Plant1",
    stop_event: asyncio.Event | None = None,
    *,
    seed: int = 1,
    primary_host: str | None = None,
    data_datatypes: bool = False,
    on_round: Callable[[FleetStats], None] | None = None,
) -> FleetStats:
    """Run a simulated fleet until ``duration`` seconds passed or ``stop_event`` is set.

    ``rate`` is data rounds per second per node: each round every node publishes NDATA (when node
    metrics changed) and one DDATA per device with the metrics that changed.
    """
    stop = stop_event or asyncio.Event()
    fleet = FleetGenerator(
        nodes, devices, metrics, rate, group_prefix, seed, dict(faults or {}), data_datatypes=data_datatypes
    )
    stats = FleetStats(injected=fleet.injected)
    links = [NodeLink(url, node, stats, primary_host) for node in fleet.edge_nodes]
    try:
        for link in links:
            await link.connect()
            link.writer = asyncio.create_task(link.write())
        if primary_host:
            await _wait_any(stop, links[0].host_online)
        for event in fleet.start(now_ms()):
            links[event.node].queue.put_nowait(event)
        started = time.monotonic()
        interval = 1.0 / rate
        next_round = started + interval
        while not stop.is_set():
            if duration is not None and time.monotonic() - started >= duration:
                break
            delay = next_round - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            next_round += interval
            if primary_host and not links[0].host_online.is_set():
                await _wait_any(stop, links[0].host_online)
                if stop.is_set():
                    break
                for link in links:  # the primary host is back: new session, births
                    link.queue.put_nowait(FleetEvent("reconnect", 0))
                    for message in _rebirth(link.node):
                        link.queue.put_nowait(FleetEvent("publish", 0, message))
                continue
            for event in fleet.step(now_ms()):
                links[event.node].queue.put_nowait(event)
            stats.rounds += 1
            if on_round is not None:
                on_round(stats)
    finally:
        for link in links:
            await link.close()
    return stats


def _rebirth(node: EdgeNode) -> list[SimMessage]:
    node.connection_closed()
    node.connection_made()
    return node.births(now_ms())


async def _wait_any(stop: asyncio.Event, other: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(other.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
