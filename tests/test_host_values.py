"""Alias, value and template rules A1-A3, V1-V5 and robustness B1-B2, messages written out."""

from __future__ import annotations

from tests.host_messages import (
    T0,
    E,
    G,
    anomalies,
    m,
    nbirth,
    new_host,
    of,
    payload,
    quality,
    rebirths,
    samples,
    topic,
    values,
)
from uns_bridge.config import HostLimits
from uns_bridge.host import effects as fx
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.values import (
    DataSet,
    MetaData,
    PropertySet,
    PropertyValue,
    Template,
    TemplateParameter,
)

A = fx.AnomalyKind


def test_a1_alias_scoped_to_node_and_device_tck_id_payloads_alias_uniqueness() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(metrics=[m("Temp", 1, T.Double, 1.0)]), T0)
    host.receive(topic("NBIRTH", node="Edge2"), nbirth(metrics=[m("Level", 1, T.Int32, 7)]), T0)
    host.receive(topic("DBIRTH", "D1"), payload([m("Speed", 2, T.Int32, 1)], 1), T0)
    node1 = host.receive(topic("NDATA"), payload([m(None, 1, T.Double, 2.5)], 2), T0 + 1)
    node2 = host.receive(topic("NDATA", node="Edge2"), payload([m(None, 1, T.Int32, 8)], 1), T0 + 1)
    assert [(s.metric.node, s.metric.name, s.value) for s in samples(node1)] == [(E, "Temp", 2.5)]
    assert [(s.metric.node, s.metric.name, s.value) for s in samples(node2)] == [("Edge2", "Level", 8)]
    # a device alias sent on the node topic (and the reverse) does not resolve
    wrong = host.receive(topic("NDATA"), payload([m(None, 2, T.Int32, 3)], 3), T0 + 2)
    assert samples(wrong) == [] and anomalies(wrong, A.UNKNOWN_ALIAS)
    wrong_dev = host.receive(topic("DDATA", "D1"), payload([m(None, 1, T.Double, 3.0)], 4), T0 + 2)
    assert samples(wrong_dev) == [] and anomalies(wrong_dev, A.UNKNOWN_ALIAS)


def test_a2_alias_only_data_takes_datatype_from_birth_tck_id_payloads_alias_data_cmd_requirement() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(metrics=[m("I8", 1, T.Int8, 0), m("U64", 2, T.UInt64, 0)]), T0)
    effects = host.receive(
        topic("NDATA"), payload([m(None, 1, T.Int8, -12), m(None, 2, T.UInt64, 2**64 - 1)], 1), T0
    )
    assert values(effects) == [("I8", -12), ("U64", 2**64 - 1)]
    assert all(s.metric.datatype in (T.Int8, T.UInt64) for s in samples(effects))


def test_a2_data_by_name_resolves_too() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    effects = host.receive(topic("NDATA"), payload([m("Temp", None, T.Double, 3.5)], 1), T0)
    assert values(effects) == [("Temp", 3.5)]


def test_a3_unknown_alias_dead_letter_rebirth_other_values_delivered() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    raw = payload(
        [m(None, 1, T.Double, 1.0), m(None, 77, T.Int32, 5), m(None, 1, T.Double, 2.0, ts=T0 + 1)], 1
    )
    effects = host.receive(topic("NDATA"), raw, T0 + 2)
    assert values(effects) == [("Temp", 1.0), ("Temp", 2.0)]
    [letter] = anomalies(effects, A.UNKNOWN_ALIAS)
    assert letter.dead_letter and letter.payload == raw and "77" in letter.reason
    assert len(rebirths(effects)) == 1


def test_a3_unknown_name_and_type_mismatch_are_dead_letters() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    unknown = host.receive(topic("NDATA"), payload([m("Nope", None, T.Int32, 1)], 1), T0 + 1)
    assert anomalies(unknown, A.UNKNOWN_METRIC)[0].dead_letter
    mismatch = host.receive(topic("NDATA"), payload([m("Temp", None, T.String, "x")], 2), T0 + 1)
    assert anomalies(mismatch, A.TYPE_MISMATCH)[0].dead_letter and samples(mismatch) == []


