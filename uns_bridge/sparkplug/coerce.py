"""Wire value → typed value for every datatype, and the array encodings.

* Int8/16/32 travel in ``int_value`` (uint32), Int64 in ``long_value`` (uint64). Senders disagree on
  negative values: some sign-extend to 32 (or 64) bits, others send value + 2^width. Both are accepted:
  a value that fits the width is read as the type's two's complement, a larger one as a 32- or 64-bit
  sign extension; anything else is out of range.
* Arrays are little-endian in ``bytes_value``; BooleanArray is a 4-byte LE count followed by the bits
  packed most-significant-bit first; StringArray is NUL-terminated UTF-8 strings.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from uns_bridge.sparkplug.datatypes import (
    ARRAY_ELEMENT_FORMAT,
    DT,
    SIGNED_WIDTH,
    UNSIGNED_WIDTH,
    datatype_name,
)
from uns_bridge.sparkplug.errors import PayloadError
from uns_bridge.sparkplug.values import DataSet, Template, Value

_U32 = 1 << 32
_U64 = 1 << 64


def signed(value: int, width: int, where: str) -> int:
    """A wire integer read as a signed ``width``-bit value, whichever sender convention was used."""
    half = 1 << (width - 1)
    if 0 <= value < (1 << width):
        return value - (1 << width) if value >= half else value
    if _U32 - half <= value < _U32 or _U64 - half <= value < _U64:
        return value - (_U32 if value < _U32 else _U64)
    raise PayloadError(f"{where}: {value} is out of range for a {width}-bit signed integer")


def unsigned(value: int, width: int, where: str) -> int:
    if 0 <= value < (1 << width):
        return value
    raise PayloadError(f"{where}: {value} is out of range for a {width}-bit unsigned integer")


def kind(raw: object) -> str:
    """How a wire value is described in error messages."""
    if isinstance(raw, DataSet):
        return "a dataset"
    if isinstance(raw, Template):
        return "a template"
    return {int: "an integer", float: "a float", bool: "a boolean", str: "a string", bytes: "bytes"}.get(
        type(raw), type(raw).__name__
    )


def _needs(datatype: int, what: str, raw: object, where: str) -> PayloadError:
    return PayloadError(f"{where}: {datatype_name(datatype)} needs {what} field, got {kind(raw)}")


# --------------------------------------------------------------------------------------------------
# arrays


def unpack_array(datatype: int, data: bytes, where: str) -> tuple[object, ...]:
    """The elements of an array datatype's ``bytes_value``."""
    if datatype == DT.BooleanArray:
        if len(data) < 4:
            raise PayloadError(f"{where}: a BooleanArray needs a 4-byte count, got {len(data)} bytes")
        (count,) = struct.unpack_from("<I", data)
        needed = 4 + (count + 7) // 8
        if len(data) != needed:
            raise PayloadError(
                f"{where}: a BooleanArray of {count} values takes {needed} bytes, got {len(data)}"
            )
        bits = data[4:]
        return tuple(bool(bits[i >> 3] & (0x80 >> (i & 7))) for i in range(count))
    if datatype == DT.StringArray:
        if not data:
            return ()
        if data[-1] != 0:
            raise PayloadError(f"{where}: a StringArray must end with a NUL byte")
        try:
            return tuple(part.decode("utf-8") for part in data[:-1].split(b"\x00"))
        except UnicodeDecodeError as exc:
            raise PayloadError(f"{where}: a StringArray element is not valid UTF-8 ({exc.reason})") from None
    fmt = ARRAY_ELEMENT_FORMAT[datatype]
    size = struct.calcsize(fmt)
    if len(data) % size:
        raise PayloadError(
            f"{where}: a {datatype_name(datatype)} of {size}-byte elements cannot be {len(data)} bytes long"
        )
    return struct.unpack(f"<{len(data) // size}{fmt}", data)


