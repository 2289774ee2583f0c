"""Sparkplug messages written out for the host core tests (encoded with the real codec)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from uns_bridge.host import effects as fx
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import encode_payload
from uns_bridge.sparkplug.values import Metric, Payload, PropertySet, PropertyValue, Value

T0 = 1_700_000_000_000
G = "Plant1"
E = "Edge1"

E_ = TypeVar("E_")


def new_host(role: str = "active", reorder_ms: int = 1_000, rebirth_ms: int = 5_000, **kw: object) -> Host:
    """A host that is connected (STATE published) at ``T0``."""
    host = Host(
        HostConfig(
            host_id="h1",
            role=role,  # type: ignore[arg-type]
            reorder_timeout_ms=reorder_ms,
            rebirth_interval_ms=rebirth_ms,
            **kw,  # type: ignore[arg-type]
        )
    )
    host.will(T0)
    host.connected(T0)
    return host


def m(
    name: str | None,
    alias: int | None,
    datatype: int | None,
    value: Value,
    ts: int | None = T0,
    **kw: object,
) -> Metric:
    return Metric(name, alias, ts, datatype, value, **kw)  # type: ignore[arg-type]


def quality(code: int) -> PropertySet:
    return PropertySet((("Quality", PropertyValue(T.Int32, code)),))


def payload(metrics: Sequence[Metric], seq: int | None, ts: int | None = T0) -> bytes:
    return encode_payload(Payload(ts, tuple(metrics), seq), omit_alias_datatypes=True)


def nbirth(seq: int = 0, bd: int = 1, metrics: Sequence[Metric] = (), ts: int | None = T0) -> bytes:
    """An NBIRTH with bdSeq, Node Control/Rebirth and ``Temp`` (alias 1, Double 20.5) unless given."""
    base = [
        m("bdSeq", 100, T.Int64, bd),
        m("Node Control/Rebirth", 101, T.Boolean, False),
    ]
    if not metrics:
        metrics = [m("Temp", 1, T.Double, 20.5)]
    return payload([*base, *metrics], seq, ts)


def ndeath(bd: int = 1) -> bytes:
    return encode_payload(Payload(T0, (m("bdSeq", None, T.Int64, bd, ts=None),)))


def topic(kind: str, device: str | None = None, node: str = E, group: str = G) -> str:
    base = f"spBv1.0/{group}/{kind}/{node}"
    return base if device is None else f"{base}/{device}"


def of(effects: Sequence[object], kind: type[E_]) -> list[E_]:
    return [e for e in effects if isinstance(e, kind)]


def samples(effects: Sequence[object]) -> list[fx.Sample]:
    return [s for batch in of(effects, fx.Samples) for s in batch.samples]


def values(effects: Sequence[object]) -> list[tuple[str, Value]]:
    return [(s.metric.name, s.value) for s in samples(effects)]


def anomalies(effects: Sequence[object], kind: fx.AnomalyKind | None = None) -> list[fx.Anomaly]:
    return [a for a in of(effects, fx.Anomaly) if kind is None or a.kind == kind]


def rebirths(effects: Sequence[object]) -> list[fx.Publish]:
    return [p for p in of(effects, fx.Publish) if "/NCMD/" in p.topic]
