"""One test per rule written at the top of ``uns_bridge/host/host.py``, named ``test_<rule>_...``.

Every message is written out with :func:`encode_payload` and the value types of
:mod:`uns_bridge.sparkplug.values`; the host is driven with explicit receive times (no clock).
"""

from __future__ import annotations

import orjson
import pysparkplug as psp
import pytest

from uns_bridge.config import HostLimits
from uns_bridge.host import effects as fx
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import decode_payload, encode_payload
from uns_bridge.sparkplug.values import (
    DataSet,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    Template,
    TemplateParameter,
)

T0 = 1_700_000_000_000
G, E = "plant", "edge1"
NODE = f"spBv1.0/{G}/%s/{E}"


def topic(kind: str, device: str | None = None, node: str = E) -> str:
    return f"spBv1.0/{G}/{kind}/{node}" + (f"/{device}" if device else "")


def bd(value: int) -> Metric:
    return Metric("bdSeq", None, T0, T.Int64, value)


def birth(seq: int = 0, bdseq: int = 0, *metrics: Metric, ts: int = T0) -> bytes:
    if not metrics:
        metrics = (Metric("temp", 1, T0, T.Double, 20.5), Metric("count", 2, T0, T.Int32, 7))
    return encode_payload(Payload(ts, (bd(bdseq), *metrics), seq=seq))


def data(seq: int, *metrics: Metric, ts: int | None = T0 + 10) -> bytes:
    return encode_payload(Payload(ts, metrics, seq=seq), omit_alias_datatypes=True)


def death(bdseq: int) -> bytes:
    return encode_payload(Payload(T0, (bd(bdseq),)))


def host(**kw: object) -> Host:
    defaults: dict[str, object] = {"host_id": "h1", "reorder_timeout_ms": 1_000, "rebirth_interval_ms": 5_000}
    defaults.update(kw)
    h = Host(HostConfig(**defaults))  # type: ignore[arg-type]
    h.will(T0 - 1000)
    h.connected(T0 - 1000)
    return h


def of(effects: list[fx.Effect], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in effects if isinstance(e, kind)]


def samples(effects: list[fx.Effect]) -> list[fx.Sample]:
    return [s for e in of(effects, fx.Samples) for s in e.samples]


def values(effects: list[fx.Effect]) -> list[tuple[str, object]]:
    return [(s.metric.name, s.value) for s in samples(effects)]


def anomalies(effects: list[fx.Effect], kind: fx.AnomalyKind) -> list[fx.Anomaly]:
    return [a for a in of(effects, fx.Anomaly) if a.kind == kind]


def rebirths(effects: list[fx.Effect]) -> list[fx.Publish]:
    return [p for p in of(effects, fx.Publish) if "/NCMD/" in p.topic]


def born(h: Host, *metrics: Metric, bdseq: int = 0, now: int = T0) -> list[fx.Effect]:
    return h.receive(topic("NBIRTH"), birth(0, bdseq, *metrics), now)


def dbirth(h: Host, device: str, seq: int, *metrics: Metric, now: int = T0) -> list[fx.Effect]:
    return h.receive(topic("DBIRTH", device), encode_payload(Payload(T0, metrics, seq=seq)), now)


# ------------------------------------------------------------------ host session H1-H5


def test_h1_will_is_state_offline_qos1_retained_tck_host_topic_phid_death_payload() -> None:
    h = Host(HostConfig(host_id="h1"))
    will = h.will(T0)
    assert (will.topic, will.qos, will.retain) == ("spBv1.0/STATE/h1", 1, True)
    assert orjson.loads(will.payload) == {"online": False, "timestamp": T0}
    assert orjson.loads(h.will(T0 + 5).payload)["timestamp"] == T0 + 5  # new T per connection


def test_h2_first_publish_is_state_online_with_the_will_timestamp_tck_host_topic_phid_birth_payload() -> None:
    h = Host(HostConfig(host_id="h1"))
    h.will(T0)
    assert ("spBv1.0/#", 1) in h.subscriptions()
    first = h.connected(T0 + 50)[0]
    assert isinstance(first, fx.Publish)
    assert (first.topic, first.qos, first.retain) == ("spBv1.0/STATE/h1", 1, True)
    assert orjson.loads(first.payload) == {"online": True, "timestamp": T0}
    grouped = Host(HostConfig(host_id="h1", groups=("a",)))
    assert grouped.subscriptions() == [("spBv1.0/a/#", 1), ("spBv1.0/STATE/h1", 1)]


def test_h3_own_state_seen_offline_is_repaired_tck_host_topic_phid_birth_required() -> None:
    h = host()
    effects = h.receive("spBv1.0/STATE/h1", orjson.dumps({"online": False, "timestamp": 1}), T0)
    (republished,) = of(effects, fx.Publish)
    assert orjson.loads(republished.payload) == {"online": True, "timestamp": T0 - 1000}
    assert republished.retain and republished.qos == 1
    assert h.receive("spBv1.0/STATE/h1", orjson.dumps({"online": True, "timestamp": 1}), T0) == []
    assert h.receive("spBv1.0/STATE/other", orjson.dumps({"online": False, "timestamp": 1}), T0) == []


