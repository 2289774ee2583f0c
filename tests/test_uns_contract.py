"""The UNS contract: reversible level escaping, topics, and JSON payloads validated against the schemas."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns_bridge.host.effects import MetricInfo, Quality, Sample
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.values import (
    DataSet,
    Metric,
    PropertySet,
    PropertyValue,
    Template,
    TemplateParameter,
)
from uns_bridge.uns.contract import (
    EMPTY_LEVEL,
    ValueRenderer,
    escape_level,
    join_levels,
    metric_topic,
    render_state,
    render_value,
    split_metric_topic,
    unescape_level,
)

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


VALUE_SCHEMA = _validator("uns_value.schema.json")
STATE_SCHEMA = _validator("uns_state.schema.json")

# any Python text, including lone surrogates, NUL, control and non-characters
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=30)
tricky_text = st.text(
    alphabet=st.sampled_from([*list("/+#$%_\x00\x01\x7f\x85a "), "\ud800", "\ufffe", "é"]), max_size=12
)


# ------------------------------------------------------------------------------------------- escaping


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("", "_"),
        ("_", "%5F"),
        ("__", "__"),
        ("a_b", "a_b"),
        ("Motor 1", "Motor 1"),
        ("a/b", "a%2Fb"),
        ("a+b#c", "a%2Bb%23c"),
        ("100%", "100%25"),
        ("$state", "%24state"),
        ("a$", "a$"),
        ("nul\x00", "nul%00"),
        ("tab\t", "tab%09"),
        ("\x85", "%C2%85"),
        ("Öl-Pumpe", "Öl-Pumpe"),
        ("\ud800", "%ED%A0%80"),
    ],
)
def test_escape_examples(text: str, level: str) -> None:
    assert escape_level(text) == level
    assert unescape_level(level) == text


@pytest.mark.parametrize("bad", ["%", "%2", "%2f", "a%zz", "%C3"])
def test_unescape_rejects_text_no_escaping_makes(bad: str) -> None:
    with pytest.raises(ValueError):
        unescape_level(bad)


def _valid_level(level: str) -> bool:
    return (
        level != ""
        and not level.startswith("$")
        and not any(c in level for c in "/+#")
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in level)
    )


@settings(max_examples=300)
@given(st.one_of(any_text, tricky_text))
def test_any_name_round_trips_and_is_a_valid_level(text: str) -> None:
    level = escape_level(text)
    assert unescape_level(level) == text
    assert _valid_level(level)
    level.encode("utf-8")  # always encodable: MQTT requires UTF-8


@settings(max_examples=200)
@given(
    st.lists(st.one_of(any_text, tricky_text), min_size=1, max_size=6),
    st.lists(tricky_text, min_size=1, max_size=4),
)
def test_no_topic_escapes_the_prefix(levels: list[str], metric_parts: list[str]) -> None:
    prefix = "plant/uns"
    base = join_levels(prefix, levels)
    metric = "/".join(metric_parts)
    topic = metric_topic(base, metric)
    parts = topic.split("/")
    assert parts[:2] == ["plant", "uns"]
    assert len(parts) == 2 + len(levels) + metric.count("/") + 1  # fixed depth: no level vanished or split
    assert all(_valid_level(p) for p in parts)
    assert [unescape_level(p) for p in parts[2 : 2 + len(levels)]] == levels
    assert split_metric_topic(topic, base) == metric


def test_metric_folders_become_levels() -> None:
    assert metric_topic("uns/a", "Motor/Speed") == "uns/a/Motor/Speed"
    assert metric_topic("uns/a", "Motor//Speed/") == "uns/a/Motor/_/Speed/_"
    assert metric_topic("uns/a", "") == "uns/a/_"
    assert split_metric_topic("uns/a/Motor/_/Speed/_", "uns/a") == "Motor//Speed/"


# ------------------------------------------------------------------------------------------- payloads


def _info(
    datatype: int, name: str = "Motor/Value", device: str | None = "Press1", unit: str | None = None
) -> MetricInfo:
    return MetricInfo("Plant1-Assembly", "Line1-PLC", device, name, int(datatype), unit=unit)


def _render(datatype: int, value: object, **kw: object) -> dict[str, object]:
    raw = render_value(Sample(_info(datatype), 1_700_000_000_123, value), **kw)  # type: ignore[arg-type]
    data = orjson.loads(raw)
    VALUE_SCHEMA.validate(data)
    assert isinstance(data, dict)
    return data


EXACT_CASES = [
    (DataType.Int8, -128, -128),
    (DataType.Int16, 32767, 32767),
    (DataType.Int32, -2_147_483_648, -2_147_483_648),
    (DataType.Int64, -(2**63), -(2**63)),
    (DataType.Int64, 2**63 - 1, 2**63 - 1),
    (DataType.UInt8, 255, 255),
    (DataType.UInt32, 2**32 - 1, 2**32 - 1),
    (DataType.UInt64, 2**64 - 1, 2**64 - 1),
    (DataType.UInt64, 2**63 + 1, 2**63 + 1),
    (DataType.DateTime, 1_700_000_000_000, 1_700_000_000_000),
    (DataType.Float, 0.10000000149011612, 0.10000000149011612),
    (DataType.Double, -1.5e-300, -1.5e-300),
    (DataType.Double, math.nan, "NaN"),
    (DataType.Double, math.inf, "Infinity"),
    (DataType.Float, -math.inf, "-Infinity"),
    (DataType.Boolean, True, True),
    (DataType.Boolean, False, False),
    (DataType.String, "héllo \u2603 \U0001f600", "héllo \u2603 \U0001f600"),
    (DataType.Text, "", ""),
    (DataType.UUID, "0b5ba5a8-0000-4000-8000-000000000000", "0b5ba5a8-0000-4000-8000-000000000000"),
    (DataType.String, None, None),
    (DataType.Int64Array, (-(2**63), 0, 2**63 - 1), [-(2**63), 0, 2**63 - 1]),
    (DataType.UInt64Array, (2**64 - 1,), [2**64 - 1]),
    (DataType.DoubleArray, (1.5, math.nan, -math.inf), [1.5, "NaN", "-Infinity"]),
    (DataType.BooleanArray, (True, False), [True, False]),
    (DataType.StringArray, ("a", ""), ["a", ""]),
    (DataType.DateTimeArray, (), []),
]


@pytest.mark.parametrize(("datatype", "value", "expected"), EXACT_CASES)
def test_values_are_exact_and_schema_valid(datatype: int, value: object, expected: object) -> None:
    data = _render(datatype, value)
    assert data["value"] == expected
    assert type(data["value"]) is type(expected)
    assert data["datatype"] == DataType(datatype).name
    assert data["timestamp"] == 1_700_000_000_123
    assert data["quality"] == "GOOD"
    assert "encoding" not in data


def test_exact_integers_in_the_raw_json() -> None:
    raw = render_value(Sample(_info(DataType.UInt64), 1, 18446744073709551615))
    assert b'"value":18446744073709551615' in raw
    raw = render_value(Sample(_info(DataType.Int64), 1, -9223372036854775808))
    assert b'"value":-9223372036854775808' in raw


@pytest.mark.parametrize("datatype", [DataType.Bytes, DataType.File])
def test_bytes_are_base64_with_a_marker(datatype: int) -> None:
    blob = bytes(range(256))
    data = _render(datatype, blob)
    assert data["encoding"] == "base64"
    assert isinstance(data["value"], str)
    assert base64.b64decode(data["value"]) == blob


def test_source_unit_seq_quality_and_historical() -> None:
    info = _info(DataType.Double, name="Motor/Temp", unit="degC")
    data = orjson.loads(render_value(Sample(info, 5, 21.5, Quality.STALE, True), seq=17))
    VALUE_SCHEMA.validate(data)
    assert data == {
        "value": 21.5,
        "timestamp": 5,
        "quality": "STALE",
        "datatype": "Double",
        "unit": "degC",
        "source": {
            "group": "Plant1-Assembly",
            "node": "Line1-PLC",
            "device": "Press1",
            "metric": "Motor/Temp",
        },
        "seq": 17,
        "historical": True,
    }
    node = orjson.loads(render_value(Sample(_info(DataType.Int32, device=None), 6, 1, Quality.BAD)))
    VALUE_SCHEMA.validate(node)
    assert node["source"]["device"] is None
    assert node["unit"] is None
    assert node["quality"] == "BAD"
    assert "seq" not in node and "historical" not in node


def test_dataset_template_propertyset_are_structured() -> None:
    dataset = DataSet(
        columns=("id", "name", "temp", "ok"),
        types=(DataType.Int64, DataType.String, DataType.Double, DataType.Boolean),
        rows=((2**63 - 1, "a", math.nan, True), (None, None, 1.25, None)),
    )
    data = _render(DataType.DataSet, dataset)
    assert data["value"] == {
        "columns": ["id", "name", "temp", "ok"],
        "types": ["Int64", "String", "Double", "Boolean"],
        "rows": [[2**63 - 1, "a", "NaN", True], [None, None, 1.25, None]],
    }
    props = PropertySet(
        (
            ("EngUnit", PropertyValue(DataType.String, "rpm")),
            ("Max", PropertyValue(DataType.UInt64, 2**64 - 1)),
        )
    )
    template = Template(
        metrics=(
            Metric("Speed", None, 7, DataType.Float, math.inf, properties=props),
            Metric("Raw", None, None, DataType.Bytes, b"\x01\x02"),
            Metric("Inner", None, None, DataType.Template, Template(template_ref="Sub", metrics=())),
        ),
        parameters=(TemplateParameter("serial", DataType.String, "X1"),),
        version="1.0",
        template_ref="Motor",
    )
    data = _render(DataType.Template, template)
    value = data["value"]
    assert isinstance(value, dict)
    assert value["template_ref"] == "Motor" and value["version"] == "1.0" and value["is_definition"] is False
    assert value["parameters"] == [{"name": "serial", "datatype": "String", "value": "X1"}]
    assert value["metrics"][0] == {
        "name": "Speed",
        "datatype": "Float",
        "value": "Infinity",
        "timestamp": 7,
        "properties": {
            "EngUnit": {"datatype": "String", "value": "rpm"},
            "Max": {"datatype": "UInt64", "value": 2**64 - 1},
        },
    }
    assert value["metrics"][1]["value"] == "AQI="
    assert value["metrics"][2]["value"]["template_ref"] == "Sub"
    data = _render(DataType.PropertySet, props)
    assert data["value"]["Max"] == {"datatype": "UInt64", "value": 2**64 - 1}
    data = _render(DataType.PropertySetList, (props, PropertySet()))
    assert data["value"] == [data["value"][0], {}]


def test_odd_inputs_never_crash() -> None:
    # past 64 bits (orjson refuses) and a lone surrogate (not UTF-8) still give schema-valid JSON
    assert _render(DataType.Int64, 2**70)["value"] == 2**70
    assert isinstance(_render(DataType.String, "a\ud800b")["value"], str)
    assert _render(99, 1)["datatype"] == "Unknown(99)"


def test_renderer_cache_is_bounded_and_keyed_by_object() -> None:
    renderer = ValueRenderer(max_cached=3)
    infos = [_info(DataType.Int32, name=f"m{i}") for i in range(10)]
    for i, info in enumerate(infos):
        assert orjson.loads(renderer.render(Sample(info, i, i)))["source"]["metric"] == f"m{i}"
    assert len(renderer._cache) <= 3
    # two births of the same metric with different units: each object renders its own unit
    a = _info(DataType.Int32, unit="A")
    b = _info(DataType.Int32, unit="B")
    assert orjson.loads(renderer.render(Sample(a, 0, 0)))["unit"] == "A"
    assert orjson.loads(renderer.render(Sample(b, 0, 0)))["unit"] == "B"


@settings(max_examples=200)
@given(
    st.one_of(
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(),
        st.booleans(),
        st.none(),
        st.binary(max_size=64),
    ),
    st.sampled_from(list(Quality)),
    st.one_of(st.none(), st.integers(0, 255)),
)
def test_every_rendered_value_is_schema_valid(value: object, quality: Quality, seq: int | None) -> None:
    datatype = {
        int: DataType.Int64,
        float: DataType.Double,
        str: DataType.String,
        bool: DataType.Boolean,
        bytes: DataType.Bytes,
    }
    info = _info(datatype.get(type(value), DataType.String))
    data = orjson.loads(render_value(Sample(info, 0, value, quality), seq=seq))  # type: ignore[arg-type]
    VALUE_SCHEMA.validate(data)
    if isinstance(value, float) and not math.isnan(value) and not math.isinf(value):
        assert data["value"] == value
    if isinstance(value, bytes):
        assert base64.b64decode(data["value"]) == value


def test_state_payloads() -> None:
    online = orjson.loads(render_state(True, 10, group="G", node="N", bd_seq=3))
    STATE_SCHEMA.validate(online)
    assert online == {
        "online": True,
        "timestamp": 10,
        "source": {"group": "G", "node": "N", "device": None},
        "bd_seq": 3,
    }
    offline = orjson.loads(render_state(False, 11, group="G", node="N", device="D", reason="DDEATH"))
    STATE_SCHEMA.validate(offline)
    assert offline["source"]["device"] == "D" and offline["reason"] == "DDEATH" and offline["online"] is False
    with pytest.raises(jsonschema.ValidationError):
        STATE_SCHEMA.validate(
            {"online": "yes", "timestamp": 1, "source": {"group": "G", "node": "N", "device": None}}
        )


def test_schema_rejects_what_the_contract_forbids() -> None:
    good = _render(DataType.Double, 1.0)
    for broken in (
        {**good, "quality": "UNCERTAIN"},
        {**good, "timestamp": 1.5},
        {k: v for k, v in good.items() if k != "source"},
        {**good, "extra": 1},
    ):
        with pytest.raises(jsonschema.ValidationError):
            VALUE_SCHEMA.validate(broken)
    assert EMPTY_LEVEL == "_"


@pytest.mark.soak
@settings(max_examples=1_000_000, deadline=None)
@given(st.one_of(any_text, tricky_text))
def test_soak_any_name_round_trips(text: str) -> None:
    level = escape_level(text)
    assert unescape_level(level) == text
    assert _valid_level(level)


def test_unexpected_quality_does_not_crash() -> None:
    data = orjson.loads(render_value(Sample(_info(DataType.Int32), 1, 5, "WEIRD")))  # type: ignore[arg-type]
    assert data["quality"] == "WEIRD" and data["value"] == 5
    assert orjson.loads(render_value(Sample(_info(DataType.Int32), 1, 5, "GOOD")))["quality"] == "GOOD"  # type: ignore[arg-type]


def test_malformed_values_from_a_bad_sender_still_render() -> None:
    # an "Int64Array" holding bytes and an object the codec should never produce: JSON, not an exception
    data = _render(DataType.Int64Array, (1, b"\x00", 2**70))
    assert data["value"] == [1, "AA==", 2**70]
    assert isinstance(_render(DataType.String, object())["value"], str)
