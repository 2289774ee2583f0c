"""Sparkplug topics: every message type, STATE forms, and each way a topic can be wrong."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uns_bridge.sparkplug.topic import MessageType, SparkplugTopic, StateTopic, TopicError, parse_topic

NODE_TYPES = [t for t in MessageType if not t.is_device]
DEVICE_TYPES = [t for t in MessageType if t.is_device]


@pytest.mark.parametrize("message_type", NODE_TYPES)
def test_node_topics_parse_and_format(message_type: MessageType) -> None:
    text = f"spBv1.0/Plant1/{message_type}/Line1-PLC"
    topic = parse_topic(text)
    assert topic == SparkplugTopic("Plant1", message_type, "Line1-PLC")
    assert str(topic) == text


@pytest.mark.parametrize("message_type", DEVICE_TYPES)
def test_device_topics_parse_and_format(message_type: MessageType) -> None:
    text = f"spBv1.0/Plant1/{message_type}/Line1-PLC/Press 1"
    topic = parse_topic(text.encode())
    assert topic == SparkplugTopic("Plant1", message_type, "Line1-PLC", "Press 1")
    assert str(topic) == text


def test_message_type_predicates() -> None:
    assert MessageType.DBIRTH.is_device and MessageType.DBIRTH.is_birth
    assert MessageType.NDEATH.is_death and not MessageType.NDEATH.is_device
    assert MessageType.NDATA.is_data and MessageType.DCMD.is_command


def test_state_topics() -> None:
    assert parse_topic("spBv1.0/STATE/host-1") == StateTopic("host-1")
    assert parse_topic("STATE/host-1") == StateTopic("host-1", legacy=True)
    assert str(StateTopic("h")) == "spBv1.0/STATE/h"
    assert str(StateTopic("h", legacy=True)) == "STATE/h"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("spAv1.0/G/NDATA/N", "must start with spBv1.0/"),
        ("spBv1.0/G/NDATA/N/D", "node message and takes no device id"),
        ("spBv1.0/G/DDATA/N", "needs a device id"),
        ("spBv1.0/G/DDATA/N/D/x", "contains '/'"),
        ("spBv1.0/G/XDATA/N", "unknown Sparkplug message type"),
        ("spBv1.0/G+/NDATA/N", "contains +"),
        ("spBv1.0/G/NDATA/N#", "contains #"),
        ("spBv1.0//NDATA/N", "group id is empty"),
        ("spBv1.0/G/NDATA/", "edge node id is empty"),
        ("spBv1.0/G/DDATA/N/", "device id is empty"),
        ("spBv1.0/G/NDATA", "needs spBv1.0/<group>/<type>/<edge node>"),
        ("spBv1.0/STATE/", "host id is empty"),
        (b"spBv1.0/G/NDATA/\xff", "not valid UTF-8"),
        ("spBv1.0/G/NDATA/a\x00b", "NUL"),
    ],
)
def test_invalid_topics_say_what_is_wrong(topic: str | bytes, reason: str) -> None:
    with pytest.raises(TopicError, match=reason.replace("+", r"\+").replace("/", "/").replace("(", r"\(")):
        parse_topic(topic)


def test_building_invalid_topics_is_refused() -> None:
    with pytest.raises(TopicError):
        SparkplugTopic("G", MessageType.NDATA, "N", "D")
    with pytest.raises(TopicError):
        SparkplugTopic("G", MessageType.DDATA, "N")
    with pytest.raises(TopicError):
        SparkplugTopic("G/x", MessageType.NDATA, "N")


ids = st.text(
    st.characters(blacklist_characters="+#/\x00", blacklist_categories=["Cs"]), min_size=1, max_size=20
)


@given(ids, ids, ids, st.sampled_from(list(MessageType)))
def test_any_valid_ids_round_trip(group: str, node: str, device: str, message_type: MessageType) -> None:
    topic = SparkplugTopic(group, message_type, node, device if message_type.is_device else None)
    assert parse_topic(str(topic)) == topic


@given(st.one_of(st.text(max_size=60), st.binary(max_size=60)))
def test_arbitrary_input_raises_only_topic_error(data: str | bytes) -> None:
    try:
        topic = parse_topic(data)
    except TopicError as exc:
        assert str(exc)  # a reason, never an empty message
    else:
        assert parse_topic(str(topic)) == topic