def test_h4_clean_disconnect_publishes_state_offline_first_tck_host_topic_phid_death_required() -> None:
    h = host()
    born(h)
    effects = h.disconnecting(T0 + 5)
    first = effects[0]
    assert isinstance(first, fx.Publish) and first.topic == "spBv1.0/STATE/h1"
    assert orjson.loads(first.payload) == {"online": False, "timestamp": T0 - 1000}
    assert of(effects, fx.NodeOffline) and of(effects, fx.MetricsStale)


def test_h4_fresh_state_timestamp_after_reconnect() -> None:
    h = host()
    h.connection_lost(T0)
    h.will(T0 + 100)
    (state,) = of(h.connected(T0 + 200), fx.Publish)
    assert orjson.loads(state.payload) == {"online": True, "timestamp": T0 + 100}


def test_h5_other_hosts_state_and_legacy_state_and_commands_are_not_data() -> None:
    h = host()
    born(h)
    assert h.receive("STATE/h1", b"OFFLINE", T0) == []  # legacy STATE, even with our id
    assert h.receive("STATE/scada", b"ONLINE", T0) == []
    assert h.receive("spBv1.0/STATE/scada", b'{"online":true,"timestamp":1}', T0) == []
    command = encode_payload(Payload(T0, (Metric("Node Control/Rebirth", None, T0, T.Boolean, True),)))
    assert h.receive(topic("NCMD"), command, T0) == []
    assert h.receive(topic("DCMD", "d1"), command, T0) == []


# ------------------------------------------------------------------ edge node sessions N1-N5


def test_n1_nbirth_replaces_catalog_and_aliases_records_bdseq_tck_topics_nbirth_bdseq() -> None:
    h = host()
    first = born(h, Metric("a", 1, T0, T.Int32, 1), Metric("b", 2, T0, T.Int32, 2), bdseq=3)
    (online,) = of(first, fx.NodeOnline)
    assert online.bd_seq == 3
    (defined,) = of(first, fx.MetricsDefined)
    assert {m.name for m in defined.metrics} == {"bdSeq", "a", "b"}
    dbirth(h, "d1", 1, Metric("x", 10, T0, T.Double, 1.0))
    again = h.receive(topic("NBIRTH"), birth(0, 4, Metric("c", 1, T0, T.Double, 1.5)), T0 + 100)
    assert of(again, fx.NodeOffline)[0].reason == "rebirth"
    stale = {m.name for e in of(again, fx.MetricsStale) for m in e.metrics}
    assert {"a", "b", "x"} <= stale  # old node and device metrics
    assert {m.name for m in of(again, fx.MetricsDefined)[0].metrics} == {"bdSeq", "c"}
    # alias 1 now means "c" (Double): the old Int32 "a" is gone; alias 2 and 10 died with the session
    after = h.receive(topic("NDATA"), data(1, Metric(None, 1, T0 + 200, T.Double, 2.5)), T0 + 200)
    assert values(after) == [("c", 2.5)]
    after = h.receive(topic("NDATA"), data(2, Metric(None, 2, T0 + 300, T.Int32, 9)), T0 + 300)
    assert samples(after) == [] and anomalies(after, fx.AnomalyKind.UNKNOWN_ALIAS)
    # the device is offline until its own DBIRTH
    ddata = h.receive(topic("DDATA", "d1"), data(3, Metric(None, 10, T0, T.Double, 1.0)), T0 + 400)
    assert anomalies(ddata, fx.AnomalyKind.DATA_BEFORE_BIRTH)


def test_n2_birth_values_are_samples() -> None:
    h = host()
    got = born(h, Metric("temp", 1, T0 + 1, T.Double, 20.5), Metric("on", 2, None, T.Boolean, True))
    assert values(got) == [("bdSeq", 0), ("temp", 20.5), ("on", True)]
    assert [s.timestamp for s in samples(got)] == [T0, T0 + 1, T0]  # no metric ts: the payload's
    dev = dbirth(h, "d1", 1, Metric("x", 10, T0 + 2, T.Int16, -3))
    assert values(dev) == [("x", -3)] and samples(dev)[0].metric.device == "d1"


def test_n3_ndeath_with_matching_bdseq_uses_receive_time_tck_host_topic_phid_ndeath_bdseq() -> None:
    h = host()
    born(h, bdseq=5)
    dbirth(h, "d1", 1, Metric("x", 10, T0, T.Double, 1.0))
    effects = h.receive(topic("NDEATH"), death(5), T0 + 777)
    (offline,) = of(effects, fx.NodeOffline)
    assert (offline.timestamp, offline.reason, offline.bd_seq) == (T0 + 777, "NDEATH", 5)
    assert of(effects, fx.DeviceOffline)[0].device == "d1"
    stale = {m.name for e in of(effects, fx.MetricsStale) for m in e.metrics}
    assert stale == {"bdSeq", "temp", "count", "x"}
    assert all(e.timestamp == T0 + 777 for e in of(effects, fx.MetricsStale))
    assert not h.node_online(G, E)


