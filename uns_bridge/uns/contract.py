"""The UNS contract: topic levels and JSON payloads that IT clients rely on (pure, no I/O).

Topics
------
Every value is published on::

    <prefix>/<enterprise>/<site>/<area>/<line>/<cell>/<equipment>/<metric folders...>/<metric>

and the online state of a node or device on ``<prefix>/<six levels>/$state``. Every UNS topic has the
same depth down to the equipment; the Sparkplug metric name's folders (``Motor/Speed``) become further
levels.

Level escaping (reversible)
---------------------------
A level is any text. :func:`escape_level` makes it a valid MQTT topic level and :func:`unescape_level`
gives the original back exactly, for every Python string:

* ``%`` (the escape character itself), ``/``, ``+``, ``#``, NUL, control characters (U+0001-U+001F,
  U+007F-U+009F), surrogates and Unicode non-characters are written as ``%XX`` per UTF-8 byte
  (upper-case hex; surrogates use their 3-byte "surrogatepass" encoding), as in URLs.
* A leading ``$`` becomes ``%24`` (MQTT gives ``$`` topics special meaning, and ``$state`` is ours).
* The empty level becomes ``_`` (so a topic never has an empty level and all topics have the same
  depth); a level that *is* a single ``_`` becomes ``%5F``.
* Everything else (letters, digits, spaces, ``-``, ``.``, any other Unicode) is kept as is.

The ``$state`` level can therefore never collide with a metric, and no escaped level can leave the
prefix: escaped levels contain no ``/``.

Payloads
--------
:func:`render_value` renders one value as JSON (``schemas/uns_value.schema.json``)::

    {"value": 21.5, "timestamp": 1700000000000, "quality": "GOOD", "datatype": "Double",
     "unit": "degC", "source": {"group": "G", "node": "N", "device": "D", "metric": "Motor/Temp"},
     "seq": 17}

* ``value`` is exact: integers (Int64, UInt64, DateTime) as exact JSON integers; NaN and infinities as
  the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; ``Bytes``/``File`` as a base64 string with
  ``"encoding": "base64"`` next to it; arrays as JSON arrays; a DataSet as
  ``{"columns": [...], "types": [...], "rows": [[...], ...]}``; a Template as
  ``{"template_ref", "version", "is_definition", "parameters": [...], "metrics": [...]}``; a
  PropertySet as ``{"<key>": {"datatype": "<name>", "value": ...}}``; null as ``null``. Inside
  structured values the same rules apply (bytes there are base64 strings; their datatype is beside them).
* ``timestamp`` is the metric's own time, integer milliseconds UTC.
* ``unit`` is ``null`` when the birth gave none; ``device`` is ``null`` for node metrics.
* ``seq`` (the carrying message's Sparkplug seq) and ``historical: true`` appear only when known/true.

:func:`render_state` renders the online state of a node or device (``schemas/uns_state.schema.json``).
"""

from __future__ import annotations

import base64
import math
import re
import sys
from collections.abc import Iterable

import orjson

from uns_bridge.host.effects import MetricInfo, Quality, Sample
from uns_bridge.sparkplug.datatypes import DataType, datatype_name
from uns_bridge.sparkplug.values import DataSet, Metric, PropertySet, PropertyValue, Template

__all__ = [
    "EMPTY_LEVEL",
    "STATE_LEVEL",
    "ValueRenderer",
    "escape_level",
    "join_levels",
    "metric_levels",
    "metric_topic",
    "render_state",
    "render_value",
    "split_metric_topic",
    "to_json_value",
    "unescape_level",
]

#: how an empty level appears in a topic
EMPTY_LEVEL = "_"
#: the last level of a node's or device's online-state topic
STATE_LEVEL = "$state"


def _forbidden_class() -> str:
    ranges = [
        (0x25, 0x25),  # % itself
        (0x2F, 0x2F),  # /
        (0x2B, 0x2B),  # +
        (0x23, 0x23),  # #
        (0x00, 0x1F),
        (0x7F, 0x9F),
        (0xD800, 0xDFFF),
        (0xFDD0, 0xFDEF),
    ]
    ranges += [(plane * 0x10000 + 0xFFFE, plane * 0x10000 + 0xFFFF) for plane in range(17)]
    parts = []
    for low, high in ranges:
        parts.append(re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}")
    return "[" + "".join(parts) + "]"


_FORBIDDEN = re.compile(_forbidden_class())
_ESCAPED = re.compile(r"(?:%[0-9A-F]{2})+")


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def escape_level(text: str) -> str:
    """``text`` as one valid MQTT topic level; reversible with :func:`unescape_level` (see module doc)."""
    if not text:
        return EMPTY_LEVEL
    if text == EMPTY_LEVEL:
        return "%5F"
    escaped = _FORBIDDEN.sub(_percent, text)
    if escaped[0] == "$":
        escaped = "%24" + escaped[1:]
    return escaped


