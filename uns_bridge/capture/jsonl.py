"""JSON Lines capture files, one MQTT message per line (``schemas/capture.schema.json``).

Line format::

    {"t": 1764700000.123, "topic": "spBv1.0/G/NDATA/N", "payload_b64": "CAE...", "qos": 0, "retain": false}

``t`` is the receive time in float seconds since the Unix epoch; ``qos`` (default 0) and ``retain``
(default false) may be omitted when reading; any other key is kept in :attr:`CaptureRecord.extra` and
written back unchanged. A name ending in ``.gz`` is gzip, ``.zst`` is Zstandard, anything else plain.
Reading and writing stream: memory stays constant whatever the file size.

Bad input never stops a reader: each bad line is recorded as a :class:`Problem` (``"line 17"``, reason)
and skipped. A damaged compressed stream ends the reading with a problem at the line where it broke.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import orjson
import zstandard

#: problems kept in memory per reader (all are counted)
MAX_PROBLEMS_KEPT = 1000

_KNOWN = frozenset(("t", "topic", "payload_b64", "qos", "retain"))


class CaptureError(Exception):
    """A capture file cannot be opened at all (missing, unknown kind, not a capture)."""


class CaptureRecord(NamedTuple):
    """One captured MQTT message."""

    #: receive (or capture) time, float seconds since the Unix epoch
    t: float
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    #: keys of the line beyond the five above, preserved as read (``None``: none)
    extra: dict[str, Any] | None = None

    @property
    def t_ms(self) -> int:
        """The time in integer milliseconds, as the host core takes it."""
        return round(self.t * 1000)


@dataclass(frozen=True, slots=True)
class Problem:
    """One piece of bad input: where (``"line 17"``, ``"packet 42"``) and what was wrong."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class ProblemLog:
    """Problems of one reader: the first :data:`MAX_PROBLEMS_KEPT` kept, all counted."""

    kept: list[Problem] = field(default_factory=list)
    count: int = 0

    def add(self, where: str, message: str) -> None:
        self.count += 1
        if len(self.kept) < MAX_PROBLEMS_KEPT:
            self.kept.append(Problem(where, message))


class CaptureReader(Protocol):
    """What every capture reader offers: iteration over records and the problems met so far."""

    problems: ProblemLog

    def __iter__(self) -> Iterator[CaptureRecord]: ...

    def close(self) -> None: ...


def compression_of(path: Path) -> str:
    """``"gz"``, ``"zst"`` or ``""`` by the file name."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return "gz"
    if suffix in (".zst", ".zstd"):
        return "zst"
    return ""


def _open_binary_read(path: Path) -> Any:
    kind = compression_of(path)
    if kind == "gz":
        return gzip.open(path, "rb")
    if kind == "zst":
        raw = open(path, "rb")  # noqa: SIM115 - closed together with the reader
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return io.BufferedReader(reader, 1 << 16)
    return open(path, "rb", buffering=1 << 16)


def _decode_error(exc: BaseException) -> bool:
    return isinstance(exc, EOFError | OSError | zlib.error | zstandard.ZstdError)


def parse_line(line: bytes) -> CaptureRecord:
    """One JSON line to a record; :class:`ValueError` with a specific reason on bad input."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    t = obj.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise ValueError(f"field 't' must be a number of seconds, got {_show(t)}")
    if not math.isfinite(t):
        raise ValueError("field 't' must be finite")
    topic = obj.get("topic")
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"field 'topic' must be a non-empty string, got {_show(topic)}")
    b64 = obj.get("payload_b64")
    if not isinstance(b64, str):
        raise ValueError(f"field 'payload_b64' must be a base64 string, got {_show(b64)}")
    try:
        payload = binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"field 'payload_b64' is not valid base64 ({exc})") from None
    qos = obj.get("qos", 0)
    if isinstance(qos, bool) or qos not in (0, 1, 2):
        raise ValueError(f"field 'qos' must be 0, 1 or 2, got {_show(qos)}")
    retain = obj.get("retain", False)
    if not isinstance(retain, bool):
        raise ValueError(f"field 'retain' must be true or false, got {_show(retain)}")
    extra = None if _KNOWN.issuperset(obj) else {k: v for k, v in obj.items() if k not in _KNOWN}
    return CaptureRecord(float(t), topic, payload, qos, retain, extra)