def test_n3_stale_ndeath_ignored_and_reported() -> None:
    h = host()
    born(h, bdseq=5)
    effects = h.receive(topic("NDEATH"), death(4), T0 + 1)  # the Will of the previous session
    assert [type(e) for e in effects] == [fx.Anomaly]
    assert anomalies(effects, fx.AnomalyKind.STALE_DEATH)
    assert h.node_online(G, E)


def test_n3_duplicate_ndeath_ignored_and_reported() -> None:
    h = host()
    born(h, bdseq=5)
    h.receive(topic("NDEATH"), death(5), T0 + 1)
    again = h.receive(topic("NDEATH"), death(5), T0 + 2)
    assert [a.kind for a in of(again, fx.Anomaly)] == [fx.AnomalyKind.STALE_DEATH]
    assert not of(again, fx.MetricsStale)


def test_n4_ddeath_stales_one_device_at_its_payload_timestamp() -> None:
    h = host()
    born(h)
    dbirth(h, "d1", 1, Metric("x", 10, T0, T.Double, 1.0))
    dbirth(h, "d2", 2, Metric("y", 11, T0, T.Double, 2.0))
    effects = h.receive(topic("DDEATH", "d1"), encode_payload(Payload(T0 + 55, (), seq=3)), T0 + 999)
    (offline,) = of(effects, fx.DeviceOffline)
    assert (offline.device, offline.timestamp) == ("d1", T0 + 55)
    (stale,) = of(effects, fx.MetricsStale)
    assert [m.name for m in stale.metrics] == ["x"] and stale.timestamp == T0 + 55
    still = h.receive(topic("DDATA", "d2"), data(4, Metric(None, 11, T0, T.Double, 3.0)), T0 + 1000)
    assert values(still) == [("y", 3.0)]
    gone = h.receive(topic("DDATA", "d1"), data(5, Metric(None, 10, T0, T.Double, 3.0)), T0 + 1001)
    assert samples(gone) == [] and anomalies(gone, fx.AnomalyKind.DATA_BEFORE_BIRTH)


def test_n5_data_before_birth_dead_letter_and_rebirth_tck_host_data_before_birth_rebirth() -> None:
    h = host()
    raw = data(3, Metric("temp", None, T0, T.Double, 1.0))
    effects = h.receive(topic("NDATA"), raw, T0)
    (dead,) = anomalies(effects, fx.AnomalyKind.DATA_BEFORE_BIRTH)
    assert dead.dead_letter and dead.payload == raw and dead.node == E
    assert samples(effects) == [] and len(rebirths(effects)) == 1
    ddata = h.receive(topic("DDATA", "d9", node="other"), raw, T0)
    assert anomalies(ddata, fx.AnomalyKind.DATA_BEFORE_BIRTH) and len(rebirths(ddata)) == 1


# ------------------------------------------------------------------ sequence numbers S1-S4


def test_s1_seq_wraps_255_to_0_across_node_and_devices_tck_payloads_sequence_num() -> None:
    h = host()
    born(h)
    dbirth(h, "d1", 1, Metric("x", 10, T0, T.Int32, 0))
    got: list[object] = []
    for i in range(2, 300):
        seq = i % 256
        if i % 2:
            effects = h.receive(topic("DDATA", "d1"), data(seq, Metric(None, 10, T0 + i, T.Int32, i)), T0 + i)
        else:
            effects = h.receive(topic("NDATA"), data(seq, Metric(None, 2, T0 + i, T.Int32, i)), T0 + i)
        assert not of(effects, fx.Anomaly), (i, effects)
        got.extend(v for _, v in values(effects))
    assert got == list(range(2, 300))


def test_s2_gap_holds_then_fill_releases_in_order() -> None:
    h = host()
    born(h)

    def m(seq: int) -> bytes:
        return data(seq, Metric(None, 2, T0 + seq, T.Int32, seq))

    gap = h.receive(topic("NDATA"), m(3), T0 + 3)
    assert anomalies(gap, fx.AnomalyKind.SEQ_GAP) and samples(gap) == []
    assert h.next_deadline() == T0 + 3 + 1_000
    assert samples(h.receive(topic("NDATA"), m(2), T0 + 4)) == []
    fill = h.receive(topic("NDATA"), m(1), T0 + 5)
    assert [v for _, v in values(fill)] == [1, 2, 3]
    assert h.next_deadline() is None
    assert rebirths(h.tick(T0 + 10_000)) == []


