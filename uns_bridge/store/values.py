"""A Sparkplug value <-> the value columns of ``uns.sample`` / ``uns.metric_current``, exactly.

One ``kind`` code (``smallint``) says which column holds the value and how to read it back:

====  ===============  =====================================================================
kind  column           values
====  ===============  =====================================================================
0     (none)           null
1     ``v_int``        integers that fit a signed 64-bit ``bigint`` (Int8..Int64, UInt8..UInt32,
                       UInt64 up to 2^63-1, DateTime)
2     ``v_int``        UInt64 at or above 2^63, stored as its two's-complement ``bigint``
3     ``v_float``      Float, Double (``float8`` keeps NaN, +-infinity and -0.0 bit-exact)
4     ``v_bool``       Boolean
5     ``v_text``       strings that PostgreSQL ``text`` can hold (no U+0000, no lone surrogates)
6     ``v_bytes``      Bytes, File
7     ``v_json``       arrays of integers / booleans / strings, DataSets, Templates, PropertySets,
                       as JSON (:func:`to_json`) when ``jsonb`` holds them exactly
8     ``v_floats``     Float and Double arrays (``float8[]``, bit-exact)
9     ``v_bytes``      anything ``jsonb`` cannot hold exactly (U+0000, lone surrogates, -0.0 inside
                       structured values): the exact JSON text, UTF-8 (surrogates passed through);
                       ``v_json`` then holds a display copy (U+0000 and surrogates as U+FFFD, -0.0 as 0)
10    ``v_json``       any other Python object the host handed over, as its ``str`` (never expected)
====  ===============  =====================================================================

``vhash`` completes the sample key ``(metric_id, time, vhash)``: two different values of one metric at
the same millisecond are two samples, a replay of the same value is the same sample. For integers,
floats and booleans it is the value's own 64 bits; otherwise a 64-bit BLAKE2b of the kind and the
stored bytes.
"""

from __future__ import annotations

import json
import math
import struct
from base64 import b64decode, b64encode
from hashlib import blake2b
from typing import Any

from uns_bridge.sparkplug.datatypes import FLOAT_TYPES, DataType, datatype_name
from uns_bridge.sparkplug.values import (
    DataSet,
    Metric,
    PropertySet,
    PropertyValue,
    Template,
    TemplateParameter,
    Value,
)

K_NULL, K_INT, K_UINT64, K_FLOAT, K_BOOL, K_TEXT, K_BYTES, K_JSON, K_FLOATS, K_RAWJSON, K_OTHER = range(11)

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1
_I64_MIN = -(1 << 63)
_pack_d = struct.Struct("<d").pack
_unpack_q = struct.Struct("<q").unpack

#: the value part of a row: (kind, v_int, v_float, v_bool, v_text, v_bytes, v_json, v_floats)
Columns = tuple[
    int, int | None, float | None, bool | None, str | None, bytes | None, str | None, list[float] | None
]
NULL_COLUMNS: Columns = (K_NULL, None, None, None, None, None, None, None)


class _Inexact(Exception):
    """Raised inside :func:`to_json` conversion when jsonb could not hold the value exactly."""


def _float_bits(value: float) -> int:
    return int(_unpack_q(_pack_d(value))[0])


def _hash(kind: int, data: bytes) -> int:
    digest = blake2b(data, digest_size=8, person=bytes([kind])).digest()
    return int.from_bytes(digest, "little", signed=True)


