"""Value columns (pure): every value encodes and decodes exactly; the value identity tells values apart."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.store_helpers import canon
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.values import DataSet, PropertySet, PropertyValue
from uns_bridge.store import values as V

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 0.0, math.nan, 5e-324])
texts = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20)
scalars = ints | floats | st.booleans() | texts | st.binary(max_size=20) | st.none()


def round_trip(value: object, datatype: int | None = None) -> object:
    cols, _ = V.encode(value, datatype)
    return V.decode(*cols, datatype=datatype)


def jsonb_safe(cols: V.Columns) -> bool:
    """What PostgreSQL would accept in the text / jsonb columns."""
    text, js = cols[4], cols[6]
    return (text is None or V.text_ok(text)) and (js is None or V.text_ok(js))


@settings(max_examples=300)
@given(scalars)
def test_scalars_round_trip(value: object) -> None:
    cols, _ = V.encode(value)
    assert jsonb_safe(cols)
    assert canon(round_trip(value)) == canon(value)


@settings(max_examples=150)
@given(st.lists(floats, max_size=8))
def test_float_arrays_round_trip(items: list[float]) -> None:
    value = tuple(items)
    assert canon(round_trip(value, T.DoubleArray)) == canon(value)


@settings(max_examples=150)
@given(st.lists(texts, max_size=5))
def test_string_arrays_round_trip(items: list[str]) -> None:
    value = tuple(items)
    cols, _ = V.encode(value, T.StringArray)
    assert jsonb_safe(cols)
    assert canon(V.decode(*cols, datatype=T.StringArray)) == canon(value)


#: NaN payload bits are not kept inside structured (JSON) values: every NaN there is the canonical one
json_floats = st.floats(allow_nan=False) | st.sampled_from([math.nan, math.inf, -math.inf, -0.0])


@settings(max_examples=150)
@given(st.lists(st.tuples(ints, json_floats, texts), max_size=4))
def test_datasets_round_trip(rows: list[tuple[int, float, str]]) -> None:
    value = DataSet(("i", "f", "s"), (T.UInt64, T.Double, T.String), tuple(rows))
    cols, _ = V.encode(value, T.DataSet)
    assert jsonb_safe(cols)
    assert canon(V.decode(*cols, datatype=T.DataSet)) == canon(value)


@settings(max_examples=150)
@given(st.lists(st.tuples(texts, json_floats), max_size=4))
def test_property_sets_keep_order_and_duplicates(items: list[tuple[str, float]]) -> None:
    value = PropertySet(tuple((k, PropertyValue(T.Double, v)) for k, v in items))
    cols, _ = V.encode(value, T.PropertySet)
    assert jsonb_safe(cols)
    assert canon(V.decode(*cols, datatype=T.PropertySet)) == canon(value)


@settings(max_examples=300)
@given(scalars, scalars)
def test_value_identity_distinguishes_values(a: object, b: object) -> None:
    (ca, ha), (cb, hb) = V.encode(a), V.encode(b)
    if canon(a) == canon(b):
        assert ha == hb  # a replay of the same value is the same sample
    elif ca[0] == cb[0] and ca[0] in (V.K_INT, V.K_FLOAT, V.K_BOOL, V.K_UINT64):
        assert ha != hb  # numbers: the identity is the value's own bits
    assert V.encode(a)[1] == ha  # stable


def test_kinds_of_special_values() -> None:
    assert V.encode(2**63)[0][:2] == (V.K_UINT64, -(2**63))
    assert V.encode(2**64 - 1)[0][:2] == (V.K_UINT64, -1)
    assert V.encode("a\x00b")[0][0] == V.K_RAWJSON
    assert V.encode("\ud800")[0][0] == V.K_RAWJSON
    assert V.encode((1.0, -0.0), T.FloatArray)[0][0] == V.K_FLOATS
    assert V.encode(None)[0] == V.NULL_COLUMNS
    assert V.encode(2**70)[0][0] == V.K_JSON  # beyond any Sparkplug type, still exact
    assert round_trip(2**70) == 2**70