def test_v1_metric_timestamp_then_payload_then_receive_time_with_diagnostic() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    own = host.receive(
        topic("NDATA"), payload([m(None, 1, T.Double, 1.0, ts=T0 - 60_000)], 1, ts=T0 + 5), T0 + 9
    )
    assert [s.timestamp for s in samples(own)] == [T0 - 60_000]
    from_payload = host.receive(
        topic("NDATA"), payload([m(None, 1, T.Double, 1.0, ts=None)], 2, ts=T0 + 5), T0 + 9
    )
    assert [s.timestamp for s in samples(from_payload)] == [T0 + 5] and anomalies(from_payload) == []
    neither = host.receive(topic("NDATA"), payload([m(None, 1, T.Double, 1.0, ts=None)], 3, ts=None), T0 + 9)
    assert [s.timestamp for s in samples(neither)] == [T0 + 9]
    [diag] = anomalies(neither, A.MISSING_TIMESTAMP)
    assert not diag.dead_letter and "receive time" in diag.reason


def test_v2_several_values_of_one_metric_in_order_equal_timestamps_kept() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    raw = payload(
        [
            m(None, 1, T.Double, 1.0, ts=T0 + 1),
            m(None, 1, T.Double, 2.0, ts=T0 + 2),
            m(None, 1, T.Double, 3.0, ts=T0 + 2),  # frozen timestamp, different value: kept
        ],
        1,
    )
    effects = host.receive(topic("NDATA"), raw, T0 + 3)
    assert [(s.timestamp, s.value) for s in samples(effects)] == [(T0 + 1, 1.0), (T0 + 2, 2.0), (T0 + 2, 3.0)]


def test_v3_historical_flagged_transient_never_null_is_none() -> None:
    host = new_host()
    host.receive(
        topic("NBIRTH"), nbirth(metrics=[m("Temp", 1, T.Double, 1.0), m("Note", 2, T.String, "a")]), T0
    )
    raw = payload(
        [
            m(None, 1, T.Double, 1.5, ts=T0 - 1_000, is_historical=True),
            m(None, 1, T.Double, 9.9, is_transient=True),
            m(None, 2, T.String, None, is_null=True),
        ],
        1,
    )
    effects = host.receive(topic("NDATA"), raw, T0 + 1)
    got = [(s.metric.name, s.value, s.is_historical) for s in samples(effects)]
    assert got == [("Temp", 1.5, True), ("Note", None, False)]


def test_v4_quality_property_sets_sample_quality_tck_id_payloads_propertyset_quality_value_value() -> None:
    host = new_host()
    birth = nbirth(metrics=[m("Temp", 1, T.Double, 1.0, properties=quality(500))])
    [born] = [s for s in samples(host.receive(topic("NBIRTH"), birth, T0)) if s.metric.name == "Temp"]
    assert born.quality == fx.Quality.STALE
    raw = payload(
        [
            m(None, 1, T.Double, 1.0, properties=quality(0)),
            m(None, 1, T.Double, 2.0, properties=quality(192)),
            m(None, 1, T.Double, 3.0),
        ],
        1,
    )
    got = [s.quality for s in samples(host.receive(topic("NDATA"), raw, T0 + 1))]
    assert got == [fx.Quality.BAD, fx.Quality.GOOD, fx.Quality.GOOD]


def test_v4_unit_and_description_from_properties_and_metadata() -> None:
    host = new_host()
    props = PropertySet(
        (("engUnit", PropertyValue(T.String, "degC")), ("description", PropertyValue(T.String, "inlet")))
    )
    birth = nbirth(
        metrics=[
            m("Temp", 1, T.Double, 1.0, properties=props),
            m("Flow", 2, T.Double, 1.0, metadata=MetaData(description="from metadata")),
        ]
    )
    [defined] = of(host.receive(topic("NBIRTH"), birth, T0), fx.MetricsDefined)
    info = {i.name: i for i in defined.metrics}
    assert (info["Temp"].unit, info["Temp"].description) == ("degC", "inlet")
    assert (info["Flow"].unit, info["Flow"].description) == (None, "from metadata")


MOTOR = Template(
    metrics=(m("rpm", None, T.Int32, 0), m("on", None, T.Boolean, False)),
    parameters=(TemplateParameter("rated", T.Int32, 100), TemplateParameter("site", T.String, "x")),
    version="1",
    is_definition=True,
)
PUMP = Template(
    metrics=(m("motor", None, T.Template, Template(metrics=MOTOR.metrics, template_ref="Motor")),),
    is_definition=True,
)


