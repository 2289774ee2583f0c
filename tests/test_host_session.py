"""Host session rules H1-H5, C1-C2 (STATE 3.0, Will, reconnect), one test per rule, messages written out."""

from __future__ import annotations

import orjson

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
    rebirths,
    samples,
    topic,
)
from uns_bridge.config import HostLimits, HostSettings
from uns_bridge.host import effects as fx
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import decode_payload


def test_h1_will_is_state_offline_qos1_retained_tck_id_host_topic_phid_death_payload() -> None:
    host = Host(HostConfig(host_id="h1"))
    will = host.will(T0)
    assert will.topic == "spBv1.0/STATE/h1"
    assert orjson.loads(will.payload) == {"online": False, "timestamp": T0}
    assert (will.qos, will.retain) == (1, True)


def test_h1_new_later_timestamp_per_connection_tck_id_multi_server_timestamp() -> None:
    host = Host(HostConfig(host_id="h1"))
    first = orjson.loads(host.will(T0).payload)["timestamp"]
    host.connected(T0)
    host.connection_lost(T0 + 5)
    second = orjson.loads(host.will(T0 + 10).payload)["timestamp"]
    assert second == T0 + 10 > first
    # a clock that did not move (or stepped back) still yields a later timestamp
    third = orjson.loads(host.will(T0 + 3).payload)["timestamp"]
    assert third > second


def test_h2_birth_is_first_publish_same_timestamp_tck_id_host_topic_phid_birth_payload() -> None:
    host = Host(HostConfig(host_id="h1"))
    will = host.will(T0)
    effects = host.connected(T0 + 7)
    first = effects[0]
    assert isinstance(first, fx.Publish)
    assert first.topic == "spBv1.0/STATE/h1" and (first.qos, first.retain) == (1, True)
    assert orjson.loads(first.payload) == {
        "online": True,
        "timestamp": orjson.loads(will.payload)["timestamp"],
    }


def test_h2_subscribes_own_state_and_sparkplug_qos1_tck_id_host_topic_phid_birth_sub_required() -> None:
    assert Host(HostConfig(host_id="h1")).subscriptions() == [("spBv1.0/#", 1), ("spBv1.0/STATE/h1", 1)]
    per_group = Host(HostConfig(host_id="h1", groups=("A", "B"))).subscriptions()
    assert per_group == [("spBv1.0/A/#", 1), ("spBv1.0/B/#", 1), ("spBv1.0/STATE/h1", 1)]


def test_h3_own_state_offline_republished_online_tck_id_message_flow_hid_state_delivered() -> None:
    host = new_host()
    offline = orjson.dumps({"online": False, "timestamp": T0})
    effects = host.receive("spBv1.0/STATE/h1", offline, T0 + 1)
    assert len(effects) == 1 and isinstance(effects[0], fx.Publish)
    assert effects[0].topic == "spBv1.0/STATE/h1" and effects[0].retain
    assert orjson.loads(effects[0].payload) == {"online": True, "timestamp": T0}
    # online=true on our own topic needs nothing
    assert host.receive("spBv1.0/STATE/h1", orjson.dumps({"online": True, "timestamp": T0}), T0 + 2) == []


def test_h4_clean_shutdown_publishes_state_offline_first_tck_id_host_application_termination() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0 + 1)
    effects = host.disconnecting(T0 + 9)
    assert isinstance(effects[0], fx.Publish)
    assert orjson.loads(effects[0].payload) == {"online": False, "timestamp": T0}
    assert (effects[0].qos, effects[0].retain) == (1, True)
    assert of(effects, fx.NodeOffline)[0].reason == "host shutdown"
    assert {i.name for s in of(effects, fx.MetricsStale) for i in s.metrics} >= {"Temp", "bdSeq"}


def test_h4_nothing_published_after_the_death_certificate() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    # a held message with an unknown alias would ask for a rebirth, but not after our STATE death
    host.receive(topic("NDATA"), payload([m(None, 99, T.Double, 1.0)], 2), T0 + 1)
    effects = host.disconnecting(T0 + 2)
    assert [p.topic for p in of(effects, fx.Publish)] == ["spBv1.0/STATE/h1"]
    assert anomalies(effects, fx.AnomalyKind.UNKNOWN_ALIAS)


