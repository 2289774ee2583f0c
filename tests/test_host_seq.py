"""Sequence rules S1-S4 and rebirth rate limiting R2-R3, messages written out."""

from __future__ import annotations

from tests.host_messages import (
    T0,
    anomalies,
    m,
    nbirth,
    new_host,
    of,
    payload,
    rebirths,
    samples,
    topic,
    values,
)
from uns_bridge.host import effects as fx
from uns_bridge.host.host import Host
from uns_bridge.sparkplug.datatypes import DataType as T

A = fx.AnomalyKind


def data(seq: int, value: float) -> bytes:
    return payload([m(None, 1, T.Double, value, ts=T0 + seq)], seq)


def born(**kw: object) -> Host:
    host = new_host(**kw)  # type: ignore[arg-type]
    host.receive(topic("NBIRTH"), nbirth(seq=0), T0)
    return host


def test_s1_seq_wraps_255_to_0_across_node_and_devices_tck_id_payloads_sequence_num_incrementing() -> None:
    host = born()
    host.receive(topic("DBIRTH", "D1"), payload([m("Speed", 2, T.Int32, 0)], 1), T0)
    got: list[object] = []
    for i in range(2, 600):
        seq = i % 256
        if i % 3:
            effects = host.receive(topic("NDATA"), data(seq, float(i)), T0 + i)
        else:
            effects = host.receive(
                topic("DDATA", "D1"), payload([m(None, 2, T.Int32, i, ts=T0 + i)], seq), T0 + i
            )
        assert anomalies(effects) == [], (i, effects)
        got.extend(v for _, v in values(effects))
    assert got == list(range(2, 600))


def test_s1_nbirth_resets_seq_tck_id_payloads_sequence_num_zero_nbirth() -> None:
    host = born()
    host.receive(topic("NDATA"), data(1, 1.0), T0 + 1)
    host.receive(topic("NDATA"), data(2, 2.0), T0 + 2)
    host.receive(topic("NBIRTH"), nbirth(seq=0, bd=2, ts=T0 + 3), T0 + 3)
    effects = host.receive(topic("NDATA"), data(1, 3.0), T0 + 4)
    assert values(effects) == [("Temp", 3.0)] and anomalies(effects) == []


def test_s2_gap_holds_then_releases_in_order_when_filled_tck_id_host_reordering_success() -> None:
    host = born()
    first = host.receive(topic("NDATA"), data(2, 2.0), T0 + 1)  # seq 1 missing
    assert samples(first) == []
    [gap] = anomalies(first, A.SEQ_GAP)
    assert not gap.dead_letter and host.next_deadline() == T0 + 1 + 1_000  # tck-id-...-reordering-start
    assert samples(host.receive(topic("NDATA"), data(3, 3.0), T0 + 2)) == []
    filled = host.receive(topic("NDATA"), data(1, 1.0), T0 + 3)
    assert values(filled) == [("Temp", 1.0), ("Temp", 2.0), ("Temp", 3.0)]
    assert host.next_deadline() is None  # timer terminated
    assert rebirths(host.tick(T0 + 5_000)) == []
    assert values(host.receive(topic("NDATA"), data(4, 4.0), T0 + 6)) == [("Temp", 4.0)]


def test_s3_reorder_timeout_releases_in_order_and_requests_rebirth_tck_id_host_reordering_rebirth() -> None:
    host = born()
    host.receive(topic("NDATA"), data(3, 3.0), T0 + 10)
    host.receive(topic("NDATA"), data(2, 2.0), T0 + 11)  # seq 1 never comes
    assert host.tick(T0 + 1_009) == []  # not yet
    effects = host.tick(T0 + 1_010)
    assert values(effects) == [("Temp", 2.0), ("Temp", 3.0)]
    [cmd] = rebirths(effects)
    assert cmd.topic == "spBv1.0/Plant1/NCMD/Edge1"
    assert "seq 1" in of(effects, fx.RebirthRequested)[0].reason
    assert host.next_deadline() is None


def test_s3_passive_host_releases_but_never_commands() -> None:
    host = born(role="passive")
    host.receive(topic("NDATA"), data(2, 2.0), T0)
    effects = host.tick(T0 + 1_000)
    assert values(effects) == [("Temp", 2.0)] and of(effects, fx.Publish) == []


def test_s4_duplicate_not_stored_twice() -> None:
    host = born()
    raw = data(1, 1.0)
    assert values(host.receive(topic("NDATA"), raw, T0 + 1)) == [("Temp", 1.0)]
    again = host.receive(topic("NDATA"), raw, T0 + 2)
    assert samples(again) == [] and anomalies(again, A.SEQ_DUPLICATE)
    # a duplicate of a held message is dropped too
    held = data(3, 3.0)
    host.receive(topic("NDATA"), held, T0 + 3)
    assert anomalies(host.receive(topic("NDATA"), held, T0 + 4), A.SEQ_DUPLICATE)
    released = host.receive(topic("NDATA"), data(2, 2.0), T0 + 5)
    assert values(released) == [("Temp", 2.0), ("Temp", 3.0)]


def test_s4_late_message_after_giving_up_is_historical() -> None:
    host = born()
    host.receive(topic("NDATA"), data(2, 2.0), T0 + 1)
    host.tick(T0 + 1_001)
    late = host.receive(topic("NDATA"), data(1, 1.0), T0 + 1_002)
    [sample] = samples(late)
    assert sample.value == 1.0 and sample.is_historical
    assert anomalies(late, A.SEQ_LATE)


def test_s_message_without_seq_is_dead_lettered() -> None:
    host = born()
    effects = host.receive(topic("NDATA"), payload([m(None, 1, T.Double, 1.0)], None), T0 + 1)
    assert samples(effects) == [] and anomalies(effects)[0].dead_letter


def test_r2_rebirth_rate_limited_per_node_and_deferred_to_window_end() -> None:
    host = new_host(rebirth_ms=5_000)
    first = host.receive(topic("NDATA"), data(1, 1.0), T0)
    assert len(rebirths(first)) == 1
    # the same node again inside the window: no second command now ...
    assert rebirths(host.receive(topic("NDATA"), data(2, 1.0), T0 + 100)) == []
    # ... but another node is not limited by it
    assert len(rebirths(host.receive(topic("NDATA", node="Edge2"), data(1, 1.0), T0 + 100))) == 1
    assert host.next_deadline() == T0 + 5_000
    assert rebirths(host.tick(T0 + 4_999)) == []
    assert len(rebirths(host.tick(T0 + 5_000))) == 1
    assert rebirths(host.tick(T0 + 20_000)) == []  # one per window, not one per message


def test_r3_nothing_sent_while_disconnected() -> None:
    host = born()
    host.connection_lost(T0 + 1)
    effects = host.receive(topic("NDATA"), data(1, 1.0), T0 + 2)
    assert of(effects, fx.Publish) == [] and anomalies(effects, A.DATA_BEFORE_BIRTH)