def _template_birth() -> bytes:
    instance = Template(
        metrics=(m("rpm", None, T.Int32, 1500), m("on", None, T.Boolean, True)),
        parameters=(TemplateParameter("rated", T.Int32, 200),),
        template_ref="Motor",  # the definition is named _types_/Motor
    )
    pump = Template(
        metrics=(
            m(
                "motor",
                None,
                T.Template,
                Template(metrics=(m("rpm", None, T.Int32, 10),), template_ref="_types_/Motor"),
            ),
        ),
        template_ref="Pump",
    )
    return nbirth(
        metrics=[
            m("_types_/Motor", None, T.Template, MOTOR),
            m("Pump", None, T.Template, PUMP),
            m("M1", 10, T.Template, instance),
            m("P1", 11, T.Template, pump),
        ]
    )


def test_v5_template_instances_become_member_metrics_tck_id_payloads_template_instance_members_birth() -> (
    None
):
    host = new_host()
    effects = host.receive(topic("NBIRTH"), _template_birth(), T0)
    [defined] = of(effects, fx.MetricsDefined)
    names = {i.name for i in defined.metrics}
    assert {"M1", "M1/rpm", "M1/on", "P1", "P1/motor/rpm", "P1/motor/on"} <= names
    assert "_types_/Motor" not in names and "Pump" not in names  # definitions are not metrics
    got = dict(values(effects))
    assert (got["M1/rpm"], got["M1/on"], got["P1/motor/rpm"]) == (1500, True, 10)
    assert got["P1/motor/on"] is False  # nested member left out of the birth: the definition's value
    # the instance value carries its parameters, missing ones from the definition's defaults
    summary = got["M1"]
    assert isinstance(summary, Template)
    assert [(p.name, p.value) for p in summary.parameters] == [("rated", 200), ("site", "x")]
    assert {i.name: i.template_ref for i in defined.metrics}["M1/rpm"] == "Motor"


def test_v5_template_data_subset_of_members_tck_id_payloads_template_instance_members_data() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), _template_birth(), T0)
    update = Template(metrics=(m("rpm", None, T.Int32, 1600, ts=T0 + 5),), template_ref="Motor")
    effects = host.receive(topic("NDATA"), payload([m(None, 10, T.Template, update, ts=T0 + 5)], 1), T0 + 6)
    assert values(effects) == [("M1/rpm", 1600)] and anomalies(effects) == []
    bad = Template(metrics=(m("torque", None, T.Int32, 1),), template_ref="Motor")
    effects = host.receive(topic("NDATA"), payload([m(None, 10, T.Template, bad)], 2), T0 + 7)
    assert samples(effects) == [] and anomalies(effects)[0].dead_letter


def test_v5_dataset_is_one_value_tck_id_payloads_template_dataset_value() -> None:
    host = new_host()
    table = DataSet(("a", "b"), (T.Int32, T.String), ((1, "x"), (2, None)))
    effects = host.receive(topic("NBIRTH"), nbirth(metrics=[m("Table", 3, T.DataSet, table)]), T0)
    assert dict(values(effects))["Table"] == table


def test_b1_invalid_topic_and_undecodable_payload_are_dead_letters() -> None:
    host = new_host()
    for bad in ("spBv1.0/G/NBIRTH", "spBv1.0/G/XDATA/E", "nope/x", b"spBv1.0/\xff/NDATA/E"):
        [a] = anomalies(host.receive(bad, b"\x01\x02", T0))
        assert a.kind == A.INVALID_TOPIC and a.dead_letter and a.payload == b"\x01\x02" and a.reason
    # buffers other than bytes are accepted for topic and payload alike
    born = host.receive(bytearray(topic("NBIRTH").encode()), bytearray(nbirth()), T0)
    assert of(born, fx.NodeOnline) and anomalies(born) == []
    data = host.receive(
        memoryview(topic("NDATA").encode()), memoryview(payload([m(None, 1, T.Double, 1.0)], 1)), T0
    )
    assert values(data) == [("Temp", 1.0)]
    [a] = anomalies(host.receive(topic("NDATA"), b"\xff\xff\xff", T0))
    assert a.kind == A.DECODE_ERROR and a.dead_letter and a.payload == b"\xff\xff\xff" and a.reason


