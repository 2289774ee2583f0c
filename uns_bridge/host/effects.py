"""What the host core decides: small immutable values that sinks consume.

Sinks (the store writer, the UNS publisher, the MQTT session) act on effects and never re-interpret
Sparkplug. Times are integer milliseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from uns_bridge.sparkplug.values import PropertySet, Value


class Quality(StrEnum):
    """Quality of a value as republished and stored (Sparkplug property ``Quality``: 0, 192, 500)."""

    GOOD = "GOOD"
    BAD = "BAD"
    STALE = "STALE"


@dataclass(frozen=True, slots=True, eq=False)
class MetricInfo:
    """A metric's catalog entry, as its birth defined it.

    Identity-hashed on purpose: one object per metric per birth session, so sinks may cache per metric
    in a dict keyed by the object itself. ``key`` is the stable identity across sessions.
    """

    group: str
    node: str
    device: str | None
    name: str
    datatype: int
    alias: int | None = None
    unit: str | None = None
    description: str | None = None
    properties: PropertySet | None = None
    #: template instance members: the ``template_ref`` of the instance the member belongs to
    template_ref: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None, str]:
        return (self.group, self.node, self.device, self.name)


class Sample(NamedTuple):
    """One value of one metric at its own timestamp."""

    metric: MetricInfo
    timestamp: int
    value: Value
    quality: Quality = Quality.GOOD
    is_historical: bool = False


@dataclass(frozen=True, slots=True)
class NodeOnline:
    group: str
    node: str
    bd_seq: int | None
    timestamp: int


@dataclass(frozen=True, slots=True)
class NodeOffline:
    group: str
    node: str
    timestamp: int
    #: "NDEATH", "connection lost", "host shutdown", "rebirth" (a new NBIRTH without a death)
    reason: str
    bd_seq: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    group: str
    node: str
    device: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    group: str
    node: str
    device: str
    timestamp: int
    reason: str


@dataclass(frozen=True, slots=True)
class MetricsDefined:
    """A birth (re)defined the catalog of one node (``device is None``) or one device."""

    group: str
    node: str
    device: str | None
    metrics: tuple[MetricInfo, ...]
    timestamp: int
    #: values of the birth's hierarchy hints (``Device_Information/ISA95_Hierarchy/Site`` ... ), by name
    birth_metrics: tuple[tuple[str, Value], ...] = ()


@dataclass(frozen=True, slots=True)
class Samples:
    """Values to store (unless ``is_transient`` was set, in which case the host emits none)."""

    samples: tuple[Sample, ...]
    #: Sparkplug seq of the carrying message, when it had one
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class MetricsStale:
    """These metrics are now STALE (a death, a connection loss, a new birth session)."""

    metrics: tuple[MetricInfo, ...]
    timestamp: int
    reason: str


@dataclass(frozen=True, slots=True)
class Publish:
    """An MQTT message the host wants on the wire: STATE, or a command such as a rebirth request."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class RebirthRequested:
    """Reported alongside the :class:`Publish` of a rebirth NCMD (for lifecycle and metrics)."""

    group: str
    node: str
    timestamp: int
    reason: str


class AnomalyKind(StrEnum):
    SEQ_GAP = "seq_gap"
    SEQ_LATE = "seq_late"
    SEQ_DUPLICATE = "seq_duplicate"
    UNKNOWN_ALIAS = "unknown_alias"
    UNKNOWN_METRIC = "unknown_metric"
    DATA_BEFORE_BIRTH = "data_before_birth"
    STALE_DEATH = "stale_death"
    DECODE_ERROR = "decode_error"
    INVALID_TOPIC = "invalid_topic"
    TYPE_MISMATCH = "type_mismatch"
    LIMIT_EXCEEDED = "limit_exceeded"
    PROTOCOL = "protocol"
    #: a value had neither a metric nor a payload timestamp: the receive time was used (not a dead letter)
    MISSING_TIMESTAMP = "missing_timestamp"


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something that broke a rule. ``dead_letter`` is set when the message itself must be kept."""

    kind: AnomalyKind
    reason: str
    timestamp: int
    topic: str
    group: str | None = None
    node: str | None = None
    device: str | None = None
    dead_letter: bool = False
    payload: bytes | None = field(default=None, repr=False)


Effect = (
    NodeOnline
    | NodeOffline
    | DeviceOnline
    | DeviceOffline
    | MetricsDefined
    | Samples
    | MetricsStale
    | Publish
    | RebirthRequested
    | Anomaly
)
