"""The payload codec: hand-written byte vectors, round trips of every datatype, malformed input."""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import sparkplug_strategies as S
from uns_bridge.sparkplug import sparkplug_b_pb2 as pb
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import PayloadError, decode_payload, encode_payload, resolve_metric
from uns_bridge.sparkplug.values import (
    DataSet,
    MetaData,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    Template,
    TemplateParameter,
)

PB: Any = pb.Payload


def one_metric(**fields: object) -> bytes:
    """A payload of one metric built directly with protobuf (independent of our encoder)."""
    message = PB()
    metric = message.metrics.add()
    for key, value in fields.items():
        setattr(metric, key, value)
    return bytes(message.SerializeToString())


# ---- signed integers: both sender conventions --------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "wire", "expected"),
    [
        (T.Int8, 4294967168, -128),  # 32-bit sign extension (Tahu)
        (T.Int8, 128, -128),  # value + 2^8 (pysparkplug)
        (T.Int8, 127, 127),
        (T.Int8, 4294967295, -1),
        (T.Int8, 255, -1),
        (T.Int16, 4294934528, -32768),
        (T.Int16, 32768, -32768),
        (T.Int32, 4294967284, -12),  # the classic "-12 stored as 4294967284" bug
        (T.Int32, 2147483647, 2147483647),
        (T.UInt32, 4294967295, 4294967295),
        (T.UInt8, 255, 255),
    ],
)
def test_signed_and_unsigned_int_value(datatype: int, wire: int, expected: int) -> None:
    metric = decode_payload(one_metric(name="m", datatype=datatype, int_value=wire)).metrics[0]
    assert metric.value == expected


@pytest.mark.parametrize(
    ("datatype", "wire", "expected"),
    [
        (T.Int64, (1 << 64) - 1, -1),
        (T.Int64, 1 << 63, -(1 << 63)),
        (T.UInt64, (1 << 64) - 1, (1 << 64) - 1),
        (T.DateTime, 1_700_000_000_123, 1_700_000_000_123),
        (T.Int8, (1 << 64) - 128, -128),  # 64-bit sign extension in long_value
    ],
)
def test_long_value(datatype: int, wire: int, expected: int) -> None:
    assert (
        decode_payload(one_metric(name="m", datatype=datatype, long_value=wire)).metrics[0].value == expected
    )


def test_encoder_sends_32_bit_sign_extension() -> None:
    data = encode_payload(Payload(1, (Metric("m", None, None, T.Int8, -128),)))
    assert PB.FromString(data).metrics[0].int_value == 4294967168


@pytest.mark.parametrize(
    ("datatype", "wire"), [(T.Int8, 1000), (T.UInt8, 256), (T.UInt16, 70000), (T.Int16, 1 << 20)]
)
def test_out_of_range_integers_are_rejected(datatype: int, wire: int) -> None:
    with pytest.raises(PayloadError, match="out of range"):
        decode_payload(one_metric(name="m", datatype=datatype, int_value=wire))


# ---- arrays: bytes spelled out -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        (T.Int8Array, bytes([0xFF, 0x00, 0x7F, 0x80]), (-1, 0, 127, -128)),
        (T.Int16Array, bytes([0x01, 0x00, 0xFF, 0xFF]), (1, -1)),
        (T.Int32Array, bytes([0xF4, 0xFF, 0xFF, 0xFF]), (-12,)),
        (T.Int64Array, bytes([0xFF] * 8), (-1,)),
        (T.UInt8Array, bytes([0xFF, 0x01]), (255, 1)),
        (T.UInt16Array, bytes([0x34, 0x12]), (0x1234,)),
        (T.UInt32Array, bytes([0xFF, 0xFF, 0xFF, 0xFF]), (4294967295,)),
        (T.UInt64Array, bytes([0xFF] * 8), ((1 << 64) - 1,)),
        (T.FloatArray, bytes([0x00, 0x00, 0xC0, 0x3F]), (1.5,)),
        (T.DoubleArray, bytes([0, 0, 0, 0, 0, 0, 0xF0, 0x7F]), (math.inf,)),
        (T.DateTimeArray, struct.pack("<q", 1_700_000_000_000), (1_700_000_000_000,)),
        # count 10 (LE), then bits MSB first: 1011 0000 | 01xx xxxx
        (
            T.BooleanArray,
            bytes([10, 0, 0, 0, 0b10110000, 0b01000000]),
            (True, False, True, True, False, False, False, False, False, True),
        ),
        (T.BooleanArray, bytes([0, 0, 0, 0]), ()),
        (T.StringArray, b"ab\x00\x00\xc3\xbc\x00", ("ab", "", "ü")),
        (T.StringArray, b"", ()),
    ],
)
def test_array_vectors(datatype: int, data: bytes, expected: tuple[object, ...]) -> None:
    metric = decode_payload(one_metric(name="a", datatype=datatype, bytes_value=data)).metrics[0]
    assert metric.value == expected
    assert PB.FromString(encode_payload(Payload(None, (metric,)))).metrics[0].bytes_value == data