def test_s3_gap_expiry_releases_held_and_requests_one_rebirth_tck_host_reorder_timeout_rebirth() -> None:
    h = host()
    born(h)
    h.receive(topic("NDATA"), data(3, Metric(None, 2, T0, T.Int32, 3)), T0 + 10)
    h.receive(topic("NDATA"), data(2, Metric(None, 2, T0, T.Int32, 2)), T0 + 20)
    assert h.tick(T0 + 1_009) == []
    expired = h.tick(T0 + 1_010)
    assert [v for _, v in values(expired)] == [2, 3]
    (ncmd,) = rebirths(expired)
    assert ncmd.topic == f"spBv1.0/{G}/NCMD/{E}" and ncmd.qos == 0 and not ncmd.retain
    command = decode_payload(ncmd.payload)
    assert command.seq is None and command.timestamp == T0 + 1_010
    (metric,) = command.metrics
    assert (metric.name, metric.datatype, metric.value) == ("Node Control/Rebirth", T.Boolean, True)
    assert len(of(expired, fx.RebirthRequested)) == 1
    assert h.tick(T0 + 100_000) == [] and h.next_deadline() is None
    after = h.receive(topic("NDATA"), data(4, Metric(None, 2, T0, T.Int32, 4)), T0 + 2_000)
    assert [v for _, v in values(after)] == [4]


def test_s4_duplicates_dropped() -> None:
    h = host()
    born(h)
    raw = data(1, Metric(None, 2, T0, T.Int32, 1))
    assert len(samples(h.receive(topic("NDATA"), raw, T0))) == 1
    dup = h.receive(topic("NDATA"), raw, T0 + 1)
    assert samples(dup) == [] and anomalies(dup, fx.AnomalyKind.SEQ_DUPLICATE)
    held = data(3, Metric(None, 2, T0, T.Int32, 3))
    h.receive(topic("NDATA"), held, T0 + 2)
    dup_held = h.receive(topic("NDATA"), held, T0 + 3)
    assert anomalies(dup_held, fx.AnomalyKind.SEQ_DUPLICATE)
    fill = h.receive(topic("NDATA"), data(2, Metric(None, 2, T0, T.Int32, 2)), T0 + 4)
    assert [v for _, v in values(fill)] == [2, 3]  # 3 once


def test_s4_late_message_after_given_up_gap_is_historical() -> None:
    h = host()
    born(h)
    h.receive(topic("NDATA"), data(2, Metric(None, 2, T0 + 2, T.Int32, 2)), T0 + 2)
    h.tick(T0 + 5_000)
    late = h.receive(topic("NDATA"), data(1, Metric(None, 2, T0 + 1, T.Int32, 1)), T0 + 5_001)
    assert anomalies(late, fx.AnomalyKind.SEQ_LATE)
    (sample,) = samples(late)
    assert sample.value == 1 and sample.is_historical


# ------------------------------------------------------------------ aliases A1-A3


def test_a1_aliases_scoped_per_node_and_session() -> None:
    h = host()
    born(h, Metric("a", 1, T0, T.Int32, 1))
    h.receive(topic("NBIRTH", node="edge2"), birth(0, 0, Metric("other", 7, T0, T.Int32, 0)), T0)
    # alias 1 belongs to edge1 only: edge2 never resolves it
    cross = h.receive(topic("NDATA", node="edge2"), data(1, Metric(None, 1, T0, T.Int32, 5)), T0 + 1)
    assert samples(cross) == [] and anomalies(cross, fx.AnomalyKind.UNKNOWN_ALIAS)
    mine = h.receive(topic("NDATA"), data(1, Metric(None, 1, T0, T.Int32, 5)), T0 + 1)
    assert [(s.metric.node, s.metric.name) for s in samples(mine)] == [(E, "a")]
    # a new session without alias 1: the old alias died with the rebirth
    h.receive(topic("NBIRTH"), birth(0, 1, Metric("a", 2, T0, T.Int32, 1)), T0 + 2)
    old = h.receive(topic("NDATA"), data(1, Metric(None, 1, T0, T.Int32, 5)), T0 + 3)
    assert samples(old) == [] and anomalies(old, fx.AnomalyKind.UNKNOWN_ALIAS)
    # a device's alias does not resolve for the node's NDATA (device scope)
    dbirth(h, "d1", 2, Metric("x", 30, T0, T.Int32, 0))
    wrong = h.receive(topic("NDATA"), data(3, Metric(None, 30, T0, T.Int32, 5)), T0 + 4)
    assert samples(wrong) == []


def test_a1_sessions_give_new_metric_identities() -> None:
    h = host()
    first = samples(born(h, Metric("a", 1, T0, T.Int32, 1)))[1].metric
    second = samples(born(h, Metric("a", 1, T0, T.Int32, 1), bdseq=1, now=T0 + 1))[1].metric
    assert first is not second and first.key == second.key


def test_a2_alias_only_data_takes_the_births_datatype() -> None:
    h = host()
    born(h, Metric("i8", 1, T0, T.Int8, -1), Metric("u64", 2, T0, T.UInt64, 1 << 63))
    raw = data(1, Metric(None, 1, T0, T.Int8, -100), Metric(None, 2, T0, T.UInt64, (1 << 64) - 1))
    assert all(m.datatype is None for m in decode_payload(raw).metrics)
    got = samples(h.receive(topic("NDATA"), raw, T0 + 1))
    assert [(s.metric.name, s.metric.datatype, s.value) for s in got] == [
        ("i8", T.Int8, -100),
        ("u64", T.UInt64, (1 << 64) - 1),
    ]


