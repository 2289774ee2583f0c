"""One simulated Sparkplug B edge node with its devices: pure, deterministic, no I/O.

It behaves as the specification asks of an edge node:

- ``bdSeq``: the NDEATH registered as the MQTT Will of a connection carries metric ``bdSeq`` (Int64);
  the NBIRTH of that connection carries the same value. Every new MQTT connection takes the next value
  (0..255, wrapping); a rebirth within one connection keeps it.
- ``seq``: NBIRTH carries 0; every later NBIRTH/DBIRTH/NDATA/DDATA/DDEATH of the node and all its devices
  takes the next value, 255 wrapping to 0. NDEATH carries none.
- Births list every metric with name, alias, datatype and value; DATA carries aliases only (no names),
  with a timestamp per metric. Aliases are unique across the node and its devices.
- NCMD ``Node Control/Rebirth`` = true: NBIRTH + every DBIRTH again. DCMD/NCMD writes to a known metric
  are applied and reported in the next DATA.
- A template definition ``_types_/Motor`` sits in the NBIRTH; device instances refer to it as ``Motor``
  (as several real senders do). Properties ``engUnit`` and ``Quality`` (192 GOOD) travel in births.
- The ISA-95 position of the node is published as String metrics ``Device_Information/ISA95_Hierarchy/
  Enterprise``, ``Site``, ``Area`` and ``Line`` in the NBIRTH.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from uns_bridge.simulator import signals as sig
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.values import (
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    Template,
    TemplateParameter,
    Value,
)

NAMESPACE = "spBv1.0"
HIERARCHY = "Device_Information/ISA95_Hierarchy"
MOTOR_DEFINITION = "_types_/Motor"
MOTOR_REF = "Motor"
QUALITY_GOOD = 192


class SimMessage(NamedTuple):
    """One MQTT message a simulated node sends (``payload`` already encoded)."""

    t_ms: int
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


def _props(unit: str | None) -> PropertySet:
    items: list[tuple[str, PropertyValue]] = []
    if unit:
        items.append(("engUnit", PropertyValue(DataType.String, unit)))
    items.append(("Quality", PropertyValue(DataType.Int32, QUALITY_GOOD)))
    return PropertySet(tuple(items))


@dataclass
class SimMetric:
    """A metric of a node or device: name, alias, datatype and what produces its values."""

    name: str
    alias: int
    datatype: int
    signal: sig.Signal | None = None
    unit: str | None = None
    #: template instance members (relative names), each with its own signal
    members: tuple[SimMetric, ...] = ()
    #: a value set by a command, reported in the next DATA
    written: Value | sig.Unchanged = sig.UNCHANGED

    def current(self, timestamp: int | None = None) -> Value:
        if self.members:
            return _motor_instance(self.members, full=True, timestamp=timestamp)
        return None if self.signal is None else self.signal.value


def _motor_members() -> tuple[SimMetric, ...]:
    return (
        SimMetric("Speed", 0, DataType.Float, sig.Analog(1450, 40, 3, 90, decimals=1), "rpm"),
        SimMetric("Current", 0, DataType.Float, sig.Analog(12, 2, 0.2, 60, decimals=2), "A"),
        SimMetric("Temperature", 0, DataType.Float, sig.Analog(45, 3, 0.1, 600, decimals=1), "degC"),
        SimMetric("Running", 0, DataType.Boolean, sig.Alarm(0.05, 0.05, value=True)),
    )


def _motor_instance(
    members: tuple[SimMetric, ...],
    *,
    full: bool,
    changed: dict[str, Value] | None = None,
    timestamp: int | None = None,
) -> Template:
    chosen = [m for m in members if full or (changed is not None and m.name in changed)]
    return Template(
        metrics=tuple(
            Metric(
                m.name,
                None,
                timestamp,
                m.datatype,
                m.current() if changed is None else changed[m.name],
                properties=_props(m.unit) if full else None,
            )
            for m in chosen
        ),
        parameters=(TemplateParameter("RatedPower", DataType.Float, 7.5),) if full else (),
        template_ref=MOTOR_REF,
    )


def motor_definition() -> Template:
    return Template(
        metrics=tuple(Metric(m.name, None, None, m.datatype, m.current()) for m in _motor_members()),
        parameters=(TemplateParameter("RatedPower", DataType.Float, 5.5),),
        version="1.0",
        is_definition=True,
    )


#: device metric catalog, cycled when more metrics are asked for (a repeat gets a number suffix)
def _catalog(state: sig.StateMachine) -> list[Callable[[], SimMetric]]:
    return [
        lambda: SimMetric("Temperature", 0, DataType.Double, sig.Analog(60, 5, 0.2, 300), "degC"),
        lambda: SimMetric(MOTOR_REF, 0, DataType.Template, members=_motor_members()),
        lambda: SimMetric("Count", 0, DataType.UInt64, sig.Counter(3), "parts"),
        lambda: SimMetric("State", 0, DataType.String, state),
        lambda: SimMetric("StateCode", 0, DataType.Int32, sig.StateCode(state)),
        lambda: SimMetric("Alarms/HighTemperature", 0, DataType.Boolean, sig.Alarm()),
        lambda: SimMetric("Pressure", 0, DataType.Float, sig.Analog(4, 0.5, 0.05, 120, decimals=2), "bar"),
        lambda: SimMetric("Batch", 0, DataType.String, sig.Text()),
        lambda: SimMetric("Recipe", 0, DataType.DataSet, sig.Recipe()),
        lambda: SimMetric("Vibration/Spectrum", 0, DataType.FloatArray, sig.Spectrum()),
        lambda: SimMetric("Offset", 0, DataType.Int8, sig.SignedOffset()),
    ]


@dataclass
class SimDevice:
    id: str
    metrics: list[SimMetric]
    online: bool = False


@dataclass
class NodeIdentity:
    group: str
    node: str
    enterprise: str = "AcmeMotors"
    site: str = "Plant1"
    area: str = "Assembly"
    line: str = "Line1"


@dataclass
class EdgeNode:
    """A simulated edge node. ``encode`` turns a :class:`Payload` into bytes (the codec's encoder)."""

    identity: NodeIdentity
    device_ids: tuple[str, ...]
    metrics_per_device: int
    seed: int
    encode: Callable[[Payload], bytes]
    #: DATA metrics carry their datatype on the wire (the specification allows both; many senders omit
    #: it). Informational here: the encoder given by the fleet does the omitting.
    data_datatypes: bool = False
    bd_seq: int = 0
    seq: int = 0
    rng: random.Random = field(init=False)
    node_metrics: list[SimMetric] = field(init=False)
    devices: list[SimDevice] = field(init=False)
    connected: bool = False
    births_sent: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        alias = iter(range(1, 1 << 31))
        ident = self.identity
        self.node_metrics = [
            SimMetric("bdSeq", 0, DataType.Int64),
            SimMetric("Node Control/Rebirth", next(alias), DataType.Boolean, sig.Static(False)),
            SimMetric("Properties/Firmware", next(alias), DataType.String, sig.Static("fw-3.1.4")),
            SimMetric(f"{HIERARCHY}/Enterprise", next(alias), DataType.String, sig.Static(ident.enterprise)),
            SimMetric(f"{HIERARCHY}/Site", next(alias), DataType.String, sig.Static(ident.site)),
            SimMetric(f"{HIERARCHY}/Area", next(alias), DataType.String, sig.Static(ident.area)),
            SimMetric(f"{HIERARCHY}/Line", next(alias), DataType.String, sig.Static(ident.line)),
            SimMetric("Uptime", next(alias), DataType.Int64, sig.Counter(1000), "ms"),
        ]
        self.devices = []
        for device_id in self.device_ids:
            state = sig.StateMachine()
            catalog = _catalog(state)
            metrics = []
            for k in range(self.metrics_per_device):
                metric = catalog[k % len(catalog)]()
                if k >= len(catalog):
                    metric.name = f"{metric.name}{k // len(catalog) + 1}"
                metric.alias = next(alias)
                metrics.append(metric)
            self.devices.append(SimDevice(device_id, metrics))
        self._by_alias = {m.alias: m for m in self.node_metrics if m.alias} | {
            m.alias: m for d in self.devices for m in d.metrics
        }
        self._has_templates = any(m.members for d in self.devices for m in d.metrics)

    # ---------------------------------------------------------------------------------------- topics
    def topic(self, kind: str, device: str | None = None) -> str:
        base = f"{NAMESPACE}/{self.identity.group}/{kind}/{self.identity.node}"
        return base if device is None else f"{base}/{device}"

    def _next_seq(self) -> int:
        value = self.seq
        self.seq = (self.seq + 1) % 256
        return value

    # ------------------------------------------------------------------------------------- lifecycle
    def will(self, now_ms: int) -> SimMessage:
        """The NDEATH to register as the Will of the connection about to be made (QoS 1, not retained)."""
        payload = Payload(now_ms, (Metric("bdSeq", None, now_ms, DataType.Int64, self.bd_seq),))
        return SimMessage(now_ms, self.topic("NDEATH"), self.encode(payload), 1, False)

    def connection_made(self) -> None:
        self.connected = True

    def connection_closed(self) -> None:
        """The connection ended (cleanly or not): the next one takes the next bdSeq."""
        self.connected = False
        self.bd_seq = (self.bd_seq + 1) % 256
        for device in self.devices:
            device.online = False

    def births(self, now_ms: int) -> list[SimMessage]:
        """NBIRTH (seq 0) and every DBIRTH, listing every metric with its current value."""
        self.seq = 0
        self.births_sent += 1
        metrics: list[Metric] = []
        for m in self.node_metrics:
            value: Value = self.bd_seq if m.name == "bdSeq" else m.current()
            metrics.append(
                Metric(
                    m.name,
                    m.alias or None,
                    now_ms,
                    m.datatype,
                    value,
                    properties=_props(m.unit) if m.unit else None,
                )
            )
        if self._has_templates:
            metrics.append(Metric(MOTOR_DEFINITION, None, now_ms, DataType.Template, motor_definition()))
        out = [
            SimMessage(
                now_ms, self.topic("NBIRTH"), self.encode(Payload(now_ms, tuple(metrics), self._next_seq()))
            )
        ]
        for device in self.devices:
            out.append(self._device_birth(device, now_ms))
        return out

    def _device_birth(self, device: SimDevice, now_ms: int) -> SimMessage:
        metrics = tuple(
            Metric(m.name, m.alias, now_ms, m.datatype, m.current(now_ms), properties=_props(m.unit))
            for m in device.metrics
        )
        device.online = True
        payload = Payload(now_ms, metrics, self._next_seq())
        return SimMessage(now_ms, self.topic("DBIRTH", device.id), self.encode(payload))

    def device_death(self, index: int, now_ms: int) -> SimMessage:
        device = self.devices[index]
        device.online = False
        payload = Payload(now_ms, (), self._next_seq())
        return SimMessage(now_ms, self.topic("DDEATH", device.id), self.encode(payload))

    def device_rebirth(self, index: int, now_ms: int) -> SimMessage:
        return self._device_birth(self.devices[index], now_ms)

    def clean_death(self, now_ms: int) -> SimMessage:
        """An NDEATH the node publishes itself before a clean disconnect (same bdSeq as the Will)."""
        return self.will(now_ms)

    # ------------------------------------------------------------------------------------------- data
    def data(self, now_ms: int) -> list[SimMessage]:
        """One round of report-by-exception: NDATA if node metrics changed, a DDATA per online device."""
        out: list[SimMessage] = []
        node_changes = self._changes(self.node_metrics, now_ms)
        if node_changes:
            out.append(
                SimMessage(
                    now_ms,
                    self.topic("NDATA"),
                    self.encode(Payload(now_ms, tuple(node_changes), self._next_seq())),
                )
            )
        for device in self.devices:
            if not device.online:
                continue
            changes = self._changes(device.metrics, now_ms)
            if changes:
                payload = Payload(now_ms, tuple(changes), self._next_seq())
                out.append(SimMessage(now_ms, self.topic("DDATA", device.id), self.encode(payload)))
        return out

    def _changes(self, metrics: list[SimMetric], now_ms: int) -> list[Metric]:
        out: list[Metric] = []
        for m in metrics:
            datatype = m.datatype  # the encoder leaves it out of alias-only metrics unless data_datatypes
            if m.members:
                changed: dict[str, Value] = {}
                for member in m.members:
                    assert member.signal is not None
                    step = member.signal.step(now_ms, self.rng)
                    if not isinstance(step, sig.Unchanged):
                        changed[member.name] = step
                if changed:
                    out.append(
                        Metric(
                            None,
                            m.alias,
                            now_ms,
                            datatype,
                            _motor_instance(m.members, full=False, changed=changed, timestamp=now_ms),
                        )
                    )
                continue
            value: Value | sig.Unchanged
            if not isinstance(m.written, sig.Unchanged):
                value, m.written = m.written, sig.UNCHANGED
                if m.signal is not None:
                    m.signal.value = value
            elif m.signal is None:
                continue
            else:
                value = m.signal.step(now_ms, self.rng)
            if not isinstance(value, sig.Unchanged):
                out.append(Metric(None, m.alias, now_ms, datatype, value))
        return out

    # --------------------------------------------------------------------------------------- commands
    def command(self, topic: str, metrics: tuple[Metric, ...], now_ms: int) -> list[SimMessage]:
        """Answer an NCMD/DCMD: rebirth, or writes to known metrics (reported in the next DATA)."""
        parts = topic.split("/")
        if len(parts) < 4 or parts[1] != self.identity.group or parts[3] != self.identity.node:
            return []
        if parts[2] == "NCMD":
            for metric in metrics:
                name = metric.name or ""
                target = self._by_alias.get(metric.alias) if metric.alias is not None else None
                is_rebirth = name == "Node Control/Rebirth" or (
                    target is not None and target.name == "Node Control/Rebirth"
                )
                if is_rebirth and (metric.value is True or metric.value == 1):
                    return self.births(now_ms)
            self._writes(self.node_metrics, metrics)
        elif parts[2] == "DCMD" and len(parts) == 5:
            for device in self.devices:
                if device.id == parts[4]:
                    self._writes(device.metrics, metrics)
        return []

    def _writes(self, targets: list[SimMetric], metrics: tuple[Metric, ...]) -> None:
        by_name = {m.name: m for m in targets}
        by_alias = {m.alias: m for m in targets if m.alias}
        for metric in metrics:
            target = by_name.get(metric.name or "") or (
                by_alias.get(metric.alias) if metric.alias is not None else None
            )
            if target is not None and not target.members and target.name not in ("bdSeq",):
                target.written = metric.value
