"""Hypothesis strategies for Sparkplug values of every datatype (shared by codec, host and store tests)."""

from __future__ import annotations

import struct

from hypothesis import strategies as st

from uns_bridge.sparkplug.datatypes import SIGNED_WIDTH, UNSIGNED_WIDTH, DataType
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

T = DataType
text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
names = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=20
)
floats32 = st.floats(width=32, allow_nan=False) | st.sampled_from([float("inf"), float("-inf")])
doubles = st.floats(allow_nan=False)


def scalar(datatype: int) -> st.SearchStrategy[object]:
    """Values of the scalar types (the ones a DataSet cell, parameter or property may hold)."""
    if datatype in SIGNED_WIDTH:
        w = SIGNED_WIDTH[datatype]
        return st.integers(-(1 << (w - 1)), (1 << (w - 1)) - 1)
    if datatype in UNSIGNED_WIDTH:
        return st.integers(0, (1 << UNSIGNED_WIDTH[datatype]) - 1)
    if datatype == T.DateTime:
        return st.integers(0, (1 << 63) - 1)
    if datatype == T.Float:
        return floats32
    if datatype == T.Double:
        return doubles
    if datatype == T.Boolean:
        return st.booleans()
    if datatype in (T.String, T.Text, T.UUID):
        return text
    raise ValueError(datatype)


SCALAR_TYPES = [
    *SIGNED_WIDTH,
    *UNSIGNED_WIDTH,
    T.DateTime,
    T.Float,
    T.Double,
    T.Boolean,
    T.String,
    T.Text,
    T.UUID,
]


def array(datatype: int) -> st.SearchStrategy[tuple[object, ...]]:
    elements: dict[int, DataType] = {
        T.Int8Array: T.Int8,
        T.Int16Array: T.Int16,
        T.Int32Array: T.Int32,
        T.Int64Array: T.Int64,
        T.UInt8Array: T.UInt8,
        T.UInt16Array: T.UInt16,
        T.UInt32Array: T.UInt32,
        T.UInt64Array: T.UInt64,
        T.FloatArray: T.Float,
        T.DoubleArray: T.Double,
        T.BooleanArray: T.Boolean,
        T.DateTimeArray: T.DateTime,
    }
    element = elements.get(datatype)
    if datatype == T.StringArray:
        return st.lists(names, max_size=5).map(tuple)
    assert element is not None
    return st.lists(scalar(element), max_size=6).map(tuple)


@st.composite
def datasets(draw: st.DrawFn) -> DataSet:
    types = draw(st.lists(st.sampled_from(SCALAR_TYPES), min_size=1, max_size=4))
    columns = tuple(draw(st.lists(names, min_size=len(types), max_size=len(types), unique=True)))
    rows = draw(st.lists(st.tuples(*[st.none() | scalar(t) for t in types]), max_size=4))
    return DataSet(columns, tuple(int(t) for t in types), tuple(rows))


def property_sets(depth: int = 2) -> st.SearchStrategy[PropertySet]:
    leaf = st.sampled_from(SCALAR_TYPES).flatmap(
        lambda t: st.builds(PropertyValue, st.just(int(t)), scalar(t))
    ) | st.sampled_from(SCALAR_TYPES).map(lambda t: PropertyValue(int(t), None, True))
    values = leaf
    if depth > 0:
        nested = property_sets(depth - 1)
        values = (
            leaf
            | nested.map(lambda s: PropertyValue(int(T.PropertySet), s))
            | st.lists(nested, max_size=2).map(lambda ss: PropertyValue(int(T.PropertySetList), tuple(ss)))
        )
    return st.lists(st.tuples(names, values), max_size=3, unique_by=lambda kv: kv[0]).map(
        lambda items: PropertySet(tuple(items))
    )


def value_of(datatype: int, depth: int = 1) -> st.SearchStrategy[object]:
    if datatype in SCALAR_TYPES:
        return scalar(datatype)
    if datatype in (T.Bytes, T.File):
        return st.binary(max_size=20)
    if T.Int8Array <= datatype <= T.DateTimeArray:
        return array(datatype)
    if datatype == T.DataSet:
        return datasets()
    if datatype == T.Template:
        return templates(depth)
    raise ValueError(datatype)


metadata = st.builds(
    MetaData,
    is_multi_part=st.none() | st.booleans(),
    content_type=st.none() | text,
    size=st.none() | st.integers(0, (1 << 64) - 1),
    seq=st.none() | st.integers(0, (1 << 64) - 1),
    file_name=st.none() | names,
    file_type=st.none() | text,
    md5=st.none() | text,
    description=st.none() | text,
)

METRIC_TYPES = [t for t in DataType if t not in (T.Unknown, T.PropertySet, T.PropertySetList)]


@st.composite
def metrics(draw: st.DrawFn, depth: int = 1) -> Metric:
    datatype = draw(
        st.sampled_from(METRIC_TYPES if depth > 0 else [t for t in METRIC_TYPES if t != T.Template])
    )
    is_null = draw(st.booleans().map(lambda b: b and draw(st.integers(0, 9)) == 0))
    value = None if is_null else draw(value_of(datatype, depth - 1))
    return Metric(
        name=draw(names),
        alias=draw(st.none() | st.integers(0, (1 << 64) - 1)),
        timestamp=draw(st.none() | st.integers(0, (1 << 64) - 1)),
        datatype=int(datatype),
        value=value,  # type: ignore[arg-type]
        is_historical=draw(st.booleans()),
        is_transient=draw(st.booleans()),
        is_null=is_null,
        metadata=draw(st.none() | metadata),
        properties=draw(st.none() | property_sets(1)),
    )


@st.composite
def templates(draw: st.DrawFn, depth: int = 0) -> Template:
    params = draw(
        st.lists(
            st.sampled_from(SCALAR_TYPES).flatmap(
                lambda t: st.builds(TemplateParameter, names, st.just(int(t)), st.none() | scalar(t))
            ),
            max_size=3,
        )
    )
    definition = draw(st.booleans())
    return Template(
        metrics=tuple(draw(st.lists(metrics(depth), max_size=3))),
        parameters=tuple(params),
        version=draw(st.none() | names),
        template_ref=None if definition else draw(names),
        is_definition=definition,
    )


payloads = st.builds(
    Payload,
    timestamp=st.none() | st.integers(0, (1 << 64) - 1),
    metrics=st.lists(metrics(), max_size=5).map(tuple),
    seq=st.none() | st.integers(0, 255),
    uuid=st.none() | names,
    body=st.none() | st.binary(max_size=10),
)


def float32(x: float) -> float:
    """``x`` rounded to a 32-bit float, as the wire keeps it."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


@st.composite
def data_metrics(draw: st.DrawFn) -> Metric:
    """A DATA metric as edge nodes send it: alias and timestamp, no name (value of any metric type)."""
    metric = draw(metrics())
    return metric._replace(
        name=None,
        alias=draw(st.integers(0, (1 << 64) - 1)),
        timestamp=draw(st.integers(0, (1 << 64) - 1)),
        metadata=None,
        properties=None,
    )