def _unpercent(match: re.Match[str]) -> str:
    raw = bytes(int(match.group()[i + 1 : i + 3], 16) for i in range(0, len(match.group()), 3))
    return raw.decode("utf-8", "surrogatepass")


def unescape_level(level: str) -> str:
    """The original text of a level made by :func:`escape_level`.

    Raises ``ValueError`` for text no escaping produces (a lone ``%``, lower-case hex, bad UTF-8).
    """
    if level == EMPTY_LEVEL:
        return ""
    if "%" not in level:
        return level
    text = _ESCAPED.sub(_unpercent, level)
    if "%" in _ESCAPED.sub("", level):
        raise ValueError(f"not an escaped topic level: {level!r}")
    return text


def metric_levels(metric_name: str) -> str:
    """The escaped levels of a Sparkplug metric name: its ``/`` folders become topic levels."""
    if "/" not in metric_name:
        return escape_level(metric_name)
    return "/".join(escape_level(part) for part in metric_name.split("/"))


def metric_topic(base: str, metric_name: str) -> str:
    """``<base>/<metric folders>/<metric>`` with every level escaped."""
    return f"{base}/{metric_levels(metric_name)}"


def join_levels(prefix: str, levels: Iterable[str]) -> str:
    """``prefix`` (already a valid topic) followed by each level, escaped."""
    return "/".join([prefix, *(escape_level(level) for level in levels)])


def split_metric_topic(topic: str, base: str) -> str:
    """The metric name of a topic made by :func:`metric_topic` (the inverse below ``base``)."""
    if not topic.startswith(base + "/"):
        raise ValueError(f"{topic!r} is not below {base!r}")
    return "/".join(unescape_level(level) for level in topic[len(base) + 1 :].split("/"))


# ---------------------------------------------------------------------------------------------- values

_MAX_FLOAT = sys.float_info.max
_NAN = "NaN"
_INF = "Infinity"
_NINF = "-Infinity"


def _float(value: float) -> float | str:
    if value != value:
        return _NAN
    if value == math.inf:
        return _INF
    if value == -math.inf:
        return _NINF
    return value


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _property_value(prop: PropertyValue) -> object:
    return {"datatype": datatype_name(prop.datatype), "value": to_json_value(prop.value)}


def _property_set(props: PropertySet) -> dict[str, object]:
    return {key: _property_value(prop) for key, prop in props.items}


def _template_metric(metric: Metric) -> dict[str, object]:
    out: dict[str, object] = {
        "name": metric.name,
        "datatype": datatype_name(metric.datatype),
        "value": to_json_value(metric.value),
    }
    if metric.timestamp is not None:
        out["timestamp"] = metric.timestamp
    if metric.properties is not None:
        out["properties"] = _property_set(metric.properties)
    return out


def _template(template: Template) -> dict[str, object]:
    return {
        "template_ref": template.template_ref,
        "version": template.version,
        "is_definition": template.is_definition,
        "parameters": [
            {"name": p.name, "datatype": datatype_name(p.datatype), "value": to_json_value(p.value)}
            for p in template.parameters
        ],
        "metrics": [_template_metric(m) for m in template.metrics],
    }


def _dataset(dataset: DataSet) -> dict[str, object]:
    return {
        "columns": list(dataset.columns),
        "types": [datatype_name(t) for t in dataset.types],
        "rows": [[to_json_value(cell) for cell in row] for row in dataset.rows],
    }


def to_json_value(value: object) -> object:
    """A Sparkplug value as plain JSON-ready data, per the module doc (exact, NaN as strings)."""
    kind = type(value)
    if kind is int or kind is str or kind is bool or value is None:
        return value
    if kind is float:
        return _float(value)  # type: ignore[arg-type]
    if kind is bytes:
        return _b64(value)  # type: ignore[arg-type]
    if kind is tuple or kind is list:
        return [to_json_value(item) for item in value]  # type: ignore[attr-defined]
    if isinstance(value, DataSet):
        return _dataset(value)
    if isinstance(value, Template):
        return _template(value)
    if isinstance(value, PropertySet):
        return _property_set(value)
    if isinstance(value, PropertyValue):
        return _property_value(value)
    if isinstance(value, bool):  # subclasses of the plain types (IntEnum, StrEnum, ...)
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return _b64(bytes(value))
    return str(value)


