"""Store-and-forward around the store writer's batch delivery.

:class:`Forwarder` wraps one async ``deliver(batch)`` callable (the writer's; it must return only after
the batch is committed):

* Healthy and nothing spooled: ``deliver`` is called directly. The spool is not touched (no disk I/O on
  the fast path).
* ``deliver`` fails for a *transient* reason (:func:`is_transient`: the server is unreachable, shutting
  down, out of connections, a serialisation failure ...): the batch is encoded and appended to the
  :class:`~uns_bridge.store.spool.Spool`, and from then on every later batch is appended too while
  anything is spooled, so the database receives batches in the order they were handed over.
* A drain task delivers spooled batches oldest first, retrying with exponential backoff while the
  database stays away, and acknowledges each record in the spool only after its ``deliver`` returned
  (committed). When the spool is empty, batches go direct again.
* A permanent failure of a direct batch propagates to the caller (the writer dead-letters it). A
  permanent failure of a spooled batch is handed to ``on_permanent`` (and counted) and the drain moves on,
  so one poisoned batch cannot stop the drain forever.
* Spool full with policy ``block``: :meth:`Forwarder.deliver` waits until the drain frees room
  (backpressure reaches the MQTT session); with ``drop-oldest`` the spool drops and counts.

Crash safety: a record is acknowledged right after its commit; a crash in between (microseconds) makes
the next start deliver that one batch again. The writer closes that window when its batches are
idempotent (see the ``token`` passed to ``deliver`` when it accepts one: :meth:`Spool.token` of the
record, unique across spools and restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import secrets
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Generic, Protocol, TypeVar

from uns_bridge.config import SpoolConfig
from uns_bridge.store.batch import Batch
from uns_bridge.store.spool import Record, RecordTooLarge, Spool, SpoolFull

log = logging.getLogger(__name__)

B = TypeVar("B")

#: SQLSTATE classes and codes after which the same statement may well succeed later
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P", "58", "40001", "40P01", "55P03", "25006", "57014")


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) says the database is unavailable rather than the data wrong."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, OSError | TimeoutError | ConnectionError | asyncio.TimeoutError):
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            return True
        module = type(current).__module__
        name = type(current).__name__
        # asyncpg's client-side "connection is closed" / "pool is closing" / protocol errors
        if module.startswith("asyncpg") and name in (
            "InterfaceError",
            "ConnectionDoesNotExistError",
            "InternalClientError",
        ):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


class BatchCodec(Protocol[B]):
    """How a batch becomes spool bytes and back. ``decode`` raises on bytes it cannot read."""

    def encode(self, batch: B) -> bytes: ...

    def decode(self, data: bytes) -> B: ...


@dataclass
class ForwardStats:
    """Counters (also exported as metrics by whoever owns the forwarder)."""

    direct: int = 0
    spooled: int = 0
    drained: int = 0
    #: deliveries the drain made (several spooled batches merged into one when a ``merge`` is given)
    units: int = 0
    #: failed drain attempts (each followed by a backoff)
    retries: int = 0
    #: spooled batches that failed permanently and went to ``on_permanent``
    permanent: int = 0
    #: spool records that the codec could not decode (skipped, logged)
    undecodable: int = 0
    #: batches too large for the spool: delivered directly only, failure propagated
    too_large: int = 0
    #: failed spool writes (disk full or failing); the batch waits and is retried
    spool_errors: int = 0
    #: seconds spent waiting for spool room (policy ``block``) or a writable disk
    blocked_s: float = 0.0
    #: the last transient error seen, for status pages
    last_error: str | None = None


class Forwarder(Generic[B]):
    """Store-and-forward in front of ``deliver``; see the module docstring.

    ``deliver(batch)`` or ``deliver(batch, token)`` (a keyword-or-positional parameter named ``token``):
    with the latter, spooled batches get ``token=spool.token(seq)`` (a signed 64-bit integer; direct ones
    ``None``) so the writer can record it in the same transaction and skip a batch it already committed.
    """

    def __init__(
        self,
        deliver: Callable[..., Awaitable[object]],
        spool: Spool,
        codec: BatchCodec[B],
        *,
        transient: Callable[[BaseException], bool] = is_transient,
        on_permanent: Callable[[B, BaseException], Awaitable[None]] | None = None,
        retry_min_s: float = 0.2,
        retry_max_s: float = 10.0,
        merge: Callable[[list[B]], B] | None = None,
        direct_tokens: bool = False,
        drain_records: int = 64,
        drain_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self._deliver = deliver
        self._takes_token = _accepts_token(deliver)
        self.spool = spool
        self.codec = codec
        self._transient = transient
        self._on_permanent = on_permanent
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._merge = merge
        self._direct_tokens = direct_tokens
        self.drain_records = drain_records
        self.drain_bytes = drain_bytes
        self._split_until = 0
        self._blocked = 0
        self.stats = ForwardStats()
        self._spooling = not spool.is_empty()
        self._lock = asyncio.Lock()  # serialises spool calls (the spool is not thread-safe)
        self._room = asyncio.Event()
        self._drained = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self._closing = False
        if not self._spooling:
            self._drained.set()

    # ------------------------------------------------------------------------------------- public API
    @property
    def spooling(self) -> bool:
        """True while batches go to the spool (the database failed and the spool is not yet drained)."""
        return self._spooling

    @property
    def blocked(self) -> bool:
        """True while a :meth:`deliver` waits for room in a full spool (policy ``block``)."""
        return self._blocked > 0

    @property
    def pending(self) -> int:
        return self.spool.pending_count()

    async def start(self) -> None:
        """Start draining whatever an earlier run left in the spool."""
        if self._spooling:
            log.info("spool holds %d batches from an earlier run; draining", self.spool.pending_count())
            self._ensure_drain()

    async def deliver(self, batch: B) -> None:
        """Deliver ``batch`` now, or spool it; returns when it is committed or safely on disk."""
        token: int | None = None
        if not self._spooling:
            token = secrets.randbits(63) if self._direct_tokens else None
            try:
                await self._call(batch, token)
            except Exception as exc:
                if not self._transient(exc):
                    raise
                self._note_transient(exc, "direct delivery")
                self._spooling = True
                self._drained.clear()
            else:
                self.stats.direct += 1
                return
        await self._append(batch, token)
        self._ensure_drain()

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """Wait until nothing is spooled; False on timeout."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, drain_timeout: float = 0.0) -> None:
        """Stop the drain (after up to ``drain_timeout`` seconds of trying to empty the spool); close the spool.

        What is still spooled stays on disk for the next start.
        """
        if drain_timeout > 0 and self._spooling:
            await self.wait_drained(drain_timeout)
        self._closing = True
        task, self._drain_task = self._drain_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock:
            await asyncio.to_thread(self.spool.close)

    # -------------------------------------------------------------------------------------- internals
    async def _call(self, batch: B, token: int | None) -> None:
        if self._takes_token:
            await self._deliver(batch, token=token)
        else:
            await self._deliver(batch)

    def _note_transient(self, exc: BaseException, where: str) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if self.stats.last_error != text:
            log.warning("database unavailable during %s (%s); spooling batches", where, text)
        self.stats.last_error = text

    async def _append(self, batch: B, token: int | None = None) -> None:
        # a batch whose direct attempt failed may still have committed (a connection lost during COMMIT):
        # it keeps the token of that attempt, so delivering it again is recognised
        data = _TOKENED + _TOKEN.pack(token) if token is not None else _PLAIN
        data += self.codec.encode(batch)
        loop = asyncio.get_running_loop()
        started: float | None = None
        while True:
            disk_error: OSError | None = None
            async with self._lock:
                try:
                    await asyncio.to_thread(self.spool.append, data)
                except SpoolFull:
                    self._room.clear()
                except RecordTooLarge:
                    self.stats.too_large += 1
                    raise
                except OSError as exc:  # disk full or failing: hold the batch (backpressure), never drop it
                    self.stats.spool_errors += 1
                    disk_error = exc
                else:
                    self.stats.spooled += 1
                    if started is not None:
                        self.stats.blocked_s += loop.time() - started
                    return
            if started is None:
                started = loop.time()
            if disk_error is not None:
                log.error("cannot write the spool (%s); retrying in %.1f s", disk_error, self.retry_max_s)
                await asyncio.sleep(self.retry_max_s)
                continue
            if not self._room.is_set() and self.stats.blocked_s == 0:
                log.warning(
                    "spool full (%d bytes); waiting for the drain to free room", self.spool.size_bytes
                )
            self._ensure_drain()
            self._blocked += 1
            try:
                await self._room.wait()
            finally:
                self._blocked -= 1

    def _ensure_drain(self) -> None:
        if self._closing:
            return
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain_forever(), name="uns-bridge spool drain")

    async def _drain_forever(self) -> None:
        """The drain, restarted after an unexpected error (a full disk on ack, say) instead of dying."""
        while not self._closing:
            try:
                await self._drain()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("spool drain failed; retrying in %.1f s", self.retry_max_s)
                async with self._lock:
                    self.spool.rewind()
                await asyncio.sleep(self.retry_max_s)

    async def _drain(self) -> None:
        delay = self.retry_min_s
        while not self._closing:
            async with self._lock:
                records = await asyncio.to_thread(self._next_unit)
                if not records and self.spool.is_empty():
                    self._spooling = False
                    self._drained.set()
                    self._room.set()
                    log.info("spool drained; delivering directly again")
                    return
            if not records:  # the cursor lost its place (damage skipped): start over from the oldest
                async with self._lock:
                    self.spool.rewind()
                await asyncio.sleep(0.01)
                continue
            first, last = self.spool.inflight or (records[0].seq, records[-1].seq)
            batches = [b for b in (self._decode(r) for r in records) if b is not None]
            if not batches:
                await self._ack(last)
                continue
            unit = batches[0] if len(batches) == 1 or self._merge is None else self._merge(batches)
            own = _unframe(records[0].payload)[0] if len(records) == 1 else None
            try:
                await self._call(unit, own if own is not None else self.spool.token(first, last))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._transient(exc):
                    self.stats.retries += 1
                    self._note_transient(exc, "spool drain")
                    async with self._lock:
                        self.spool.rewind()
                    await self._backoff(delay)
                    delay = min(self.retry_max_s, delay * 2)
                    continue
                if len(records) > 1:  # find the culprit: the same records again, one by one
                    log.warning(
                        "a unit of %d spooled batches failed permanently (%s); retrying them one by one",
                        len(records),
                        exc,
                    )
                    self._split_until = last
                    async with self._lock:
                        self.spool.rewind()
                    continue
                await self._permanent(unit, exc, first)
            else:
                self.stats.drained += len(batches)
                self.stats.units += 1
                delay = self.retry_min_s
            await self._ack(last)

    def _next_unit(self) -> list[Record]:
        """The records of the next delivery unit (worker thread, under the lock).

        A unit an earlier run began (``spool.inflight``) is read again exactly. Otherwise up to
        ``drain_records`` / ``drain_bytes`` records, or single records while a failed unit is retried one
        by one; every unit that a crash could otherwise regroup is persisted with ``spool.begin``.
        """
        if self._split_until > self.spool.acked:
            records = self.spool.read(1, upto_seq=self._split_until)
            if records:
                self.spool.begin(records[0].seq, records[0].seq)
                return records
            self._split_until = 0
        if self.spool.inflight is not None:
            first, last = self.spool.inflight
            return self.spool.read(last - first + 1, upto_seq=last)
        if self._merge is None:
            return self.spool.read(1)
        records = self.spool.read(self.drain_records, self.drain_bytes)
        # a record with a token of its own goes alone (its token must stay the one it was tried with)
        cut = next((i for i, r in enumerate(records) if r.payload[:1] == _TOKENED), None)
        if cut is not None:
            records = records[: max(cut, 1)]
            self.spool.rewind()
            self.spool.read(len(records))  # put the cursor right after the records we keep
        if records:
            # a single record too: after a crash it must come back alone, not merged with records
            # appended since (its token would change and a committed unit would be written again)
            self.spool.begin(records[0].seq, records[-1].seq)
        return records

    async def _permanent(self, batch: B, exc: BaseException, seq: int) -> None:
        self.stats.permanent += 1
        log.error("spooled batch %d failed permanently (%s: %s)", seq, type(exc).__name__, exc)
        if self._on_permanent is not None:
            try:
                await self._on_permanent(batch, exc)
            except Exception:
                log.exception("on_permanent failed for spooled batch %d; it is dropped", seq)

    async def _backoff(self, delay: float) -> None:
        # new batches arriving do not shorten the wait: the database is what we wait for
        await asyncio.sleep(delay * (0.5 + random.random() / 2))

    def _decode(self, record: Record) -> B | None:
        try:
            return self.codec.decode(_unframe(record.payload)[1])
        except Exception as exc:
            self.stats.undecodable += 1
            log.error(
                "spool record %d cannot be decoded (%s: %s); skipped", record.seq, type(exc).__name__, exc
            )
            return None

    async def _ack(self, seq: int) -> None:
        async with self._lock:
            await asyncio.to_thread(self.spool.ack, seq)
        self._room.set()