def test_a3_unknown_alias_dead_letter_rebirth_other_values_delivered() -> None:
    h = host()
    born(h)
    raw = data(1, Metric(None, 1, T0, T.Double, 1.5), Metric(None, 99, T0, T.Int32, 5))
    effects = h.receive(topic("NDATA"), raw, T0 + 1)
    assert values(effects) == [("temp", 1.5)]
    (dead,) = anomalies(effects, fx.AnomalyKind.UNKNOWN_ALIAS)
    assert dead.dead_letter and dead.payload == raw and "99" in dead.reason
    assert len(rebirths(effects)) == 1


def test_a3_value_not_fitting_the_birth_datatype_is_type_mismatch() -> None:
    h = host()
    born(h)
    raw = encode_payload(Payload(T0, (Metric("temp", None, T0, T.String, "hot"),), seq=1))
    effects = h.receive(topic("NDATA"), raw, T0 + 1)
    assert samples(effects) == [] and anomalies(effects, fx.AnomalyKind.TYPE_MISMATCH)


# ------------------------------------------------------------------ values V1-V5


def test_v1_per_metric_timestamps_then_payload_then_receive_time() -> None:
    h = host()
    born(h)
    raw = data(1, Metric(None, 1, T0 + 111, T.Double, 1.0), Metric(None, 2, None, T.Int32, 2), ts=T0 + 50)
    assert [s.timestamp for s in samples(h.receive(topic("NDATA"), raw, T0 + 900))] == [T0 + 111, T0 + 50]
    bare = data(2, Metric(None, 2, None, T.Int32, 3), ts=None)
    assert [s.timestamp for s in samples(h.receive(topic("NDATA"), bare, T0 + 901))] == [T0 + 901]


def test_v2_several_values_of_one_metric_in_order_equal_timestamps_kept() -> None:
    h = host()
    born(h)
    raw = data(
        1,
        Metric(None, 1, T0 + 3, T.Double, 3.0),
        Metric(None, 1, T0 + 1, T.Double, 1.0),
        Metric(None, 1, T0 + 1, T.Double, 1.5),
    )
    got = samples(h.receive(topic("NDATA"), raw, T0 + 10))
    assert [(s.timestamp, s.value) for s in got] == [(T0 + 3, 3.0), (T0 + 1, 1.0), (T0 + 1, 1.5)]


def test_v3_historical_transient_null() -> None:
    h = host()
    born(h)
    raw = data(
        1,
        Metric(None, 1, T0 + 1, T.Double, 1.0, is_historical=True),
        Metric(None, 1, T0 + 2, T.Double, 2.0, is_transient=True),
        Metric(None, 2, T0 + 3, T.Int32, None, is_null=True),
    )
    got = samples(h.receive(topic("NDATA"), raw, T0 + 10))
    assert [(s.metric.name, s.value, s.is_historical) for s in got] == [
        ("temp", 1.0, True),
        ("count", None, False),
    ]


def test_v4_quality_property() -> None:
    h = host()
    born(h)

    def q(code: int | None) -> PropertySet | None:
        return None if code is None else PropertySet((("Quality", PropertyValue(T.Int32, code)),))

    raw = data(
        1,
        *(
            Metric(None, 1, T0 + i, T.Double, float(i), properties=q(c))
            for i, c in enumerate([0, 192, 500, None])
        ),
    )
    got = samples(h.receive(topic("NDATA"), raw, T0 + 10))
    assert [s.quality for s in got] == [fx.Quality.BAD, fx.Quality.GOOD, fx.Quality.STALE, fx.Quality.GOOD]


MOTOR_DEF = Template(
    metrics=(
        Metric("speed", None, None, T.Double, 0.0),
        Metric("running", None, None, T.Boolean, False),
    ),
    parameters=(TemplateParameter("rated", T.Int32, 1500), TemplateParameter("make", T.String, "ACME")),
    version="1",
    is_definition=True,
)


@pytest.mark.parametrize(
    ("definition", "ref"), [("_types_/Motor", "Motor"), ("Motor", "_types_/Motor"), ("Motor", "Motor")]
)
def test_v5_template_instances_resolve_with_or_without_types_prefix_and_defaults(
    definition: str, ref: str
) -> None:
    h = host()
    instance = Template(
        metrics=(Metric("speed", None, None, T.Double, 1450.0),),
        parameters=(TemplateParameter("rated", T.Int32, 1800),),
        template_ref=ref,
    )
    effects = born(
        h,
        Metric(definition, None, T0, T.Template, MOTOR_DEF),
        Metric("pump/motor", 5, T0, T.Template, instance),
    )
    assert not of(effects, fx.Anomaly), effects
    names = {m.name for m in of(effects, fx.MetricsDefined)[0].metrics}
    assert {"pump/motor", "pump/motor/speed", "pump/motor/running"} <= names
    assert definition not in names  # definitions are not metrics
    got = {s.metric.name: s for s in samples(effects)}
    assert got["pump/motor/speed"].value == 1450.0
    assert got["pump/motor/running"].value is False  # missing member from the definition
    summary = got["pump/motor"].value
    assert isinstance(summary, Template)
    assert [(p.name, p.value) for p in summary.parameters] == [("rated", 1800), ("make", "ACME")]
    assert got["pump/motor/speed"].metric.template_ref == ref