def _show(value: object) -> str:
    text = orjson.dumps(value).decode() if value is not None else "nothing"
    return text if len(text) <= 40 else text[:37] + "..."


def format_line(record: CaptureRecord) -> bytes:
    """A record as one JSON line, newline included. Extra keys never override the five known ones."""
    obj: dict[str, Any] = {}
    if record.extra:
        obj.update(record.extra)
    obj["t"] = record.t
    obj["topic"] = record.topic
    obj["payload_b64"] = base64.b64encode(record.payload).decode("ascii")
    obj["qos"] = record.qos
    obj["retain"] = record.retain
    if not record.extra:
        return orjson.dumps(obj) + b"\n"
    # known keys first, extras after, in their original order
    ordered = {k: obj[k] for k in ("t", "topic", "payload_b64", "qos", "retain")}
    ordered.update((k, v) for k, v in record.extra.items() if k not in _KNOWN)
    return orjson.dumps(ordered) + b"\n"


class JsonlReader:
    """Streams the records of a JSON Lines capture (plain, ``.gz`` or ``.zst``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CaptureError(f"{self.path}: no such file")
        self.problems = ProblemLog()
        #: lines read so far (good and bad)
        self.lines = 0
        self._fh: Any = None

    def __iter__(self) -> Iterator[CaptureRecord]:
        self._fh = _open_binary_read(self.path)
        fh = self._fh
        number = 0
        try:
            while True:
                try:
                    line = fh.readline()
                except Exception as exc:
                    if not _decode_error(exc):
                        raise
                    self.problems.add(f"line {number + 1}", f"compressed data damaged or cut off ({exc})")
                    return
                if not line:
                    return
                number += 1
                self.lines = number
                if not line.strip():
                    continue
                try:
                    yield parse_line(line)
                except ValueError as exc:
                    reason = str(exc)
                    if not line.endswith(b"\n") and reason.startswith("not valid JSON"):
                        reason = "truncated last line (no newline, incomplete JSON)"
                    self.problems.add(f"line {number}", reason)
        finally:
            self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class JsonlWriter:
    """Writes records as JSON Lines; compression by file name. Use as a context manager.

    Every record is written as one whole line; :meth:`flush` makes what was written so far readable
    (for ``.zst`` it ends a block), :meth:`close` finishes the file. A writer that is closed after an
    interrupt therefore never leaves a torn last line.
    """

    def __init__(self, path: Path | str, *, level: int | None = None) -> None:
        self.path = Path(path)
        self.count = 0
        kind = compression_of(self.path)
        self._zst: Any = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        if kind == "gz":
            # no name, mtime 0: the same records always give the same bytes
            raw = open(self.path, "wb")  # noqa: SIM115
            self._raw: Any = raw
            self._fh: Any = gzip.GzipFile(
                filename="", mode="wb", compresslevel=6 if level is None else level, fileobj=raw, mtime=0
            )
        elif kind == "zst":
            raw = open(self.path, "wb")  # noqa: SIM115
            self._zst = zstandard.ZstdCompressor(level=3 if level is None else level).stream_writer(raw)
            self._fh = self._zst
        else:
            self._fh = open(self.path, "wb")  # noqa: SIM115

    def write(self, record: CaptureRecord) -> None:
        line = format_line(record)
        self._buffer.append(line)
        self._buffered += len(line)
        self.count += 1
        if self._buffered >= 1 << 16:
            self._drain()

    def _drain(self) -> None:
        if self._buffer:
            self._fh.write(b"".join(self._buffer))
            self._buffer.clear()
            self._buffered = 0

    def flush(self) -> None:
        self._drain()
        if self._zst is not None:
            self._zst.flush(zstandard.FLUSH_BLOCK)
        else:
            self._fh.flush()

    def close(self) -> None:
        if self._fh.closed:
            return
        self._drain()
        self._fh.close()
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


PCAP_SUFFIXES = (".pcap", ".pcapng", ".cap")


def is_pcap(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) or name.endswith(s + ".gz") for s in PCAP_SUFFIXES)


def open_capture(path: Path | str, **pcap_options: Any) -> CaptureReader:
    """A reader for any capture by its name: JSON Lines (``.gz``/``.zst``) or a pcap/pcapng file."""
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: no such file")
    if is_pcap(path):
        from uns_bridge.capture.pcap import PcapReader

        return PcapReader(path, **pcap_options)
    return JsonlReader(path)
