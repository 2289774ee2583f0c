"""Sparkplug B payloads: bytes ⇄ the immutable values of :mod:`uns_bridge.sparkplug.values`.

Decoding rules (see ``docs`` in SPARKPLUG_NOTES.md):

* Int8/16/32 and UInt8/16/32 travel in ``int_value``; Int64, UInt64 and DateTime in ``long_value``.
  Senders disagree on negative signed values: some sign-extend to 32 (or 64) bits, others send
  value + 2^width. Both are accepted: the value is read as the type's two's complement when it fits the
  width, else as a 32- or 64-bit sign extension. Anything else is out of range and rejected.
* Arrays travel little-endian in ``bytes_value``; BooleanArray is a 4-byte LE count followed by the bits
  packed most-significant-bit first; StringArray is NUL-terminated UTF-8 strings.
* A metric without a datatype (DATA usually carries only the alias) keeps its *wire* value;
  :func:`resolve_metric` applies the birth's datatype later.
* A metric with no value field decodes as null (``value None``), whether or not ``is_null`` is set.
* Unknown fields with field numbers the schema does not declare are extensions and are ignored; a known
  field number with the wrong wire type is malformed.

:class:`PayloadError` is the only exception :func:`decode_payload`, :func:`encode_payload` and
:func:`resolve_metric` raise on bad input; its message says what is wrong and where.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import DecodeError

from uns_bridge.sparkplug import sparkplug_b_pb2 as pb
from uns_bridge.sparkplug.datatypes import (
    ARRAY_ELEMENT_FORMAT,
    SIGNED_WIDTH,
    UNSIGNED_WIDTH,
    DataType,
    datatype_name,
)
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
_U32 = 1 << 32
_U64 = 1 << 64
_FLOAT_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


class PayloadError(ValueError):
    """The bytes are not a valid Sparkplug B payload, or a value does not fit its datatype."""


# --------------------------------------------------------------------------------------------------
# integers


def _signed(value: int, width: int, where: str) -> int:
    """Interpret a wire integer as a signed ``width``-bit value, accepting both sender conventions."""
    half = 1 << (width - 1)
    if 0 <= value < (1 << width):
        return value - (1 << width) if value >= half else value
    if _U32 - half <= value < _U32 or _U64 - half <= value < _U64:
        return value - (_U32 if value < _U32 else _U64)
    raise PayloadError(f"{where}: {value} is out of range for a {width}-bit signed integer")


def _unsigned(value: int, width: int, where: str) -> int:
    if 0 <= value < (1 << width):
        return value
    raise PayloadError(f"{where}: {value} is out of range for a {width}-bit unsigned integer")


# --------------------------------------------------------------------------------------------------
# arrays


def _unpack_array(datatype: int, data: bytes, where: str) -> tuple[object, ...]:
    if datatype == DataType.BooleanArray:
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
    if datatype == DataType.StringArray:
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


def _pack_array(datatype: int, values: Iterable[object], where: str) -> bytes:
    items = list(values)
    try:
        if datatype == DataType.BooleanArray:
            bits = bytearray((len(items) + 7) // 8)
            for i, item in enumerate(items):
                if not isinstance(item, bool):
                    raise PayloadError(f"{where}: a BooleanArray holds booleans, not {type(item).__name__}")
                if item:
                    bits[i >> 3] |= 0x80 >> (i & 7)
            return struct.pack("<I", len(items)) + bytes(bits)
        if datatype == DataType.StringArray:
            out = bytearray()
            for item in items:
                if not isinstance(item, str) or "\x00" in item:
                    raise PayloadError(f"{where}: a StringArray holds strings without NUL characters")
                out += item.encode("utf-8") + b"\x00"
            return bytes(out)
        return struct.pack(f"<{len(items)}{ARRAY_ELEMENT_FORMAT[datatype]}", *items)
    except (struct.error, TypeError, UnicodeEncodeError) as exc:
        raise PayloadError(f"{where}: cannot encode {datatype_name(datatype)}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# typed value <- wire value


def coerce_value(datatype: int, raw: object, where: str) -> Value:
    """The typed value of ``raw`` (a wire value) under ``datatype``; raises :class:`PayloadError`."""
    if raw is None:
        return None
    if datatype in SIGNED_WIDTH:
        if type(raw) is not int:
            raise PayloadError(f"{where}: {datatype_name(datatype)} needs an integer field, got {_kind(raw)}")
        return _signed(raw, SIGNED_WIDTH[datatype], where)
    if datatype in UNSIGNED_WIDTH:
        if type(raw) is not int:
            raise PayloadError(f"{where}: {datatype_name(datatype)} needs an integer field, got {_kind(raw)}")
        return _unsigned(raw, UNSIGNED_WIDTH[datatype], where)
    if datatype == DataType.DateTime:
        if type(raw) is not int:
            raise PayloadError(f"{where}: DateTime needs an integer field, got {_kind(raw)}")
        return _unsigned(raw, 64, where)
    if datatype in (DataType.Float, DataType.Double):
        if type(raw) is not float:
            raise PayloadError(f"{where}: {datatype_name(datatype)} needs a float field, got {_kind(raw)}")
        return raw
    if datatype == DataType.Boolean:
        if type(raw) is not bool:
            raise PayloadError(f"{where}: Boolean needs a boolean field, got {_kind(raw)}")
        return raw
    if datatype in (DataType.String, DataType.Text, DataType.UUID):
        if type(raw) is not str:
            raise PayloadError(f"{where}: {datatype_name(datatype)} needs a string field, got {_kind(raw)}")
        return raw
    if datatype in (DataType.Bytes, DataType.File):
        if type(raw) is not bytes:
            raise PayloadError(f"{where}: {datatype_name(datatype)} needs a bytes field, got {_kind(raw)}")
        return raw
    if datatype in ARRAY_ELEMENT_FORMAT or datatype in (DataType.BooleanArray, DataType.StringArray):
        if type(raw) is not bytes:
            raise PayloadError(f"{where}: {datatype_name(datatype)} needs a bytes field, got {_kind(raw)}")
        return _unpack_array(datatype, raw, where)
    if datatype == DataType.DataSet:
        if not isinstance(raw, DataSet):
            raise PayloadError(f"{where}: DataSet needs a dataset field, got {_kind(raw)}")
        return raw
    if datatype == DataType.Template:
        if not isinstance(raw, Template):
            raise PayloadError(f"{where}: Template needs a template field, got {_kind(raw)}")
        return raw
    if datatype == DataType.Unknown:
        return raw  # type: ignore[return-value]
    raise PayloadError(f"{where}: datatype {datatype_name(datatype)} cannot be the value of a metric")


def _text(value: object, where: str) -> str:
    """A string field's value; protobuf hands back bytes when a proto2 string is not valid UTF-8."""
    if type(value) is not str:
        raise PayloadError(f"{where} is not valid UTF-8")
    return value


