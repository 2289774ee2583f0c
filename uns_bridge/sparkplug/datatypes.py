"""Sparkplug B datatype numbers and the facts that hang on them (Sparkplug 3.0, section 6.4.16)."""

from __future__ import annotations

from enum import IntEnum
from types import SimpleNamespace


class DataType(IntEnum):
    """Sparkplug B metric, property and dataset column datatypes."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


#: Bit width of each signed integer type (values are masked to it, then sign-extended).
SIGNED_WIDTH: dict[int, int] = {
    DataType.Int8: 8,
    DataType.Int16: 16,
    DataType.Int32: 32,
    DataType.Int64: 64,
}
#: Bit width of each unsigned integer type.
UNSIGNED_WIDTH: dict[int, int] = {
    DataType.UInt8: 8,
    DataType.UInt16: 16,
    DataType.UInt32: 32,
    DataType.UInt64: 64,
}
INTEGER_TYPES = frozenset(SIGNED_WIDTH) | frozenset(UNSIGNED_WIDTH) | {DataType.DateTime}
FLOAT_TYPES = frozenset({DataType.Float, DataType.Double})
STRING_TYPES = frozenset({DataType.String, DataType.Text, DataType.UUID})
ARRAY_TYPES = frozenset(range(DataType.Int8Array, DataType.DateTimeArray + 1))
NUMERIC_TYPES = INTEGER_TYPES | FLOAT_TYPES | {DataType.Boolean}

#: struct format character (little-endian) of each fixed-width array element.
ARRAY_ELEMENT_FORMAT: dict[int, str] = {
    DataType.Int8Array: "b",
    DataType.Int16Array: "h",
    DataType.Int32Array: "i",
    DataType.Int64Array: "q",
    DataType.UInt8Array: "B",
    DataType.UInt16Array: "H",
    DataType.UInt32Array: "I",
    DataType.UInt64Array: "Q",
    DataType.FloatArray: "f",
    DataType.DoubleArray: "d",
    DataType.DateTimeArray: "q",
}


def datatype_name(datatype: int | None) -> str:
    """The Sparkplug name of a datatype number (``"Int8"``), or ``"Unknown(<n>)"``."""
    if datatype is None:
        return "Unknown"
    try:
        return DataType(datatype).name
    except ValueError:
        return f"Unknown({datatype})"


#: The same numbers as plain ints, for hot code: ``DT.Int8`` costs a dict lookup, while reading a member
#: off the IntEnum class (``DataType.Int8``) costs ~200 ns in Python 3.11.
DT = SimpleNamespace(**{member.name: int(member) for member in DataType})