@pytest.mark.parametrize(
    ("datatype", "data", "reason"),
    [
        (T.Int16Array, b"\x01", "cannot be 1 bytes long"),
        (T.DoubleArray, b"\x00" * 12, "cannot be 12 bytes long"),
        (T.BooleanArray, b"\x01\x00", "needs a 4-byte count"),
        (T.BooleanArray, bytes([9, 0, 0, 0, 0xFF]), "takes 6 bytes"),
        (T.StringArray, b"abc", "must end with a NUL"),
        (T.StringArray, b"\xff\x00", "not valid UTF-8"),
    ],
)
def test_bad_arrays(datatype: int, data: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decode_payload(one_metric(name="a", datatype=datatype, bytes_value=data))


# ---- floats, strings, nulls, mismatches -------------------------------------------------------------


def test_float_specials_survive() -> None:
    for datatype, field in ((T.Float, "float_value"), (T.Double, "double_value")):
        for value in (math.inf, -math.inf):
            assert (
                decode_payload(one_metric(name="f", datatype=datatype, **{field: value})).metrics[0].value
                == value
            )
        nan = decode_payload(one_metric(name="f", datatype=datatype, **{field: math.nan})).metrics[0].value
        assert isinstance(nan, float) and math.isnan(nan)


def test_null_has_no_value() -> None:
    metric = decode_payload(one_metric(name="n", datatype=T.Int32, is_null=True)).metrics[0]
    assert metric.is_null and metric.value is None


@pytest.mark.parametrize(
    "fields",
    [
        {"datatype": T.Float, "string_value": "x"},
        {"datatype": T.Int32, "double_value": 1.0},
        {"datatype": T.Boolean, "int_value": 1},
        {"datatype": T.String, "bytes_value": b"x"},
        {"datatype": T.Int16Array, "string_value": "x"},
    ],
)
def test_value_field_must_match_datatype(fields: dict[str, object]) -> None:
    with pytest.raises(PayloadError, match="needs a"):
        decode_payload(one_metric(name="m", **fields))


def test_alias_only_data_resolves_with_the_birth_datatype() -> None:
    data = encode_payload(Payload(5, (Metric(None, 7, 6, T.Int16, -2),)), omit_alias_datatypes=True)
    raw = decode_payload(data).metrics[0]
    assert raw.datatype is None and raw.value == 4294967294
    assert resolve_metric(raw, T.Int16) == Metric(None, 7, 6, T.Int16, -2)
    with pytest.raises(PayloadError):
        resolve_metric(raw, T.Float)


# ---- datasets, templates, properties ----------------------------------------------------------------


def test_dataset_with_nulls_round_trips() -> None:
    ds = DataSet(("step", "temp", "ok"), (T.Int32, T.Double, T.Boolean), ((1, 20.5, True), (-2, None, False)))
    assert (
        decode_payload(encode_payload(Payload(1, (Metric("r", None, 1, T.DataSet, ds),)))).metrics[0].value
        == ds
    )


def test_dataset_rows_must_match_columns() -> None:
    message = PB()
    metric = message.metrics.add()
    metric.name, metric.datatype = "d", T.DataSet
    metric.dataset_value.num_of_columns = 2
    metric.dataset_value.columns.extend(["a", "b"])
    metric.dataset_value.types.extend([T.Int32, T.Int32])
    metric.dataset_value.rows.add().elements.add().int_value = 1
    with pytest.raises(PayloadError, match="row 0 has 1 cells for 2 columns"):
        decode_payload(message.SerializeToString())
    metric.dataset_value.num_of_columns = 3
    with pytest.raises(PayloadError, match="declares 3 columns"):
        decode_payload(message.SerializeToString())


def test_nested_templates_and_property_sets_round_trip() -> None:
    inner = Template(metrics=(Metric("rpm", None, None, T.UInt16, 1500),), template_ref="Motor")
    outer = Template(
        metrics=(
            Metric("m1", None, None, T.Template, inner),
            Metric("on", None, None, T.Boolean, None, is_null=True),
        ),
        template_ref="Line",
    )
    props = PropertySet(
        (
            ("engUnit", PropertyValue(T.String, "rpm")),
            ("Quality", PropertyValue(T.Int32, 192)),
            ("limits", PropertyValue(T.PropertySet, PropertySet((("hi", PropertyValue(T.Double, 9.5)),)))),
            (
                "list",
                PropertyValue(
                    T.PropertySetList, (PropertySet(), PropertySet((("x", PropertyValue(T.Int8, -1)),)))
                ),
            ),
        )
    )
    payload = Payload(1, (Metric("line", None, 1, T.Template, outer, properties=props),))
    assert decode_payload(encode_payload(payload)) == payload


# ---- malformed bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x12\x05\x0a", "not a valid Sparkplug B protobuf payload"),  # truncated
        (b"\x10\x01", "wrong wire type"),  # metrics (#2) sent as a varint
        (b"\x12\x02\x08\x05", "wrong wire type"),  # metric name (#1) sent as a varint
    ],
)
def test_malformed_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decode_payload(data)