def _fallback(data: dict[str, object]) -> bytes:
    """Slow path for what orjson refuses: integers past 64 bits, lone surrogates, odd objects."""
    import json

    def fix(item: object) -> object:
        if isinstance(item, dict):
            return {fix_str(str(k)): fix(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [fix(v) for v in item]
        if isinstance(item, str):
            return fix_str(item)
        if item is None or isinstance(item, bool | int):
            return item
        if isinstance(item, float):
            return _float(item)
        if isinstance(item, bytes):
            return _b64(item)
        return fix_str(str(item))

    def fix_str(text: str) -> str:
        return text.encode("utf-8", "replace").decode("utf-8")  # lone surrogate -> "?"

    return json.dumps(fix(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _dumps(data: dict[str, object]) -> bytes:
    try:
        return orjson.dumps(data)
    except (orjson.JSONEncodeError, TypeError):
        return _fallback(data)


_SIMPLE_ARRAYS = frozenset(
    t
    for t in range(DataType.Int8Array, DataType.DateTimeArray + 1)
    if t not in (DataType.FloatArray, DataType.DoubleArray)
)


#: ``,"quality":"GOOD",`` ... pre-rendered: the quality is one of three
_QUALITY_BYTES = {q: b',"quality":' + orjson.dumps(q.value) + b"," for q in Quality}
_SEQ_BYTES = [b'"seq":%d,' % n for n in range(256)]
_HISTORICAL = b'"historical":true,'


class ValueRenderer:
    """Renders values; caches the per-metric part (datatype, unit, source) by the metric object.

    Per value only ``{"value", "timestamp"}`` goes through ``orjson.dumps``; the quality, seq and the
    metric's pre-rendered tail (``"datatype", "unit", "source"``) are joined to it as bytes. The cache
    holds at most ``max_cached`` metrics and starts over when full, so a long run with many rebirths
    does not keep old catalog entries alive.
    """

    __slots__ = ("_cache", "_max")

    def __init__(self, max_cached: int = 200_000) -> None:
        self._cache: dict[MetricInfo, bytes] = {}
        self._max = max_cached

    def _tail(self, info: MetricInfo) -> bytes:
        tail = self._cache.get(info)
        if tail is None:
            if len(self._cache) >= self._max:
                self._cache.clear()
            static: dict[str, object] = {
                "datatype": datatype_name(info.datatype),
                "unit": info.unit,
                "source": {
                    "group": info.group,
                    "node": info.node,
                    "device": info.device,
                    "metric": info.name,
                },
            }
            tail = _dumps(static)[1:]  # '"datatype":...}'
            self._cache[info] = tail
        return tail

    def render(self, sample: Sample, seq: int | None = None) -> bytes:
        """JSON bytes of one sample per ``schemas/uns_value.schema.json``."""
        info = sample.metric
        value: object = sample.value
        kind = type(value)
        head: dict[str, object]
        if kind is float:
            if not -_MAX_FLOAT <= value <= _MAX_FLOAT:  # type: ignore[operator]  # NaN, infinities
                value = _float(value)  # type: ignore[arg-type]
            head = {"value": value, "timestamp": sample.timestamp}
        elif kind is int or kind is str or kind is bool or value is None:
            head = {"value": value, "timestamp": sample.timestamp}
        elif kind is bytes:
            head = {"value": _b64(value), "encoding": "base64", "timestamp": sample.timestamp}  # type: ignore[arg-type]
        elif kind is tuple and info.datatype in _SIMPLE_ARRAYS:
            head = {"value": value, "timestamp": sample.timestamp}
        else:
            head = {"value": to_json_value(value), "timestamp": sample.timestamp}
        try:
            first = orjson.dumps(head)
        except (orjson.JSONEncodeError, TypeError):
            first = _fallback(head)
        tail = self._cache.get(info)
        if tail is None:
            tail = self._tail(info)
        middle = _QUALITY_BYTES.get(sample.quality)
        if middle is None:  # not one of the three: say what it is rather than fail
            middle = b',"quality":' + _dumps({"q": str(sample.quality)})[5:-1] + b","
        if seq is not None:
            middle += _SEQ_BYTES[seq] if 0 <= seq < 256 else b'"seq":%d,' % seq
        if sample.is_historical:
            middle += _HISTORICAL
        return first[:-1] + middle + tail


_DEFAULT_RENDERER = ValueRenderer()


def render_value(sample: Sample, seq: int | None = None) -> bytes:
    """JSON bytes of one sample (``schemas/uns_value.schema.json``); ``seq`` is the message's, if any."""
    return _DEFAULT_RENDERER.render(sample, seq)


def render_state(
    online: bool,
    timestamp: int,
    *,
    group: str,
    node: str,
    device: str | None = None,
    reason: str | None = None,
    bd_seq: int | None = None,
) -> bytes:
    """JSON bytes of a node's or device's online state (``schemas/uns_state.schema.json``)."""
    data: dict[str, object] = {
        "online": online,
        "timestamp": timestamp,
        "source": {"group": group, "node": node, "device": device},
    }
    if reason is not None:
        data["reason"] = reason
    if bd_seq is not None:
        data["bd_seq"] = bd_seq
    return _dumps(data)
