"""Interop with an independent implementation (pysparkplug 0.3) for every datatype both support.

pysparkplug covers the scalar types (no arrays, DataSet, Template, properties or metadata), represents
DateTime as ``datetime`` and sends negative Int8/Int16 as value + 2^width. Both directions: its bytes
decode to the expected values with ours (births typed, DATA alias-only resolved with the birth's
datatype), and ours decode with its decoder. One known difference is pinned down below: pysparkplug's
decoder refuses the 32-bit sign extension (Tahu's convention, which our encoder sends) for Int8/Int16.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import pysparkplug as sp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import sparkplug_strategies as S
from uns_bridge.sparkplug.datatypes import SIGNED_WIDTH, DataType
from uns_bridge.sparkplug.payload import decode_payload, encode_payload, resolve_metric
from uns_bridge.sparkplug.values import Metric, Payload

T = DataType
SHARED = [
    T.Int8, T.Int16, T.Int32, T.Int64, T.UInt8, T.UInt16, T.UInt32, T.UInt64, T.Float, T.Double,
    T.Boolean, T.String, T.DateTime, T.Text, T.UUID, T.Bytes, T.File,
]  # fmt: skip
UTC = datetime.UTC


def _ours_to_theirs(datatype: int, value: Any) -> Any:
    if datatype == T.DateTime and value is not None:
        assert isinstance(value, int)
        return datetime.datetime.fromtimestamp(value / 1000, tz=UTC)
    return value


def _their_value(datatype: int) -> st.SearchStrategy[object]:
    if datatype in (T.Bytes, T.File):
        return st.binary(max_size=40)
    if (
        datatype == T.DateTime
    ):  # whole seconds: pysparkplug converts through float seconds (64023 ms -> 64022)
        return st.integers(0, 4_102_444_800).map(lambda s: s * 1000)
    return S.scalar(datatype)


@st.composite
def shared_metrics(draw: st.DrawFn) -> tuple[int, Any, bool]:
    datatype = draw(st.sampled_from(SHARED))
    is_null = draw(st.integers(0, 9)) == 0
    return int(datatype), None if is_null else draw(_their_value(datatype)), is_null


def _same(a: object, b: object) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=150, deadline=None)
@given(st.lists(shared_metrics(), min_size=1, max_size=8), st.integers(0, 255), st.integers(0, 1 << 44))
def test_their_birth_and_data_decode_with_ours(
    items: list[tuple[int, Any, bool]], seq: int, now: int
) -> None:
    theirs = [
        sp.Metric(now + i, f"m{i}", sp.DataType(t), _ours_to_theirs(t, v), alias=i, is_null=null)
        for i, (t, v, null) in enumerate(items)
    ]
    birth = decode_payload(sp.NBirth(now, seq, theirs).encode(include_dtypes=True))
    assert (birth.timestamp, birth.seq) == (now, seq)
    data = decode_payload(
        sp.NData(
            now,
            (seq + 1) % 256,
            [m.__class__(m.timestamp, None, m.datatype, m.value, m.alias, is_null=m.is_null) for m in theirs],
        ).encode()
    )
    for i, ((datatype, value, null), born, raw) in enumerate(
        zip(items, birth.metrics, data.metrics, strict=True)
    ):
        assert (born.name, born.alias, born.timestamp, born.datatype) == (f"m{i}", i, now + i, datatype)
        assert born.is_null is null and _same(born.value, value)
        assert raw.name is None and raw.datatype is None and raw.alias == i
        resolved = resolve_metric(raw, datatype)
        assert resolved.is_null is null and _same(resolved.value, value), (datatype, raw.value)


@settings(max_examples=150, deadline=None)
@given(st.lists(shared_metrics(), min_size=1, max_size=8), st.integers(0, 1 << 44))
def test_our_payloads_decode_with_theirs(items: list[tuple[int, Any, bool]], now: int) -> None:
    # pysparkplug reads Int8/Int16 only as value + 2^width: keep those non-negative here (see below)
    small = (T.Int8, T.Int16)
    items = [(t, -v - 1 if t in small and isinstance(v, int) and v < 0 else v, n) for t, v, n in items]
    ours = Payload(
        now,
        tuple(
            Metric(f"m{i}", i, now + i, t, v, is_null=n, is_historical=i % 2 == 1, is_transient=i % 3 == 1)
            for i, (t, v, n) in enumerate(items)
        ),
        seq=3,
    )
    theirs = sp.NBirth.decode(encode_payload(ours))
    assert theirs.timestamp == now and theirs.seq == 3
    for ours_m, their_m in zip(ours.metrics, theirs.metrics, strict=True):
        assert (their_m.name, their_m.alias, their_m.timestamp) == (
            ours_m.name,
            ours_m.alias,
            ours_m.timestamp,
        )
        assert int(their_m.datatype) == ours_m.datatype
        assert (their_m.is_null, their_m.is_historical, their_m.is_transient) == (
            ours_m.is_null,
            ours_m.is_historical,
            ours_m.is_transient,
        )
        expected = _ours_to_theirs(ours_m.datatype, ours_m.value)
        assert _same(their_m.value, expected), (ours_m.datatype, their_m.value, expected)


@pytest.mark.parametrize(
    ("datatype", "value"), [(T.Int8, -128), (T.Int8, -1), (T.Int16, -32768), (T.Int16, -2)]
)
def test_negative_small_ints_their_convention_and_ours(datatype: int, value: int) -> None:
    width = SIGNED_WIDTH[datatype]
    # theirs → ours: value + 2^width decodes to the negative value
    their_bytes = sp.NBirth(1, 0, [sp.Metric(1, "x", sp.DataType(datatype), value)]).encode(
        include_dtypes=True
    )
    assert decode_payload(their_bytes).metrics[0].value == value
    # ours → theirs: Tahu's 32-bit sign extension, which pysparkplug 0.3 refuses (a known difference)
    our_bytes = encode_payload(Payload(1, (Metric("x", None, 1, datatype, value),), seq=0))
    with pytest.raises(OverflowError, match=f"Int{width} overflow with value {value + (1 << 32)}"):
        sp.NBirth.decode(our_bytes)


def test_both_schemas_live_in_one_process() -> None:
    """Our generated module uses a private descriptor pool, so pysparkplug's identical names don't clash."""
    from pysparkplug._protobuf import sparkplug_b_pb2 as theirs_pb

    from uns_bridge.sparkplug import sparkplug_b_pb2 as ours_pb

    ours_cls: Any = ours_pb.Payload
    theirs_cls: Any = theirs_pb.Payload  # type: ignore[attr-defined]
    assert (
        ours_cls.DESCRIPTOR.full_name
        == theirs_cls.DESCRIPTOR.full_name
        == "org.eclipse.tahu.protobuf.Payload"
    )
    assert ours_cls is not theirs_cls and ours_cls.DESCRIPTOR.file.pool is not theirs_cls.DESCRIPTOR.file.pool
    data = encode_payload(Payload(5, (Metric("a", 1, 5, T.Double, 2.5),), seq=1))
    assert theirs_cls.FromString(data).metrics[0].double_value == 2.5
