"""Sparkplug B payload bytes → the immutable values of :mod:`uns_bridge.sparkplug.values`.

Three paths give the same result:

* **native** (:mod:`uns_bridge.sparkplug._native`, built from ``_native.c`` when the package is installed
  with a C compiler): the common DATA payload read straight from the wire bytes, without a protobuf
  message in between. It answers only where the answer is certain and hands everything else — including
  every malformed payload — to the Python paths below.
* **fast** (the common DATA metric: alias, timestamp, optionally datatype, and a numeric, boolean or bytes
  value). Per metric it reads only those fields and adds up the bytes they take on the wire. When the sum
  equals the payload's length, nothing else was sent — no name, flag, metadata, property, unknown field
  or wrong wire type — so the metrics are complete as read.
* **thorough** (births, names, properties, datasets, templates, nulls, extensions, non-canonical
  encodings — anything the fast sum does not account for): every field with its presence; a known field
  number with the wrong wire type is malformed, unknown field numbers are extensions and are ignored.

A metric without a datatype keeps its *wire* value (:func:`resolve_metric` applies the birth's datatype
later); a metric with a datatype decodes directly to its typed value. A metric with no value field is
null (``value None``, ``is_null True``) whether or not ``is_null`` was set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError

from uns_bridge.native import extension
from uns_bridge.sparkplug import sparkplug_b_pb2 as pb
from uns_bridge.sparkplug.coerce import COERCERS, SCALAR_HOLDER_TYPES, coerce_value
from uns_bridge.sparkplug.datatypes import DT, datatype_name
from uns_bridge.sparkplug.errors import PayloadError
from uns_bridge.sparkplug.values import (
    DataSet,
    MetaData,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    Scalar,
    Template,
    TemplateParameter,
    Value,
)

_PB_PAYLOAD: Any = pb.Payload
_FROM_STRING = _PB_PAYLOAD.FromString
_WHICH = _PB_PAYLOAD.Metric.WhichOneof
_HAS = _PB_PAYLOAD.Metric.HasField
_NEW = tuple.__new__
_METADATA_FIELDS = tuple(MetaData.__dataclass_fields__)

_native_decode: Callable[[bytes], Payload | None] | None = None
_native = extension("uns_bridge.sparkplug._native", "UNS_BRIDGE_DECODER", "python")
if _native is not None:
    _native.setup(Metric, Payload)
    _native_decode = _native.decode

#: which decoder answers the common DATA payload (reported by the benchmarks and ``uns-bridge --version``)
DECODER = "native" if _native_decode is not None else "python"

#: per value field, per datatype: the bound below which the wire value is already the typed value
#: (fast path; anything else goes through the datatype's coercer, which converts or rejects it)
_PASS_BELOW: dict[str, dict[int, float]] = {
    "double_value": {DT.Float: math.inf, DT.Double: math.inf},
    "float_value": {DT.Float: math.inf, DT.Double: math.inf},
    "boolean_value": {DT.Boolean: 2},
    "int_value": {DT.Int8: 1 << 7, DT.Int16: 1 << 15, DT.Int32: 1 << 31, DT.UInt8: 1 << 8,
                  DT.UInt16: 1 << 16, DT.UInt32: 1 << 32},
    "long_value": {DT.Int64: 1 << 63, DT.UInt64: 1 << 64, DT.DateTime: 1 << 64},
    "bytes_value": {},
}  # fmt: skip


#: bytes on the wire of a whole metric (tag, length, alias < 128, 6-byte timestamp, value) by value field
_TYPICAL_SIZE = {"double_value": 20, "float_value": 16, "boolean_value": 13}


def _metric_size(m: Any, field: str, raw: Any, extra: int) -> int | None:
    """Bytes on the wire of a metric holding alias, timestamp, ``field`` and ``extra`` bytes (datatype);
    ``None`` when alias or timestamp is absent or the value field is not one the fast path reads."""
    alias = m.alias
    ts = m.timestamp
    if (not alias and not _HAS(m, "alias")) or (not ts and not _HAS(m, "timestamp")):
        return None
    if field == "double_value":
        n = 9
    elif field == "float_value":
        n = 5
    elif field == "boolean_value":
        n = 2
    elif field == "int_value" or field == "long_value":
        n = 1 + _vlen(raw)
    elif field == "bytes_value":  # field 16: a two-byte tag
        n = 2 + _vlen(len(raw)) + len(raw)
    else:
        return None  # strings (UTF-8), datasets, templates, extensions
    n += 2 + _vlen(alias) + _vlen(ts) + extra
    return 1 + _vlen(n) + n


def _vlen(value: int) -> int:
    """Bytes of a (non-negative) varint."""
    return (value.bit_length() + 6) // 7 or 1


def decode_payload(data: bytes | bytearray | memoryview) -> Payload:
    """Decode a Sparkplug B payload. Raises :class:`PayloadError` with the reason on any bad input."""
    if type(data) is not bytes:
        data = bytes(data)
    if _native_decode is not None:
        payload = _native_decode(data)
        if payload is not None:
            return payload
    return decode_payload_python(data)


def decode_payload_python(data: bytes) -> Payload:
    """:func:`decode_payload` without the native fast path (the reference the native path is tested against)."""
    try:
        message = _FROM_STRING(data)
    except DecodeError as exc:
        raise PayloadError(
            f"not a valid Sparkplug B protobuf payload ({exc or 'truncated or corrupt'})"
        ) from None
    except Exception as exc:  # the C parser may raise other errors on hostile input
        raise PayloadError(
            f"not a valid Sparkplug B protobuf payload ({type(exc).__name__}: {exc})"
        ) from None
    try:
        return _decode_fast(message, len(data)) or _decode_thorough(message, data)
    except PayloadError:
        raise
    except (UnicodeError, ValueError, TypeError, OverflowError, RecursionError, AttributeError) as exc:
        raise PayloadError(f"malformed Sparkplug B payload ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------------------------------
# fast path


def _decode_fast(message: Any, length: int) -> Payload | None:
    """The payload when every metric is a plain DATA metric and the bytes are all accounted for."""
    timestamp: int | None = message.timestamp
    seq: int | None = message.seq
    uuid: str | None = message.uuid
    body: bytes | None = message.body
    size = 0
    # a field reads as 0 / "" / b"" when absent: only then is its presence asked
    if timestamp or message.HasField("timestamp"):
        size += 1 + _vlen(timestamp)  # type: ignore[arg-type]
    else:
        timestamp = None
    if seq or message.HasField("seq"):
        size += 1 + _vlen(seq)  # type: ignore[arg-type]
    else:
        seq = None
    if uuid or message.HasField("uuid"):
        if type(uuid) is not str:
            return None  # not valid UTF-8: the thorough path says so
        octets = len(uuid.encode())
        size += 1 + _vlen(octets) + octets
    else:
        uuid = None
    if body or message.HasField("body"):
        size += 1 + _vlen(len(body)) + len(body)  # type: ignore[arg-type]
    else:
        body = None
    metrics = message.metrics
    out: list[Metric] = []
    append = out.append
    typed = False
    if metrics:
        first = metrics[0]
        if first.name:
            return None  # a birth, or DATA by name: not what the fast path is for
        typed = first.datatype != 0
    datatype = None
    extra = 2 if typed else 0  # a datatype < 128 takes two bytes
    for m in metrics:
        alias = m.alias
        ts = m.timestamp
        field = _WHICH(m, "value")
        if field is None:
            return None
        raw = getattr(m, field)
        # bytes on the wire, first as if alias < 128 and the timestamp a 6-byte varint (ms since 1971)
        n: int | None = _TYPICAL_SIZE.get(field)
        if n is None and (field == "int_value" or field == "long_value"):
            n = (
                13 if raw < 0x80
                else 14 if raw < 0x4000
                else 15 if raw < 0x200000
                else 16 if raw < 0x10000000
                else 17 if raw < 0x800000000
                else 12 + _vlen(raw)
            )  # fmt: skip
        if n is not None:  # a metric below 128 bytes: its length takes one byte
            if alias >= 0x80:
                n += _vlen(alias) - 1
            elif not alias and not _HAS(m, "alias"):
                return None
            if not 0x800000000 <= ts < 0x40000000000:
                if not ts and not _HAS(m, "timestamp"):
                    return None
                n += _vlen(ts) - 6
            n += extra
        else:
            n = _metric_size(m, field, raw, extra)
            if n is None:
                return None
        if typed:
            datatype = m.datatype
            if not 0 < datatype < 0x80:
                return None
            limit = _PASS_BELOW[field].get(datatype)
            if limit is None or not raw < limit:
                coercer = COERCERS.get(datatype)
                if coercer is None:
                    return None
                try:
                    raw = coercer(datatype, raw, "")
                except PayloadError as exc:  # the reason starts with ": "
                    raise PayloadError(f"metric alias {alias}{exc}") from None
        size += n
        append(_NEW(Metric, (None, alias, ts, datatype, raw, False, False, False, None, None)))
    if size != length:
        return None
    return _NEW(Payload, (timestamp, tuple(out), seq, uuid, body))


# --------------------------------------------------------------------------------------------------
# thorough path


def _decode_thorough(message: Any, data: bytes) -> Payload:
    _check_wire_types(message, data)
    metrics = tuple(_decode_metric(m, i, "metric") for i, m in enumerate(message.metrics))
    return Payload(
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        metrics=metrics,
        seq=message.seq if message.HasField("seq") else None,
        uuid=_text(message.uuid, "payload uuid") if message.HasField("uuid") else None,
        body=message.body if message.HasField("body") else None,
    )


def _check_wire_types(message: Any, data: bytes) -> None:
    """Reject a known field sent with the wrong wire type (protobuf keeps it as an unknown field)."""
    message.DiscardUnknownFields()
    if message.ByteSize() == len(data):
        return
    # Sizes differ: unknown fields (extensions are legal), a non-canonical encoding, or a wrong wire type.
    from google.protobuf.unknown_fields import UnknownFieldSet

    original = _FROM_STRING(data)
    stack: list[tuple[Any, str]] = [(original, "payload")]
    while stack:
        current, where = stack.pop()
        known = current.DESCRIPTOR.fields_by_number
        unknown: Any = UnknownFieldSet(current)
        for field in unknown:
            if field.field_number in known:
                name = known[field.field_number].name
                raise PayloadError(f"{where}: field {name} (#{field.field_number}) has the wrong wire type")
        for descriptor, value in current.ListFields():
            if descriptor.message_type is None:
                continue
            if descriptor.is_repeated:
                stack.extend((item, f"{where}.{descriptor.name}[{i}]") for i, item in enumerate(value))
            else:
                stack.append((value, f"{where}.{descriptor.name}"))


def _text(value: object, where: str) -> str:
    """A string field's value; protobuf hands back bytes when a proto2 string is not valid UTF-8."""
    if type(value) is not str:
        raise PayloadError(f"{where} is not valid UTF-8")
    return value