def test_unknown_extension_fields_are_ignored() -> None:
    data = (
        encode_payload(Payload(1, (Metric("a", None, 2, T.Int32, 3),))) + b"\x30\x05"
    )  # field 6: an extension
    assert decode_payload(data).metrics[0].value == 3


# ---- properties of the whole codec -------------------------------------------------------------------


@settings(max_examples=300)
@given(S.payloads)
def test_round_trip_every_datatype(payload: Payload) -> None:
    assert decode_payload(encode_payload(payload)) == payload


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_payload_error(data: bytes) -> None:
    try:
        decode_payload(data)
    except PayloadError as exc:
        assert str(exc)


@settings(max_examples=200)
@given(S.payloads, st.data())
def test_mutated_payloads_raise_only_payload_error(payload: Payload, data: st.DataObject) -> None:
    raw = bytearray(encode_payload(payload))
    if raw:
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    with contextlib.suppress(PayloadError):
        decode_payload(bytes(raw))


def test_encoder_rejects_values_that_do_not_fit() -> None:
    for metric in (
        Metric("a", None, None, T.Int8, 200),
        Metric("a", None, None, T.UInt64, -1),
        Metric("a", None, None, T.Float, 1e300),
        Metric("a", None, None, T.String, 5),
        Metric("a", None, None, T.Int32Array, ("x",)),
    ):
        with pytest.raises(PayloadError):
            encode_payload(Payload(1, (metric,)))


@pytest.mark.parametrize(
    "data",
    [
        b"\x12\x04\x0a\x02\xff\xfe",  # metric name
        b"\x22\x02\xff\xfe",  # payload uuid
        b"\x12\x06\x20\x0c\x7a\x02\xc3\x28",  # String value
    ],
)
def test_invalid_utf8_is_rejected(data: bytes) -> None:
    with pytest.raises(PayloadError, match="not valid UTF-8"):
        decode_payload(data)


# ---- alias-only DATA of every type, resolved with the birth's datatype ----------------------------


@settings(max_examples=300)
@given(st.lists(S.data_metrics(), min_size=1, max_size=6), st.integers(0, 255))
def test_alias_only_data_of_every_type_resolves_to_the_original(metrics: list[Metric], seq: int) -> None:
    payload = Payload(1_777_777_777_777, tuple(metrics), seq=seq)
    decoded = decode_payload(encode_payload(payload, omit_alias_datatypes=True))
    assert all(m.datatype is None for m in decoded.metrics)
    resolved = tuple(
        resolve_metric(raw, original.datatype)  # type: ignore[arg-type]
        for raw, original in zip(decoded.metrics, metrics, strict=True)
    )
    assert decoded._replace(metrics=resolved) == payload


