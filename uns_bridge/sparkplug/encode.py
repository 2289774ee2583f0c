"""Immutable Sparkplug B values → payload bytes (the bridge's commands, the simulator, tests).

Signed integers go out as Tahu sends them: Int8/16/32 sign-extended to 32 bits in ``int_value``, Int64
as two's complement in ``long_value``. A value that does not fit its datatype raises
:class:`PayloadError`.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from uns_bridge.sparkplug import sparkplug_b_pb2 as pb
from uns_bridge.sparkplug.coerce import SCALAR_HOLDER_TYPES, pack_array
from uns_bridge.sparkplug.datatypes import (
    ARRAY_ELEMENT_FORMAT,
    DT,
    SIGNED_WIDTH,
    UNSIGNED_WIDTH,
    datatype_name,
)
from uns_bridge.sparkplug.errors import PayloadError
from uns_bridge.sparkplug.values import DataSet, Metric, Payload, PropertySet, Template

_PB_PAYLOAD: Any = pb.Payload
_U32 = 1 << 32
_U64 = 1 << 64
_FLOAT_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
_METADATA_FIELDS = (
    "is_multi_part",
    "content_type",
    "size",
    "seq",
    "file_name",
    "file_type",
    "md5",
    "description",
)


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
        for name in _METADATA_FIELDS:
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
    if datatype in SIGNED_WIDTH or datatype in UNSIGNED_WIDTH or datatype == DT.DateTime:
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
    elif datatype == DT.Float:
        value = _as_float(value, where, name)
        if math.isfinite(value) and abs(value) > _FLOAT_MAX:
            raise PayloadError(f"{where}: {value} does not fit a 32-bit Float")
        out.float_value = value
    elif datatype == DT.Double:
        out.double_value = _as_float(value, where, name)
    elif datatype == DT.Boolean:
        if type(value) is not bool:
            raise PayloadError(f"{where}: Boolean needs a bool, got {type(value).__name__}")
        out.boolean_value = value
    elif datatype in (DT.String, DT.Text, DT.UUID):
        if type(value) is not str:
            raise PayloadError(f"{where}: {name} needs a str, got {type(value).__name__}")
        out.string_value = value
    elif datatype in (DT.Bytes, DT.File):
        if not isinstance(value, bytes | bytearray):
            raise PayloadError(f"{where}: {name} needs bytes, got {type(value).__name__}")
        out.bytes_value = bytes(value)
    elif datatype in ARRAY_ELEMENT_FORMAT or datatype in (DT.BooleanArray, DT.StringArray):
        if not isinstance(value, tuple | list):
            raise PayloadError(f"{where}: {name} needs a tuple, got {type(value).__name__}")
        out.bytes_value = pack_array(datatype, value, where)
    elif datatype == DT.DataSet:
        if not isinstance(value, DataSet):
            raise PayloadError(f"{where}: DataSet needs a DataSet, got {type(value).__name__}")
        _encode_dataset(out.dataset_value, value, where)
    elif datatype == DT.Template:
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
    if datatype not in SCALAR_HOLDER_TYPES:
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
        elif pv.datatype == DT.PropertySet:
            if not isinstance(pv.value, PropertySet):
                raise PayloadError(f"{where} {key!r}: PropertySet needs a PropertySet value")
            value.propertyset_value.SetInParent()
            _encode_propertyset(value.propertyset_value, pv.value, f"{where} {key!r}")
        elif pv.datatype == DT.PropertySetList:
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