def test_b2_limits_dead_letter_before_state_changes() -> None:
    limits = HostLimits(
        max_payload_bytes=2_000,
        max_metrics_per_message=3,
        max_edge_nodes=1,
        max_devices_per_node=1,
        max_metrics_per_node=6,
    )
    host = new_host(limits=limits)
    big = host.receive(topic("NBIRTH"), nbirth(metrics=[m("S", 1, T.String, "x" * 3_000)]), T0)
    assert anomalies(big, A.LIMIT_EXCEEDED)[0].dead_letter and not host.node_online(G, E)
    many = host.receive(topic("NBIRTH"), nbirth(metrics=[m("A", 1, T.Int32, 1), m("B", 2, T.Int32, 1)]), T0)
    assert anomalies(many, A.LIMIT_EXCEEDED) and not host.node_online(G, E)
    assert of(host.receive(topic("NBIRTH"), nbirth(), T0), fx.NodeOnline)
    other = host.receive(topic("NBIRTH", node="Edge2"), nbirth(), T0)
    assert anomalies(other, A.LIMIT_EXCEEDED) and not host.node_online(G, "Edge2")
    assert of(host.receive(topic("DBIRTH", "D1"), payload([m("X", 5, T.Int32, 1)], 1), T0), fx.DeviceOnline)
    second = host.receive(topic("DBIRTH", "D2"), payload([m("X", 6, T.Int32, 1)], 2), T0)
    assert anomalies(second, A.LIMIT_EXCEEDED)
    # a re-DBIRTH replaces the device's metrics: 3 node + 3 device metrics fit, 3 + 4 do not
    fits = host.receive(
        topic("DBIRTH", "D1"), payload([m(f"Y{i}", 7 + i, T.Int32, 1) for i in range(3)], 3), T0
    )
    assert anomalies(fits) == [] and of(fits, fx.DeviceOnline)
    over = host.receive(
        topic("DBIRTH", "D1"), payload([m(f"Z{i}", 20 + i, T.Int32, 1) for i in range(4)], 4), T0
    )
    assert anomalies(over, A.LIMIT_EXCEEDED)


def test_b2_oversized_values_are_refused_and_the_rest_applies() -> None:
    limits = HostLimits(max_value_bytes=100, max_array_length=5)
    host = new_host(limits=limits)
    table = DataSet(("a",), (T.Int32,), tuple((i,) for i in range(6)))
    born = host.receive(
        topic("NBIRTH"),
        nbirth(
            metrics=[
                m("Temp", 1, T.Double, 20.5),
                m("Note", 2, T.String, "é" * 60),  # 120 bytes of UTF-8: over, though 60 characters
                m("Blob", 3, T.Bytes, b"\x00" * 100),  # exactly the limit: kept
                m("Arr", 4, T.Int32Array, (1, 2, 3, 4, 5, 6)),
                m("Tab", 5, T.DataSet, table),
            ]
        ),
        T0,
    )
    assert host.node_online(G, E)
    defined = [info.name for e in of(born, fx.MetricsDefined) for info in e.metrics]
    assert {"Note", "Arr", "Tab"} <= set(defined)  # the birth still defines them
    assert sorted(name for name, _ in values(born)) == ["Blob", "Node Control/Rebirth", "Temp", "bdSeq"]
    [dead] = anomalies(born, A.LIMIT_EXCEEDED)
    assert dead.dead_letter and dead.payload is not None
    assert "'Note': a value of 120 bytes exceeds host.limits.max_value_bytes (100)" in dead.reason
    assert "'Arr': 6 elements exceed host.limits.max_array_length (5)" in dead.reason
    assert "'Tab': a DataSet of 6 rows exceeds host.limits.max_array_length (5)" in dead.reason
    # alias-only DATA: the oversized array is refused after it is resolved with the birth's datatype
    data = host.receive(
        topic("NDATA"),
        payload([m(None, 1, T.Double, 21.0), m(None, 4, T.Int32Array, (1, 2, 3, 4, 5, 6, 7))], 1),
        T0 + 1,
    )
    assert values(data) == [("Temp", 21.0)]
    [dead] = anomalies(data, A.LIMIT_EXCEEDED)
    assert "'Arr': 7 elements" in dead.reason and rebirths(data) == []
    fine = host.receive(topic("NDATA"), payload([m(None, 4, T.Int32Array, (1, 2))], 2), T0 + 2)
    assert values(fine) == [("Arr", (1, 2))] and anomalies(fine) == []