def _where(what: str, index: int, name: str | None) -> str:
    return f"{what} {index}" if name is None else f"{what} {name!r}"


def _coerced(datatype: int, raw: object, where: Callable[[], str]) -> Value:
    """``coerce_value`` with the error's location built only when there is an error."""
    coercer = COERCERS.get(datatype)
    if coercer is None:
        raise PayloadError(f"{where()}: datatype {datatype_name(datatype)} cannot be the value of a metric")
    try:
        return coercer(datatype, raw, "")
    except PayloadError as exc:  # the reason starts with ": "
        raise PayloadError(f"{where()}{exc}") from None


def _decode_metric(m: Any, index: int, what: str) -> Metric:
    # a field reads as 0 / "" when absent: only then is its presence asked
    name = m.name
    if name or _HAS(m, "name"):
        if type(name) is not str:
            raise PayloadError(f"{what} {index} name is not valid UTF-8")
    else:
        name = None
    alias = m.alias
    if not alias and not _HAS(m, "alias"):
        alias = None
    timestamp = m.timestamp
    if not timestamp and not _HAS(m, "timestamp"):
        timestamp = None
    datatype = m.datatype
    if not datatype and not _HAS(m, "datatype"):
        datatype = None
    field = _WHICH(m, "value")
    raw: object
    if field is None or field == "extension_value":
        raw = None
    elif field == "dataset_value":
        raw = _decode_dataset(m.dataset_value, _where(what, index, name))
    elif field == "template_value":
        raw = _decode_template(m.template_value, _where(what, index, name))
    else:
        raw = getattr(m, field)
        if field == "string_value" and type(raw) is not str:
            raise PayloadError(f"{_where(what, index, name)}: the string value is not valid UTF-8")
    value: Value
    if datatype is None or raw is None:
        value = raw  # type: ignore[assignment]
    else:
        value = _coerced(datatype, raw, lambda: _where(what, index, name))
    return _NEW(
        Metric,
        (
            name,
            alias,
            timestamp,
            datatype,
            value,
            m.is_historical,
            m.is_transient,
            m.is_null or raw is None,
            _decode_metadata(m.metadata, _where(what, index, name)) if _HAS(m, "metadata") else None,
            _decode_propertyset(m.properties, f"{_where(what, index, name)} properties")
            if _HAS(m, "properties")
            else None,
        ),
    )


