"""Edge node session rules N1-N5 (births, bdSeq deaths, device deaths), messages written out."""

from __future__ import annotations

from tests.host_messages import (
    T0,
    E,
    G,
    anomalies,
    m,
    nbirth,
    ndeath,
    new_host,
    of,
    payload,
    rebirths,
    samples,
    topic,
    values,
)
from uns_bridge.host import effects as fx
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import encode_payload
from uns_bridge.sparkplug.values import Payload

A = fx.AnomalyKind


def test_n1_nbirth_defines_catalog_records_bdseq_tck_id_topics_nbirth_bdseq_included() -> None:
    host = new_host()
    effects = host.receive(topic("NBIRTH"), nbirth(bd=7), T0 + 5)
    [online] = of(effects, fx.NodeOnline)
    assert (online.group, online.node, online.bd_seq, online.timestamp) == (G, E, 7, T0 + 5)
    [defined] = of(effects, fx.MetricsDefined)
    assert defined.device is None
    assert {(i.name, i.datatype, i.alias) for i in defined.metrics} == {
        ("bdSeq", T.Int64, 100),
        ("Node Control/Rebirth", T.Boolean, 101),
        ("Temp", T.Double, 1),
    }
    assert host.node_online(G, E)


def test_n1_nbirth_replaces_whole_catalog_and_aliases() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(metrics=[m("Temp", 1, T.Double, 1.0), m("Old", 2, T.Int32, 3)]), T0)
    host.receive(topic("DBIRTH", "D1"), payload([m("Speed", 3, T.Int32, 1)], 1), T0)
    reborn = host.receive(
        topic("NBIRTH"), nbirth(bd=2, metrics=[m("New", 2, T.Int32, 4)], ts=T0 + 9), T0 + 10
    )
    # the old session ends: devices offline, old metrics STALE
    assert of(reborn, fx.NodeOffline)[0].reason == "rebirth"
    assert [d.device for d in of(reborn, fx.DeviceOffline)] == ["D1"]
    assert {"Temp", "Old", "Speed"} <= {i.name for s in of(reborn, fx.MetricsStale) for i in s.metrics}
    # alias 2 now means "New"; alias 1 means nothing; the device waits for its own DBIRTH
    data = host.receive(
        topic("NDATA"), payload([m(None, 2, T.Int32, 5), m(None, 1, T.Double, 2.0)], 1), T0 + 11
    )
    assert values(data) == [("New", 5)]
    assert anomalies(data, A.UNKNOWN_ALIAS)[0].dead_letter
    ddata = host.receive(topic("DDATA", "D1"), payload([m(None, 3, T.Int32, 2)], 2), T0 + 12)
    assert samples(ddata) == [] and anomalies(ddata, A.DATA_BEFORE_BIRTH)


def test_n1_duplicate_nbirth_delivery_is_not_a_rebirth() -> None:
    host = new_host()
    birth = nbirth()
    host.receive(topic("NBIRTH"), birth, T0)
    again = host.receive(topic("NBIRTH"), birth, T0 + 1)
    assert samples(again) == [] and of(again, fx.MetricsDefined) == []
    assert anomalies(again, A.SEQ_DUPLICATE)


def test_n2_birth_values_are_samples() -> None:
    host = new_host()
    effects = host.receive(topic("NBIRTH"), nbirth(bd=3), T0)
    assert sorted(values(effects), key=str) == sorted(
        [("bdSeq", 3), ("Node Control/Rebirth", False), ("Temp", 20.5)], key=str
    )
    dbirth = host.receive(topic("DBIRTH", "D1"), payload([m("Mode", 5, T.String, "auto", ts=T0 + 1)], 1), T0)
    [sample] = samples(dbirth)
    assert (sample.metric.device, sample.metric.name, sample.value, sample.timestamp) == (
        "D1",
        "Mode",
        "auto",
        T0 + 1,
    )
    assert sample.quality == fx.Quality.GOOD and not sample.is_historical


def test_n3_ndeath_matching_bdseq_at_receive_time_tck_id_payloads_ndeath_bdseq() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(bd=4), T0)
    host.receive(topic("DBIRTH", "D1"), payload([m("Speed", 2, T.Int32, 1)], 1), T0)
    effects = host.receive(topic("NDEATH"), ndeath(bd=4), T0 + 500)  # payload timestamp is T0
    [off] = of(effects, fx.NodeOffline)
    assert (off.reason, off.timestamp, off.bd_seq) == ("NDEATH", T0 + 500, 4)
    [dev] = of(effects, fx.DeviceOffline)
    assert (dev.device, dev.timestamp) == ("D1", T0 + 500)
    stale = {(i.device, i.name) for s in of(effects, fx.MetricsStale) for i in s.metrics}
    assert stale == {(None, "bdSeq"), (None, "Node Control/Rebirth"), (None, "Temp"), ("D1", "Speed")}
    assert all(s.timestamp == T0 + 500 for s in of(effects, fx.MetricsStale))
    assert not host.node_online(G, E)


