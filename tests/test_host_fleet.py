"""A fleet of edge nodes against the host core (hypothesis state machine), invariants after every step.

Nodes do births (NBIRTH + DBIRTHs, fresh random aliases per session), data, gaps (a message withheld),
reorders (withheld messages delivered late, shuffled), duplicates, deaths (current and stale bdSeq),
device deaths, host reconnects and time passing. Every data value is a unique integer, so each sample can
be traced to the message, metric and birth session that produced it. Invariants:

* no sample without a metric defined by a birth the host reported (``MetricsDefined``);
* no alias resolved across nodes or sessions: a sample's metric is the one the sender meant, from the
  session the value was sent in;
* after a death (NDEATH, DDEATH, connection loss) every affected metric is STALE, and no sample of it
  appears until its rebirth;
* in-order traffic loses no sample, and no value is stored twice (duplicates dropped);
* a gap that is never filled ends in a rebirth request, and requests for one node are at least one
  rate-limit window apart (exactly one per window).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.host_messages import T0, G, m
from uns_bridge.host import effects as fx
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import encode_payload
from uns_bridge.sparkplug.values import Metric, Payload

NODES = ("E0", "E1", "E2")
DEVICES = ("D0", "D1")
NODE_METRICS = ("n0", "n1")
DEVICE_METRICS = ("d0", "d1", "d2")
REORDER_MS = 500
REBIRTH_MS = 2_000
Key = tuple[str, str, str | None, str]


@dataclass
class Sent:
    topic: str
    raw: bytes
    values: list[int]
    session: int


@dataclass
class EdgeNode:
    name: str
    bd: int = 0
    seq: int = 0
    session: int = 0
    #: the host has seen this session's NBIRTH and no death since
    host_online: bool = False
    devices_online: set[str] = field(default_factory=set)
    aliases: dict[tuple[str | None, str], int] = field(default_factory=dict)
    delayed: list[Sent] = field(default_factory=list)
    last: Sent | None = None
    #: when the host's reorder timer for a withheld message expires (None: no timer running)
    gap_deadline: int | None = None


class Fleet(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.host = Host(
            HostConfig(host_id="fleet", reorder_timeout_ms=REORDER_MS, rebirth_interval_ms=REBIRTH_MS)
        )
        self.now = T0
        self.nodes = {name: EdgeNode(name) for name in NODES}
        self.sessions = 0
        self.counter = 0
        self.sent: dict[int, tuple[Key, int]] = {}  # value -> (metric key, birth session)
        self.expected: set[int] = set()  # values the host must deliver (in-order traffic)
        self.seen: set[int] = set()
        self.defined: dict[int, tuple[str, int]] = {}  # id(MetricInfo) -> (node, session)
        self.infos: list[fx.MetricInfo] = []  # keep them alive (ids stay unique)
        self.stale: set[Key] = set()
        self.last_rebirth: dict[str, int] = {}
        self.owed: dict[str, int] = {}  # node -> time by which a rebirth request is due
        self.host.will(self.now)
        self.apply(self.host.connected(self.now))

    # ------------------------------------------------------------------ effects and invariants

    def apply(self, effects: list[fx.Effect]) -> list[fx.Effect]:
        for effect in effects:
            if isinstance(effect, fx.MetricsDefined):
                session = self.nodes[effect.node].session
                for info in effect.metrics:
                    self.defined[id(info)] = (effect.node, session)
                    self.infos.append(info)
                    self.stale.discard(info.key)
            elif isinstance(effect, fx.MetricsStale):
                self.stale.update(info.key for info in effect.metrics)
            elif isinstance(effect, fx.Samples):
                for sample in effect.samples:
                    info = sample.metric
                    assert id(info) in self.defined, f"sample of a metric no birth defined: {info}"
                    assert info.key not in self.stale, f"sample of a STALE metric before rebirth: {info.key}"
                    if info.name not in NODE_METRICS + DEVICE_METRICS:
                        continue
                    value = sample.value
                    assert isinstance(value, int)
                    key, session = self.sent[value]
                    assert info.key == key, f"value {value} of {key} resolved to {info.key}"
                    assert self.defined[id(info)] == (key[1], session), "alias resolved across sessions"
                    assert value not in self.seen, f"value {value} stored twice"
                    self.seen.add(value)
            elif isinstance(effect, fx.RebirthRequested):
                last = self.last_rebirth.get(effect.node)
                assert last is None or effect.timestamp - last >= REBIRTH_MS, "two requests in one window"
                self.last_rebirth[effect.node] = effect.timestamp
                self.owed.pop(effect.node, None)
        return effects

    @invariant()
    def in_order_traffic_loses_nothing(self) -> None:
        if not hasattr(self, "host"):
            return
        waiting = {v for node in self.nodes.values() for s in node.delayed for v in s.values}
        for node in self.nodes.values():
            if node.gap_deadline is not None:  # held behind a gap: released on fill or timeout
                waiting.update(v for v in self.expected if self.sent[v][0][1] == node.name)
        missing = self.expected - self.seen - waiting
        assert not missing, f"in-order values lost: {sorted(missing)[:10]}"

    @invariant()
    def owed_rebirths_are_sent(self) -> None:
        if not hasattr(self, "host"):
            return
        for name, due in self.owed.items():
            assert due >= self.now, f"rebirth of {name} owed since {due}, now {self.now}"

    # ------------------------------------------------------------------ sending

    def value(self, node: str, device: str | None, name: str, session: int) -> int:
        self.counter += 1
        self.sent[self.counter] = ((G, node, device, name), session)
        return self.counter

    def message(self, node: EdgeNode, kind: str, device: str | None, metrics: list[Metric]) -> Sent:
        topic = f"spBv1.0/{G}/{kind}/{node.name}" + (f"/{device}" if device else "")
        seq = node.seq
        node.seq = (seq + 1) % 256
        raw = encode_payload(Payload(self.now, tuple(metrics), seq), omit_alias_datatypes=True)
        values = [mt.value for mt in metrics if mt.name in NODE_METRICS + DEVICE_METRICS or mt.name is None]
        return Sent(
            topic, raw, [v for v in values if isinstance(v, int) and not isinstance(v, bool)], node.session
        )

    def deliver(self, node: EdgeNode, sent: Sent) -> list[fx.Effect]:
        if node.delayed and node.gap_deadline is None and node.host_online and self.host_connected:
            node.gap_deadline = self.now + REORDER_MS  # the host starts its reorder timer now
        if node.host_online and self.host_connected:
            self.expected.update(sent.values)
        node.last = sent
        return self.apply(self.host.receive(sent.topic, sent.raw, self.now))

    host_connected = True

    def drop_delayed(self, node: EdgeNode) -> None:
        for sent in node.delayed:
            self.expected.difference_update(sent.values)
        node.delayed = []
        node.gap_deadline = None

    # ------------------------------------------------------------------ rules

    @rule(node=st.sampled_from(NODES), seed=st.integers(0, 2**32 - 1))
    def birth(self, node: str, seed: int) -> None:
        n = self.nodes[node]
        self.drop_delayed(n)
        n.bd += 1
        n.seq = 0
        self.sessions += 1
        n.session = self.sessions
        keys = [(None, x) for x in NODE_METRICS] + [(d, x) for d in DEVICES for x in DEVICE_METRICS]
        aliases = list(range(1, len(keys) + 1))
        random.Random(seed).shuffle(aliases)
        n.aliases = dict(zip(keys, aliases, strict=True))
        metrics = [m("bdSeq", 100, T.Int64, n.bd), m("Node Control/Rebirth", 101, T.Boolean, False)]
        metrics += [
            m(x, n.aliases[(None, x)], T.Int64, self.value(node, None, x, n.session)) for x in NODE_METRICS
        ]
        effects = self.deliver(n, self.message(n, "NBIRTH", None, metrics))
        if self.host_connected:
            assert any(isinstance(e, fx.NodeOnline) for e in effects)
            n.host_online = True
            self.owed.pop(node, None)  # a birth answers any pending request
        n.devices_online = set()
        for device in DEVICES:
            dm = [
                m(x, n.aliases[(device, x)], T.Int64, self.value(node, device, x, n.session))
                for x in DEVICE_METRICS
            ]
            self.deliver(n, self.message(n, "DBIRTH", device, dm))
            n.devices_online.add(device)

    @rule(
        node=st.sampled_from(NODES),
        device=st.sampled_from((None, *DEVICES)),
        count=st.integers(1, 4),
        withhold=st.integers(0, 5),
    )
    def data(self, node: str, device: str | None, count: int, withhold: int) -> None:
        n = self.nodes[node]
        if n.session == 0 or (device is not None and device not in n.devices_online):
            return
        names = NODE_METRICS if device is None else DEVICE_METRICS
        metrics = [
            m(
                None,
                n.aliases[(device, names[i % len(names)])],
                T.Int64,
                self.value(node, device, names[i % len(names)], n.session),
                ts=self.now + i,
            )
            for i in range(count)
        ]
        sent = self.message(n, "NDATA" if device is None else "DDATA", device, metrics)
        if withhold == 0 and n.host_online and self.host_connected:
            n.delayed.append(sent)  # a gap: this one arrives later or never
            self.expected.update(sent.values)
            return
        effects = self.deliver(n, sent)
        if not (n.host_online and self.host_connected):
            assert not any(isinstance(e, fx.Samples) for e in effects), "data before birth stored"

    @precondition(lambda self: any(n.delayed for n in self.nodes.values()))
    @rule(data=st.data())
    def reorder(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from([n for n in self.nodes.values() if n.delayed]))
        late = data.draw(st.permutations(node.delayed))
        node.delayed = []
        timer = node.gap_deadline
        for sent in late:
            self.apply(self.host.receive(sent.topic, sent.raw, self.now))
        if timer is not None:  # filled in time: the timer is cancelled, everything released
            node.gap_deadline = None

    @precondition(lambda self: any(n.last is not None for n in self.nodes.values()))
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from([n for n in self.nodes.values() if n.last is not None]))
        assert node.last is not None
        effects = self.apply(self.host.receive(node.last.topic, node.last.raw, self.now))
        assert not any(isinstance(e, fx.Samples) for e in effects), "a duplicate was stored"

    @rule(node=st.sampled_from(NODES), stale=st.booleans())
    def death(self, node: str, stale: bool) -> None:
        n = self.nodes[node]
        if n.session == 0:
            return
        raw = encode_payload(Payload(self.now, (m("bdSeq", None, T.Int64, n.bd - 1 if stale else n.bd),)))
        if stale:
            effects = self.apply(self.host.receive(f"spBv1.0/{G}/NDEATH/{node}", raw, self.now))
            assert not any(isinstance(e, fx.NodeOffline | fx.MetricsStale) for e in effects)
            return
        self.drop_delayed(n)
        effects = self.apply(self.host.receive(f"spBv1.0/{G}/NDEATH/{node}", raw, self.now))
        n.last = None
        if n.host_online and self.host_connected:
            assert any(isinstance(e, fx.NodeOffline) for e in effects)
            self.check_all_stale(n)
        n.host_online = False
        n.devices_online = set()

    @rule(node=st.sampled_from(NODES), device=st.sampled_from(DEVICES))
    def device_death(self, node: str, device: str) -> None:
        n = self.nodes[node]
        if n.session == 0 or device not in n.devices_online:
            return
        self.deliver(n, self.message(n, "DDEATH", device, []))
        n.devices_online.discard(device)
        if n.host_online and self.host_connected and not n.delayed:
            for x in DEVICE_METRICS:
                assert (G, node, device, x) in self.stale, "device metric not STALE after DDEATH"

    @rule()
    def reconnect(self) -> None:
        for n in self.nodes.values():
            self.drop_delayed(n)
            n.last = None
        self.apply(self.host.connection_lost(self.now))
        for n in self.nodes.values():
            if n.host_online:
                self.check_all_stale(n)
            n.host_online = False
        self.owed.clear()  # requests are not sent while disconnected
        self.now += 10
        self.host.will(self.now)
        effects = self.apply(self.host.connected(self.now))
        assert isinstance(effects[0], fx.Publish) and effects[0].topic == "spBv1.0/STATE/fleet"

    @rule(ms=st.integers(1, 3_000))
    def wait(self, ms: int) -> None:
        self.now += ms
        effects = self.apply(self.host.tick(self.now))
        asked = {e.node for e in effects if isinstance(e, fx.RebirthRequested)}
        for n in self.nodes.values():
            if n.gap_deadline is not None and n.gap_deadline <= self.now:
                # an unfilled gap: a rebirth now, or at the end of the current rate-limit window
                n.gap_deadline = None
                last = self.last_rebirth.get(n.name)
                if n.name not in asked:
                    assert last is not None and self.now - last < REBIRTH_MS, f"gap of {n.name} unanswered"
                    self.owed[n.name] = last + REBIRTH_MS
                for sent in n.delayed:  # if they come now they are late: historical, still delivered
                    self.expected.difference_update(sent.values)

    def check_all_stale(self, n: EdgeNode) -> None:
        for device, name in n.aliases:
            assert (G, n.name, device, name) in self.stale, f"{n.name}/{device}/{name} not STALE after death"


Fleet.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_fleet = Fleet.TestCase


@pytest.mark.soak
def test_fleet_soak() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        Fleet, settings=settings(max_examples=20_000, stateful_step_count=100, deadline=None, database=None)
    )