def _kind(raw: object) -> str:
    if isinstance(raw, DataSet):
        return "a dataset"
    if isinstance(raw, Template):
        return "a template"
    return {int: "an integer", float: "a float", bool: "a boolean", str: "a string", bytes: "bytes"}.get(
        type(raw), type(raw).__name__
    )


# --------------------------------------------------------------------------------------------------
# decoding


def decode_payload(data: bytes | bytearray | memoryview) -> Payload:
    """Decode a Sparkplug B payload. Raises :class:`PayloadError` with the reason on any bad input."""
    data = bytes(data)
    try:
        message = _PB_PAYLOAD.FromString(data)
    except DecodeError as exc:
        raise PayloadError(
            f"not a valid Sparkplug B protobuf payload ({exc or 'truncated or corrupt'})"
        ) from None
    except Exception as exc:  # the C parser may raise other errors on hostile input
        raise PayloadError(
            f"not a valid Sparkplug B protobuf payload ({type(exc).__name__}: {exc})"
        ) from None
    _check_wire_types(message, data)
    try:
        try:
            metrics = tuple([_decode_metric(m, "metric") for m in message.metrics])
        except PayloadError:
            for index, m in enumerate(message.metrics):  # say which metric: cheap only on the error path
                _decode_metric(m, f"metric {index}")
            raise
        return Payload(
            timestamp=message.timestamp if message.HasField("timestamp") else None,
            metrics=metrics,
            seq=message.seq if message.HasField("seq") else None,
            uuid=_text(message.uuid, "payload uuid") if message.HasField("uuid") else None,
            body=message.body if message.HasField("body") else None,
        )
    except PayloadError:
        raise
    except (UnicodeDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise PayloadError(f"malformed Sparkplug B payload ({type(exc).__name__}: {exc})") from None


def _check_wire_types(message: Any, data: bytes) -> None:
    """Reject a known field sent with the wrong wire type (protobuf would keep it as an unknown field)."""
    message.DiscardUnknownFields()
    if message.ByteSize() == len(data):
        return
    # Sizes differ: unknown fields (extensions are legal), a non-canonical encoding, or a wrong wire type.
    from google.protobuf.unknown_fields import UnknownFieldSet

    original = _PB_PAYLOAD.FromString(data)
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


def _wire_value(m: Any, where: str) -> object:
    field = m.WhichOneof("value")
    if field is None or field == "extension_value":
        return None
    if field == "dataset_value":
        return _decode_dataset(m.dataset_value, where)
    if field == "template_value":
        return _decode_template(m.template_value, where)
    value = getattr(m, field)
    if field == "string_value" and type(value) is bytes:
        raise PayloadError(f"{where}: the string value is not valid UTF-8")
    return value


_PLAIN_FIELDS = frozenset(
    ("int_value", "long_value", "float_value", "double_value", "boolean_value", "bytes_value")
)


def _decode_metric(m: Any, where: str) -> Metric:
    """One metric. The hot path of the bridge: every attribute read here costs, so defaults stand in
    for presence checks where protobuf's default cannot be a real value (an empty name, datatype 0)."""
    name = m.name
    if not name:
        name = None
    elif type(name) is not str:
        raise PayloadError(f"{where} name is not valid UTF-8")
    datatype = m.datatype or None
    field = m.WhichOneof("value")
    if field is None:
        raw: object = None
    elif field in _PLAIN_FIELDS:
        raw = getattr(m, field)
    elif field == "string_value":
        raw = m.string_value
        if type(raw) is bytes:
            raise PayloadError(f"{_where(where, name)}: the string value is not valid UTF-8")
    else:
        raw = _wire_value(m, _where(where, name))
    if datatype is None or raw is None:
        value: Value = raw  # type: ignore[assignment]
    else:
        coerce = _COERCE.get(datatype)
        if coerce is None:
            value = coerce_value(datatype, raw, _where(where, name))
        else:
            try:
                value = coerce(raw)
            except PayloadError as exc:
                raise PayloadError(f"{_where(where, name)}{exc}") from None
    alias = m.alias
    if not alias and not m.HasField("alias"):
        alias = None
    timestamp = m.timestamp
    if not timestamp and not m.HasField("timestamp"):
        timestamp = None
    return Metric(
        name,
        alias,
        timestamp,
        datatype,
        value,
        m.is_historical,
        m.is_transient,
        m.is_null or raw is None,
        _decode_metadata(m.metadata) if m.HasField("metadata") else None,
        _decode_propertyset(m.properties, f"{_where(where, name)} properties")
        if m.HasField("properties")
        else None,
    )


def _where(where: str, name: str | None) -> str:
    return where if name is None else f"metric {name!r}"


def _coercer(datatype: int) -> Any:
    def coerce(raw: object) -> Value:
        return coerce_value(datatype, raw, "")

    return coerce


def _float(raw: object) -> Value:
    if type(raw) is float:
        return raw
    raise PayloadError(f": needs a float field, got {_kind(raw)}")


def _bool(raw: object) -> Value:
    if type(raw) is bool:
        return raw
    raise PayloadError(f": Boolean needs a boolean field, got {_kind(raw)}")


#: the common datatypes' value checks, without the generic dispatch of :func:`coerce_value`
_COERCE: dict[int, Any] = {int(t): _coercer(t) for t in DataType if t not in (DataType.Unknown,)}
_COERCE[DataType.Float] = _float
_COERCE[DataType.Double] = _float
_COERCE[DataType.Boolean] = _bool


def _decode_metadata(md: Any) -> MetaData:
    fields = {
        name: getattr(md, name) if md.HasField(name) else None
        for name in (
            "is_multi_part",
            "content_type",
            "size",
            "seq",
            "file_name",
            "file_type",
            "md5",
            "description",
        )
    }
    for name, value in fields.items():
        if type(value) is bytes:
            raise PayloadError(f"metadata {name} is not valid UTF-8")
    return MetaData(**fields)


def _scalar_by_type(datatype: int, holder: Any, where: str) -> Scalar | None:
    field = holder.WhichOneof("value")
    if field is None or field == "extension_value":
        return None
    raw = getattr(holder, field)
    value = coerce_value(datatype, raw, where)
    return value  # type: ignore[return-value]


def _decode_propertyset(ps: Any, where: str) -> PropertySet:
    if len(ps.keys) != len(ps.values):
        raise PayloadError(f"{where}: {len(ps.keys)} keys but {len(ps.values)} values")
    items = []
    for key, pv in zip(ps.keys, ps.values, strict=True):
        key = _text(key, f"{where} key")
        items.append((key, _decode_propertyvalue(pv, f"{where} {key!r}")))
    return PropertySet(tuple(items))


def _decode_propertyvalue(pv: Any, where: str) -> PropertyValue:
    datatype = pv.type
    field = pv.WhichOneof("value")
    if pv.is_null or field is None or field == "extension_value":
        return PropertyValue(datatype, None, True)
    if field == "propertyset_value":
        if datatype != DataType.PropertySet:
            raise PayloadError(
                f"{where}: a property set value needs type PropertySet, not {datatype_name(datatype)}"
            )
        return PropertyValue(datatype, _decode_propertyset(pv.propertyset_value, where))
    if field == "propertysets_value":
        if datatype != DataType.PropertySetList:
            raise PayloadError(
                f"{where}: a property set list needs type PropertySetList, not {datatype_name(datatype)}"
            )
        return PropertyValue(
            datatype,
            tuple(
                _decode_propertyset(s, f"{where}[{i}]")
                for i, s in enumerate(pv.propertysets_value.propertyset)
            ),
        )
    if datatype in (DataType.PropertySet, DataType.PropertySetList):
        raise PayloadError(f"{where}: type {datatype_name(datatype)} needs a property set value")
    return PropertyValue(datatype, coerce_value(datatype, getattr(pv, field), where))  # type: ignore[arg-type]


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
    return Template(
        metrics=tuple(_decode_metric(m, f"{where} member {i}") for i, m in enumerate(t.metrics)),
        parameters=tuple(
            TemplateParameter(
                name=_text(p.name, f"{where} parameter name"),
                datatype=p.type,
                value=_scalar_by_type(p.type, p, f"{where} parameter {p.name!r}"),
            )
            for p in t.parameters
        ),
        version=_text(t.version, f"{where} version") if t.HasField("version") else None,
        template_ref=_text(t.template_ref, f"{where} template_ref") if t.HasField("template_ref") else None,
        is_definition=t.is_definition,
    )


def resolve_metric(metric: Metric, datatype: int) -> Metric:
    """The metric with ``datatype`` applied to its wire value (for alias-only DATA metrics)."""
    if metric.datatype is not None:
        if metric.datatype != datatype:
            raise PayloadError(
                f"metric {metric.name or metric.alias!r}: datatype {datatype_name(metric.datatype)} "
                f"does not match the birth's {datatype_name(datatype)}"
            )
        return metric
    where = f"metric {metric.name!r}" if metric.name is not None else f"metric alias {metric.alias}"
    return metric._replace(datatype=datatype, value=coerce_value(datatype, metric.value, where))


# --------------------------------------------------------------------------------------------------
# encoding


def encode_payload(payload: Payload, *, omit_alias_datatypes: bool = False) -> bytes:
    """Encode a payload. With ``omit_alias_datatypes`` metrics without a name carry no datatype field
    (as edge nodes usually send DATA). Raises :class:`PayloadError` when a value does not fit its type."""
    message = _PB_PAYLOAD()
    if payload.timestamp is not None:
        message.timestamp = payload.timestamp
    if payload.seq is not None:
        message.seq = payload.seq
    if payload.uuid is not None:
        message.uuid = payload.uuid
    if payload.body is not None:
        message.body = payload.body
    try:
        for i, metric in enumerate(payload.metrics):
            _encode_metric(
                message.metrics.add(), metric, f"metric {metric.name or i!r}", omit_alias_datatypes
            )
        return bytes(message.SerializeToString())
    except PayloadError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise PayloadError(f"cannot encode payload: {exc}") from None


def _encode_metric(out: Any, metric: Metric, where: str, omit_alias_datatypes: bool = False) -> None:
    if metric.name is not None:
        out.name = metric.name
    if metric.alias is not None:
        out.alias = metric.alias
    if metric.timestamp is not None:
        out.timestamp = metric.timestamp
    datatype = metric.datatype
    if datatype is not None and not (omit_alias_datatypes and metric.name is None):
        out.datatype = datatype
    if metric.is_historical:
        out.is_historical = True
    if metric.is_transient:
        out.is_transient = True
    if metric.metadata is not None:
        md = metric.metadata
        out.metadata.SetInParent()
        for name in (
            "is_multi_part",
            "content_type",
            "size",
            "seq",
            "file_name",
            "file_type",
            "md5",
            "description",
        ):
            value = getattr(md, name)
            if value is not None:
                setattr(out.metadata, name, value)
    if metric.properties is not None:
        out.properties.SetInParent()
        _encode_propertyset(out.properties, metric.properties, f"{where} properties")
    if metric.is_null or metric.value is None:
        out.is_null = True
        return
    if datatype is None:
        raise PayloadError(f"{where}: a metric with a value needs a datatype to be encoded")
    _encode_value(out, datatype, metric.value, where)


def _encode_value(out: Any, datatype: int, value: object, where: str) -> None:
    name = datatype_name(datatype)
    if datatype in SIGNED_WIDTH or datatype in UNSIGNED_WIDTH or datatype == DataType.DateTime:
        if type(value) is not int:
            raise PayloadError(f"{where}: {name} needs an int, got {type(value).__name__}")
        if datatype in SIGNED_WIDTH:
            width = SIGNED_WIDTH[datatype]
            if not -(1 << (width - 1)) <= value < (1 << (width - 1)):
                raise PayloadError(f"{where}: {value} does not fit {name}")
            if width == 64:
                out.long_value = value & (_U64 - 1)
            else:
                out.int_value = value & (_U32 - 1)  # 32-bit sign extension, as Tahu sends it
        else:
            width = UNSIGNED_WIDTH.get(datatype, 64)
            if not 0 <= value < (1 << width):
                raise PayloadError(f"{where}: {value} does not fit {name}")
            if width == 64:
                out.long_value = value
            else:
                out.int_value = value
    elif datatype == DataType.Float:
        value = _as_float(value, where, name)
        if math.isfinite(value) and abs(value) > _FLOAT_MAX:
            raise PayloadError(f"{where}: {value} does not fit a 32-bit Float")
        out.float_value = value
    elif datatype == DataType.Double:
        out.double_value = _as_float(value, where, name)
    elif datatype == DataType.Boolean:
        if type(value) is not bool:
            raise PayloadError(f"{where}: Boolean needs a bool, got {type(value).__name__}")
        out.boolean_value = value
    elif datatype in (DataType.String, DataType.Text, DataType.UUID):
        if type(value) is not str:
            raise PayloadError(f"{where}: {name} needs a str, got {type(value).__name__}")
        out.string_value = value
    elif datatype in (DataType.Bytes, DataType.File):
        if not isinstance(value, bytes | bytearray):
            raise PayloadError(f"{where}: {name} needs bytes, got {type(value).__name__}")
        out.bytes_value = bytes(value)
    elif datatype in ARRAY_ELEMENT_FORMAT or datatype in (DataType.BooleanArray, DataType.StringArray):
        if not isinstance(value, tuple | list):
            raise PayloadError(f"{where}: {name} needs a tuple, got {type(value).__name__}")
        out.bytes_value = _pack_array(datatype, value, where)
    elif datatype == DataType.DataSet:
        if not isinstance(value, DataSet):
            raise PayloadError(f"{where}: DataSet needs a DataSet, got {type(value).__name__}")
        _encode_dataset(out.dataset_value, value, where)
    elif datatype == DataType.Template:
        if not isinstance(value, Template):
            raise PayloadError(f"{where}: Template needs a Template, got {type(value).__name__}")
        _encode_template(out.template_value, value, where)
    else:
        raise PayloadError(f"{where}: datatype {name} cannot be the value of a metric")


def _as_float(value: object, where: str, name: str) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise PayloadError(f"{where}: {name} needs a float, got {type(value).__name__}")


def _encode_scalar_holder(out: Any, datatype: int, value: object, where: str) -> None:
    """Set the value of a DataSetValue, Parameter or PropertyValue (no bytes field there)."""
    if value is None:
        return
    if (
        datatype not in SIGNED_WIDTH
        and datatype not in UNSIGNED_WIDTH
        and datatype
        not in (
            DataType.DateTime,
            DataType.Float,
            DataType.Double,
            DataType.Boolean,
            DataType.String,
            DataType.Text,
            DataType.UUID,
        )
    ):
        raise PayloadError(f"{where}: {datatype_name(datatype)} is not allowed here")
    _encode_value(out, datatype, value, where)


def _encode_dataset(out: Any, ds: DataSet, where: str) -> None:
    if len(ds.columns) != len(ds.types):
        raise PayloadError(f"{where}: DataSet has {len(ds.columns)} columns but {len(ds.types)} types")
    out.num_of_columns = len(ds.columns)
    out.columns.extend(ds.columns)
    out.types.extend(ds.types)
    for r, row in enumerate(ds.rows):
        if len(row) != len(ds.columns):
            raise PayloadError(f"{where}: DataSet row {r} has {len(row)} cells for {len(ds.columns)} columns")
        out_row = out.rows.add()
        for c, cell in enumerate(row):
            _encode_scalar_holder(out_row.elements.add(), ds.types[c], cell, f"{where} row {r} column {c}")


def _encode_template(out: Any, t: Template, where: str) -> None:
    out.SetInParent()
    if t.version is not None:
        out.version = t.version
    if t.template_ref is not None:
        out.template_ref = t.template_ref
    if t.is_definition:
        out.is_definition = True
    for i, member in enumerate(t.metrics):
        _encode_metric(out.metrics.add(), member, f"{where} member {member.name or i!r}")
    for p in t.parameters:
        param = out.parameters.add()
        param.name = p.name
        param.type = p.datatype
        _encode_scalar_holder(param, p.datatype, p.value, f"{where} parameter {p.name!r}")


def _encode_propertyset(out: Any, ps: PropertySet, where: str) -> None:
    for key, pv in ps.items:
        out.keys.append(key)
        value = out.values.add()
        value.type = pv.datatype
        if pv.is_null or pv.value is None:
            value.is_null = True
        elif pv.datatype == DataType.PropertySet:
            if not isinstance(pv.value, PropertySet):
                raise PayloadError(f"{where} {key!r}: PropertySet needs a PropertySet value")
            value.propertyset_value.SetInParent()
            _encode_propertyset(value.propertyset_value, pv.value, f"{where} {key!r}")
        elif pv.datatype == DataType.PropertySetList:
            if not isinstance(pv.value, tuple):
                raise PayloadError(f"{where} {key!r}: PropertySetList needs a tuple of PropertySet")
            value.propertysets_value.SetInParent()
            for i, item in enumerate(pv.value):
                if not isinstance(item, PropertySet):
                    raise PayloadError(f"{where} {key!r}[{i}]: not a PropertySet")
                nested = value.propertysets_value.propertyset.add()
                _encode_propertyset(nested, item, f"{where} {key!r}[{i}]")
        else:
            _encode_scalar_holder(value, pv.datatype, pv.value, f"{where} {key!r}")