def test_h5_other_hosts_state_3_0_and_legacy_are_not_data() -> None:
    host = new_host()
    assert host.receive("spBv1.0/STATE/other", orjson.dumps({"online": False, "timestamp": 1}), T0) == []
    assert host.receive("STATE/legacy-host", b"OFFLINE", T0) == []
    assert host.receive("STATE/legacy-host", b"ONLINE", T0) == []
    # our own id under the legacy topic is not ours either (3.0 only)
    assert host.receive("STATE/h1", b"OFFLINE", T0) == []


def test_h5_commands_of_other_hosts_are_not_data() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    cmd = payload([m("Node Control/Rebirth", None, T.Boolean, True)], None)
    assert host.receive(topic("NCMD"), cmd, T0 + 1) == []
    assert host.receive(topic("DCMD", "D1"), cmd, T0 + 1) == []


def test_c1_connection_lost_makes_everything_stale() -> None:
    host = new_host()
    host.receive(topic("NBIRTH"), nbirth(), T0)
    host.receive(topic("DBIRTH", "D1"), payload([m("Speed", 2, T.Int32, 5)], 1), T0)
    effects = host.connection_lost(T0 + 50)
    stale = {(i.device, i.name) for s in of(effects, fx.MetricsStale) for i in s.metrics}
    assert {(None, "Temp"), ("D1", "Speed")} <= stale
    assert all(s.timestamp == T0 + 50 for s in of(effects, fx.MetricsStale))
    assert [d.device for d in of(effects, fx.DeviceOffline)] == ["D1"]
    assert of(effects, fx.NodeOffline)[0].reason == "connection lost"
    assert not host.node_online(G, E)


def test_c2_reconnect_requests_rebirth_of_known_nodes_and_data_waits_for_birth() -> None:
    host = new_host(rebirth_ms=1_000)
    host.receive(topic("NBIRTH"), nbirth(), T0)
    host.connection_lost(T0 + 10)
    host.will(T0 + 2_000)
    effects = host.connected(T0 + 2_000)
    assert isinstance(effects[0], fx.Publish) and effects[0].topic == "spBv1.0/STATE/h1"
    [cmd] = rebirths(effects)
    assert cmd.topic == f"spBv1.0/{G}/NCMD/{E}"
    assert of(effects, fx.RebirthRequested)[0].reason == "host reconnected"
    # DATA with the old aliases is not trusted until the node is reborn
    data = host.receive(topic("NDATA"), payload([m(None, 1, T.Double, 1.0)], 1), T0 + 2_001)
    assert not samples(data)
    assert anomalies(data, fx.AnomalyKind.DATA_BEFORE_BIRTH)[0].dead_letter


def test_c2_passive_host_never_requests_on_reconnect() -> None:
    host = new_host(role="passive")
    host.receive(topic("NBIRTH"), nbirth(), T0)
    host.connection_lost(T0 + 10)
    host.will(T0 + 20)
    effects = host.connected(T0 + 20)
    assert rebirths(effects) == [] and of(effects, fx.RebirthRequested) == []


def test_host_config_from_settings_mirrors_host_settings() -> None:
    limits = HostLimits(max_payload_bytes=10, max_metrics_per_message=2)
    settings = HostSettings(
        id="x", role="passive", reorder_timeout_ms=3, rebirth_interval_ms=4, limits=limits
    )
    config = HostConfig.from_settings(settings, ("G1",))
    assert config == HostConfig("x", "passive", 3, 4, ("G1",), limits)


def test_r1_rebirth_request_is_ncmd_boolean_true_no_seq_qos0() -> None:
    host = new_host()
    effects = host.receive(topic("NDATA"), payload([m(None, 1, T.Double, 1.0)], 5), T0 + 3)
    [cmd] = rebirths(effects)
    assert (cmd.topic, cmd.qos, cmd.retain) == (f"spBv1.0/{G}/NCMD/{E}", 0, False)
    decoded = decode_payload(cmd.payload)
    assert decoded.seq is None and decoded.timestamp == T0 + 3
    assert [(x.name, x.datatype, x.value) for x in decoded.metrics] == [
        ("Node Control/Rebirth", T.Boolean, True)
    ]
