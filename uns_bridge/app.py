"""The whole bridge on one screen: configuration -> services -> pipeline -> MQTT session, and shutdown.

    config ──> embedded broker / PostgreSQL when none is configured (uns_bridge.defaults)
           ──> migrate(database)                      schema `uns`, idempotent
           ──> StoreWriter(dsn, placer)                history, catalog, lifecycle, dead letters
               + Forwarder(spool)                      batches on disk while the database is away
           ──> Placer(namespace, prefix)               ISA-95 path and UNS topic per metric
           ──> Host(host settings)                     every Sparkplug rule (pure)
           ──> Pipeline(host, placer, writer, UnsSink, metrics)
           ──> HostSession(mqtt, pipeline)             Will, STATE, subscriptions, reconnects
           +   UnsPublisher (its own MQTT connection), MetricsServer (/metrics, /health)

SIGINT / SIGTERM: stop reading MQTT, process what was received, flush the database and the UNS,
publish the STATE death (acknowledged), disconnect, exit 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from uns_bridge.config import Config
from uns_bridge.defaults import embedded_defaults
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.metrics import BridgeMetrics, MetricsServer
from uns_bridge.mqtt import HostSession
from uns_bridge.namespace import Namespace
from uns_bridge.pipeline import Pipeline
from uns_bridge.placement import Placer
from uns_bridge.store.forward import Forwarder, open_spool
from uns_bridge.store.migrations import migrate
from uns_bridge.store.writer import StoreWriter
from uns_bridge.uns.publisher import UnsPublisher
from uns_bridge.uns.sink import UnsSink
from uns_bridge.workers import leftover_spools, worker_shard

log = logging.getLogger("uns_bridge")


class DatabaseUnavailable(OSError):
    """The configured PostgreSQL cannot be reached or used at start; the message says what to do."""


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


#: called with the ready configuration once the bridge is connected (``run --demo`` starts its fleet)
Extra = Callable[[Config, asyncio.Event], Coroutine[Any, Any, None]]

STATUS_EVERY_S = 10.0


def host_config(config: Config) -> HostConfig:
    """The host core's settings; a worker process (``UNS_WORKER``) gets its shard (rule W1)."""
    return HostConfig.from_settings(config.host, config.mqtt.groups, worker_shard(os.environ))


