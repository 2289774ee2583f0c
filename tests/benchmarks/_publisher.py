"""The benchmark publisher process: ``python -m tests.benchmarks._publisher '<fleet json>'``.

It plays a fleet of Sparkplug edge nodes over ONE MQTT connection (the host keys its state by group,
node and device, never by connection, so this is legal and keeps 10,000 nodes cheap), with payloads
pre-encoded by :mod:`tests.benchmarks._wire`. Commands arrive as JSON lines on stdin, each answered
by one JSON line on stdout:

* ``{"op": "births", "first": i, "last": j, "probe": bool}``: NBIRTH + DBIRTHs of nodes i..j-1 (and of
  the latency probe node); the harness sends them in chunks it lets the bridge catalogue first
* ``{"op": "run", "msg_rate": R, "duration": S, "probe_hz": H}``: DDATA round-robin over the devices,
  paced at R messages/s for S seconds, plus H probe messages/s (1 metric each, on the probe device)
* ``{"op": "blast", "count": N}``: N DDATA messages as fast as the socket takes them
* ``{"op": "quit"}``

Every DDATA metric carries the wall-clock time of its publication (ms), so a row's ``time`` and a
UNS message's ``timestamp`` tell the latency.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from tests.benchmarks._wire import (
    RawMqtt,
    SharedCounter,
    Template,
    data_metrics,
    make_template,
    payload_encoder,
    publish_header,
    publish_packet,
    ts_bytes,
)
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.values import Metric, Payload

PROBE_NODE, PROBE_DEVICE, PROBE_METRIC = "BenchProbe", "probe", "Probe/latency"
CHUNK_BYTES = 256 << 10


@dataclass(frozen=True)
class Fleet:
    """What the publisher plays: ``nodes`` x ``devices`` x ``metrics`` (metrics per DDATA = ``metrics``)."""

    group: str
    nodes: int = 1
    devices: int = 1
    metrics: int = 100
    host: str = "127.0.0.1"
    port: int = 1883
    probe: bool = True

    @property
    def catalog(self) -> int:
        return self.nodes * self.devices * self.metrics

    def node_id(self, n: int) -> str:
        return f"N{n:05d}"

    def device_id(self, d: int) -> str:
        return f"D{d:03d}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def metric_name(i: int) -> str:
    return f"Bench/m{i:03d}"


class Player:
    """The fleet's state: per-node seq, per-device headers and templates."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.encode, self.encoder = payload_encoder()
        self.mqtt = RawMqtt(fleet.host, fleet.port, f"bench-pub-{fleet.group}")
        m = fleet.metrics
        # aliases are unique per node: device d owns d*m+1 .. d*m+m; devices with the same index share templates
        self.templates: list[tuple[Template, Template]] = []
        for d in range(fleet.devices):
            aliases = [d * m + i + 1 for i in range(m)]
            self.templates.append(
                (
                    make_template(self.encode, data_metrics(aliases, 0)),
                    make_template(self.encode, data_metrics(aliases, 1)),
                )
            )
        self.topics = [
            f"spBv1.0/{fleet.group}/DDATA/{fleet.node_id(n)}/{fleet.device_id(d)}"
            for n in range(fleet.nodes)
            for d in range(fleet.devices)
        ]
        # the seq field is 2 bytes below 128 and 3 above: two headers per device (sizes differ by alias width)
        self.headers = []
        for index, topic in enumerate(self.topics):
            size = self.templates[index % fleet.devices][0].size
            self.headers.append((publish_header(topic, size), publish_header(topic, size + 1)))
        self.seq = [0] * fleet.nodes
        self.cursor = 0
        self.variant = 0
        self.pair_floor_ms = 0  # the earliest timestamp the current pair of rounds may carry (see _data)
        probe = [Metric(None, 1, None, DataType.Double, 0.5)]
        self.probe_templates = (
            make_template(self.encode, probe),
            make_template(self.encode, [probe[0]._replace(value=1.5)]),
        )
        probe_topic = f"spBv1.0/{fleet.group}/DDATA/{PROBE_NODE}/{PROBE_DEVICE}"
        psize = self.probe_templates[0].size
        self.probe_headers = (publish_header(probe_topic, psize), publish_header(probe_topic, psize + 1))
        self.probe_seq = 0

    # -------------------------------------------------------------- births

    def births(self, first: int = 0, last: int | None = None, probe: bool = True) -> dict[str, Any]:
        """NBIRTH + DBIRTHs of nodes ``first`` .. ``last - 1`` (and of the probe node with ``probe``)."""
        fleet, now = self.fleet, int(time.time() * 1000)
        sent = metrics = 0
        out: list[bytes] = []
        stop = fleet.nodes if last is None else min(last, fleet.nodes)
        nodes = [(n, fleet.node_id(n), fleet.devices, fleet.metrics) for n in range(first, stop)]
        if fleet.probe and probe:
            nodes.append((-1, PROBE_NODE, 1, 1))
        for index, node, devices, per_device in nodes:
            node_metrics = (
                Metric("bdSeq", None, now, DataType.Int64, 0),
                Metric("Node Control/Rebirth", None, now, DataType.Boolean, False),
            )
            out.append(self._birth("NBIRTH", node, None, node_metrics, 0, now))
            for d in range(devices):
                name = (lambda i: PROBE_METRIC) if node == PROBE_NODE else metric_name
                born = tuple(
                    Metric(name(i), d * per_device + i + 1, now, DataType.Double, 0.0)
                    for i in range(per_device)
                )
                out.append(
                    self._birth(
                        "DBIRTH",
                        node,
                        PROBE_DEVICE if node == PROBE_NODE else fleet.device_id(d),
                        born,
                        d + 1,
                        now,
                    )
                )
                metrics += per_device
            seq_after = (devices + 1) & 0xFF
            if index < 0:
                self.probe_seq = seq_after
            else:
                self.seq[index] = seq_after
            sent += devices + 1
            if sum(map(len, out)) > CHUNK_BYTES:
                self.mqtt.send(b"".join(out))
                out.clear()
        self.mqtt.send(b"".join(out))
        return {"msgs": sent, "birth_metrics": metrics, "encoder": self.encoder}

    def _birth(
        self, kind: str, node: str, device: str | None, metrics: tuple[Metric, ...], seq: int, now: int
    ) -> bytes:
        topic = f"spBv1.0/{self.fleet.group}/{kind}/{node}" + (f"/{device}" if device else "")
        return publish_packet(topic, self.encode(Payload(timestamp=now, metrics=metrics, seq=seq & 0xFF)))

    # -------------------------------------------------------------- data

    def _data(self, count: int, now_ms: int) -> bytes:
        """``count`` DDATA packets, round-robin over the devices, joined.

        Values alternate between two variants per round, so a device's samples repeat every second round:
        each pair of rounds is stamped later than the previous pair (``max(now, previous + 1 ms)``), else
        a fast run would send the same (metric, timestamp, value) twice, which the store keeps once (by
        design: replays are idempotent) and the bench would count as lost."""
        parts: list[bytes] = []
        append = parts.append
        devices, cursor, seqs, total = self.fleet.devices, self.cursor, self.seq, len(self.topics)
        stamp = max(now_ms, self.pair_floor_ms)
        ts = ts_bytes(stamp)
        for _ in range(count):
            node, d = divmod(cursor, devices)
            seq = seqs[node] & 0xFF
            seqs[node] = seq + 1
            append(self.headers[cursor][seq > 127])
            append(self.templates[d][self.variant].render(ts, seq))
            cursor += 1
            if cursor == total:
                cursor = 0
                self.variant ^= 1
                if self.variant == 0:  # a pair of rounds done: the next one starts a millisecond later
                    self.pair_floor_ms = stamp + 1
                    stamp = max(now_ms, self.pair_floor_ms)
                    ts = ts_bytes(stamp)
        self.cursor = cursor
        return b"".join(parts)

    def _probe(self, ts: bytes) -> bytes:
        seq = self.probe_seq & 0xFF
        self.probe_seq = seq + 1
        return self.probe_headers[seq > 127] + self.probe_templates[seq & 1].render(ts, seq)

    def run(self, msg_rate: float, duration: float, probe_hz: float) -> dict[str, Any]:
        total = max(1, int(msg_rate * duration))
        batch = max(1, min(2000, CHUNK_BYTES // (self.templates[0][0].size + 80)))
        probes = 0
        sent = 0
        probe_every = 1.0 / probe_hz if probe_hz > 0 and self.fleet.probe else None
        wall0 = time.time()
        t0 = time.perf_counter()
        next_probe = t0
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - t0) * msg_rate) + 1) - sent
            now_ms = int(time.time() * 1000)
            ts = ts_bytes(now_ms)
            chunk = b""
            if probe_every is not None and now >= next_probe:
                chunk = self._probe(ts)
                probes += 1
                next_probe += probe_every
            if due > 0:
                n = min(due, batch)
                chunk += self._data(n, now_ms)
                sent += n
            if chunk:
                self.mqtt.send(chunk)
            elif due <= 0:
                wait = (sent + 1) / msg_rate - (time.perf_counter() - t0)
                if probe_every is not None:
                    wait = min(wait, next_probe - time.perf_counter())
                if wait > 0:
                    time.sleep(min(wait, 0.005))
        last_probe_ms = None
        if probe_every is not None:  # a last probe right after the data: its row ends the step
            last_probe_ms = int(time.time() * 1000)
            self.mqtt.send(self._probe(ts_bytes(last_probe_ms)))
            probes += 1
        wall1 = time.time()
        return {
            "msgs": sent,
            "metrics": sent * self.fleet.metrics,
            "probe_msgs": probes,
            "last_probe_ms": last_probe_ms,
            "t0": wall0,
            "t1": wall1,
            "achieved_msg_rate": sent / max(1e-9, wall1 - wall0),
        }

    def blast(self, count: int, counter: str | None = None, window: int = 500) -> dict[str, Any]:
        """``count`` messages as fast as possible; with ``counter`` (a :class:`SharedCounter` path the
        receiver advances) never more than ``window`` messages ahead of the receiver (no broker drops)."""
        batch = max(1, min(2000, CHUNK_BYTES // (self.templates[0][0].size + 80)))
        shared = SharedCounter(counter) if counter else None
        if shared is not None:
            batch = max(1, min(batch, window // 8))
        sent = 0
        wall0 = time.time()
        while sent < count:
            if shared is not None:
                while sent - shared.get() > window - batch:
                    time.sleep(0.0002)
            n = min(batch, count - sent)
            self.mqtt.send(self._data(n, int(time.time() * 1000)))
            sent += n
        wall1 = time.time()
        if shared is not None:
            shared.close()
        return {
            "msgs": sent,
            "metrics": sent * self.fleet.metrics,
            "probe_msgs": 0,
            "t0": wall0,
            "t1": wall1,
            "achieved_msg_rate": sent / max(1e-9, wall1 - wall0),
        }


def main(argv: list[str]) -> int:
    fleet = Fleet(**json.loads(argv[1]))
    player = Player(fleet)
    print(
        json.dumps({"ready": True, "encoder": player.encoder, "payload_bytes": player.templates[0][0].size}),
        flush=True,
    )
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            break
        if op == "births":
            reply = player.births(**command)
        elif op == "run":
            reply = player.run(**command)
        elif op == "blast":
            reply = player.blast(**command)
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), flush=True)
    player.mqtt.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