def test_n3_stale_and_duplicate_ndeath_ignored_and_reported() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(bd=5), T0)
    # the Will of the previous session (bdSeq 4) arrives late: ignored
    stale = host.receive(topic("NDEATH"), ndeath(bd=4), T0 + 1)
    assert of(stale, fx.NodeOffline) == [] and of(stale, fx.MetricsStale) == []
    assert anomalies(stale, A.STALE_DEATH) and host.node_online(G, E)
    host.receive(topic("NDEATH"), ndeath(bd=5), T0 + 2)
    duplicate = host.receive(topic("NDEATH"), ndeath(bd=5), T0 + 3)
    assert of(duplicate, fx.NodeOffline) == [] and anomalies(duplicate, A.STALE_DEATH)


def test_n3_ndeath_bdseq_by_alias_only_is_matched() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(bd=6), T0)
    by_alias = encode_payload(Payload(T0, (m(None, 100, T.Int64, 6, ts=None),)), omit_alias_datatypes=True)
    effects = host.receive(topic("NDEATH"), by_alias, T0 + 1)
    assert of(effects, fx.NodeOffline)


def test_n4_ddeath_payload_timestamp_device_and_its_metrics_stale() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    host.receive(topic("DBIRTH", "D1"), payload([m("Speed", 2, T.Int32, 1)], 1), T0)
    host.receive(topic("DBIRTH", "D2"), payload([m("Speed", 3, T.Int32, 1)], 2), T0)
    effects = host.receive(topic("DDEATH", "D1"), payload([], 3, ts=T0 + 40), T0 + 99)
    [dev] = of(effects, fx.DeviceOffline)
    assert (dev.device, dev.timestamp, dev.reason) == ("D1", T0 + 40, "DDEATH")
    [stale] = of(effects, fx.MetricsStale)
    assert [(i.device, i.name) for i in stale.metrics] == [("D1", "Speed")] and stale.timestamp == T0 + 40
    assert of(effects, fx.NodeOffline) == []
    # the other device and the node go on
    data = host.receive(topic("DDATA", "D2"), payload([m(None, 3, T.Int32, 9)], 4), T0 + 100)
    assert values(data) == [("Speed", 9)]
    # a second DDEATH of the same device is a stale death
    again = host.receive(topic("DDEATH", "D1"), payload([], 5), T0 + 101)
    assert anomalies(again, A.STALE_DEATH) and of(again, fx.DeviceOffline) == []


def test_n5_data_before_birth_dead_lettered_and_rebirth_requested() -> None:
    host = new_host()
    raw = payload([m(None, 1, T.Double, 1.0)], 3)
    effects = host.receive(topic("NDATA"), raw, T0)
    [letter] = anomalies(effects, A.DATA_BEFORE_BIRTH)
    assert letter.dead_letter and letter.payload == raw and letter.topic == topic("NDATA")
    assert samples(effects) == []
    assert len(rebirths(effects)) == 1
    for kind, device in (("DBIRTH", "D1"), ("DDATA", "D1"), ("DDEATH", "D1")):
        later = host.receive(topic(kind, device), payload([m("X", 9, T.Int32, 1)], 4), T0 + 1)
        assert anomalies(later, A.DATA_BEFORE_BIRTH) and samples(later) == []


def test_n5_ddata_before_its_dbirth() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    effects = host.receive(topic("DDATA", "D9"), payload([m(None, 1, T.Double, 1.0)], 1), T0 + 1)
    assert anomalies(effects, A.DATA_BEFORE_BIRTH)[0].dead_letter and samples(effects) == []
    assert rebirths(effects)


def test_n5_passive_host_reports_but_never_commands() -> None:
    host = new_host(role="passive")
    effects = host.receive(topic("NDATA"), payload([m(None, 1, T.Double, 1.0)], 3), T0)
    assert anomalies(effects, A.DATA_BEFORE_BIRTH) and of(effects, fx.Publish) == []
    assert of(effects, fx.RebirthRequested) == []