def _decode_metadata(md: Any, where: str) -> MetaData:
    fields = {name: getattr(md, name) if md.HasField(name) else None for name in _METADATA_FIELDS}
    for name, value in fields.items():
        if type(value) is bytes:
            raise PayloadError(f"{where}: metadata {name} is not valid UTF-8")
    return MetaData(**fields)


def _scalar_by_type(datatype: int, holder: Any, where: str) -> Scalar | None:
    """The value of a DataSetValue or Parameter (``None`` when no value field is set)."""
    field = holder.WhichOneof("value")
    if field is None or field == "extension_value":
        return None
    if datatype in (DT.PropertySet, DT.PropertySetList) or datatype not in COERCERS:
        raise PayloadError(f"{where}: {datatype_name(datatype)} is not allowed here")
    return coerce_value(datatype, getattr(holder, field), where)  # type: ignore[return-value]


def _decode_propertyset(ps: Any, where: str) -> PropertySet:
    keys = ps.keys
    values = ps.values
    if len(keys) != len(values):
        raise PayloadError(f"{where}: {len(keys)} keys but {len(values)} values")
    items = []
    for key, pv in zip(keys, values, strict=True):
        if type(key) is not str:
            raise PayloadError(f"{where} key is not valid UTF-8")
        items.append((key, _decode_propertyvalue(pv, where, key)))
    return PropertySet(tuple(items))