def test_v5_nested_templates_and_data_with_a_subset_of_members() -> None:
    h = host()
    line_def = Template(
        metrics=(
            Metric("motor", None, None, T.Template, Template(template_ref="Motor")),
            Metric("len", None, None, T.Int32, 0),
        ),
        is_definition=True,
    )
    line = Template(
        metrics=(
            Metric(
                "motor",
                None,
                None,
                T.Template,
                Template(metrics=(Metric("speed", None, None, T.Double, 5.0),), template_ref="Motor"),
            ),
            Metric("len", None, None, T.Int32, 12),
        ),
        template_ref="Line",
    )
    effects = born(
        h,
        Metric("_types_/Motor", None, T0, T.Template, MOTOR_DEF),
        Metric("_types_/Line", None, T0, T.Template, line_def),
        Metric("l1", 9, T0, T.Template, line),
    )
    assert not of(effects, fx.Anomaly), effects
    got = {s.metric.name: s.value for s in samples(effects)}
    assert got["l1/motor/speed"] == 5.0 and got["l1/motor/running"] is False and got["l1/len"] == 12
    update = Template(
        metrics=(
            Metric(
                "motor",
                None,
                None,
                T.Template,
                Template(metrics=(Metric("speed", None, None, T.Double, 7.5),)),
            ),
        ),
    )
    raw = data(1, Metric(None, 9, T0 + 5, T.Template, update))
    later = h.receive(topic("NDATA"), raw, T0 + 5)
    assert values(later) == [("l1/motor/speed", 7.5)] and not of(later, fx.Anomaly)
    assert samples(later)[0].timestamp == T0 + 5


def test_v5_dataset_is_one_value() -> None:
    h = host()
    table = DataSet(("a", "b"), (T.Int32, T.String), ((1, "x"), (2, None)))
    effects = born(h, Metric("table", 3, T0, T.DataSet, table))
    assert values(effects)[-1] == ("table", table)
    again = h.receive(topic("NDATA"), data(1, Metric(None, 3, T0, T.DataSet, table)), T0 + 1)
    assert values(again) == [("table", table)]


# ------------------------------------------------------------------ rebirth requests R1-R3


def test_r1_rebirth_ncmd_payload_tck_operational_behavior_edge_node_rebirth() -> None:
    h = host()
    (ncmd,) = rebirths(h.receive(topic("NDATA"), data(0), T0 + 3))
    assert (ncmd.topic, ncmd.qos, ncmd.retain) == (f"spBv1.0/{G}/NCMD/{E}", 0, False)
    command = decode_payload(ncmd.payload)
    assert command.seq is None and command.timestamp == T0 + 3
    assert [(m.name, m.datatype, m.value) for m in command.metrics] == [
        ("Node Control/Rebirth", T.Boolean, True)
    ]


def test_r2_rebirth_rate_limited_and_deferred_to_window_end() -> None:
    h = host(rebirth_interval_ms=5_000)
    assert len(rebirths(h.receive(topic("NDATA"), data(0), T0))) == 1
    assert rebirths(h.receive(topic("NDATA"), data(1), T0 + 1_000)) == []
    assert rebirths(h.receive(topic("NDATA"), data(2), T0 + 2_000)) == []
    assert h.next_deadline() == T0 + 5_000
    assert h.tick(T0 + 4_999) == []
    assert len(rebirths(h.tick(T0 + 5_000))) == 1  # the deferred one, once
    assert h.tick(T0 + 20_000) == [] and h.next_deadline() is None
    # another node has its own window
    assert len(rebirths(h.receive(topic("NDATA", node="n2"), data(0), T0 + 5_001))) == 1


def test_r2_birth_cancels_a_deferred_rebirth() -> None:
    h = host()
    h.receive(topic("NDATA"), data(0), T0)
    h.receive(topic("NDATA"), data(1), T0 + 1)
    born(h, now=T0 + 2)
    assert h.next_deadline() is None and h.tick(T0 + 10_000) == []


def test_r3_passive_role_sends_nothing() -> None:
    h = host(role="passive")
    effects = h.receive(topic("NDATA"), data(0), T0)
    effects += born(h)
    effects += h.receive(topic("NDATA"), data(5, Metric(None, 77, T0, T.Int32, 1)), T0 + 1)
    effects += h.tick(T0 + 60_000)
    effects += h.connection_lost(T0 + 60_001)
    effects += h.connected(T0 + 60_002)
    assert anomalies(effects, fx.AnomalyKind.DATA_BEFORE_BIRTH)
    assert rebirths(effects) == [] and of(effects, fx.RebirthRequested) == []


