"""Fuzz the host core: arbitrary, mutated and plausible message sequences through ``Host.receive``.

``receive`` and ``tick`` never raise; every effect is one of the effect types; every Anomaly has a reason;
every message the codec or the topic parser rejects comes back as an Anomaly with ``dead_letter`` set,
its topic, a reason and the payload bytes.
"""

from __future__ import annotations

import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.wire import payload_bytes, session, topic
from uns_bridge.host import effects as fx

host_module = pytest.importorskip("uns_bridge.host.host", reason="the host core has not landed yet")
codec = pytest.importorskip("uns_bridge.sparkplug.payload", reason="the codec has not landed yet")
topics = pytest.importorskip("uns_bridge.sparkplug.topic", reason="the topic parser has not landed yet")

EFFECT_TYPES = typing.get_args(fx.Effect)
DEFAULT = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOAK = settings(max_examples=1_000_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
T0 = 1_700_000_000_000


def new_host() -> typing.Any:
    config = host_module.HostConfig(
        host_id="fuzz", role="active", reorder_timeout_ms=200, rebirth_interval_ms=100
    )
    return host_module.Host(config)


def rejected(topic_: str, data: bytes) -> bool:
    """Whether the topic parser or the codec refuses this message (so the host must dead-letter it)."""
    try:
        parsed = topics.parse_topic(topic_)
    except topics.TopicError:
        return True
    if not isinstance(parsed, topics.SparkplugTopic):
        return False  # STATE: JSON, not protobuf
    try:
        codec.decode_payload(data)
    except codec.PayloadError:
        return True
    return False


def check_effects(effects: object, topic_: str | None = None, data: bytes | None = None) -> None:
    assert isinstance(effects, list)
    for effect in effects:
        assert isinstance(effect, EFFECT_TYPES), f"not an effect: {effect!r}"
        if isinstance(effect, fx.Anomaly):
            assert isinstance(effect.reason, str) and effect.reason.strip(), (
                f"anomaly without a reason: {effect!r}"
            )
            assert isinstance(effect.kind, fx.AnomalyKind)
    if topic_ is not None and data is not None and rejected(topic_, data):
        letters = [e for e in effects if isinstance(e, fx.Anomaly) and e.dead_letter]
        assert letters, f"rejected message on {topic_!r} not dead-lettered: {effects!r}"
        assert any(e.topic == topic_ and e.payload == data for e in letters), letters


def run_messages(messages: list[tuple[str, bytes, int]]) -> None:
    host = new_host()
    now = T0
    host.will(now)
    check_effects(host.connected(now))
    for topic_, data, step in messages:
        now += step
        check_effects(host.receive(topic_, data, now), topic_, data)
        deadline = host.next_deadline()
        if deadline is not None and deadline <= now:
            check_effects(host.tick(now))
    check_effects(host.tick(now + 10_000))
    check_effects(host.connection_lost(now + 10_001))
    check_effects(host.connected(now + 10_002))
    check_effects(host.disconnecting(now + 10_003))


steps = st.integers(min_value=0, max_value=500)
random_messages = st.lists(st.tuples(topic(), payload_bytes, steps), max_size=20)


@st.composite
def sessions(draw: st.DrawFn) -> list[tuple[str, bytes, int]]:
    out: list[tuple[str, bytes, int]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        out += [(t, p, draw(steps)) for t, p in draw(session())]
    out += draw(st.lists(st.tuples(topic(), payload_bytes, steps), max_size=5))
    return draw(st.permutations(out)) if draw(st.integers(min_value=0, max_value=4)) == 0 else out


@DEFAULT
@given(random_messages)
def test_random_messages_never_break_the_host(messages: list[tuple[str, bytes, int]]) -> None:
    run_messages(messages)


@DEFAULT
@given(sessions())
def test_plausible_damaged_sessions_never_break_the_host(messages: list[tuple[str, bytes, int]]) -> None:
    run_messages(messages)


def test_garbage_on_a_valid_topic_is_dead_lettered_with_a_reason() -> None:
    host = new_host()
    host.connected(T0)
    data = b"\xff\xff\xff not protobuf"
    effects = host.receive("spBv1.0/G/NDATA/E1", data, T0 + 1)
    check_effects(effects, "spBv1.0/G/NDATA/E1", data)
    letters = [e for e in effects if isinstance(e, fx.Anomaly) and e.dead_letter]
    assert letters and letters[0].kind == fx.AnomalyKind.DECODE_ERROR


@pytest.mark.soak
@SOAK
@given(st.one_of(random_messages, sessions()))
def test_host_soak(messages: list[tuple[str, bytes, int]]) -> None:
    run_messages(messages)
