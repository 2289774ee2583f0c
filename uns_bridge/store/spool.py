"""An on-disk, append-only store-and-forward spool for batches the database could not take yet.

Layout of ``<dir>``:

* ``<first seq, 20 digits>.seg``: segments of records, appended to and never rewritten. The newest one
  is the *active* segment; a segment is closed when it reaches ``segment_bytes`` and deleted once every
  record in it is acknowledged.
* ``state.json``: ``{"version": 1, "id": "<random>", "acked": N, "dropped": D}``; every record with
  ``seq <= N`` is done. Written atomically (temporary file, rename; with ``fsync="always"`` also fsync of
  the file and the directory). A state file that a power cut rolls back only makes batches be
  delivered again: deliver them idempotently (:meth:`Spool.token`).
  ``id`` names this spool: :meth:`Spool.token` combines it with a sequence number into a delivery token
  that is unique across spools (several bridges on one database) and across a lost state file.

A record on disk is a 20-byte header followed by the payload::

    magic b"\\xd5\\x8aSP" | length u32 | crc32 u32 | seq u64 | payload (length bytes)      (big-endian)

``crc32`` covers ``length``, ``seq`` and the payload, so a damaged length or sequence number is detected
as surely as a damaged payload. Sequence numbers start at 1 and increase by one per record, across
segments and restarts.

Durability (``fsync``): ``always`` fsyncs every record before :meth:`Spool.append` returns (survives a
power loss); ``batch`` fsyncs on :meth:`Spool.sync`, on rotation and close, and at the first append after
``sync_interval_s`` (a power loss may cost the last interval); ``never`` leaves it to the operating
system. A killed *process* never loses an appended record under any policy: the bytes are in the kernel
once ``append`` returns (every record is one unbuffered ``write``).

Size bound (``max_bytes``, the sum of the segment files): when an append would exceed it, policy
``block`` raises :class:`SpoolFull` (the caller waits for the drain to free space and retries: nothing is
lost, the producer is slowed); ``drop-oldest`` deletes the oldest segments, unacknowledged records and
all, until the new record fits, and counts every record dropped in :attr:`Spool.dropped` (persisted).

Recovery (:meth:`Spool.open`) never raises on bad bytes: a torn tail of the active segment (a record cut
short by a crash) is truncated away; a corrupt region anywhere else is skipped by resynchronising on the
next valid record. Both are listed in :attr:`Spool.report`. Reading re-checks every checksum, so damage
after opening is skipped and reported the same way.

The spool is synchronous and not thread-safe: one owner calls it (``store/forward.py`` serialises its
calls with a lock and runs the ones that may fsync in a worker thread).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import struct
import time
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

MAGIC = b"\xd5\x8aSP"
_HEADER = struct.Struct(">4sIIQ")
HEADER_SIZE = _HEADER.size  # 20
_CRC_PREFIX = struct.Struct(">IQ")
#: a record larger than this is refused outright (and a header claiming more is corrupt)
MAX_RECORD_BYTES = 256 * 1024 * 1024
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
STATE_FILE = "state.json"

FsyncPolicy = Literal["always", "batch", "never"]
FullPolicy = Literal["block", "drop-oldest"]


class SpoolError(Exception):
    """Base of the spool's own errors (never raised for bad bytes on disk)."""


class SpoolFull(SpoolError):
    """The record does not fit under ``max_bytes`` and the policy is ``block``: retry after acks."""