# ------------------------------------------------------------------ connection C1-C2


def test_c1_connection_lost_all_stale() -> None:
    h = host()
    born(h)
    dbirth(h, "d1", 1, Metric("x", 10, T0, T.Double, 1.0))
    h.receive(topic("NBIRTH", node="edge2"), birth(0, 0), T0)
    effects = h.connection_lost(T0 + 100)
    stale = {(m.node, m.device, m.name) for e in of(effects, fx.MetricsStale) for m in e.metrics}
    assert stale == {
        (E, None, "bdSeq"), (E, None, "temp"), (E, None, "count"), (E, "d1", "x"),
        ("edge2", None, "bdSeq"), ("edge2", None, "temp"), ("edge2", None, "count"),
    }  # fmt: skip
    assert len(of(effects, fx.NodeOffline)) == 2 and rebirths(effects) == []


def test_c2_reconnect_requests_rebirths_and_data_is_before_birth_until_then() -> None:
    h = host()
    born(h)
    h.receive(topic("NBIRTH", node="edge2"), birth(0, 0), T0)
    h.connection_lost(T0 + 100)
    h.will(T0 + 200)
    effects = h.connected(T0 + 200)
    assert sorted(p.topic for p in rebirths(effects)) == [f"spBv1.0/{G}/NCMD/{E}", f"spBv1.0/{G}/NCMD/edge2"]
    stale_data = h.receive(topic("NDATA"), data(1, Metric(None, 1, T0, T.Double, 1.0)), T0 + 300)
    assert samples(stale_data) == [] and anomalies(stale_data, fx.AnomalyKind.DATA_BEFORE_BIRTH)
    assert values(born(h, now=T0 + 400))[1] == ("temp", 20.5)


# ------------------------------------------------------------------ robustness B1-B2


def test_b1_invalid_topic_and_undecodable_payload_are_dead_letters() -> None:
    h = host()
    (bad_topic,) = anomalies(h.receive("spBv1.0/only", b"x", T0), fx.AnomalyKind.INVALID_TOPIC)
    assert (
        bad_topic.kind == fx.AnomalyKind.INVALID_TOPIC and bad_topic.dead_letter and bad_topic.payload == b"x"
    )
    born(h)
    effects = h.receive(topic("NDATA"), b"\xff\xff\xff", T0)
    (dead,) = anomalies(effects, fx.AnomalyKind.DECODE_ERROR)
    assert dead.dead_letter and dead.payload == b"\xff\xff\xff" and dead.reason


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (HostLimits(max_payload_bytes=50), "max_payload_bytes"),
        (HostLimits(max_metrics_per_message=2), "max_metrics_per_message"),
        (HostLimits(max_metrics_per_node=2), "max_metrics_per_node"),
    ],
)
def test_b2_limits_are_dead_letters_before_state_changes(limits: HostLimits, message: str) -> None:
    h = host(limits=limits)
    effects = born(h, *(Metric(f"m{i}", i, T0, T.Double, float(i)) for i in range(5)))
    (dead,) = anomalies(effects, fx.AnomalyKind.LIMIT_EXCEEDED)
    assert dead.dead_letter and message in dead.reason
    assert samples(effects) == [] and not h.node_online(G, E)


def test_b2_node_and_device_count_limits() -> None:
    h = host(limits=HostLimits(max_edge_nodes=1, max_devices_per_node=1))
    born(h)
    (dead,) = anomalies(h.receive(topic("NBIRTH", node="n2"), birth(), T0), fx.AnomalyKind.LIMIT_EXCEEDED)
    assert "max_edge_nodes" in dead.reason
    dbirth(h, "d1", 1, Metric("x", 10, T0, T.Double, 1.0))
    over = dbirth(h, "d2", 2, Metric("y", 11, T0, T.Double, 1.0))
    assert "max_devices_per_node" in anomalies(over, fx.AnomalyKind.LIMIT_EXCEEDED)[0].reason


# ------------------------------------------------------------------ interop with pysparkplug


