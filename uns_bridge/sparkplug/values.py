"""Typed, immutable Sparkplug B payload values.

These are what the codec decodes to and encodes from; the host core and every sink work with them and
never with protobuf objects. Python value of each datatype:

=====================================  ==========================================================
Int8..Int64, UInt8..UInt64             ``int`` (exact; signed types already sign-extended)
DateTime                               ``int`` milliseconds since the Unix epoch, UTC
Float, Double                          ``float`` (NaN and infinities kept)
Boolean                                ``bool``
String, Text, UUID                     ``str``
Bytes, File                            ``bytes`` (File's name and type travel in ``Metric.metadata``)
Int8Array..DateTimeArray               ``tuple`` of ``int`` / ``float`` / ``bool`` / ``str``
DataSet                                :class:`DataSet`
Template                               :class:`Template`
PropertySet / PropertySetList          :class:`PropertySet` / ``tuple[PropertySet, ...]``
=====================================  ==========================================================

A null value (``is_null``) is ``None``. A metric decoded without a datatype (DATA messages usually carry
only the alias) holds its *wire* value (``int`` for int/long fields, ``bytes`` for bytes fields, ...) and
``datatype is None``; :func:`uns_bridge.sparkplug.payload.resolve_metric` interprets it with the datatype
from the birth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypeAlias, Union

Scalar: TypeAlias = int | float | bool | str | bytes
Value: TypeAlias = Union[
    int, float, bool, str, bytes, tuple[object, ...], "DataSet", "Template", "PropertySet", None
]


@dataclass(frozen=True, slots=True)
class MetaData:
    """Sparkplug MetaData: multi-part and file descriptions. Unset fields are ``None``."""

    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class PropertyValue:
    """One typed property value. ``value`` is ``None`` when ``is_null``."""

    datatype: int
    value: Scalar | PropertySet | tuple[PropertySet, ...] | None
    is_null: bool = False


@dataclass(frozen=True, slots=True)
class PropertySet:
    """An ordered set of named properties (keys are unique in practice, order is kept)."""

    items: tuple[tuple[str, PropertyValue], ...] = ()

    def get(self, key: str) -> PropertyValue | None:
        for name, value in self.items:
            if name == key:
                return value
        return None

    def as_dict(self) -> dict[str, PropertyValue]:
        return dict(self.items)


@dataclass(frozen=True, slots=True)
class DataSet:
    """A table: column names, column datatypes and rows of cells (``None`` is a null cell)."""

    columns: tuple[str, ...]
    types: tuple[int, ...]
    rows: tuple[tuple[Scalar | None, ...], ...]


@dataclass(frozen=True, slots=True)
class TemplateParameter:
    name: str
    datatype: int
    value: Scalar | None


@dataclass(frozen=True, slots=True)
class Template:
    """A template definition (``is_definition``) or instance (``template_ref`` names its definition)."""

    metrics: tuple[Metric, ...] = ()
    parameters: tuple[TemplateParameter, ...] = ()
    version: str | None = None
    template_ref: str | None = None
    is_definition: bool = False


class Metric(NamedTuple):
    """One metric as it travelled. ``timestamp`` is the metric's own (ms UTC), ``None`` when absent."""

    name: str | None
    alias: int | None
    timestamp: int | None
    datatype: int | None
    value: Value
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    metadata: MetaData | None = None
    properties: PropertySet | None = None


class Payload(NamedTuple):
    """A whole Sparkplug B payload."""

    timestamp: int | None
    metrics: tuple[Metric, ...]
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None