def test_decoding_a_typed_metric_gives_the_typed_value_directly() -> None:
    data = encode_payload(
        Payload(1, (Metric(None, 3, 2, T.Int16Array, (-1, 2)), Metric(None, 4, 2, T.Int8, -5)))
    )
    metrics = decode_payload(data).metrics
    assert metrics[0].value == (-1, 2) and metrics[1].value == -5
    assert metrics[1].datatype == T.Int8 and resolve_metric(metrics[1], T.Int8) is metrics[1]
    with pytest.raises(PayloadError, match="does not match the birth's Int16"):
        resolve_metric(metrics[1], T.Int16)


# ---- more malformed structures ----------------------------------------------------------------------


def _dataset_message(types: list[int], cell: dict[str, object]) -> bytes:
    message = PB()
    metric = message.metrics.add()
    metric.name, metric.datatype = "d", T.DataSet
    ds = metric.dataset_value
    ds.num_of_columns = len(types)
    ds.columns.extend(f"c{i}" for i in range(len(types)))
    ds.types.extend(types)
    row = ds.rows.add()
    for _ in types:
        element = row.elements.add()
        for key, value in cell.items():
            setattr(element, key, value)
    return bytes(message.SerializeToString())


@pytest.mark.parametrize(
    ("types", "cell", "reason"),
    [
        ([T.Int32], {"string_value": "x"}, "column 'c0': Int32 needs an integer field"),
        ([T.Bytes], {"int_value": 1}, "Bytes needs a bytes field"),
        ([T.PropertySet], {"int_value": 1}, "PropertySet is not allowed here"),
        ([T.Int8], {"int_value": 300}, "out of range for a 8-bit signed integer"),
        ([99], {"int_value": 1}, r"Unknown\(99\) is not allowed here"),
    ],
)
def test_bad_dataset_cells(types: list[int], cell: dict[str, object], reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decode_payload(_dataset_message(types, cell))


def test_dataset_null_cells_and_empty_dataset() -> None:
    decoded = decode_payload(_dataset_message([T.Int32, T.String], {}))
    assert decoded.metrics[0].value == DataSet(("c0", "c1"), (T.Int32, T.String), ((None, None),))
    empty = DataSet((), (), ())
    assert (
        decode_payload(encode_payload(Payload(1, (Metric("e", None, 1, T.DataSet, empty),)))).metrics[0].value
        == empty
    )


def test_property_set_keys_and_values_must_pair_up() -> None:
    message = PB()
    metric = message.metrics.add()
    metric.name, metric.datatype, metric.int_value = "p", T.Int32, 1
    metric.properties.keys.extend(["a", "b"])
    metric.properties.values.add().type = T.Int32
    with pytest.raises(PayloadError, match="properties: 2 keys but 1 values"):
        decode_payload(message.SerializeToString())


@pytest.mark.parametrize(
    ("datatype", "field", "reason"),
    [
        (T.Int32, "string_value", "Int32 needs an integer field"),
        (T.Int32, "propertyset_value", "needs type PropertySet"),
        (T.PropertySet, "int_value", "needs a property set value"),
        (T.String, "propertysets_value", "needs type PropertySetList"),
    ],
)
def test_bad_property_values(datatype: int, field: str, reason: str) -> None:
    message = PB()
    metric = message.metrics.add()
    metric.name, metric.datatype, metric.int_value = "p", T.Int32, 1
    metric.properties.keys.append("q")
    value = metric.properties.values.add()
    value.type = datatype
    if field.startswith("propertyset"):
        getattr(value, field).SetInParent()
    else:
        setattr(value, field, "x" if field == "string_value" else 1)
    with pytest.raises(PayloadError, match=reason):
        decode_payload(message.SerializeToString())


def test_quality_and_nested_property_sets_decode_from_hand_built_protobuf() -> None:
    message = PB()
    metric = message.metrics.add()
    metric.name, metric.datatype, metric.double_value = "t", T.Double, 20.5
    props = metric.properties
    props.keys.extend(["Quality", "limits", "history"])
    quality = props.values.add()
    quality.type, quality.int_value = T.Int32, 192
    limits = props.values.add()
    limits.type = T.PropertySet
    limits.propertyset_value.keys.append("hi")
    hi = limits.propertyset_value.values.add()
    hi.type, hi.is_null = T.Float, True
    history = props.values.add()
    history.type = T.PropertySetList
    entry = history.propertysets_value.propertyset.add()
    entry.keys.append("stale")
    stale = entry.values.add()
    stale.type, stale.int_value = T.Int32, 4294966796  # -500, sign-extended
    decoded = decode_payload(message.SerializeToString()).metrics[0].properties
    assert decoded == PropertySet(
        (
            ("Quality", PropertyValue(T.Int32, 192)),
            (
                "limits",
                PropertyValue(T.PropertySet, PropertySet((("hi", PropertyValue(T.Float, None, True)),))),
            ),
            (
                "history",
                PropertyValue(T.PropertySetList, (PropertySet((("stale", PropertyValue(T.Int32, -500)),)),)),
            ),
        )
    )


def test_template_definition_and_instance_with_parameters() -> None:
    definition = Template(
        metrics=(
            Metric("rpm", None, None, T.UInt16, 0),
            Metric("fault", None, None, T.String, None, is_null=True),
        ),
        parameters=(TemplateParameter("ratedKw", T.Double, 7.5), TemplateParameter("serial", T.String, None)),
        version="1.0",
        is_definition=True,
    )
    instance = Template(
        metrics=(Metric("rpm", None, 5, T.UInt16, 1480),),
        parameters=(TemplateParameter("ratedKw", T.Double, 11.0),),
        template_ref="Motor",
    )
    payload = Payload(
        1,
        (Metric("_types_/Motor", None, 1, T.Template, definition), Metric("M1", 9, 1, T.Template, instance)),
    )
    decoded = decode_payload(encode_payload(payload))
    assert decoded == payload
    wire = PB.FromString(encode_payload(payload))
    assert wire.metrics[0].template_value.is_definition and not wire.metrics[0].template_value.HasField(
        "template_ref"
    )
    assert wire.metrics[1].template_value.template_ref == "Motor"


def test_template_parameter_value_must_match_its_type() -> None:
    message = PB()
    metric = message.metrics.add()
    metric.name, metric.datatype = "t", T.Template
    param = metric.template_value.parameters.add()
    param.name, param.type, param.string_value = "p", T.Int32, "x"
    with pytest.raises(PayloadError, match="parameter 'p': Int32 needs an integer field"):
        decode_payload(message.SerializeToString())


def test_metadata_of_a_file_round_trips() -> None:
    md = MetaData(is_multi_part=False, content_type="application/pdf", size=3, seq=0, file_name="a.pdf",
                  file_type="pdf", md5="d41d8cd98f00b204e9800998ecf8427e", description="manual")  # fmt: skip
    payload = Payload(1, (Metric("doc", None, 1, T.File, b"%PD", metadata=md),))
    assert decode_payload(encode_payload(payload)) == payload


@pytest.mark.parametrize(
    "data",
    [
        b"\x12\x04\x42\x02\x2a\xff",  # metadata (#8) content_type: b"\xff"... truncated length inside
        b"\x12\x05\x42\x03\x12\x01\xff",  # metadata content_type not UTF-8
        b"\x12\x06\x4a\x04\x0a\x02\xc3\x28",  # property key not UTF-8
    ],
)
def test_nested_garbage_is_a_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_payload(data)


SOAK = settings(max_examples=200_000, deadline=None, database=None)


@pytest.mark.soak
@SOAK
@given(S.payloads)
def test_round_trip_every_datatype_soak(payload: Payload) -> None:
    assert decode_payload(encode_payload(payload)) == payload


@pytest.mark.soak
@SOAK
@given(st.lists(S.data_metrics(), min_size=1, max_size=6))
def test_alias_only_data_soak(metrics: list[Metric]) -> None:
    payload = Payload(1, tuple(metrics), seq=0)
    decoded = decode_payload(encode_payload(payload, omit_alias_datatypes=True))
    resolved = tuple(resolve_metric(r, o.datatype) for r, o in zip(decoded.metrics, metrics, strict=True))  # type: ignore[arg-type]
    assert resolved == payload.metrics
