"""A fleet of edge nodes against the host core, as a hypothesis state machine with a simulated clock.

The fleet does births, data, device births and deaths, node deaths (also stale ones), rebirths, bursts
that wrap the seq, reorders, duplicates and drops; the host's connection comes and goes. Every metric
value is a unique tag whose origin (node, device, metric name) the model remembers, so a value that
resolved to the wrong metric is caught. After every step:

* every sample belongs to a metric of the live catalog (latest MetricsDefined of a live node/device);
* every sample's metric is the one its tag was sent as (no alias resolved across nodes or sessions);
* a death (or connection loss) turns every metric of the affected scope STALE in the same step, and
  nothing of it is sampled again until its rebirth;
* a tag is never stored twice, and in a session without drops or host disconnects every tag delivered
  has been stored (in-order and reordered-then-filled traffic loses no sample);
* rebirth requests of one node are at least ``rebirth_interval_ms`` apart, and a gap never filled
  has led to a rebirth request within ``reorder_timeout_ms + rebirth_interval_ms``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from uns_bridge.host import effects as fx
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import encode_payload
from uns_bridge.sparkplug.values import Metric, Payload

G = "fleet"
NODES = ("n0", "n1", "n2")
DEVICES = ("d0", "d1")
REORDER_MS = 1_000
REBIRTH_MS = 3_000
T0 = 1_700_000_000_000

Scope = tuple[str, str | None]


@dataclass
class Edge:
    """The model of one edge node: what it has sent, and what it still has to send."""

    name: str
    session: int = -1
    online: bool = False
    bdseq: int = 0
    seq: int = 0
    devices: set[str] = field(default_factory=set)
    #: sequenced messages not yet delivered: (topic, bytes, tags)
    outbox: list[tuple[str, bytes, tuple[int, ...]]] = field(default_factory=list)
    #: no drops and no host disconnect since this session's NBIRTH
    clean: bool = True
    delivered: set[int] = field(default_factory=set)
    dropped: bool = False
    gap_at: int | None = None


def alias(session: int, device: str | None, index: int) -> int:
    """Aliases shift with the session and repeat across nodes, so a wrong resolution is possible."""
    base = (session % 3) * 20
    return base + index if device is None else base + 10 + DEVICES.index(device) * 2 + index


def metric_name(device: str | None, index: int) -> str:
    return f"m{index}" if device is None else f"x{index}"


class Fleet(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.host = Host(
            HostConfig(host_id="h", reorder_timeout_ms=REORDER_MS, rebirth_interval_ms=REBIRTH_MS)
        )
        self.now = T0
        self.edges = {n: Edge(n) for n in NODES}
        self.tags = 0
        self.origin: dict[int, tuple[str, str | None, str]] = {}
        self.emitted: Counter[int] = Counter()
        # the host's view, rebuilt from its effects
        self.catalog: dict[Scope, set[int]] = {}
        self.live: set[Scope] = set()
        self.rebirths: dict[str, list[int]] = {n: [] for n in NODES}
        self.connected = False

    # ------------------------------------------------------------------ plumbing

    def tag(self, node: str, device: str | None, name: str) -> int:
        self.tags += 1
        self.origin[self.tags] = (node, device, name)
        return self.tags

    def apply(self, effects: list[fx.Effect]) -> None:
        """Check one call's effects in order against the host view and update it."""
        required: set[int] = set()
        stale: set[int] = set()
        for effect in effects:
            if isinstance(effect, fx.MetricsDefined):
                self.catalog[(effect.node, effect.device)] = {id(m) for m in effect.metrics}
            elif isinstance(effect, fx.NodeOnline):
                self.live.add((effect.node, None))
            elif isinstance(effect, fx.DeviceOnline):
                self.live.add((effect.node, effect.device))
            elif isinstance(effect, fx.NodeOffline):
                for scope in [s for s in self.live if s[0] == effect.node]:
                    required |= self.catalog.get(scope, set())
                    self.live.discard(scope)
            elif isinstance(effect, fx.DeviceOffline):
                scope = (effect.node, effect.device)
                if scope in self.live:
                    required |= self.catalog.get(scope, set())
                    self.live.discard(scope)
            elif isinstance(effect, fx.MetricsStale):
                stale |= {id(m) for m in effect.metrics}
            elif isinstance(effect, fx.RebirthRequested):
                self.rebirths[effect.node].append(effect.timestamp)
            elif isinstance(effect, fx.Samples):
                for sample in effect.samples:
                    self.check_sample(sample)
        assert required <= stale, "a death left metrics without STALE"

    def check_sample(self, sample: fx.Sample) -> None:
        info = sample.metric
        scope = (info.node, info.device)
        assert scope in self.live and (info.node, None) in self.live, f"sample of a dead scope {scope}"
        assert id(info) in self.catalog.get(scope, set()), (
            f"sample of a metric not in the live catalog: {info}"
        )
        if info.name == "bdSeq":
            return
        assert isinstance(sample.value, int)
        assert self.origin[sample.value] == (info.node, info.device, info.name), (
            "value resolved to the wrong metric"
        )
        self.emitted[sample.value] += 1

    def deliver(self, edge: Edge, topic: str, raw: bytes, tags: tuple[int, ...]) -> None:
        if not self.connected:
            edge.clean = False  # the broker has nobody to deliver to
            return
        if edge.dropped and edge.gap_at is None and topic.split("/")[2] not in ("NBIRTH", "NDEATH"):
            edge.gap_at = self.now  # a message after a dropped one: the host sees a gap
        edge.delivered.update(tags)
        self.apply(self.host.receive(topic, raw, self.now))
        self.now += 1

    def enqueue(
        self, edge: Edge, kind: str, device: str | None, metrics: tuple[Metric, ...], ts: int
    ) -> None:
        raw = encode_payload(Payload(ts, metrics, seq=edge.seq), omit_alias_datatypes=kind.endswith("DATA"))
        topic = f"spBv1.0/{G}/{kind}/{edge.name}" + (f"/{device}" if device else "")
        tags = tuple(m.value for m in metrics if isinstance(m.value, int))
        edge.outbox.append((topic, raw, tags))
        edge.seq = (edge.seq + 1) % 256

    def flush(self, edge: Edge) -> None:
        while edge.outbox:
            self.deliver(edge, *edge.outbox.pop(0))

    def values(self, edge: Edge, device: str | None, with_names: bool) -> tuple[Metric, ...]:
        return tuple(
            Metric(
                metric_name(device, i) if with_names else None,
                alias(edge.session, device, i),
                self.now,
                T.Int64,
                self.tag(edge.name, device, metric_name(device, i)),
            )
            for i in range(2)
        )

    # ------------------------------------------------------------------ host connection

    @initialize()
    def connect(self) -> None:
        self.host.will(self.now)
        self.connected = True
        self.apply(self.host.connected(self.now))

    @precondition(lambda self: self.connected)
    @rule()
    def host_connection_lost(self) -> None:
        known = {scope for scope in self.live}
        effects = self.host.connection_lost(self.now)
        stale = {id(m) for e in effects if isinstance(e, fx.MetricsStale) for m in e.metrics}
        for scope in known:
            assert self.catalog.get(scope, set()) <= stale
        assert not [e for e in effects if isinstance(e, fx.Publish)]
        self.apply(effects)
        self.connected = False
        self.lost = {scope[0] for scope in known if scope[1] is None}
        for edge in self.edges.values():
            edge.clean = False
            edge.gap_at = None

    @precondition(lambda self: not self.connected)
    @rule()
    def host_reconnect(self) -> None:
        self.now += 10
        self.host.will(self.now)
        self.connected = True
        effects = self.host.connected(self.now)
        asked = {e.node for e in effects if isinstance(e, fx.RebirthRequested)}
        assert asked <= self.lost
        for node in self.lost - asked:  # rate-limited: one was sent within the window
            assert self.rebirths[node] and self.now - self.rebirths[node][-1] < REBIRTH_MS
        self.apply(effects)

    # ------------------------------------------------------------------ edge node sessions

    @rule(node=st.sampled_from(NODES))
    def nbirth(self, node: str) -> None:
        edge = self.edges[node]
        self.flush(edge)
        edge.session += 1
        edge.bdseq = (edge.bdseq + 1) % 256
        edge.seq = 0
        edge.devices = set()
        edge.clean = self.connected
        edge.dropped = False
        edge.gap_at = None
        edge.online = True
        metrics = (Metric("bdSeq", None, self.now, T.Int64, edge.bdseq), *self.values(edge, None, True))
        raw = encode_payload(Payload(self.now, metrics, seq=0))
        edge.seq = 1
        edge.delivered = set()
        self.deliver(edge, f"spBv1.0/{G}/NBIRTH/{node}", raw, tuple(m.value for m in metrics[1:]))  # type: ignore[misc]

    @precondition(lambda self: any(e.online for e in self.edges.values()))
    @rule(data=st.data())
    def ndeath(self, data: st.DataObject) -> None:
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if e.online]))
        self.flush(edge)
        edge.online = False
        edge.gap_at = None
        self.deliver(edge, f"spBv1.0/{G}/NDEATH/{edge.name}", self.death(edge.bdseq), ())

    @precondition(lambda self: any(e.online for e in self.edges.values()))
    @rule(data=st.data())
    def stale_ndeath(self, data: st.DataObject) -> None:
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if e.online]))
        if not self.connected:
            return
        before = set(self.live)
        effects = self.host.receive(f"spBv1.0/{G}/NDEATH/{edge.name}", self.death(edge.bdseq - 1), self.now)
        assert [e.kind for e in effects if isinstance(e, fx.Anomaly)] == [fx.AnomalyKind.STALE_DEATH]
        assert not [e for e in effects if isinstance(e, fx.NodeOffline | fx.MetricsStale)]
        self.apply(effects)
        assert self.live == before

    def death(self, bdseq: int) -> bytes:
        return encode_payload(Payload(self.now, (Metric("bdSeq", None, self.now, T.Int64, bdseq % 256),)))

    @precondition(lambda self: any(e.online for e in self.edges.values()))
    @rule(data=st.data(), device=st.sampled_from(DEVICES))
    def dbirth(self, data: st.DataObject, device: str) -> None:
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if e.online]))
        edge.devices.add(device)
        self.enqueue(edge, "DBIRTH", device, self.values(edge, device, True), self.now)

    @precondition(lambda self: any(e.devices for e in self.edges.values()))
    @rule(data=st.data())
    def ddeath(self, data: st.DataObject) -> None:
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if e.devices]))
        device = data.draw(st.sampled_from(sorted(edge.devices)))
        edge.devices.discard(device)
        self.enqueue(edge, "DDEATH", device, (), self.now)

    @precondition(lambda self: any(e.online for e in self.edges.values()))
    @rule(data=st.data(), count=st.integers(1, 3))
    def data_messages(self, data: st.DataObject, count: int) -> None:
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if e.online]))
        for _ in range(count):
            device = data.draw(st.sampled_from([None, *sorted(edge.devices)]))
            kind = "NDATA" if device is None else "DDATA"
            self.enqueue(edge, kind, device, self.values(edge, device, False), self.now)

    @precondition(lambda self: any(e.online for e in self.edges.values()))
    @rule(data=st.data(), count=st.integers(100, 300))
    def burst(self, data: st.DataObject, count: int) -> None:
        """Many NDATA in order: the seq wraps 255 -> 0."""
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if e.online]))
        self.flush(edge)
        for _ in range(count):
            self.enqueue(edge, "NDATA", None, self.values(edge, None, False)[:1], self.now)
            self.deliver(edge, *edge.outbox.pop(0))

    # ------------------------------------------------------------------ delivery: order, duplicates, drops

    @precondition(lambda self: any(e.outbox for e in self.edges.values()))
    @rule(data=st.data())
    def deliver_next(self, data: st.DataObject) -> None:
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if e.outbox]))
        self.deliver(edge, *edge.outbox.pop(0))

    @precondition(lambda self: any(len(e.outbox) >= 2 for e in self.edges.values()))
    @rule(data=st.data())
    def deliver_swapped(self, data: st.DataObject) -> None:
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if len(e.outbox) >= 2]))
        first, second = edge.outbox.pop(0), edge.outbox.pop(0)
        self.deliver(edge, *second)
        self.deliver(edge, *first)

    @precondition(lambda self: any(e.outbox for e in self.edges.values()))
    @rule(data=st.data())
    def deliver_twice(self, data: st.DataObject) -> None:
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if e.outbox]))
        message = edge.outbox.pop(0)
        self.deliver(edge, *message)
        self.deliver(edge, *message)

    @precondition(lambda self: any(e.outbox for e in self.edges.values()))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        edge = data.draw(st.sampled_from([e for e in self.edges.values() if e.outbox]))
        edge.outbox.pop(0)
        edge.clean = False
        edge.dropped = True

    @rule(ms=st.sampled_from([1, 100, 999, 1_000, 3_000, 10_000]))
    def advance(self, ms: int) -> None:
        self.now += ms
        deadline = self.host.next_deadline()
        self.apply(self.host.tick(self.now))
        if deadline is not None and deadline <= self.now:
            assert self.host.next_deadline() is None or self.host.next_deadline() > self.now  # type: ignore[operator]
        for edge in self.edges.values():
            if edge.gap_at is None:
                continue
            answered = any(t >= edge.gap_at for t in self.rebirths[edge.name])
            if self.now >= edge.gap_at + REORDER_MS + REBIRTH_MS:
                assert answered, f"the gap of {edge.name} never led to a rebirth request"
            if answered:
                edge.gap_at, edge.dropped = None, False

    # ------------------------------------------------------------------ invariants

    @invariant()
    def no_sample_twice(self) -> None:
        assert not [tag for tag, n in self.emitted.items() if n > 1]

    @invariant()
    def clean_sessions_lose_nothing(self) -> None:
        for edge in self.edges.values():
            if edge.online and edge.clean:
                missing = {t for t in edge.delivered if self.emitted[t] != 1}
                assert not missing, f"{edge.name} lost delivered values {sorted(missing)[:5]}"

    @invariant()
    def rebirths_rate_limited(self) -> None:
        for times in self.rebirths.values():
            assert all(b - a >= REBIRTH_MS for a, b in itertools.pairwise(times))


DEFAULT = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SOAK = settings(
    max_examples=20_000,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def test_fleet_against_the_host() -> None:
    Fleet.TestCase.settings = DEFAULT
    Fleet.TestCase().runTest()


@pytest.mark.soak
def test_fleet_against_the_host_soak() -> None:
    Fleet.TestCase.settings = SOAK
    Fleet.TestCase().runTest()