_PLAIN = b"\x00"
_TOKENED = b"\x01"
_TOKEN = struct.Struct(">q")


def _unframe(data: bytes) -> tuple[int | None, bytes]:
    """(own token or None, codec bytes) of a spool record written by :class:`Forwarder`."""
    if data[:1] == _TOKENED and len(data) >= 1 + _TOKEN.size:
        return _TOKEN.unpack_from(data, 1)[0], data[1 + _TOKEN.size :]
    if data[:1] == _PLAIN:
        return None, data[1:]
    raise ValueError("not a forwarder spool record")


def _accepts_token(deliver: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(deliver).parameters
    except (TypeError, ValueError):
        return False
    return "token" in parameters


def open_spool(config: SpoolConfig) -> Spool:
    """The spool that ``[spool]`` configures (``dir``, ``max_bytes``, ``fsync``, ``when_full``), recovered."""
    segment_bytes = min(config.max_bytes, max(64 * 1024, min(16 * 1024 * 1024, config.max_bytes // 8)))
    return Spool.open(
        config.dir,
        max_bytes=config.max_bytes,
        segment_bytes=segment_bytes,
        fsync=config.fsync,
        when_full=config.when_full,
    )


BATCH_FIELDS = tuple(f.name for f in fields(Batch))


def merge_batches(batches: list[Batch]) -> Batch:
    """The store writer's batches as one (rows concatenated per kind, in order).

    Safe for :meth:`StoreWriter.deliver_to_db`: catalog rows are per-row upserts, current values are
    reduced to the newest per metric in SQL, lifecycle and stale rows tolerate repeats.
    """
    merged = Batch()
    for name in BATCH_FIELDS:
        rows: list[tuple[object, ...]] = getattr(merged, name)
        for batch in batches:
            rows.extend(getattr(batch, name))
    return merged