def pack_array(datatype: int, values: Iterable[object], where: str) -> bytes:
    """The ``bytes_value`` of an array datatype."""
    items = list(values)
    try:
        if datatype == DT.BooleanArray:
            bits = bytearray((len(items) + 7) // 8)
            for i, item in enumerate(items):
                if not isinstance(item, bool):
                    raise PayloadError(f"{where}: a BooleanArray holds booleans, not {type(item).__name__}")
                if item:
                    bits[i >> 3] |= 0x80 >> (i & 7)
            return struct.pack("<I", len(items)) + bytes(bits)
        if datatype == DT.StringArray:
            out = bytearray()
            for item in items:
                if not isinstance(item, str) or "\x00" in item:
                    raise PayloadError(f"{where}: a StringArray holds strings without NUL characters")
                out += item.encode("utf-8") + b"\x00"
            return bytes(out)
        fmt = ARRAY_ELEMENT_FORMAT[datatype]
        if fmt not in "fd" and any(type(item) is not int for item in items):
            raise PayloadError(f"{where}: a {datatype_name(datatype)} holds integers")
        return struct.pack(f"<{len(items)}{fmt}", *items)
    except (struct.error, TypeError, UnicodeEncodeError, OverflowError) as exc:
        raise PayloadError(f"{where}: cannot encode {datatype_name(datatype)}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# one function per datatype: (datatype, raw wire value, where) -> typed value

Coercer = Callable[[int, object, str], Value]


def _c_signed(datatype: int, raw: object, where: str) -> Value:
    if type(raw) is not int:
        raise _needs(datatype, "an integer", raw, where)
    return signed(raw, SIGNED_WIDTH[datatype], where)


def _c_unsigned(datatype: int, raw: object, where: str) -> Value:
    if type(raw) is not int:
        raise _needs(datatype, "an integer", raw, where)
    if 0 <= raw < (1 << UNSIGNED_WIDTH.get(datatype, 64)):
        return raw
    return unsigned(raw, UNSIGNED_WIDTH.get(datatype, 64), where)


def _c_float(datatype: int, raw: object, where: str) -> Value:
    if type(raw) is not float:
        raise _needs(datatype, "a float", raw, where)
    return raw


def _c_bool(datatype: int, raw: object, where: str) -> Value:
    if type(raw) is not bool:
        raise _needs(datatype, "a boolean", raw, where)
    return raw


def _c_string(datatype: int, raw: object, where: str) -> Value:
    if type(raw) is not str:
        raise _needs(datatype, "a string", raw, where)
    return raw


def _c_bytes(datatype: int, raw: object, where: str) -> Value:
    if type(raw) is not bytes:
        raise _needs(datatype, "a bytes", raw, where)
    return raw


def _c_array(datatype: int, raw: object, where: str) -> Value:
    if type(raw) is not bytes:
        raise _needs(datatype, "a bytes", raw, where)
    return unpack_array(datatype, raw, where)


def _c_dataset(datatype: int, raw: object, where: str) -> Value:
    if not isinstance(raw, DataSet):
        raise _needs(datatype, "a dataset", raw, where)
    return raw


def _c_template(datatype: int, raw: object, where: str) -> Value:
    if not isinstance(raw, Template):
        raise _needs(datatype, "a template", raw, where)
    return raw


def _c_unknown(datatype: int, raw: object, where: str) -> Value:
    return raw  # type: ignore[return-value]


COERCERS: dict[int, Coercer] = {
    **{t: _c_signed for t in SIGNED_WIDTH},
    **{t: _c_unsigned for t in UNSIGNED_WIDTH},
    DT.DateTime: _c_unsigned,
    DT.Float: _c_float,
    DT.Double: _c_float,
    DT.Boolean: _c_bool,
    DT.String: _c_string,
    DT.Text: _c_string,
    DT.UUID: _c_string,
    DT.Bytes: _c_bytes,
    DT.File: _c_bytes,
    **{t: _c_array for t in (*ARRAY_ELEMENT_FORMAT, DT.BooleanArray, DT.StringArray)},
    DT.DataSet: _c_dataset,
    DT.Template: _c_template,
    DT.Unknown: _c_unknown,
}
#: the datatypes a DataSet cell, template parameter or (scalar) property may have
SCALAR_HOLDER_TYPES = frozenset(
    (*SIGNED_WIDTH, *UNSIGNED_WIDTH, DT.DateTime, DT.Float, DT.Double, DT.Boolean,
     DT.String, DT.Text, DT.UUID)
)  # fmt: skip


def coerce_value(datatype: int, raw: object, where: str = "metric") -> Value:
    """The typed value of ``raw`` (a wire value) under ``datatype``; raises :class:`PayloadError` when the
    wire value cannot be one (wrong field, out of range, bad array bytes). ``None`` stays ``None``."""
    if raw is None:
        return None
    coercer = COERCERS.get(datatype)
    if coercer is None:
        raise PayloadError(f"{where}: datatype {datatype_name(datatype)} cannot be the value of a metric")
    return coercer(datatype, raw, where)
