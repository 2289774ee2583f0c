"""No bytes and no topic make the host raise (B1); rejected input is a dead letter with a reason and bytes."""

from __future__ import annotations

import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.host_messages import T0, m, nbirth, new_host, payload
from uns_bridge.host import effects as fx
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import PayloadError, decode_payload
from uns_bridge.sparkplug.topic import SparkplugTopic, TopicError, parse_topic

EFFECTS = typing.get_args(fx.Effect)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOAK = settings(max_examples=500_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))

TOPICS = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda g, k, n, d: "/".join(p for p in ("spBv1.0", g, k, n, d) if p is not None),
        st.sampled_from(["Plant1", "", "G+", "STATE"]),
        st.sampled_from(["NBIRTH", "NDEATH", "NDATA", "NCMD", "DBIRTH", "DDEATH", "DDATA", "DCMD", "X"]),
        st.sampled_from(["Edge1", "Edge2", "", "#"]),
        st.sampled_from([None, "D1", "D2", "a/b"]),
    ),
    st.sampled_from(["spBv1.0/STATE/h1", "spBv1.0/STATE/other", "STATE/old"]),
    st.binary(max_size=30),
)
VALID = [
    nbirth(),
    nbirth(seq=0, bd=2, metrics=[m("Temp", 1, T.Double, 1.0), m("S", 2, T.String, "x")]),
    payload([m("Speed", 3, T.Int32, -5)], 1),
    payload([m(None, 1, T.Double, 2.0), m(None, 2, T.String, "y")], 2),
    payload([m("bdSeq", None, T.Int64, 1)], None),
    b'{"online": false, "timestamp": 1}',
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[i:]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


PAYLOADS = st.one_of(st.binary(max_size=200), mutated(), st.sampled_from(VALID))


def rejected(topic: str | bytes, data: bytes) -> bool:
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return True
    if not isinstance(parsed, SparkplugTopic):
        return False
    try:
        decode_payload(data)
    except PayloadError:
        return True
    return False


def check(effects: object, topic: str | bytes | None = None, data: bytes | None = None) -> None:
    assert isinstance(effects, list)
    for effect in effects:
        assert isinstance(effect, EFFECTS), effect
        if isinstance(effect, fx.Anomaly):
            assert effect.reason.strip()
            # the catch-all guard must never be what saved us: every input has a specific answer
            assert not effect.reason.startswith("internal error"), effect
    if topic is not None and data is not None and rejected(topic, data):
        letters = [e for e in effects if isinstance(e, fx.Anomaly) and e.dead_letter]
        assert letters and all(e.payload == data for e in letters), (topic, data, effects)


def play(messages: list[tuple[str | bytes, bytes, int]], role: str) -> None:
    host = new_host(role=role, reorder_ms=100, rebirth_ms=50)
    check(host.receive("spBv1.0/Plant1/NBIRTH/Edge1", nbirth(), T0))
    now = T0
    for topic, data, step in messages:
        now += step
        check(host.receive(topic, data, now), topic, data)
        if step % 3 == 0:
            check(host.tick(now))
    check(host.tick(now + 1_000))
    check(host.connection_lost(now + 1_001))
    host.will(now + 1_002)
    check(host.connected(now + 1_002))
    check(host.disconnecting(now + 1_003))


@FAST
@given(
    st.lists(st.tuples(TOPICS, PAYLOADS, st.integers(0, 200)), max_size=25),
    st.sampled_from(["active", "passive"]),
)
def test_b1_no_input_makes_the_host_raise(messages: list[tuple[str | bytes, bytes, int]], role: str) -> None:
    play(messages, role)


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "spBv1.0/Plant1/NDATA/Edge1",
                    "spBv1.0/Plant1/DDATA/Edge1/D1",
                    "spBv1.0/Plant1/DBIRTH/Edge1/D1",
                    "spBv1.0/Plant1/NDEATH/Edge1",
                    "spBv1.0/Plant1/NBIRTH/Edge1",
                ]
            ),
            mutated(),
            st.integers(0, 200),
        ),
        max_size=25,
    )
)
def test_b1_damaged_messages_on_valid_topics(messages: list[tuple[str | bytes, bytes, int]]) -> None:
    play(messages, "active")


@pytest.mark.soak
@SOAK
@given(st.lists(st.tuples(TOPICS, PAYLOADS, st.integers(0, 200)), max_size=40))
def test_host_fuzz_soak(messages: list[tuple[str | bytes, bytes, int]]) -> None:
    play(messages, "active")