class RecordTooLarge(SpoolError, ValueError):
    """One record can never fit: larger than the segment size, ``max_bytes`` or the format's limit."""


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes the spool could not use: ``kind`` is ``"torn-tail"`` (truncated) or ``"corrupt"`` (skipped)."""

    segment: str
    offset: int
    length: int
    kind: Literal["torn-tail", "corrupt"]


@dataclass
class RecoveryReport:
    """What :meth:`Spool.open` found (and what reads found later: ``damage`` keeps growing)."""

    segments: int = 0
    records: int = 0
    pending: int = 0
    damage: list[Damage] = field(default_factory=list)
    #: records whose sequence number did not increase (skipped)
    out_of_order: int = 0
    #: a problem with ``state.json`` (then everything on disk is treated as unacknowledged)
    state_problem: str | None = None
    #: files in the directory that are not the spool's (left alone)
    foreign_files: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.damage and not self.out_of_order and self.state_problem is None

    def summary(self) -> str:
        torn = sum(d.length for d in self.damage if d.kind == "torn-tail")
        corrupt = sum(d.length for d in self.damage if d.kind == "corrupt")
        text = f"{self.segments} segments, {self.records} records, {self.pending} pending"
        if torn:
            text += f", torn tail of {torn} bytes truncated"
        if corrupt:
            regions = sum(1 for d in self.damage if d.kind == "corrupt")
            text += f", {corrupt} corrupt bytes in {regions} regions skipped"
        if self.out_of_order:
            text += f", {self.out_of_order} out-of-order records skipped"
        if self.state_problem:
            text += f", state file: {self.state_problem}"
        return text


def encode_record(seq: int, payload: bytes) -> bytes:
    """The bytes of one framed record."""
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(_CRC_PREFIX.pack(length, seq)))
    return _HEADER.pack(MAGIC, length, crc, seq) + payload


def _record_at(data: bytes | memoryview, offset: int) -> tuple[int, bytes] | None:
    """``(seq, payload)`` when a valid record starts at ``offset`` of ``data``, else None."""
    if offset + HEADER_SIZE > len(data):
        return None
    magic, length, crc, seq = _HEADER.unpack_from(data, offset)
    if magic != MAGIC or length > MAX_RECORD_BYTES:
        return None
    end = offset + HEADER_SIZE + length
    if end > len(data):
        return None
    payload = bytes(data[offset + HEADER_SIZE : end])
    if zlib.crc32(payload, zlib.crc32(_CRC_PREFIX.pack(length, seq))) != crc:
        return None
    return seq, payload


@dataclass(frozen=True, slots=True)
class _Found:
    offset: int
    seq: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + HEADER_SIZE + len(self.payload)


@dataclass(frozen=True, slots=True)
class _Gap:
    offset: int
    length: int
    #: True when no valid record follows the gap (it runs to the end of the data)
    at_end: bool


def scan(data: bytes | memoryview, start: int = 0) -> Iterator[_Found | _Gap]:
    """Every valid record in ``data`` from ``start``, and every run of bytes between them that is not one.

    Resynchronisation: after a bad position the next candidate is the next occurrence of the magic.
    """
    view = memoryview(data)
    raw = bytes(view) if not isinstance(data, bytes) else data
    offset = start
    size = len(raw)
    while offset < size:
        found = _record_at(view, offset)
        if found is not None:
            record = _Found(offset, found[0], found[1])
            yield record
            offset = record.end
            continue
        probe = raw.find(MAGIC, offset + 1)
        while probe != -1 and _record_at(view, probe) is None:
            probe = raw.find(MAGIC, probe + 1)
        if probe == -1:
            yield _Gap(offset, size - offset, at_end=True)
            return
        yield _Gap(offset, probe - offset, at_end=False)
        offset = probe


@dataclass
class _Segment:
    path: Path
    #: the sequence number in the file name (orders the segments)
    first_seq: int
    size: int
    #: sequence numbers of the valid records, increasing
    seqs: array[int] = field(default_factory=lambda: array("Q"))

    @property
    def records(self) -> int:
        return len(self.seqs)

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def count_after(self, seq: int) -> int:
        """How many records of this segment have a sequence number above ``seq``."""
        return len(self.seqs) - bisect.bisect_right(self.seqs, seq)


class Spool:
    """The spool in ``directory``; use :meth:`open` (it recovers) rather than the constructor."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 1024 * 1024 * 1024,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync: FsyncPolicy = "batch",
        when_full: FullPolicy = "block",
        sync_interval_s: float = 0.2,
    ) -> None:
        if fsync not in ("always", "batch", "never"):
            raise ValueError(f"spool fsync policy must be always, batch or never, not {fsync!r}")
        if when_full not in ("block", "drop-oldest"):
            raise ValueError(f"spool when_full policy must be block or drop-oldest, not {when_full!r}")
        if segment_bytes < HEADER_SIZE + 1 or max_bytes < segment_bytes:
            raise ValueError(
                f"spool sizes: need segment_bytes > {HEADER_SIZE} and max_bytes >= segment_bytes "
                f"(got segment_bytes={segment_bytes}, max_bytes={max_bytes})"
            )
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_policy: FsyncPolicy = fsync
        self.when_full: FullPolicy = when_full
        self.sync_interval_s = sync_interval_s
        self.report = RecoveryReport()
        #: records lost to ``drop-oldest`` over the spool's whole life (persisted in the state file)
        self.dropped = 0
        #: every record with ``seq <= acked`` is delivered (or dropped)
        self.acked = 0
        #: this spool's random name (persisted); see :meth:`token`
        self.spool_id = ""
        #: records being delivered as one unit when the last run stopped (persisted); see :meth:`begin`
        self.inflight: tuple[int, int] | None = None
        self._segments: list[_Segment] = []
        self._next_seq = 1
        self._fd: int | None = None
        self._dirty = False
        self._last_sync = time.monotonic()
        #: read cursor: the segment index and byte offset where the next unread record may start
        self._cursor: tuple[int, int] | None = None
        #: the newest sequence number handed out by :meth:`read` since the last rewind
        self._read_seq = 0
        self._reader: tuple[Path, int] | None = None
        self._closed = False

    # ----------------------------------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        max_bytes: int = 1024 * 1024 * 1024,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync: FsyncPolicy = "batch",
        when_full: FullPolicy = "block",
        sync_interval_s: float = 0.2,
    ) -> Spool:
        """Open (creating) the spool in ``directory`` and recover whatever is there."""
        spool = cls(
            directory,
            max_bytes=max_bytes,
            segment_bytes=segment_bytes,
            fsync=fsync,
            when_full=when_full,
            sync_interval_s=sync_interval_s,
        )
        spool._recover()
        return spool

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._read_state()
        names: list[tuple[int, Path]] = []
        for entry in sorted(self.directory.iterdir()):
            match = _SEGMENT_NAME.match(entry.name)
            if match and entry.is_file():
                names.append((int(match.group(1)), entry))
            elif entry.name.startswith(STATE_FILE + ".tmp"):
                with contextlib.suppress(OSError):
                    entry.unlink()
            elif entry.name != STATE_FILE:
                self.report.foreign_files.append(entry.name)
        names.sort()
        last_seq = self.acked
        for index, (first_seq, path) in enumerate(names):
            is_last = index == len(names) - 1
            segment, last_seq = self._recover_segment(path, first_seq, last_seq, is_last)
            # a segment's name is at most the sequence numbers it holds; keep later names ordered
            last_seq = max(last_seq, first_seq - 1)
            if segment.records == 0:
                self._unlink(path)
                continue
            self._segments.append(segment)
        self._next_seq = max(last_seq, self.acked) + 1
        if not self.spool_id:
            self.spool_id = secrets.token_hex(8)
            self._write_state()
        self._delete_acked_segments()
        self._cursor = None
        self.report.segments = len(self._segments)
        self.report.records = sum(s.records for s in self._segments)
        self.report.pending = self.pending_count()
        if self.report.clean:
            log.info("spool %s opened: %s", self.directory, self.report.summary())
        else:
            log.warning("spool %s recovered with problems: %s", self.directory, self.report.summary())

    def _recover_segment(
        self, path: Path, first_seq: int, last_seq: int, is_last: bool
    ) -> tuple[_Segment, int]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.report.damage.append(Damage(path.name, 0, 0, "corrupt"))
            log.warning("spool segment %s unreadable (%s); skipped", path.name, exc)
            return _Segment(path, first_seq, 0), last_seq
        segment = _Segment(path, first_seq, len(data))
        truncate_at: int | None = None
        for item in scan(data):
            if isinstance(item, _Gap):
                if item.at_end and is_last:
                    truncate_at = item.offset
                    self.report.damage.append(Damage(path.name, item.offset, item.length, "torn-tail"))
                else:
                    self.report.damage.append(Damage(path.name, item.offset, item.length, "corrupt"))
                continue
            if (item.seq <= last_seq and item.seq > self.acked) or item.seq <= segment.last_seq:
                self.report.out_of_order += 1
                continue
            segment.seqs.append(item.seq)
            last_seq = max(last_seq, item.seq)
        if truncate_at is not None:
            with open(path, "r+b") as handle:
                handle.truncate(truncate_at)
                os.fsync(handle.fileno())
            segment.size = truncate_at
            log.warning(
                "spool segment %s: torn tail of %d bytes truncated", path.name, len(data) - truncate_at
            )
        return segment, last_seq

    def _read_state(self) -> None:
        path = self.directory / STATE_FILE
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.report.state_problem = f"unreadable ({exc}); treating every record as unacknowledged"
            return
        try:
            state = json.loads(text)
            acked = state["acked"]
            dropped = state.get("dropped", 0)
            if not isinstance(acked, int) or not isinstance(dropped, int) or acked < 0 or dropped < 0:
                raise ValueError("acked/dropped must be non-negative integers")
        except (ValueError, KeyError, TypeError) as exc:
            self.report.state_problem = f"invalid ({exc}); treating every record as unacknowledged"
            return
        self.acked = acked
        self.dropped = dropped
        inflight = state.get("inflight")
        if (
            isinstance(inflight, list)
            and len(inflight) == 2
            and all(isinstance(v, int) for v in inflight)
            and acked < inflight[0] <= inflight[1]
        ):
            self.inflight = (inflight[0], inflight[1])
        spool_id = state.get("id")
        if isinstance(spool_id, str) and re.fullmatch(r"[0-9a-f]{16}", spool_id):
            self.spool_id = spool_id

    # ---------------------------------------------------------------------------------------- writing
    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def size_bytes(self) -> int:
        """Bytes of all segment files (what ``max_bytes`` bounds)."""
        return sum(s.size for s in self._segments)

    def pending_count(self) -> int:
        """Records appended and not yet acknowledged."""
        return sum(s.count_after(self.acked) for s in self._segments if s.last_seq > self.acked)

    def is_empty(self) -> bool:
        """True when nothing unacknowledged is on disk."""
        return not self._segments or self._segments[-1].last_seq <= self.acked

    def fits(self, payload_size: int) -> bool:
        """Whether a record of ``payload_size`` bytes can be appended now without exceeding ``max_bytes``."""
        return self.size_bytes + HEADER_SIZE + payload_size <= self.max_bytes

    def append(self, payload: bytes) -> int:
        """Append one record and return its sequence number.

        Raises :class:`SpoolFull` (policy ``block``) or :class:`RecordTooLarge`; disk errors (``OSError``)
        propagate: the caller must not assume the record is stored.
        """
        self._check_open()
        need = HEADER_SIZE + len(payload)
        if need > self.segment_bytes or len(payload) > MAX_RECORD_BYTES:
            raise RecordTooLarge(
                f"spool record of {len(payload)} bytes exceeds the segment size of {self.segment_bytes} bytes"
            )
        if self.size_bytes + need > self.max_bytes:
            self._delete_acked_segments(keep_active=False)
        if self.size_bytes + need > self.max_bytes:
            if self.when_full == "block":
                raise SpoolFull(
                    f"spool {self.directory} full ({self.size_bytes} of {self.max_bytes} bytes, "
                    f"{self.pending_count()} records pending)"
                )
            self._drop_oldest_until(need)
        segment = self._active_for(need)
        seq = self._next_seq
        frame = encode_record(seq, payload)
        assert self._fd is not None
        written = os.write(self._fd, frame)
        if written != len(frame):  # a short write (disk full): roll back what we can
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, segment.size)
            raise OSError(
                f"short write to spool segment {segment.path.name}: {written} of {len(frame)} bytes"
            )
        segment.size += len(frame)
        segment.seqs.append(seq)
        self._next_seq = seq + 1
        self._dirty = True
        if self.fsync_policy == "always" or (
            self.fsync_policy == "batch" and time.monotonic() - self._last_sync >= self.sync_interval_s
        ):
            self.sync()
        return seq

    def sync(self) -> None:
        """Make every appended record durable (fsync of the active segment) unless the policy is never."""
        if self._fd is not None and self._dirty and self.fsync_policy != "never":
            os.fsync(self._fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def _active_for(self, need: int) -> _Segment:
        if self._segments and self._fd is None:
            last = self._segments[-1]
            if last.size + need <= self.segment_bytes:
                self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
                return last
        if self._fd is not None and self._segments[-1].size + need <= self.segment_bytes:
            return self._segments[-1]
        self._close_active()
        path = self.directory / f"{self._next_seq:020d}.seg"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fsync_dir()
        segment = _Segment(path, self._next_seq, 0)
        self._segments.append(segment)
        return segment

    def _close_active(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def _drop_oldest_until(self, need: int) -> None:
        doomed: list[_Segment] = []
        size = self.size_bytes
        while len(doomed) < len(self._segments) and size + need > self.max_bytes:
            oldest = self._segments[len(doomed)]
            doomed.append(oldest)
            size -= oldest.size
            lost = oldest.count_after(self.acked)
            self.dropped += lost
            self.acked = max(self.acked, oldest.last_seq)
            if self.inflight is not None and self.inflight[0] <= self.acked:
                self.inflight = None
            log.warning("spool full: dropped %d oldest records (segment %s)", lost, oldest.path.name)
        if len(doomed) == len(self._segments):
            self._close_active()
        self._write_state()  # first the state, so a crash in between never resurrects dropped records
        for segment in doomed:
            self._segments.remove(segment)
            self._unlink(segment.path)
        self._cursor = None

    # ---------------------------------------------------------------------------------------- reading
    def read(
        self, max_records: int = 1, max_bytes: int | None = None, upto_seq: int | None = None
    ) -> list[Record]:
        """The next unacknowledged records after the read cursor, oldest first (at least one if any).

        At most ``max_records``, ``max_bytes`` of payload (but always one record when any is there) and no
        record after ``upto_seq``. Reads do not acknowledge: call :meth:`ack` after the records are
        committed, or :meth:`rewind` to read them again after a failed delivery.
        """
        self._check_open()
        out: list[Record] = []
        total = 0
        if self._cursor is None:
            self._cursor = self._start_cursor()
        index, offset = self._cursor
        while index < len(self._segments) and len(out) < max_records:
            segment = self._segments[index]
            if offset >= segment.size:
                if index == len(self._segments) - 1:
                    break  # the end of the active segment: later appends continue right here
                index, offset = index + 1, 0
                continue
            found = self._read_one(segment, offset)
            if found is None:  # damaged since opening: skip to the next valid record of this segment
                offset = self._resync(segment, offset)
                continue
            seq, payload, end = found
            if upto_seq is not None and seq > upto_seq:
                break
            if seq > self.acked and seq > self._read_seq:
                if out and max_bytes is not None and total + len(payload) > max_bytes:
                    break
                out.append(Record(seq, payload))
                self._read_seq = seq
                total += len(payload)
            offset = end
        self._cursor = (index, offset)
        return out

    def token(self, first: int, last: int | None = None) -> int:
        """A signed 64-bit delivery token for records ``first..last`` of this spool (idempotent delivery)."""
        last = first if last is None else last
        text = f"{self.spool_id}:{first}" if last == first else f"{self.spool_id}:{first}-{last}"
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little", signed=True)

    def begin(self, first: int, last: int) -> None:
        """Persist that records ``first..last`` are being delivered as one unit (see :attr:`inflight`).

        After a crash the next run finds the range in :attr:`inflight` and must deliver exactly that
        range again (with the same :meth:`token`), so a unit committed just before the crash is
        recognised instead of being regrouped and written twice.
        """
        self._check_open()
        if not (self.acked < first <= last < self._next_seq):
            raise ValueError(
                f"cannot begin spool records {first}..{last} (acked {self.acked}, next {self._next_seq})"
            )
        self.inflight = (first, last)
        self._write_state()

    def rewind(self) -> None:
        """Read again from the oldest unacknowledged record."""
        self._cursor = None
        self._read_seq = 0

    def ack(self, seq: int) -> None:
        """Every record up to and including ``seq`` is committed downstream: forget them (persistently)."""
        self._check_open()
        if seq <= self.acked:
            return
        if seq >= self._next_seq:
            raise ValueError(f"cannot acknowledge spool record {seq}: the newest is {self._next_seq - 1}")
        self.acked = seq
        if self.inflight is not None and self.inflight[1] <= seq:
            self.inflight = None
        self._write_state()
        self._delete_acked_segments()

    def _start_cursor(self) -> tuple[int, int]:
        for index, segment in enumerate(self._segments):
            if segment.last_seq > self.acked:
                return index, 0
        # all acknowledged: wait at the start of the active segment (its old records are skipped)
        return max(0, len(self._segments) - 1), 0

    def _read_one(self, segment: _Segment, offset: int) -> tuple[int, bytes, int] | None:
        try:
            fd = self._reader_for(segment.path)
            header = os.pread(fd, HEADER_SIZE, offset)
            if len(header) < HEADER_SIZE:
                return None
            magic, length, _crc, _seq = _HEADER.unpack(header)
            if magic != MAGIC or length > MAX_RECORD_BYTES or offset + HEADER_SIZE + length > segment.size:
                return None
            body = os.pread(fd, length, offset + HEADER_SIZE)
        except OSError:
            return None
        found = _record_at(header + body, 0)
        if found is None:
            return None
        return found[0], found[1], offset + HEADER_SIZE + length

    def _reader_for(self, path: Path) -> int:
        """A read-only descriptor of ``path``, kept open while reading goes on in the same segment."""
        if self._reader is not None and self._reader[0] == path:
            return self._reader[1]
        self._close_reader()
        fd = os.open(path, os.O_RDONLY)
        self._reader = (path, fd)
        return fd

    def _close_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(OSError):
                os.close(self._reader[1])
            self._reader = None

    def _resync(self, segment: _Segment, offset: int) -> int:
        try:
            data = segment.path.read_bytes()[: segment.size]
        except OSError:
            data = b""
        for item in scan(data, offset):
            if isinstance(item, _Gap):
                damage = Damage(segment.path.name, item.offset, item.length, "corrupt")
                if damage not in self.report.damage:  # not already found when opening
                    self.report.damage.append(damage)
                    log.warning(
                        "spool segment %s: %d corrupt bytes at %d skipped",
                        damage.segment,
                        damage.length,
                        damage.offset,
                    )
                return item.offset + item.length
            return item.offset
        return segment.size

    def _delete_acked_segments(self, keep_active: bool = True) -> None:
        removed = 0
        while self._segments and self._segments[0].last_seq <= self.acked:
            segment = self._segments[0]
            if len(self._segments) == 1:
                young = segment.size < self.segment_bytes // 2
                if keep_active and self._fd is not None and young and segment.records:
                    break  # keep appending to a young active segment
                self._close_active()
            self._segments.pop(0)
            self._unlink(segment.path)
            removed += 1
        if removed and self._cursor is not None:
            index, offset = self._cursor
            self._cursor = (max(0, index - removed), offset if index >= removed else 0)

    # ----------------------------------------------------------------------------------------- state
    def _write_state(self) -> None:
        path = self.directory / STATE_FILE
        tmp = self.directory / f"{STATE_FILE}.tmp{os.getpid()}"
        state: dict[str, object] = {
            "version": 1,
            "id": self.spool_id,
            "acked": self.acked,
            "dropped": self.dropped,
        }
        if self.inflight is not None:
            state["inflight"] = list(self.inflight)
        data = json.dumps(state).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            # only "always" pays an fsync per acknowledgement: an acknowledgement lost to a power cut just
            # delivers a batch again, which the delivery token makes harmless
            if self.fsync_policy == "always":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if self.fsync_policy == "always":
            self._fsync_dir()

    def _fsync_dir(self) -> None:
        if self.fsync_policy == "never":
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _unlink(self, path: Path) -> None:
        if self._reader is not None and self._reader[0] == path:
            self._close_reader()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError(f"spool {self.directory} is closed")

    def close(self) -> None:
        """Sync and close; the spool can be opened again later."""
        if self._closed:
            return
        self._close_active()
        self._close_reader()
        self._closed = True

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
