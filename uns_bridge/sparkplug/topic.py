"""Sparkplug B topics: ``spBv1.0/<group>/<TYPE>/<edge node>[/<device>]`` and host STATE topics.

* Node messages (NBIRTH NDEATH NDATA NCMD) have exactly four levels; device messages (DBIRTH DDEATH DDATA
  DCMD) exactly five.
* Group, edge node, device and host ids are non-empty UTF-8 and never contain ``+``, ``#`` or ``/``
  [tck-id-topics-namespace-group-id-chars etc.].
* ``spBv1.0/STATE/<host id>`` is the Sparkplug 3.0 host STATE topic; ``STATE/<host id>`` the legacy
  (2.2) one.

:func:`parse_topic` raises :class:`TopicError` (and nothing else) with a reason a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

NAMESPACE = "spBv1.0"
_FORBIDDEN = frozenset("+#/")


class TopicError(ValueError):
    """The topic is not a valid Sparkplug B topic; the message says what is wrong."""


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"

    @property
    def is_device(self) -> bool:
        return self.value[0] == "D"

    @property
    def is_birth(self) -> bool:
        return self.value.endswith("BIRTH")

    @property
    def is_death(self) -> bool:
        return self.value.endswith("DEATH")

    @property
    def is_data(self) -> bool:
        return self.value.endswith("DATA")

    @property
    def is_command(self) -> bool:
        return self.value.endswith("CMD")


_TYPES = {t.value: t for t in MessageType}


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """An edge node or device message topic."""

    group: str
    message_type: MessageType
    node: str
    device: str | None = None

    def __post_init__(self) -> None:
        _check_id("group id", self.group)
        _check_id("edge node id", self.node)
        if self.message_type.is_device:
            if self.device is None:
                raise TopicError(f"{self.message_type} needs a device id")
            _check_id("device id", self.device)
        elif self.device is not None:
            raise TopicError(f"{self.message_type} is a node message and takes no device id")

    def __str__(self) -> str:
        base = f"{NAMESPACE}/{self.group}/{self.message_type.value}/{self.node}"
        return base if self.device is None else f"{base}/{self.device}"


@dataclass(frozen=True, slots=True)
class StateTopic:
    """A host application's STATE topic (``legacy``: the Sparkplug 2.2 form ``STATE/<host id>``)."""

    host_id: str
    legacy: bool = False

    def __post_init__(self) -> None:
        _check_id("host id", self.host_id)

    def __str__(self) -> str:
        return f"STATE/{self.host_id}" if self.legacy else f"{NAMESPACE}/STATE/{self.host_id}"


def _check_id(what: str, value: str) -> None:
    if not value:
        raise TopicError(f"the {what} is empty")
    bad = _FORBIDDEN.intersection(value)
    if bad:
        raise TopicError(
            f"the {what} {value!r} contains {' and '.join(sorted(bad))}, which Sparkplug forbids"
        )


def parse_topic(topic: str | bytes) -> SparkplugTopic | StateTopic:
    """Parse a Sparkplug B topic. Raises :class:`TopicError` saying what is wrong."""
    if isinstance(topic, bytes | bytearray):
        try:
            topic = bytes(topic).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TopicError(f"the topic is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(topic, str):
        raise TopicError(f"a topic must be text, not {type(topic).__name__}")
    if "\x00" in topic:
        raise TopicError("the topic contains a NUL character")
    parts = topic.split("/")
    if parts[0] == "STATE" and len(parts) == 2:
        return StateTopic(parts[1], legacy=True)
    if parts[0] != NAMESPACE:
        raise TopicError(f"not a Sparkplug B topic: it must start with {NAMESPACE}/ (got {topic[:80]!r})")
    if len(parts) == 3 and parts[1] == "STATE":
        return StateTopic(parts[2])
    if len(parts) < 4:
        raise TopicError(
            f"a Sparkplug B topic needs {NAMESPACE}/<group>/<type>/<edge node>, got {topic[:80]!r}"
        )
    message_type = _TYPES.get(parts[2])
    if message_type is None:
        raise TopicError(
            f"unknown Sparkplug message type {parts[2][:40]!r} (expected one of {', '.join(_TYPES)})"
        )
    if message_type.is_device:
        if len(parts) == 4:
            raise TopicError(
                f"{message_type} needs a device id: {NAMESPACE}/<group>/{message_type}/<node>/<device>"
            )
        if len(parts) > 5:
            raise TopicError(f"the device id of {topic[:80]!r} contains '/', which Sparkplug forbids")
        return SparkplugTopic(parts[1], message_type, parts[3], parts[4])
    if len(parts) > 4:
        raise TopicError(f"{message_type} is a node message and takes no device id: {topic[:80]!r}")
    return SparkplugTopic(parts[1], message_type, parts[3])