def _decode_propertyvalue(pv: Any, where: str, key: str) -> PropertyValue:
    datatype = pv.type
    field = pv.WhichOneof("value")
    if pv.is_null or field is None or field == "extension_value":
        return PropertyValue(datatype, None, True)
    if field == "propertyset_value":
        if datatype != DT.PropertySet:
            raise PayloadError(
                f"{where} {key!r}: a property set value needs type PropertySet, not {datatype_name(datatype)}"
            )
        return PropertyValue(datatype, _decode_propertyset(pv.propertyset_value, f"{where} {key!r}"))
    if field == "propertysets_value":
        if datatype != DT.PropertySetList:
            raise PayloadError(
                f"{where} {key!r}: a property set list needs type PropertySetList, not {datatype_name(datatype)}"
            )
        sets = pv.propertysets_value.propertyset
        return PropertyValue(
            datatype, tuple(_decode_propertyset(s, f"{where} {key!r}[{i}]") for i, s in enumerate(sets))
        )
    if datatype not in SCALAR_HOLDER_TYPES and datatype != DT.Unknown:
        if datatype in (DT.PropertySet, DT.PropertySetList):
            raise PayloadError(f"{where} {key!r}: type {datatype_name(datatype)} needs a property set value")
        raise PayloadError(f"{where} {key!r}: {datatype_name(datatype)} is not allowed here")
    value = _coerced(datatype, getattr(pv, field), lambda: f"{where} {key!r}")
    return PropertyValue(datatype, value)  # type: ignore[arg-type]


def _decode_dataset(ds: Any, where: str) -> DataSet:
    columns = tuple(_text(c, f"{where} column name") for c in ds.columns)
    types = tuple(ds.types)
    width = ds.num_of_columns if ds.HasField("num_of_columns") else len(columns)
    if len(columns) != width or len(types) != width:
        raise PayloadError(
            f"{where}: DataSet declares {width} columns but has {len(columns)} names and {len(types)} types"
        )
    rows = []
    for r, row in enumerate(ds.rows):
        if len(row.elements) != width:
            raise PayloadError(f"{where}: DataSet row {r} has {len(row.elements)} cells for {width} columns")
        rows.append(
            tuple(
                _scalar_by_type(types[c], cell, f"{where} row {r} column {columns[c]!r}")
                for c, cell in enumerate(row.elements)
            )
        )
    return DataSet(columns, types, tuple(rows))


def _decode_template(t: Any, where: str) -> Template:
    parameters = []
    for p in t.parameters:
        name = _text(p.name, f"{where} parameter name")
        parameters.append(
            TemplateParameter(name, p.type, _scalar_by_type(p.type, p, f"{where} parameter {name!r}"))
        )
    return Template(
        metrics=tuple(_decode_metric(m, i, f"{where} member") for i, m in enumerate(t.metrics)),
        parameters=tuple(parameters),
        version=_text(t.version, f"{where} version") if t.HasField("version") else None,
        template_ref=_text(t.template_ref, f"{where} template_ref") if t.HasField("template_ref") else None,
        is_definition=t.is_definition,
    )


def resolve_metric(metric: Metric, datatype: int) -> Metric:
    """The metric with ``datatype`` applied to its wire value (for alias-only DATA metrics).

    A metric that already has a datatype is returned as is when it matches, else :class:`PayloadError`."""
    if metric.datatype is not None:
        if metric.datatype != datatype:
            raise PayloadError(
                f"metric {metric.name or metric.alias!r}: datatype {datatype_name(metric.datatype)} "
                f"does not match the birth's {datatype_name(datatype)}"
            )
        return metric
    where = f"metric {metric.name!r}" if metric.name is not None else f"metric alias {metric.alias}"
    return metric._replace(datatype=datatype, value=coerce_value(datatype, metric.value, where))
