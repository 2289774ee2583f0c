"""The Sparkplug B host application: every host rule, in one place, with no I/O.

``Host.receive(topic, payload, now_ms)`` and ``Host.tick(now_ms)`` return effects
(:mod:`uns_bridge.host.effects`); nothing here reads a clock, opens a socket or touches a database, so a
live session, a replayed capture and a test drive it identically. Times are integer ms UTC.

The rules (Sparkplug 3.0 requirement ids in brackets where the specification has one)
-------------------------------------------------------------------------------------------------
Host session
  H1  The CONNECT Will is STATE ``{"online": false, "timestamp": T}`` on ``spBv1.0/STATE/<host id>``,
      QoS 1, retained; T is new (and later than the last) for every connection
      [tck-id-host-topic-phid-death-required, tck-id-host-topic-phid-death-payload,
      tck-id-host-topic-phid-death-qos, tck-id-host-topic-phid-death-retain,
      tck-id-host-topic-phid-death-payload-timestamp-connect,
      tck-id-operational-behavior-host-application-multi-server-timestamp].
  H2  After CONNACK the host subscribes (QoS 1) and then publishes STATE ``{"online": true,
      "timestamp": T}`` with the Will's T, QoS 1, retained, as its first message
      [tck-id-host-topic-phid-birth-sub-required, tck-id-host-topic-phid-birth-required,
      tck-id-host-topic-phid-birth-message, tck-id-host-topic-phid-birth-payload,
      tck-id-host-topic-phid-birth-qos, tck-id-host-topic-phid-birth-retain].
  H3  Its own STATE seen with ``online: false`` is answered by publishing ``online: true`` again
      [tck-id-message-flow-hid-sparkplug-state-message-delivered].
  H4  A clean disconnect publishes ``online: false`` with the session's T first
      [tck-id-operational-behavior-host-application-termination,
      tck-id-host-topic-phid-death-payload-disconnect-clean].
  H5  Other hosts' STATE (3.0 ``spBv1.0/STATE/<id>`` and legacy ``STATE/<id>``) is recognised and is never
      Sparkplug data; NCMD/DCMD from other hosts are not data either.
Edge node sessions
  N1  NBIRTH opens a session: the node's whole metric catalog and alias map are replaced, its devices are
      offline (their metrics STALE) until their own DBIRTH; bdSeq is recorded
      [tck-id-topics-nbirth-bdseq-included, tck-id-topics-nbirth-bdseq-matching]. A second delivery of
      the very same NBIRTH bytes while that session is open is a duplicate (SEQ_DUPLICATE), not a rebirth.
  N2  Birth values are values: every metric of NBIRTH/DBIRTH with a value becomes a sample.
  N3  NDEATH counts only when its bdSeq equals the current NBIRTH's [tck-id-payloads-ndeath-bdseq]
      (a bdSeq sent by alias only is resolved through the birth); then the node, all its devices and
      all their metrics go offline/STALE at the *receive* time
      [tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline,
      -ndeath-node-tags-stale, -ndeath-devices-offline, -ndeath-devices-tags-stale].
      A stale or duplicate NDEATH is ignored and reported (STALE_DEATH).
  N4  DDEATH (which has a seq) turns one device and its metrics STALE at the payload timestamp
      [tck-id-operational-behavior-edge-node-termination-host-action-ddeath-devices-offline,
      -ddeath-devices-tags-stale, tck-id-payloads-ddeath-timestamp]; without one, the receive time.
  N5  DBIRTH, DDATA, DDEATH or NDATA before the node's NBIRTH is data before birth: never guessed at,
      kept as a dead letter and answered with a rebirth request (the specification has no id for this).
Sequence numbers
  S1  NBIRTH, DBIRTH, NDATA, DDATA and DDEATH carry seq 0..255, one counter per node across its devices,
      wrapping 255 → 0; NBIRTH resets it [tck-id-payloads-sequence-num-incrementing,
      tck-id-payloads-sequence-num-zero-nbirth, tck-id-payloads-ndata-seq-inc, tck-id-payloads-ddata-seq-inc].
  S2  A message ahead of the expected seq is held and a reorder timer (``reorder_timeout_ms``) starts
      (SEQ_GAP) [tck-id-operational-behavior-host-reordering-param,
      tck-id-operational-behavior-host-reordering-start]. When the missing messages arrive the timer is
      cancelled and everything held is released in seq order
      [tck-id-operational-behavior-host-reordering-success].
  S3  When the timer expires, the held messages are released in order and a rebirth is requested
      [tck-id-operational-behavior-host-reordering-rebirth]. The same happens at once when a message
      arrives 64 or more seqs ahead while a gap is open (a fast node would otherwise run past the ahead
      window and its new messages be taken for late ones).
  S4  A message that repeats the bytes of one already processed under the same seq is a duplicate and is
      dropped (SEQ_DUPLICATE). A message behind the expected seq that is not a duplicate and whose seq
      was skipped when a gap was given up is late: it is stored as historical (SEQ_LATE), never as the
      live value. A message behind the expected seq that was never skipped is a discontinuity (e.g. a
      seq counter reset without NBIRTH): stored as historical too, and a rebirth is requested.
Aliases and metrics
  A1  Aliases are unique across one edge node (node and devices) and live as long as its birth session;
      catalogs are keyed by (group, node[, device]) and session, never by MQTT connection
      [tck-id-payloads-alias-uniqueness]. An alias born on one device never resolves on another.
  A2  DATA metrics are resolved by alias or name to the birth's metric; the value is interpreted with the
      birth's datatype (DATA rarely carries one) [tck-id-payloads-alias-data-cmd-requirement].
  A3  An unknown alias or name, or a value that does not fit the birth's datatype, is never guessed at:
      the message is kept as a dead letter, a rebirth requested, and its other values still delivered.
Values
  V1  Each value has its metric's own timestamp; without one, the payload's; without that, the receive
      time, and a MISSING_TIMESTAMP anomaly (not a dead letter) says so.
  V2  Several values of one metric in one message are kept, in order; equal timestamps are not merged.
  V3  is_historical values are samples flagged historical; is_transient values are never samples; is_null
      is a real null (value ``None``).
  V4  Property ``Quality`` (0 BAD, 192 GOOD, 500 STALE) sets a value's quality; default GOOD
      [tck-id-payloads-propertyset-quality-value-type, tck-id-payloads-propertyset-quality-value-value].
      A metric's unit is its property ``engUnit``; its description the property ``description`` or the
      metadata's description.
  V5  Templates: definitions come from NBIRTH (``is_definition``); an instance's ``template_ref`` resolves
      with or without the ``_types_/`` prefix; each member becomes a metric ``<instance>/<member>`` and the
      instance itself a Template value carrying its parameters (missing ones from the definition's
      defaults). Templates nest. A DataSet is one value [tck-id-topics-nbirth-templates,
      tck-id-payloads-template-definition-nbirth-only, tck-id-payloads-template-definition-parameters-default,
      tck-id-payloads-template-instance-members-birth, tck-id-payloads-template-instance-members-data,
      tck-id-payloads-template-dataset-value]. Definitions found in a DBIRTH are accepted too (tolerance).
Rebirth requests
  R1  A rebirth request is NCMD ``spBv1.0/<g>/NCMD/<e>`` with ``Node Control/Rebirth`` = true (Boolean),
      a payload timestamp, no seq, QoS 0 [tck-id-operational-behavior-data-commands-ncmd-rebirth-verb,
      tck-id-operational-behavior-data-commands-ncmd-rebirth-name,
      tck-id-operational-behavior-data-commands-ncmd-rebirth-value, tck-id-payloads-ncmd-seq].
  R2  At most one per node per ``rebirth_interval_ms``; a request inside the window is deferred to its end.
  R3  Only the ``active`` role sends commands; ``passive`` reports but never publishes one, and nothing
      is sent while disconnected.
Connection
  C1  Connection lost or host shutting down: every node and device offline and every metric STALE
      (held messages are released first, in seq order).
  C2  After a reconnect the active host asks every node it knew for a rebirth; until then their DATA is
      data before birth (aliases may have changed while we were away).
Workers
  W1  With ``shard = (index, count)`` this host is one of ``count`` worker processes sharing the load
      (``host.workers``): it owns the edge nodes whose ``crc32("<group>/<node>") % count == index``
      and ignores every message of the others before decoding it (each worker subscribes to all of
      them; the owner alone keeps the node's session). Worker 0 is the Sparkplug host: only it
      registers the STATE Will, publishes STATE and answers a stray STATE ``online: false`` (H1-H4);
      the others publish no STATE. A message on an invalid topic belongs to no node: worker 0 alone
      dead-letters it. Everything else (births, seq, rebirth requests) is per owner.
Robustness
  B1  No input makes the host raise (``receive`` and ``tick`` both): invalid topics, undecodable
      payloads and limit violations become Anomaly effects with ``dead_letter=True``, the reason and
      the bytes.
  B2  Limits (payload bytes, metrics per message, nodes, devices per node, metrics per node) are checked
      before any state changes. A value beyond ``max_value_bytes`` (strings, bytes) or
      ``max_array_length`` (array elements, DataSet rows) is not stored; the rest of its message
      applies (a birth still defines the metric) and a LIMIT_EXCEEDED dead letter keeps the message.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import orjson

from uns_bridge.config import HostLimits, HostSettings
from uns_bridge.host.effects import (
    Anomaly,
    AnomalyKind,
    DeviceOffline,
    DeviceOnline,
    Effect,
    MetricInfo,
    MetricsDefined,
    MetricsStale,
    NodeOffline,
    NodeOnline,
    Publish,
    Quality,
    RebirthRequested,
    Sample,
    Samples,
)
from uns_bridge.host.templates import TemplateCatalog, expand_instance
from uns_bridge.native import extension
from uns_bridge.sparkplug.datatypes import SIGNED_WIDTH, DataType, datatype_name
from uns_bridge.sparkplug.payload import PayloadError, coerce_value, decode_payload, encode_payload
from uns_bridge.sparkplug.topic import MessageType, SparkplugTopic, StateTopic, TopicError, parse_topic
from uns_bridge.sparkplug.values import DataSet, MetaData, Metric, Payload, PropertySet, Template, Value

Buffer: TypeAlias = bytes | bytearray | memoryview
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
_QUALITY = {0: Quality.BAD, 192: Quality.GOOD, 500: Quality.STALE}
_GOOD = Quality.GOOD
_COMMANDS = frozenset((MessageType.NCMD, MessageType.DCMD))
#: parsed topics kept (topics repeat: parsing each message's topic again is per-message waste)
_TOPIC_CACHE = 65_536
#: wire values that already are the typed value: Python type per datatype, and for integer types the
#: bound below which the unsigned wire integer needs no sign extension or masking
_PASS_TYPE: dict[int, type] = {
    DataType.Float: float,
    DataType.Double: float,
    DataType.Boolean: bool,
    DataType.String: str,
    DataType.Text: str,
    DataType.UUID: str,
    DataType.Bytes: bytes,
}
_INT_BOUND: dict[int, int] = {
    DataType.Int8: 1 << 7,
    DataType.Int16: 1 << 15,
    DataType.Int32: 1 << 31,
    DataType.Int64: 1 << 63,
    DataType.UInt8: 1 << 8,
    DataType.UInt16: 1 << 16,
    DataType.UInt32: 1 << 32,
    DataType.UInt64: 1 << 64,
    DataType.DateTime: 1 << 64,
}
_new = tuple.__new__  # builds a Sample without the NamedTuple's Python-level __new__ (hot path)
#: the native loop over plain DATA metrics (``_plain.c``); the loop in Host._process is its definition
_plain = extension("uns_bridge.host._plain", "UNS_BRIDGE_HOST_LOOP", "python")
_native_plain: Callable[..., int] | None = None if _plain is None else _plain.plain_samples
_PLAIN_RULES = (Sample, _GOOD, _INT_BOUND, _PASS_TYPE, SIGNED_WIDTH)
#: an undecodable message of these types is not answered with a rebirth request
_NO_REBIRTH_ON_ERROR = frozenset((MessageType.NDEATH, MessageType.NCMD, MessageType.DCMD))
#: a seq this far ahead of the expected one (mod 256) counts as "ahead"; further is "behind"
_AHEAD_WINDOW = 128
#: a gap still open when a message this far ahead arrives is given up at once (S3): holding longer would
#: let the stream run past the ahead window, where new messages would be mistaken for late ones
_HOLD_LIMIT = 64


@dataclass(frozen=True)
class HostConfig:
    host_id: str = "uns-bridge"
    role: Literal["active", "passive"] = "active"
    reorder_timeout_ms: int = 2_000
    rebirth_interval_ms: int = 5_000
    #: subscribe to these groups only (``None``: all of ``spBv1.0/#``)
    groups: tuple[str, ...] | None = None
    limits: HostLimits = field(default_factory=HostLimits)
    #: (worker index, worker count) when the load is shared by worker processes (W1)
    shard: tuple[int, int] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: HostSettings,
        groups: tuple[str, ...] | None = None,
        shard: tuple[int, int] | None = None,
    ) -> HostConfig:
        return cls(
            host_id=settings.id,
            role=settings.role,
            reorder_timeout_ms=settings.reorder_timeout_ms,
            rebirth_interval_ms=settings.rebirth_interval_ms,
            groups=groups,
            limits=settings.limits,
            shard=shard,
        )

    @property
    def publishes_state(self) -> bool:
        """Whether this host is the one that publishes STATE (W1: a single host, or worker 0)."""
        return self.shard is None or self.shard[0] == 0


def shard_of(group: str, node: str, count: int) -> int:
    """The worker (0 .. count-1) that owns an edge node (W1); the same in every process and run."""
    return zlib.crc32(f"{group}/{node}".encode("utf-8", "surrogatepass")) % count


@dataclass
class _Device:
    device: str
    online: bool = False
    metrics: dict[str, MetricInfo] = field(default_factory=dict)


@dataclass
class _Held:
    topic: SparkplugTopic
    payload: Payload
    raw: bytes
    received: int


@dataclass
class _Node:
    group: str
    node: str
    online: bool = False
    bd_seq: int | None = None
    #: next seq expected, None before the first birth
    expected: int | None = None
    metrics: dict[str, MetricInfo] = field(default_factory=dict)
    aliases: dict[int, MetricInfo] = field(default_factory=dict)
    devices: dict[str, _Device] = field(default_factory=dict)
    templates: TemplateCatalog = field(default_factory=TemplateCatalog)
    held: dict[int, _Held] = field(default_factory=dict)
    gap_deadline: int | None = None
    #: hash of the bytes of the last message processed under each seq (duplicate detection)
    recent: dict[int, int] = field(default_factory=dict)
    #: seqs skipped when a gap was given up: one of these arriving later is late, not a discontinuity
    given_up: set[int] = field(default_factory=set)
    last_rebirth: int | None = None
    #: hash of the bytes of the NBIRTH that opened the current session (duplicate delivery, N1)
    birth_digest: int | None = None
    deferred_rebirth: int | None = None
    deferred_reason: str = ""

    def all_metrics(self) -> list[MetricInfo]:
        out = list(self.metrics.values())
        for device in self.devices.values():
            out.extend(device.metrics.values())
        return out


class Host:
    """The host application's Sparkplug state: feed it messages and ticks, act on its effects."""

    def __init__(self, config: HostConfig | None = None) -> None:
        self.config = config or HostConfig()
        self.state_topic = str(StateTopic(self.config.host_id))
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._topics: dict[str | bytes, SparkplugTopic | StateTopic] = {}
        #: W1: (group, node) -> whether this worker owns the node; ``None`` without workers
        self._owned: dict[tuple[str, str], bool] | None = {} if self.config.shard is not None else None
        #: B2: no value in a smaller payload can exceed max_value_bytes / max_array_length (a
        #: BooleanArray packs 8 elements per byte), so only larger payloads are scanned
        limits = self.config.limits
        self._scan_values_above = min(limits.max_value_bytes, limits.max_array_length // 8)
        self._session_ts: int | None = None
        self._connected = False
        self._was_connected = False
        #: nodes that were online when the connection was lost (asked for rebirth on reconnect)
        self._lost_nodes: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ session (H1-H5, C1, C2)

    def subscriptions(self) -> list[tuple[str, int]]:
        """QoS 1 (NDEATH Wills arrive at QoS 1); our own STATE topic always explicitly (H2)."""
        if self.config.groups is None:
            return [("spBv1.0/#", 1), (self.state_topic, 1)]
        return [(f"spBv1.0/{group}/#", 1) for group in self.config.groups] + [(self.state_topic, 1)]

    def will(self, now_ms: int) -> Publish | None:
        """The STATE death to register as the CONNECT Will; starts a new STATE timestamp (H1).

        ``None`` for a worker other than 0 (W1): it registers no Will."""
        previous = self._session_ts
        self._session_ts = now_ms if previous is None or now_ms > previous else previous + 1
        return self._state(False) if self.config.publishes_state else None

    def connected(self, now_ms: int) -> list[Effect]:
        """CONNACK received and subscribed: publish the STATE birth, then ask for rebirths (H2, C2)."""
        if self._session_ts is None:
            self._session_ts = now_ms
        effects: list[Effect] = [self._state(True)] if self.config.publishes_state else []
        self._connected = True
        if self._was_connected:
            for key in self._lost_nodes:
                node = self._nodes.get(key)
                if node is not None:
                    effects.extend(self._request_rebirth(node, now_ms, "host reconnected"))
            self._lost_nodes = []
        self._was_connected = True
        return effects

    def connection_lost(self, now_ms: int) -> list[Effect]:
        """The MQTT connection is gone: everything is STALE until reborn (C1)."""
        self._connected = False
        effects = self._release_all_held(now_ms)
        self._lost_nodes = [key for key, node in self._nodes.items() if node.online]
        for node in self._nodes.values():
            effects.extend(self._node_offline(node, now_ms, "connection lost"))
        return effects

    def disconnecting(self, now_ms: int) -> list[Effect]:
        """Clean shutdown: the STATE death first (H4), then everything STALE."""
        effects: list[Effect] = [self._state(False)] if self.config.publishes_state else []
        self._connected = False  # no command after our death certificate
        effects.extend(self._release_all_held(now_ms))
        for node in self._nodes.values():
            effects.extend(self._node_offline(node, now_ms, "host shutdown"))
        return effects

    def _state(self, online: bool) -> Publish:
        payload = orjson.dumps({"online": online, "timestamp": self._session_ts})
        return Publish(self.state_topic, payload, 1, True)

    # ------------------------------------------------------------------ timers (S3, R2)

    def next_deadline(self) -> int | None:
        deadlines = [
            d
            for node in self._nodes.values()
            for d in (node.gap_deadline, node.deferred_rebirth)
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def tick(self, now_ms: int) -> list[Effect]:
        """Timers due at ``now_ms``: reorder timeouts (S3) and deferred rebirth requests (R2). Never raises."""
        try:
            return self._tick(now_ms)
        except Exception as exc:  # a bug must not stop the bridge
            for node in self._nodes.values():  # never spin on a deadline that keeps failing
                node.gap_deadline = node.deferred_rebirth = None
                node.held.clear()
            return [
                Anomaly(
                    AnomalyKind.PROTOCOL,
                    f"internal error while handling timers ({type(exc).__name__}: {exc})",
                    now_ms,
                    "",
                )
            ]

    def _tick(self, now_ms: int) -> list[Effect]:
        effects: list[Effect] = []
        for node in list(self._nodes.values()):
            if node.gap_deadline is not None and node.gap_deadline <= now_ms:
                node.gap_deadline = None
                missing = node.expected
                effects.extend(self._release_held(node, now_ms, give_up=True))
                effects.extend(self._request_rebirth(node, now_ms, f"seq {missing} never arrived"))
            if node.deferred_rebirth is not None and node.deferred_rebirth <= now_ms:
                node.deferred_rebirth = None
                effects.extend(self._request_rebirth(node, now_ms, node.deferred_reason))
        return effects

    # ------------------------------------------------------------------ messages

    def receive(self, topic: str | Buffer, payload: Buffer, now_ms: int) -> list[Effect]:
        """One received MQTT message. Never raises (B1)."""
        try:
            return self._receive(topic, payload, now_ms)
        except Exception as exc:  # a bug must not stop the bridge: keep the message and say why
            text = topic if isinstance(topic, str) else bytes(topic).decode("utf-8", "replace")
            return [
                Anomaly(
                    AnomalyKind.PROTOCOL,
                    f"internal error while handling the message ({type(exc).__name__}: {exc})",
                    now_ms,
                    text,
                    dead_letter=True,
                    payload=bytes(payload),
                )
            ]

    def _receive(self, topic: str | Buffer, payload: Buffer, now_ms: int) -> list[Effect]:
        if type(payload) is not bytes:
            payload = bytes(payload)  # kept in dead letters and hashed for duplicate detection
        if not isinstance(topic, str | bytes):
            topic = bytes(topic)  # bytearray / memoryview: hashable for the cache
        parsed = self._topics.get(topic)
        if parsed is None:
            text = topic if isinstance(topic, str) else bytes(topic).decode("utf-8", "replace")
            try:
                parsed = parse_topic(topic)
            except TopicError as exc:
                if not self.config.publishes_state:
                    return []  # W1: worker 0 alone dead-letters what belongs to no edge node
                return [
                    Anomaly(
                        AnomalyKind.INVALID_TOPIC, str(exc), now_ms, text, dead_letter=True, payload=payload
                    )
                ]
            if len(self._topics) >= _TOPIC_CACHE:
                self._topics.clear()
            self._topics[topic] = parsed
        else:
            text = topic if isinstance(topic, str) else bytes(topic).decode("utf-8", "replace")
        if isinstance(parsed, StateTopic):
            return self._on_state(parsed, payload, now_ms)
        group, node_id, device = parsed.group, parsed.node, parsed.device
        if self._owned is not None:
            owned = self._owned.get((group, node_id))
            if owned is None:
                shard = self.config.shard
                assert shard is not None
                if len(self._owned) >= self.config.limits.max_edge_nodes * 2:
                    self._owned.clear()  # bounded even when a flood invents node names
                owned = self._owned[(group, node_id)] = shard_of(group, node_id, shard[1]) == shard[0]
            if not owned:
                return []  # another worker's edge node (W1)
        limits = self.config.limits
        if len(payload) > limits.max_payload_bytes:
            return [
                self._dead(
                    AnomalyKind.LIMIT_EXCEEDED,
                    f"payload of {len(payload)} bytes exceeds the limit of {limits.max_payload_bytes}"
                    " (host.limits.max_payload_bytes)",
                    now_ms,
                    text,
                    parsed,
                    payload,
                )
            ]
        try:
            decoded = decode_payload(payload)
        except PayloadError as exc:
            effects: list[Effect] = [
                self._dead(AnomalyKind.DECODE_ERROR, str(exc), now_ms, text, parsed, payload)
            ]
            known = self._nodes.get((group, node_id))
            if known is not None and parsed.message_type not in _NO_REBIRTH_ON_ERROR:
                effects.extend(self._request_rebirth(known, now_ms, "undecodable payload"))
            return effects
        if len(decoded.metrics) > limits.max_metrics_per_message:
            return [
                self._dead(
                    AnomalyKind.LIMIT_EXCEEDED,
                    f"{len(decoded.metrics)} metrics in one message exceed the limit of "
                    f"{limits.max_metrics_per_message} (host.limits.max_metrics_per_message)",
                    now_ms,
                    text,
                    parsed,
                    payload,
                )
            ]
        kind = parsed.message_type
        if kind in _COMMANDS:
            return []  # other hosts' (or our own) commands are not data (H5)
        if kind == MessageType.NBIRTH:
            return self._on_nbirth(parsed, decoded, payload, now_ms)
        if kind == MessageType.NDEATH:
            return self._on_ndeath(parsed, decoded, now_ms)
        node = self._nodes.get((group, node_id))
        if node is None or not node.online or node.expected is None:
            effects = [
                self._dead(
                    AnomalyKind.DATA_BEFORE_BIRTH,
                    f"{kind} for {group}/{node_id}{'/' + device if device else ''} before its node's NBIRTH",
                    now_ms,
                    text,
                    parsed,
                    payload,
                )
            ]
            if node is None and len(self._nodes) < limits.max_edge_nodes:
                node = self._nodes.setdefault((group, node_id), _Node(group, node_id))
            if node is not None:
                effects.extend(self._request_rebirth(node, now_ms, f"{kind} before NBIRTH"))
            return effects
        return self._sequenced(node, parsed, decoded, payload, now_ms)

    # ------------------------------------------------------------------ STATE (H3, H5)

    def _on_state(self, topic: StateTopic, payload: bytes, now_ms: int) -> list[Effect]:
        if topic.legacy or topic.host_id != self.config.host_id or not self.config.publishes_state:
            return []
        try:
            state = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return [Anomaly(AnomalyKind.PROTOCOL, "our STATE topic carries invalid JSON", now_ms, str(topic))]
        if self._connected and isinstance(state, dict) and state.get("online") is False:
            return [self._state(True)]
        return []

    # ------------------------------------------------------------------ births (N1, N2)

    def _on_nbirth(self, topic: SparkplugTopic, payload: Payload, raw: bytes, now_ms: int) -> list[Effect]:
        key = (topic.group, topic.node)
        node = self._nodes.get(key)
        if node is None:
            if len(self._nodes) >= self.config.limits.max_edge_nodes:
                return [
                    self._dead(
                        AnomalyKind.LIMIT_EXCEEDED,
                        f"a new edge node beyond the limit of {self.config.limits.max_edge_nodes} "
                        "(host.limits.max_edge_nodes)",
                        now_ms,
                        str(topic),
                        topic,
                        raw,
                    )
                ]
            node = self._nodes[key] = _Node(topic.group, topic.node)
        digest = hash(raw)
        if node.online and node.birth_digest == digest:
            return [
                Anomaly(
                    AnomalyKind.SEQ_DUPLICATE,
                    "the same NBIRTH delivered twice: dropped",
                    now_ms,
                    str(topic),
                    topic.group,
                    topic.node,
                )
            ]
        effects: list[Effect] = self._release_held(node, now_ms, give_up=True)
        if node.online:
            effects.extend(self._node_offline(node, now_ms, "rebirth", keep_node_online_flag=False))
        when = payload.timestamp if payload.timestamp is not None else now_ms
        templates = TemplateCatalog.from_metrics(payload.metrics)
        bd_seq = None
        for metric in payload.metrics:
            if metric.name == BDSEQ_METRIC and type(metric.value) is int:
                bd_seq = metric.value
        catalog: dict[str, MetricInfo] = {}
        aliases: dict[int, MetricInfo] = {}
        problems: list[str] = []
        samples: list[Sample] = []
        birth_values: list[tuple[str, Value]] = []
        for metric in payload.metrics:
            if (
                metric.datatype == DataType.Template
                and isinstance(metric.value, Template)
                and metric.value.is_definition
            ):
                continue
            self._define(
                node, None, metric, templates, catalog, aliases, problems, samples, birth_values, when
            )
        if len(catalog) > self.config.limits.max_metrics_per_node:
            return [
                *effects,
                self._dead(
                    AnomalyKind.LIMIT_EXCEEDED,
                    f"NBIRTH defines {len(catalog)} metrics, over host.limits.max_metrics_per_node",
                    now_ms,
                    str(topic),
                    topic,
                    raw,
                ),
            ]
        node.online = True
        node.birth_digest = digest
        node.bd_seq = bd_seq
        node.metrics = catalog
        node.aliases = aliases
        node.templates = templates
        node.devices = {}
        node.recent = {}
        node.given_up = set()
        node.gap_deadline = None
        node.deferred_rebirth = None
        node.expected = ((payload.seq if payload.seq is not None else 0) + 1) % 256
        if payload.seq is not None:
            node.recent[payload.seq] = hash(raw)
        effects.append(NodeOnline(topic.group, topic.node, bd_seq, now_ms))
        effects.append(
            MetricsDefined(topic.group, topic.node, None, tuple(catalog.values()), when, tuple(birth_values))
        )
        return self._birth_tail(effects, topic, payload, raw, now_ms, samples, problems)

    def _refuse_oversized(
        self, samples: list[Sample], effects: list[Effect], topic: SparkplugTopic, raw: bytes, now_ms: int
    ) -> list[Sample]:
        """B2: the samples within ``max_value_bytes`` / ``max_array_length``; the others are not
        stored, and one LIMIT_EXCEEDED dead letter (appended to ``effects``) keeps the message. The
        rest of the message applies: a birth still defines the metric."""
        limits = self.config.limits
        kept: list[Sample] = []
        problems: list[str] = []
        for sample in samples:
            problem = _value_too_large(sample.value, limits)
            if problem is None:
                kept.append(sample)
            else:
                problems.append(f"metric {sample.metric.name!r}: {problem}")
        if problems:
            effects.append(
                self._dead(AnomalyKind.LIMIT_EXCEEDED, _summary(problems, 5), now_ms, str(topic), topic, raw)
            )
        return kept

    def _birth_tail(
        self,
        effects: list[Effect],
        topic: SparkplugTopic,
        payload: Payload,
        raw: bytes,
        now_ms: int,
        samples: list[Sample],
        problems: list[str],
    ) -> list[Effect]:
        """What every birth ends with: its values, missing-timestamp reports, and its problems kept."""
        if len(raw) > self._scan_values_above:
            samples = self._refuse_oversized(samples, effects, topic, raw, now_ms)
        if samples:
            effects.append(Samples(tuple(samples), payload.seq))
        if payload.timestamp is None:
            effects.extend(_missing_timestamps(payload, topic, now_ms))
        if problems:
            effects.append(
                self._dead(AnomalyKind.PROTOCOL, "; ".join(problems), now_ms, str(topic), topic, raw)
            )
        return effects

    def _on_dbirth(
        self, node: _Node, topic: SparkplugTopic, payload: Payload, raw: bytes, now_ms: int
    ) -> list[Effect]:
        assert topic.device is not None
        effects: list[Effect] = []
        device = node.devices.get(topic.device)
        if device is None:
            if len(node.devices) >= self.config.limits.max_devices_per_node:
                return [
                    self._dead(
                        AnomalyKind.LIMIT_EXCEEDED,
                        f"device beyond the limit of {self.config.limits.max_devices_per_node} per node "
                        "(host.limits.max_devices_per_node)",
                        now_ms,
                        str(topic),
                        topic,
                        raw,
                    )
                ]
            device = node.devices[topic.device] = _Device(topic.device)
        elif device.metrics:
            if device.online:
                effects.extend(self._device_offline(node, device, now_ms, "rebirth"))
            for info in device.metrics.values():
                if info.alias is not None and node.aliases.get(info.alias) is info:
                    del node.aliases[info.alias]
        when = payload.timestamp if payload.timestamp is not None else now_ms
        catalog: dict[str, MetricInfo] = {}
        aliases: dict[int, MetricInfo] = {}
        problems: list[str] = []
        samples: list[Sample] = []
        birth_values: list[tuple[str, Value]] = []
        for metric in payload.metrics:
            if (
                metric.name is not None
                and metric.datatype == DataType.Template
                and isinstance(metric.value, Template)
                and metric.value.is_definition
            ):
                node.templates.add(metric.name, metric.value)  # belongs in NBIRTH; tolerated (V5)
                continue
            self._define(
                node,
                topic.device,
                metric,
                node.templates,
                catalog,
                aliases,
                problems,
                samples,
                birth_values,
                when,
            )
        others = sum(len(d.metrics) for d in node.devices.values() if d is not device)
        total = len(node.metrics) + others + len(catalog)
        if total > self.config.limits.max_metrics_per_node:
            return [
                *effects,
                self._dead(
                    AnomalyKind.LIMIT_EXCEEDED,
                    f"DBIRTH brings the node to {total} metrics, over host.limits.max_metrics_per_node",
                    now_ms,
                    str(topic),
                    topic,
                    raw,
                ),
            ]
        for alias, info in aliases.items():
            if alias in node.aliases:
                problems.append(f"alias {alias} of {info.name!r} is already used on this edge node")
                continue
            node.aliases[alias] = info
        device.metrics = catalog
        device.online = True
        effects.append(DeviceOnline(node.group, node.node, topic.device, now_ms))
        effects.append(
            MetricsDefined(
                node.group, node.node, topic.device, tuple(catalog.values()), when, tuple(birth_values)
            )
        )
        return self._birth_tail(effects, topic, payload, raw, now_ms, samples, problems)

    def _define(
        self,
        node: _Node,
        device: str | None,
        metric: Metric,
        templates: TemplateCatalog,
        catalog: dict[str, MetricInfo],
        aliases: dict[int, MetricInfo],
        problems: list[str],
        samples: list[Sample],
        birth_values: list[tuple[str, Value]],
        when: int,
    ) -> None:
        """Add one birth metric (and, for a template instance, its members) to a catalog."""
        if metric.name is None:
            problems.append(f"a birth metric (alias {metric.alias}) has no name")
            return
        if metric.datatype is None:
            problems.append(f"birth metric {metric.name!r} has no datatype")
            return
        info = _info(
            node.group,
            node.node,
            device,
            metric.name,
            metric.datatype,
            metric.alias,
            metric.properties,
            metadata=metric.metadata,
        )
        if metric.name in catalog:
            problems.append(f"metric {metric.name!r} is defined twice in one birth")
        catalog[metric.name] = info
        if metric.alias is not None:
            if metric.alias in aliases:
                problems.append(f"alias {metric.alias} is used by two metrics of one birth")
            aliases[metric.alias] = info
        if metric.datatype == DataType.Template and isinstance(metric.value, Template):
            expanded, member_problems = expand_instance(metric.name, metric.value, templates)
            problems.extend(member_problems)
            instance = metric.value
            for path, member in expanded:
                if member.datatype is None:
                    continue
                member_info = _info(
                    node.group,
                    node.node,
                    device,
                    path,
                    member.datatype,
                    None,
                    member.properties,
                    template_ref=instance.template_ref,
                    metadata=member.metadata,
                )
                catalog[path] = member_info
                birth_values.append((path, member.value))
                self._value(member_info, member, when, False, samples)
            birth_values.append((metric.name, metric.value))
            summary = Template(
                parameters=templates.parameters_of(instance),
                version=instance.version,
                template_ref=instance.template_ref,
            )
            self._value(info, metric._replace(value=summary), when, False, samples)
            return
        birth_values.append((metric.name, metric.value))
        self._value(info, metric, when, False, samples)

    # ------------------------------------------------------------------ values (V1-V4)

    @staticmethod
    def _value(
        info: MetricInfo, metric: Metric, fallback_ts: int, historical: bool, out: list[Sample]
    ) -> None:
        if metric.is_transient:
            return
        quality = _GOOD
        props = metric.properties
        if props is not None:
            quality = _quality(props, quality)
        ts = metric.timestamp if metric.timestamp is not None else fallback_ts
        out.append(
            Sample(
                info,
                ts,
                None if metric.is_null else metric.value,
                quality,
                historical or metric.is_historical,
            )
        )

    # ------------------------------------------------------------------ seq (S1-S4)

    def _sequenced(
        self, node: _Node, topic: SparkplugTopic, payload: Payload, raw: bytes, now_ms: int
    ) -> list[Effect]:
        seq = payload.seq
        if seq is None or not 0 <= seq <= 255:
            effects: list[Effect] = [
                self._dead(
                    AnomalyKind.PROTOCOL,
                    f"{topic.message_type} without a valid seq (0..255): {seq}",
                    now_ms,
                    str(topic),
                    topic,
                    raw,
                )
            ]
            return effects + self._request_rebirth(node, now_ms, "message without seq")
        assert node.expected is not None
        if seq == node.expected:
            node.given_up.discard(seq)
            effects = self._process(node, topic, payload, raw, now_ms, historical=False)
            node.recent[seq] = hash(raw)
            node.expected = (seq + 1) % 256
            if node.held:
                effects.extend(self._release_held(node, now_ms, give_up=False))
            return effects
        digest = hash(raw)
        if node.recent.get(seq) == digest or (seq in node.held and hash(node.held[seq].raw) == digest):
            return [
                Anomaly(
                    AnomalyKind.SEQ_DUPLICATE,
                    f"duplicate of seq {seq} dropped",
                    now_ms,
                    str(topic),
                    node.group,
                    node.node,
                    topic.device,
                )
            ]
        distance = (seq - node.expected) % 256
        if _HOLD_LIMIT <= distance < _AHEAD_WINDOW and node.held:
            missing = node.expected
            effects = self._release_held(node, now_ms, give_up=True)
            assert node.expected is not None
            if (seq - node.expected) % 256 < _AHEAD_WINDOW:
                node.given_up.update((node.expected + k) % 256 for k in range((seq - node.expected) % 256))
                node.expected = seq  # skip the rest of the gap
            effects.extend(
                self._request_rebirth(node, now_ms, f"seq {missing} still missing {distance} messages later")
            )
            return effects + self._sequenced(node, topic, payload, raw, now_ms)
        if distance < _AHEAD_WINDOW:
            effects = []
            if node.gap_deadline is None:
                node.gap_deadline = now_ms + self.config.reorder_timeout_ms
                effects.append(
                    Anomaly(
                        AnomalyKind.SEQ_GAP,
                        f"expected seq {node.expected}, got {seq}; holding for {self.config.reorder_timeout_ms} ms",
                        now_ms,
                        str(topic),
                        node.group,
                        node.node,
                        topic.device,
                    )
                )
            if seq in node.held:
                effects.append(
                    self._dead(
                        AnomalyKind.SEQ_DUPLICATE,
                        f"a different message reuses held seq {seq}",
                        now_ms,
                        str(topic),
                        topic,
                        raw,
                    )
                )
            else:
                node.held[seq] = _Held(topic, payload, raw, now_ms)
            return effects
        discontinuity = seq not in node.given_up
        node.given_up.discard(seq)
        if not discontinuity:
            reason = f"seq {seq} arrived after its gap was given up; stored as historical"
        else:
            reason = (
                f"seq {seq} is behind the expected {node.expected} and was never skipped (seq counter reset"
                " without a new NBIRTH?); stored as historical, rebirth requested"
            )
        effects = [
            Anomaly(AnomalyKind.SEQ_LATE, reason, now_ms, str(topic), node.group, node.node, topic.device)
        ]
        effects.extend(self._process(node, topic, payload, raw, now_ms, historical=True))
        if discontinuity:
            effects.extend(
                self._request_rebirth(node, now_ms, f"seq went back from {node.expected} to {seq}")
            )
        return effects

    def _release_held(self, node: _Node, now_ms: int, *, give_up: bool) -> list[Effect]:
        """Process held messages that are next in line; with ``give_up`` all of them, in seq order."""
        effects: list[Effect] = []
        while node.held and node.expected is not None:
            if node.expected in node.held:
                seq = node.expected
            elif give_up:
                seq = min(node.held, key=lambda s: (s - node.expected) % 256)  # type: ignore[operator]
                node.given_up.update((node.expected + k) % 256 for k in range((seq - node.expected) % 256))
            else:
                break
            node.given_up.discard(seq)
            held = node.held.pop(seq)
            effects.extend(
                self._process(node, held.topic, held.payload, held.raw, held.received, historical=False)
            )
            node.recent[seq] = hash(held.raw)
            node.expected = (seq + 1) % 256
        if not node.held:
            node.gap_deadline = None
        return effects

    def _release_all_held(self, now_ms: int) -> list[Effect]:
        effects: list[Effect] = []
        for node in self._nodes.values():
            if node.held:
                effects.extend(self._release_held(node, now_ms, give_up=True))
            node.gap_deadline = None
        return effects

    # ------------------------------------------------------------------ DBIRTH / DATA / DDEATH

    def _process(
        self,
        node: _Node,
        topic: SparkplugTopic,
        payload: Payload,
        raw: bytes,
        now_ms: int,
        *,
        historical: bool,
    ) -> list[Effect]:
        kind = topic.message_type
        if kind == MessageType.DBIRTH:
            return self._on_dbirth(node, topic, payload, raw, now_ms)
        if kind == MessageType.DDEATH:
            return self._on_ddeath(node, topic, payload, now_ms)
        device: _Device | None = None
        if topic.device is not None:
            device = node.devices.get(topic.device)
            if device is None or not device.online:
                return [
                    self._dead(
                        AnomalyKind.DATA_BEFORE_BIRTH,
                        f"DDATA for device {topic.device!r} before its DBIRTH",
                        now_ms,
                        str(topic),
                        topic,
                        raw,
                    ),
                    *self._request_rebirth(node, now_ms, f"DDATA before DBIRTH of {topic.device}"),
                ]
        catalog = node.metrics if device is None else device.metrics
        fallback = payload.timestamp if payload.timestamp is not None else now_ms
        samples: list[Sample] = []
        append = samples.append
        problems: list[str] = []
        unknown = ""
        aliases = node.aliases
        device_id = topic.device
        metrics = payload.metrics
        plain = _native_plain if type(metrics) is tuple else None
        i, count = 0, len(metrics)
        while i < count:  # the hot path: keep per-metric work small
            if plain is not None:
                # the native loop does the plain metrics and stops at each other one, which this loop does
                i = plain(metrics, i, aliases, device_id, fallback, historical, samples, _PLAIN_RULES)
                if i >= count:
                    break
            metric = metrics[i]
            i += 1
            # one unpack instead of ten NamedTuple attribute lookups
            name, alias, ts, datatype, value, is_historical, is_transient, is_null, _, props = metric
            if name is None:
                info = aliases.get(alias) if alias is not None else None
                if info is None or info.device != device_id:
                    problems.append(f"unknown alias {alias}")
                    unknown = unknown or AnomalyKind.UNKNOWN_ALIAS
                    continue
            else:
                info = catalog.get(name)
                if info is None:
                    problems.append(f"unknown metric name {name!r}")
                    unknown = unknown or AnomalyKind.UNKNOWN_METRIC
                    continue
            if datatype is None:
                if value is not None:
                    born = info.datatype
                    bound = _INT_BOUND.get(born)
                    if bound is not None:
                        passes = type(value) is int and value < bound
                    else:
                        passes = type(value) is _PASS_TYPE.get(born)
                    if not passes:
                        try:
                            value = coerce_value(born, value, "")
                        except PayloadError:
                            problems.append(_coerce_problem(info, value))
                            continue
            elif datatype != info.datatype:
                problems.append(
                    f"metric {info.name!r} sent as {datatype_name(datatype)}, "
                    f"born as {datatype_name(info.datatype)}"
                )
                continue
            if type(value) is Template and info.datatype == DataType.Template:
                metric = metric._replace(datatype=info.datatype, value=value)
                self._template_data(node, device, info, metric, fallback, historical, samples, problems)
                continue
            if is_transient:
                continue
            quality = _GOOD if props is None else _quality(props, _GOOD)
            append(
                _new(
                    Sample,
                    (
                        info,
                        fallback if ts is None else ts,
                        None if is_null else value,
                        quality,
                        historical or is_historical,
                    ),
                )
            )
        effects: list[Effect] = []
        if len(raw) > self._scan_values_above:
            samples = self._refuse_oversized(samples, effects, topic, raw, now_ms)
        if samples:
            effects.append(Samples(tuple(samples), payload.seq))
        if payload.timestamp is None:
            effects.extend(_missing_timestamps(payload, topic, now_ms))
        if problems:
            effects.append(
                self._dead(
                    AnomalyKind(unknown) if unknown else AnomalyKind.TYPE_MISMATCH,
                    _summary(problems, 10),
                    now_ms,
                    str(topic),
                    topic,
                    raw,
                )
            )
            effects.extend(self._request_rebirth(node, now_ms, problems[0]))
        return effects

    def _template_data(
        self,
        node: _Node,
        device: _Device | None,
        info: MetricInfo,
        metric: Metric,
        fallback: int,
        historical: bool,
        samples: list[Sample],
        problems: list[str],
    ) -> None:
        catalog = node.metrics if device is None else device.metrics
        assert isinstance(metric.value, Template)
        expanded, member_problems = expand_instance(
            info.name, metric.value, node.templates, require_complete=False
        )
        problems.extend(member_problems)
        ts = metric.timestamp if metric.timestamp is not None else fallback
        for path, member in expanded:
            member_info = catalog.get(path)
            if member_info is None:
                problems.append(f"unknown template member {path!r}")
                continue
            if member.datatype is not None and member.datatype != member_info.datatype:
                problems.append(
                    f"template member {path!r} sent as {datatype_name(member.datatype)}, "
                    f"born as {datatype_name(member_info.datatype)}"
                )
                continue
            if member.datatype is None:
                try:
                    member = member._replace(
                        datatype=member_info.datatype,
                        value=coerce_value(member_info.datatype, member.value, f"member {path!r}"),
                    )
                except PayloadError as exc:
                    problems.append(str(exc))
                    continue
            self._value(member_info, member, ts, historical or metric.is_historical, samples)

    def _on_ddeath(self, node: _Node, topic: SparkplugTopic, payload: Payload, now_ms: int) -> list[Effect]:
        assert topic.device is not None
        device = node.devices.get(topic.device)
        when = payload.timestamp if payload.timestamp is not None else now_ms
        if device is None or not device.online:
            return [
                Anomaly(
                    AnomalyKind.STALE_DEATH,
                    f"DDEATH for device {topic.device!r} that is not online: ignored",
                    now_ms,
                    str(topic),
                    node.group,
                    node.node,
                    topic.device,
                )
            ]
        return self._device_offline(node, device, when, "DDEATH")

    def _on_ndeath(self, topic: SparkplugTopic, payload: Payload, now_ms: int) -> list[Effect]:
        node = self._nodes.get((topic.group, topic.node))
        bd_seq = None
        for metric in payload.metrics:
            name = metric.name
            if name is None and metric.alias is not None and node is not None:
                born = node.aliases.get(metric.alias)  # a bdSeq sent by alias only (N3)
                name = born.name if born is not None and born.device is None else None
            if name == BDSEQ_METRIC and type(metric.value) is int:
                bd_seq = metric.value
        if node is None or not node.online:
            return [
                Anomaly(
                    AnomalyKind.STALE_DEATH,
                    "NDEATH for an edge node that is not online: ignored",
                    now_ms,
                    str(topic),
                    topic.group,
                    topic.node,
                )
            ]
        if node.bd_seq is not None and bd_seq != node.bd_seq:
            return [
                Anomaly(
                    AnomalyKind.STALE_DEATH,
                    f"NDEATH with bdSeq {bd_seq} does not match the current NBIRTH's bdSeq {node.bd_seq}: ignored",
                    now_ms,
                    str(topic),
                    topic.group,
                    topic.node,
                )
            ]
        effects = self._release_held(node, now_ms, give_up=True)
        effects.extend(self._node_offline(node, now_ms, "NDEATH"))
        return effects

    # ------------------------------------------------------------------ offline transitions

    def _node_offline(
        self, node: _Node, now_ms: int, reason: str, *, keep_node_online_flag: bool = False
    ) -> list[Effect]:
        if not node.online:
            return []
        effects: list[Effect] = []
        for device in node.devices.values():
            if device.online:
                effects.extend(self._device_offline(node, device, now_ms, reason))
        node.online = keep_node_online_flag
        node.gap_deadline = None
        effects.append(NodeOffline(node.group, node.node, now_ms, reason, node.bd_seq))
        if node.metrics:
            effects.append(MetricsStale(tuple(node.metrics.values()), now_ms, reason))
        return effects

    def _device_offline(self, node: _Node, device: _Device, when: int, reason: str) -> list[Effect]:
        device.online = False
        effects: list[Effect] = [DeviceOffline(node.group, node.node, device.device, when, reason)]
        if device.metrics:
            effects.append(MetricsStale(tuple(device.metrics.values()), when, reason))
        return effects

    # ------------------------------------------------------------------ rebirth requests (R1-R3)

    def _request_rebirth(self, node: _Node, now_ms: int, reason: str) -> list[Effect]:
        if self.config.role != "active" or not self._connected:
            return []
        interval = self.config.rebirth_interval_ms
        if node.last_rebirth is not None and now_ms - node.last_rebirth < interval:
            if node.deferred_rebirth is None:
                node.deferred_rebirth = node.last_rebirth + interval
                node.deferred_reason = reason
            return []
        node.last_rebirth = now_ms
        node.deferred_rebirth = None
        command = Payload(now_ms, (Metric(REBIRTH_METRIC, None, now_ms, DataType.Boolean, True),))
        return [
            Publish(f"spBv1.0/{node.group}/NCMD/{node.node}", encode_payload(command), 0, False),
            RebirthRequested(node.group, node.node, now_ms, reason),
        ]

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _dead(
        kind: AnomalyKind, reason: str, now_ms: int, text: str, topic: SparkplugTopic, payload: bytes
    ) -> Anomaly:
        return Anomaly(kind, reason, now_ms, text, topic.group, topic.node, topic.device, True, payload)

    # introspection for tests and operations
    def node_online(self, group: str, node: str) -> bool:
        state = self._nodes.get((group, node))
        return bool(state and state.online)

    def known_nodes(self) -> list[tuple[str, str]]:
        return list(self._nodes)

    def metric_count(self) -> int:
        return sum(len(node.all_metrics()) for node in self._nodes.values())


def _info(
    group: str,
    node: str,
    device: str | None,
    name: str,
    datatype: int,
    alias: int | None,
    properties: PropertySet | None,
    template_ref: str | None = None,
    metadata: MetaData | None = None,
) -> MetricInfo:
    """The catalog entry of a birth metric: unit from ``engUnit``, description from the property
    ``description`` (or ``documentation``), else the metadata's description (V4)."""
    unit = description = None
    if properties is not None:
        for key, value in properties.items:
            if key in ("engUnit", "engUnits", "unit") and type(value.value) is str:
                unit = unit or value.value
            elif key in ("description", "documentation", "Description") and type(value.value) is str:
                description = description or value.value
    if description is None and metadata is not None and metadata.description:
        description = metadata.description
    return MetricInfo(group, node, device, name, datatype, alias, unit, description, properties, template_ref)


def _summary(problems: list[str], shown: int) -> str:
    """The first ``shown`` problems joined, and how many more there were."""
    more = len(problems) - shown
    return "; ".join(problems[:shown]) + (f" (+{more} more)" if more > 0 else "")


def _value_too_large(value: object, limits: HostLimits) -> str | None:
    """Why a sample's value breaks ``max_value_bytes`` / ``max_array_length``, or ``None``."""
    if isinstance(value, str | bytes):
        size = len(value) if isinstance(value, bytes) else len(value.encode("utf-8", "surrogatepass"))
        if size > limits.max_value_bytes:
            return f"a value of {size} bytes exceeds host.limits.max_value_bytes ({limits.max_value_bytes})"
    elif isinstance(value, tuple) and len(value) > limits.max_array_length:
        return f"{len(value)} elements exceed host.limits.max_array_length ({limits.max_array_length})"
    elif isinstance(value, DataSet) and len(value.rows) > limits.max_array_length:
        return (
            f"a DataSet of {len(value.rows)} rows exceeds host.limits.max_array_length "
            f"({limits.max_array_length})"
        )
    return None


def _quality(props: PropertySet, default: Quality) -> Quality:
    """The quality a metric's ``Quality`` property gives (V4): 0 BAD, 192 GOOD, 500 STALE."""
    q = props.get("Quality")
    if q is None or type(q.value) is not int:
        return default
    return _QUALITY.get(q.value, Quality.BAD if q.value < 192 else Quality.GOOD)


def _coerce_problem(info: MetricInfo, value: object) -> str:
    try:
        coerce_value(info.datatype, value, f"metric {info.name!r}")
    except PayloadError as exc:
        return str(exc)
    return f"metric {info.name!r}: value does not fit {datatype_name(info.datatype)}"


def _missing_timestamps(payload: Payload, topic: SparkplugTopic, now_ms: int) -> list[Effect]:
    """V1's diagnostic: values without metric or payload timestamp were given the receive time."""
    missing = sum(1 for m in payload.metrics if m.timestamp is None)
    if not missing:
        return []
    return [
        Anomaly(
            AnomalyKind.MISSING_TIMESTAMP,
            f"{missing} value(s) without a metric timestamp in a payload without a timestamp: "
            f"the receive time {now_ms} was used",
            now_ms,
            str(topic),
            topic.group,
            topic.node,
            topic.device,
        )
    ]
