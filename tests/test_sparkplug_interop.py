"""Interoperability with an independent Sparkplug implementation (pysparkplug), in both directions.

pysparkplug supports the scalar datatypes (no arrays, DataSets or Templates). Two known differences are
pinned here: it sends negative Int8/Int16/Int32 as value + 2^width (we send the 32-bit sign extension,
as Tahu does; we decode both), and its DateTime is a datetime computed through float seconds.
"""

from __future__ import annotations

import datetime as dt

import pysparkplug as psp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import sparkplug_strategies as S
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import decode_payload, encode_payload, resolve_metric
from uns_bridge.sparkplug.values import Metric, Payload

PAIRS = [
    (T.Int8, psp.DataType.INT8),
    (T.Int16, psp.DataType.INT16),
    (T.Int32, psp.DataType.INT32),
    (T.Int64, psp.DataType.INT64),
    (T.UInt8, psp.DataType.UINT8),
    (T.UInt16, psp.DataType.UINT16),
    (T.UInt32, psp.DataType.UINT32),
    (T.UInt64, psp.DataType.UINT64),
    (T.Float, psp.DataType.FLOAT),
    (T.Double, psp.DataType.DOUBLE),
    (T.Boolean, psp.DataType.BOOLEAN),
    (T.String, psp.DataType.STRING),
    (T.Text, psp.DataType.TEXT),
    (T.UUID, psp.DataType.UUID),
    (T.Bytes, psp.DataType.BYTES),
    (T.File, psp.DataType.FILE),
]


def value_for(ours: int) -> st.SearchStrategy[object]:
    return st.binary(max_size=20) if ours in (T.Bytes, T.File) else S.scalar(ours)


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=[p[0].name for p in PAIRS])
@settings(max_examples=40)
@given(data=st.data())
def test_their_birth_decodes_with_ours(ours: int, theirs: psp.DataType, data: st.DataObject) -> None:
    value = data.draw(value_for(ours))
    raw = psp.NBirth(
        timestamp=1_700_000_000_000,
        seq=0,
        metrics=(psp.Metric(timestamp=1_700_000_000_001, name="m", datatype=theirs, value=value, alias=7),),
    ).encode()
    metric = decode_payload(raw).metrics[0]
    assert (metric.name, metric.alias, metric.timestamp, metric.datatype) == ("m", 7, 1_700_000_000_001, ours)
    assert metric.value == value


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=[p[0].name for p in PAIRS])
@settings(max_examples=40)
@given(data=st.data())
def test_their_alias_only_data_resolves_with_ours(
    ours: int, theirs: psp.DataType, data: st.DataObject
) -> None:
    value = data.draw(value_for(ours))
    raw = psp.DData(
        timestamp=5,
        seq=3,
        metrics=(psp.Metric(timestamp=6, name=None, datatype=theirs, value=value, alias=9),),
    ).encode()
    metric = decode_payload(raw).metrics[0]
    assert metric.datatype is None and metric.alias == 9
    assert resolve_metric(metric, ours).value == value


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=[p[0].name for p in PAIRS])
@settings(max_examples=40)
@given(data=st.data())
def test_our_birth_decodes_with_theirs(ours: int, theirs: psp.DataType, data: st.DataObject) -> None:
    value = data.draw(value_for(ours))
    if ours in (T.Int8, T.Int16, T.Int32) and isinstance(value, int) and value < 0:
        value = -value - 1  # pysparkplug rejects the 32-bit sign extension: see the test below
    raw = encode_payload(Payload(10, (Metric("m", 4, 11, ours, value),), seq=0))
    metric = next(iter(psp.NBirth.decode(raw).metrics))
    assert (metric.name, metric.alias, metric.timestamp, metric.datatype) == ("m", 4, 11, theirs)
    assert metric.value == value


def test_negative_small_ints_both_conventions() -> None:
    theirs = psp.NBirth(
        timestamp=1,
        seq=0,
        metrics=(psp.Metric(timestamp=1, name="i8", datatype=psp.DataType.INT8, value=-128),),
    ).encode()
    assert decode_payload(theirs).metrics[0].value == -128
    ours = encode_payload(Payload(1, (Metric("i8", None, 1, T.Int8, -128),), seq=0))
    with pytest.raises(OverflowError):  # pysparkplug accepts only value + 2^8
        psp.NBirth.decode(ours)


def test_datetime_agrees_to_the_millisecond() -> None:
    when = dt.datetime(2026, 12, 2, 12, 0, 0, 250_000, tzinfo=dt.UTC)
    raw = psp.NBirth(
        timestamp=1,
        seq=0,
        metrics=(psp.Metric(timestamp=1, name="t", datatype=psp.DataType.DATETIME, value=when),),
    ).encode()
    assert decode_payload(raw).metrics[0].value == int(when.timestamp() * 1000)


def test_our_rebirth_command_decodes_with_theirs() -> None:
    raw = encode_payload(Payload(42, (Metric("Node Control/Rebirth", None, 42, T.Boolean, True),)))
    command = psp.NCmd.decode(raw)
    (metric,) = tuple(command.metrics)
    assert (metric.name, metric.datatype, metric.value) == (
        "Node Control/Rebirth",
        psp.DataType.BOOLEAN,
        True,
    )