def text_ok(text: str) -> bool:
    """True when PostgreSQL ``text``/``jsonb`` holds ``text`` exactly (no U+0000, valid UTF-8)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ----------------------------------------------------------------------------------------- to JSON
def _jfloat(value: float, strict: bool) -> object:
    if value != value:
        return "NaN"
    if value == math.inf:
        return "Infinity"
    if value == -math.inf:
        return "-Infinity"
    if strict and value == 0.0 and math.copysign(1.0, value) < 0:
        raise _Inexact
    return value


def _jstr(text: str, strict: bool) -> str:
    if strict and not text_ok(text):
        raise _Inexact
    return text


def _jbytes(data: bytes) -> str:
    return b64encode(data).decode("ascii")


def _jsonb_order(key: str) -> tuple[int, bytes]:
    data = key.encode("utf-8", "surrogatepass")
    return len(data), data


class _Pairs(dict[str, object]):
    """A JSON object that keeps every ``(key, value)`` pair in order, duplicates included.

    ``json.dumps`` writes a dict subclass through its ``items()``; ``json.loads(object_pairs_hook=...)``
    reads one back, so PropertySets survive the exact-JSON path unchanged.
    """

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def items(self) -> Any:
        return list(self.pairs)


def _jprops(props: PropertySet, strict: bool) -> dict[str, object]:
    if strict and len(props.items) > 1:
        keys = [k for k, _ in props.items]
        # jsonb keeps one value per key, ordered by (length, bytes): anything else needs the exact text
        if len(set(keys)) != len(keys) or sorted(keys, key=_jsonb_order) != keys:
            raise _Inexact
    return _Pairs([(_jstr(k, strict), _jprop(v, strict)) for k, v in props.items])


def _jprop(prop: PropertyValue, strict: bool) -> dict[str, object]:
    return {"datatype": datatype_name(prop.datatype), "value": _json(prop.value, strict)}


def _jmetric(metric: Metric, strict: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "name": None if metric.name is None else _jstr(metric.name, strict),
        "datatype": datatype_name(metric.datatype),
        "value": _json(metric.value, strict),
    }
    if metric.timestamp is not None:
        out["timestamp"] = metric.timestamp
    if metric.alias is not None:
        out["alias"] = metric.alias
    if metric.is_null:
        out["is_null"] = True
    if metric.properties is not None:
        out["properties"] = _jprops(metric.properties, strict)
    return out


def _json(value: object, strict: bool) -> object:
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        return _jfloat(value, strict)  # type: ignore[arg-type]
    if kind is str:
        return _jstr(value, strict)  # type: ignore[arg-type]
    if kind is bytes:
        return _jbytes(value)  # type: ignore[arg-type]
    if kind is tuple or kind is list:
        return [_json(item, strict) for item in value]  # type: ignore[attr-defined]
    if isinstance(value, DataSet):
        return {
            "columns": [_jstr(c, strict) for c in value.columns],
            "types": [datatype_name(t) for t in value.types],
            "rows": [[_json(cell, strict) for cell in row] for row in value.rows],
        }
    if isinstance(value, Template):
        return {
            "template_ref": None if value.template_ref is None else _jstr(value.template_ref, strict),
            "version": None if value.version is None else _jstr(value.version, strict),
            "is_definition": value.is_definition,
            "parameters": [
                {
                    "name": _jstr(p.name, strict),
                    "datatype": datatype_name(p.datatype),
                    "value": _json(p.value, strict),
                }
                for p in value.parameters
            ],
            "metrics": [_jmetric(m, strict) for m in value.metrics],
        }
    if isinstance(value, PropertySet):
        return _jprops(value, strict)
    if isinstance(value, PropertyValue):
        return _jprop(value, strict)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _jfloat(float(value), strict)
    if isinstance(value, str):
        return _jstr(str(value), strict)
    if isinstance(value, bytes):
        return _jbytes(bytes(value))
    return str(value)


def to_json(value: object) -> object:
    """A value as JSON-ready data (NaN/infinities as strings, bytes as base64), like the UNS contract."""
    return _json(value, False)


def _dumps(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _sanitize(text: str) -> str:
    return "".join("\ufffd" if (c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF) else c for c in text)


def _display_data(data: object) -> object:
    if isinstance(data, str):
        return data if text_ok(data) else _sanitize(data)
    if isinstance(data, list):
        return [_display_data(item) for item in data]
    if isinstance(data, dict):
        return _Pairs([(_display_data(k), _display_data(v)) for k, v in data.items()])  # type: ignore[misc]
    return data


def _json_columns(value: object) -> tuple[Columns, int]:
    try:
        text = _dumps(_json(value, True))
    except _Inexact:
        loose = _json(value, False)
        exact = json.dumps(loose, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        raw = exact.encode("utf-8", "surrogatepass")
        display = _dumps(_display_data(loose))
        return (K_RAWJSON, None, None, None, None, raw, display, None), _hash(K_RAWJSON, raw)
    return (K_JSON, None, None, None, None, None, text, None), _hash(K_JSON, text.encode("utf-8"))


# ------------------------------------------------------------------------------------------ encode
def encode(value: Value | object, datatype: int | None = None) -> tuple[Columns, int]:
    """``(columns, vhash)`` of one value; ``datatype`` (Sparkplug) picks float-array storage."""
    return _encode_any(value, datatype)


def _encode_any(value: Any, datatype: int | None) -> tuple[Columns, int]:
    kind = type(value)
    if kind is float:
        return (K_FLOAT, None, value, None, None, None, None, None), _float_bits(value)
    if kind is int:
        if _I64_MIN <= value <= _I64_MAX:
            return (K_INT, value, None, None, None, None, None, None), value
        if _I64_MAX < value < _U64:
            signed = value - _U64
            return (K_UINT64, signed, None, None, None, None, None, None), signed
        return _json_columns(value)  # out of any Sparkplug range: exact as a JSON number
    if kind is bool:
        return (K_BOOL, None, None, value, None, None, None, None), int(value)
    if value is None:
        return NULL_COLUMNS, 0
    if kind is str:
        if text_ok(value):
            return (K_TEXT, None, None, None, value, None, None, None), _hash(K_TEXT, value.encode("utf-8"))
        return _json_columns(value)
    if kind is bytes:
        return (K_BYTES, None, None, None, None, value, None, None), _hash(K_BYTES, value)
    if kind is tuple or kind is list:
        items: Any = value
        if (datatype in (DataType.FloatArray, DataType.DoubleArray)) or (
            items and all(type(x) is float for x in items)
        ):
            floats = [float(x) for x in items]
            return (K_FLOATS, None, None, None, None, None, None, floats), _hash(
                K_FLOATS, struct.pack(f"<{len(floats)}d", *floats)
            )
        return _json_columns(value)
    if isinstance(value, DataSet | Template | PropertySet | PropertyValue):
        return _json_columns(value)
    if isinstance(value, bool | int | float | str | bytes):  # subclasses (IntEnum ...)
        base: Any = next(t for t in (bool, int, float, str, bytes) if isinstance(value, t))
        return _encode_any(base(value), datatype)
    text = str(value)
    return (K_OTHER, None, None, None, None, None, _dumps(_display_data(text)), None), _hash(
        K_OTHER, text.encode("utf-8", "surrogatepass")
    )


# ------------------------------------------------------------------------------------------ decode
def _from_jfloat(data: object) -> float:
    if data == "NaN":
        return math.nan
    if data == "Infinity":
        return math.inf
    if data == "-Infinity":
        return -math.inf
    assert isinstance(data, int | float)
    return float(data)


def _typed(data: object, datatype: int | None) -> object:
    """JSON data back to the Python value of a Sparkplug ``datatype`` (``None``: as JSON says)."""
    if data is None:
        return None
    if datatype in FLOAT_TYPES:
        return _from_jfloat(data)
    if datatype in (DataType.Bytes, DataType.File):
        assert isinstance(data, str)
        return b64decode(data)
    if datatype == DataType.DataSet:
        assert isinstance(data, dict)
        types = tuple(int(DataType[t]) for t in data["types"])
        rows = tuple(tuple(_typed(c, t) for c, t in zip(row, types, strict=True)) for row in data["rows"])
        return DataSet(tuple(data["columns"]), types, rows)  # type: ignore[arg-type]
    if datatype == DataType.Template:
        assert isinstance(data, dict)
        return _template(data)
    if datatype == DataType.PropertySet:
        assert isinstance(data, dict)
        return _props(data)
    if datatype == DataType.PropertySetList:
        assert isinstance(data, list)
        return tuple(_props(item) for item in data)
    if datatype is not None and DataType.Int8Array <= datatype <= DataType.DateTimeArray:
        assert isinstance(data, list)
        if datatype in (DataType.FloatArray, DataType.DoubleArray):
            return tuple(_from_jfloat(x) for x in data)
        return tuple(data)
    if isinstance(data, list):
        return tuple(data)
    return data


def _dt(name: str) -> int:
    try:
        return int(DataType[name])
    except KeyError:
        return int(name.removeprefix("Unknown(").removesuffix(")") or 0) if name.startswith("Unknown(") else 0


def _props(data: dict[str, Any]) -> PropertySet:
    items = []
    for key, prop in data.items():
        dt = _dt(prop["datatype"])
        value = _typed(prop["value"], dt)
        items.append((key, PropertyValue(dt, value, value is None)))  # type: ignore[arg-type]
    return PropertySet(tuple(items))


def _template(data: dict[str, Any]) -> Template:
    metrics = []
    for m in data["metrics"]:
        dt = _dt(m["datatype"])
        metrics.append(
            Metric(
                name=m["name"],
                alias=m.get("alias"),
                timestamp=m.get("timestamp"),
                datatype=dt,
                value=_typed(m["value"], dt),  # type: ignore[arg-type]
                is_null=bool(m.get("is_null", False)),
                properties=_props(m["properties"]) if "properties" in m else None,
            )
        )
    params = tuple(
        TemplateParameter(p["name"], _dt(p["datatype"]), _typed(p["value"], _dt(p["datatype"])))  # type: ignore[arg-type]
        for p in data["parameters"]
    )
    return Template(
        tuple(metrics), params, data["version"], data["template_ref"], bool(data["is_definition"])
    )


def decode(
    kind: int,
    v_int: int | None,
    v_float: float | None,
    v_bool: bool | None,
    v_text: str | None,
    v_bytes: bytes | None,
    v_json: object,
    v_floats: list[float] | None,
    datatype: int | None = None,
) -> object:
    """The exact Python value of stored columns (``v_json`` as text or already parsed)."""
    if kind == K_NULL:
        return None
    if kind == K_INT:
        return v_int
    if kind == K_UINT64:
        assert v_int is not None
        return v_int + _U64 if v_int < 0 else v_int
    if kind == K_FLOAT:
        return v_float
    if kind == K_BOOL:
        return v_bool
    if kind == K_TEXT:
        return v_text
    if kind == K_BYTES:
        return v_bytes
    if kind == K_FLOATS:
        return tuple(v_floats or ())
    if kind == K_RAWJSON:
        assert v_bytes is not None
        return _typed(
            json.loads(v_bytes.decode("utf-8", "surrogatepass"), object_pairs_hook=_Pairs), datatype
        )
    data = json.loads(v_json, object_pairs_hook=_Pairs) if isinstance(v_json, str) else v_json
    if kind == K_OTHER:
        return data
    return _typed(data, datatype)