async def run_bridge(config: Config, *, extra: Extra | None = None, stop: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or ``stop``); returns the exit code."""
    stop = stop or asyncio.Event()
    restore = _install_signals(stop)
    try:
        async with embedded_defaults(config) as ready:
            with _collector_tuned():
                return await _serve(ready, stop, extra)
    finally:
        restore()


#: cyclic-GC thresholds while the bridge runs. CPython's default (a young collection every 700 net
#: allocations) ran ~100 collections a second at 150,000 metrics/s, each walking the queued rows and
#: samples, and full collections of up to 47 ms: 1.8 s of CPU in a 25 s run (about a tenth of the bridge).
#: With these the same run collected twice (41 ms). The hot path makes no reference cycles, so garbage
#: waits little longer for its collection; reference counting frees the rest at once.
GC_THRESHOLDS = (50_000, 20, 10)


@contextlib.contextmanager
def _collector_tuned() -> Iterator[None]:
    before = gc.get_threshold()
    gc.freeze()  # what startup built (modules, configuration) is never garbage: out of every collection
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


async def _serve(config: Config, stop: asyncio.Event, extra: Extra | None) -> int:
    dsn = config.database.url
    assert dsn is not None and config.mqtt.url is not None
    try:
        report = await migrate(dsn, config.database)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(
            f"cannot use the database at {redact_dsn(dsn)}: {type(exc).__name__}: {exc}. Start PostgreSQL or "
            "point UNS_DATABASE_URL / [database] url at a reachable one (leave both unset for the embedded one)"
        ) from None
    log.info("database ready: %s", report)
    placer = Placer(Namespace.from_config(config.namespace), prefix=config.uns.prefix)
    writer = StoreWriter(dsn, config.database, placer)
    forwarder = _spool(config, writer)
    leftovers = leftover_forwarders(config, writer, worker_shard(os.environ))
    await writer.start()
    if forwarder is not None:
        await forwarder.start()
    for leftover in leftovers:
        await leftover.start()
    metrics = BridgeMetrics()
    sink: UnsSink | None = None
    if config.uns.enabled:
        publisher = UnsPublisher(config.mqtt, config.uns, client_id=_uns_client_id(config))
        await publisher.start()
        sink = UnsSink(placer, publisher, config.uns)
        await sink.start()
    pipeline = Pipeline(Host(host_config(config)), placer, writer, sink, metrics)
    _register_metrics(metrics, writer, sink, forwarder)
    session = HostSession(config.mqtt, pipeline, host_id=config.host.id)
    http = MetricsServer(metrics, config.http.host, config.http.port) if config.http.enabled else None
    tasks: list[asyncio.Task[Any]] = []
    try:
        if http is not None:
            await _start_http(http, config)
        session_task = asyncio.create_task(session.run(), name="sparkplug-session")
        tasks.append(session_task)
        tasks.append(asyncio.create_task(_status(metrics, session, writer, sink), name="status"))
        await _first_connection(session, config)
        if extra is not None:
            tasks.append(asyncio.create_task(extra(config, stop), name="extra"))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait((waiter, session_task), return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if session_task.done() and not stop.is_set():
            session_task.result()  # a setup error: raise it
        log.info("shutting down: stop reading, flush the database, publish STATE offline")
        for task in tasks[2:]:
            task.cancel()
        await session.stop()
        await pipeline.close()
        log.info("stopped cleanly after %d messages, %d values", metrics.messages, metrics.samples)
        return 0
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await pipeline.close()
        for spooled in [*leftovers, *([forwarder] if forwarder is not None else [])]:
            await spooled.close(drain_timeout=5.0)
            if spooled.pending:
                log.warning(
                    "%d batches stay in the spool %s for the next start",
                    spooled.pending,
                    spooled.spool.directory,
                )
        if http is not None:
            await http.stop()


def _spool(config: Config, writer: StoreWriter) -> Forwarder[Any] | None:
    """Store-and-forward: batches go to the disk spool while the database is away."""
    if not config.spool.enabled:
        return None
    forwarder: Forwarder[Any] = Forwarder(writer.deliver_to_db, open_spool(config.spool), writer.codec)
    writer.deliver = forwarder.deliver
    return forwarder


def leftover_forwarders(
    config: Config, writer: StoreWriter, shard: tuple[int, int] | None
) -> list[Forwarder[Any]]:
    """Drain-only forwarders for spools that a run with another ``host.workers`` left (see
    :func:`uns_bridge.workers.leftover_spools`); they take no new batches."""
    if not config.spool.enabled:
        return []
    out: list[Forwarder[Any]] = []
    for directory in leftover_spools(config.spool.dir, shard):
        spool = open_spool(dataclasses.replace(config.spool, dir=directory))
        if spool.is_empty():
            spool.close()
            continue
        log.warning(
            "draining %d batches that a run with another host.workers left in the spool %s",
            spool.pending_count(),
            directory,
        )
        out.append(Forwarder(writer.deliver_to_db, spool, writer.codec))
    return out


def _uns_client_id(config: Config) -> str | None:
    return f"{config.mqtt.client_id}-uns" if config.mqtt.client_id else None


async def _start_http(http: MetricsServer, config: Config) -> None:
    try:
        await http.start()
    except OSError as exc:
        if config.http.port != 9780:
            raise
        log.warning("%s; serving metrics on a free port instead", exc)
        http.port = 0
        await http.start()


async def _first_connection(session: HostSession, config: Config) -> None:
    await session.first_attempt_done.wait()
    if not session.is_connected:
        log.warning("not connected yet (%s); retrying in the background", session.last_error)
    else:
        groups = ", ".join(config.mqtt.groups) if config.mqtt.groups else "all groups"
        log.info(
            "serving as Sparkplug host %r (%s) on %s, %s; UNS under %r",
            config.host.id,
            config.host.role,
            session.address,
            groups,
            config.uns.prefix,
        )


def _register_metrics(
    metrics: BridgeMetrics, writer: StoreWriter, sink: UnsSink | None, forwarder: Forwarder[Any] | None
) -> None:
    stats = writer.stats
    for name in (
        "samples_written",
        "rows_written",
        "duplicates",
        "batches",
        "dead_letters",
        "errors",
        "retries",
    ):
        metrics.counter(f"store_{name}", f"store writer: {name.replace('_', ' ')}", _reader(stats, name))
    metrics.gauge("store_queue_depth", "rows waiting for the database", _reader(stats, "queue_depth"))
    metrics.gauge("store_healthy", "1 while the database accepts batches", lambda: float(writer.healthy))
    metrics.check("database", lambda: writer.healthy)
    if forwarder is not None:
        metrics.gauge("spool_pending", "batches waiting in the disk spool", lambda: float(forwarder.pending))
        metrics.gauge("spooling", "1 while batches go to the disk spool", lambda: float(forwarder.spooling))
    if sink is not None:
        metrics.gauge("uns_pending", "UNS topics waiting for the next publish window", lambda: sink.pending)
        metrics.counter("uns_published", "UNS messages acknowledged by the broker", lambda: sink.published)
        metrics.counter(
            "uns_coalesced", "UNS values replaced by a newer one in the same window", lambda: sink.coalesced
        )
        metrics.counter(
            "uns_dropped", "UNS values dropped (pending set full, UNS broker away)", lambda: sink.dropped
        )
        metrics.gauge(
            "uns_connected", "1 while the UNS connection is up", lambda: float(sink.publisher.is_connected)
        )


def _reader(obj: object, name: str) -> Callable[[], float]:
    return lambda: float(getattr(obj, name))


async def _status(
    metrics: BridgeMetrics, session: HostSession, writer: StoreWriter, sink: UnsSink | None
) -> None:
    """One INFO line every few seconds while traffic flows."""
    last_messages = metrics.messages
    while True:
        await asyncio.sleep(STATUS_EVERY_S)
        messages = metrics.messages
        if messages == last_messages:
            continue
        rate = (messages - last_messages) / STATUS_EVERY_S
        last_messages = messages
        log.info(
            "%.0f msg/s; %d messages, %d values, %d nodes born, %d seq gaps, %d rebirths requested, "
            "%d dead letters; queue %d; UNS published %s",
            rate,
            messages,
            metrics.samples,
            metrics.node_births,
            metrics.seq_gaps,
            metrics.rebirth_requests,
            metrics.dead_letters,
            session.queue_depth,
            sink.published if sink is not None else "off",
        )


def _install_signals(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", sig.name)
            raise SystemExit(130)
        log.info("%s received", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)

    def restore() -> None:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    return restore