def test_interop_pysparkplug_births_and_data_through_the_host() -> None:
    h = host()
    nbirth = psp.NBirth(
        timestamp=T0,
        seq=0,
        metrics=(
            psp.Metric(timestamp=T0, name="bdSeq", datatype=psp.DataType.INT64, value=2),
            psp.Metric(timestamp=T0, name="level", datatype=psp.DataType.INT16, value=-5, alias=1),
        ),
    ).encode()
    assert values(h.receive(topic("NBIRTH"), nbirth, T0)) == [("bdSeq", 2), ("level", -5)]
    dbirth_raw = psp.DBirth(
        timestamp=T0,
        seq=1,
        metrics=(psp.Metric(timestamp=T0, name="flag", datatype=psp.DataType.BOOLEAN, value=True, alias=2),),
    ).encode()
    assert values(h.receive(topic("DBIRTH", "d1"), dbirth_raw, T0)) == [("flag", True)]
    ddata = psp.DData(
        timestamp=T0 + 1,
        seq=2,
        metrics=(
            psp.Metric(timestamp=T0 + 1, name=None, datatype=psp.DataType.BOOLEAN, value=False, alias=2),
        ),
    ).encode()
    assert values(h.receive(topic("DDATA", "d1"), ddata, T0 + 1)) == [("flag", False)]
    ndata = psp.NData(
        timestamp=T0 + 2,
        seq=3,
        metrics=(psp.Metric(timestamp=T0 + 2, name=None, datatype=psp.DataType.INT16, value=-300, alias=1),),
    ).encode()
    assert values(h.receive(topic("NDATA"), ndata, T0 + 2)) == [("level", -300)]
    ndeath = psp.NDeath(
        timestamp=T0 + 3,
        bd_seq_metric=psp.Metric(timestamp=T0 + 3, name="bdSeq", datatype=psp.DataType.INT64, value=2),
    ).encode()
    assert of(h.receive(topic("NDEATH"), ndeath, T0 + 3), fx.NodeOffline)


def test_interop_our_rebirth_ncmd_decodes_with_pysparkplug() -> None:
    h = host()
    (ncmd,) = rebirths(h.receive(topic("NDATA"), data(0), T0))
    (metric,) = tuple(psp.NCmd.decode(ncmd.payload).metrics)
    assert (metric.name, metric.datatype, metric.value) == (
        "Node Control/Rebirth",
        psp.DataType.BOOLEAN,
        True,
    )


def test_s3_gap_given_up_at_once_when_a_fast_node_outruns_the_hold_window() -> None:
    """seq 1 is lost and 2..299 arrive within the reorder timeout: without an early give-up, seq 129.. would
    look behind (late, historical) and the wrapped seq 1 (message 257) would be taken for the lost one."""
    h = host(reorder_timeout_ms=60_000)
    born(h)
    effects: list[fx.Effect] = []
    for i in range(2, 300):
        effects += h.receive(topic("NDATA"), data(i % 256, Metric(None, 2, T0 + i, T.Int32, i)), T0 + i)
    effects += h.tick(T0 + 100_000)
    got = samples(effects)
    assert [s.value for s in got] == list(range(2, 300))
    assert not [s for s in got if s.is_historical]
    assert not anomalies(effects, fx.AnomalyKind.SEQ_LATE)
    assert len(rebirths(effects)) == 1


def test_s4_seq_going_back_without_a_given_up_gap_requests_a_rebirth() -> None:
    """An edge node that restarts its seq counter without a new NBIRTH: its messages look behind."""
    h = host()
    born(h)
    for seq in range(1, 40):
        h.receive(topic("NDATA"), data(seq, Metric(None, 2, T0 + seq, T.Int32, seq)), T0 + seq)
    effects = h.receive(topic("NDATA"), data(0, Metric(None, 2, T0 + 100, T.Int32, 100)), T0 + 100)
    (late,) = anomalies(effects, fx.AnomalyKind.SEQ_LATE)
    assert "never skipped" in late.reason
    assert [(s.value, s.is_historical) for s in samples(effects)] == [(100, True)]
    assert len(rebirths(effects)) == 1


def test_s4_late_after_given_up_gap_needs_no_further_rebirth() -> None:
    h = host()
    born(h)
    h.receive(topic("NDATA"), data(3, Metric(None, 2, T0 + 3, T.Int32, 3)), T0 + 3)
    assert len(rebirths(h.tick(T0 + 2_000))) == 1  # the gap 1, 2 given up
    for seq in (2, 1):
        late = h.receive(topic("NDATA"), data(seq, Metric(None, 2, T0 + seq, T.Int32, seq)), T0 + 2_001)
        assert "given up" in anomalies(late, fx.AnomalyKind.SEQ_LATE)[0].reason
        assert rebirths(late) == [] and samples(late)[0].is_historical
    assert h.next_deadline() is None


def test_a3_template_member_sent_with_another_datatype_is_type_mismatch() -> None:
    h = host()
    instance = Template(metrics=(Metric("speed", None, None, T.Double, 1.0),), template_ref="Motor")
    born(
        h, Metric("_types_/Motor", None, T0, T.Template, MOTOR_DEF), Metric("m", 5, T0, T.Template, instance)
    )
    update = Template(
        metrics=(
            Metric("speed", None, None, T.String, "fast"),
            Metric("running", None, None, T.Boolean, True),
        )
    )
    effects = h.receive(topic("NDATA"), data(1, Metric(None, 5, T0 + 1, T.Template, update)), T0 + 1)
    assert values(effects) == [("m/running", True)]  # the other member still delivered
    (dead,) = anomalies(effects, fx.AnomalyKind.TYPE_MISMATCH)
    assert dead.dead_letter and "m/speed" in dead.reason
    assert len(rebirths(effects)) == 1
