"""Versioned, checksummed schema migrations for schema ``uns`` (``schemas/NNNN_name.sql``).

:func:`migrate` takes a session advisory lock (so two instances migrating at once run one after the
other), records every applied file with its SHA-256 in ``uns.schema_migration`` and applies each
pending file in its own transaction. A file whose recorded checksum no longer matches is an error
(migrations are append-only). Running it again changes nothing but the settings.

Storage is chosen once, when the sample table is created, and kept in ``uns.settings``:

* ``timescaledb``: the extension is installed, or available *and* preloaded
  (``shared_preload_libraries``; without that ``CREATE EXTENSION`` fails). The sample table becomes a
  hypertable; compression segmented by metric, compression and retention policies and (with
  ``DatabaseConfig.aggregates``) the continuous aggregate ``uns.sample_1m`` are (re)applied on every run.
* ``native``: range partitions by time (``partition_interval``), ``partitions_ahead`` created ahead,
  older partitions dropped by :func:`maintain` after ``retention_days``; ``uns.sample_1m`` is a plain view.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from uns_bridge.config import DatabaseConfig

log = logging.getLogger(__name__)

#: ``uns_bridge/schemas``: in a checkout a link to the top-level ``schemas/``, in an installed package a copy
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
LOCK_KEY = 0x756E_7362_7269_6467 & 0x7FFF_FFFF_FFFF_FFFF  # "unsbridg"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_INTERVAL_US = {"hour": 3_600_000_000, "day": 86_400_000_000, "week": 7 * 86_400_000_000}


class MigrationError(RuntimeError):
    """A migration could not be applied (named file, reason)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    storage: str = "native"
    timescaledb_available: bool = False
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"schema uns: {len(self.applied)} migration(s) applied, {len(self.already)} already; storage {self.storage}"
        return text + "".join(f"; {n}" for n in self.notes)


@dataclass
class MaintenanceReport:
    created: int = 0
    dropped: list[str] = field(default_factory=list)
    partitions: int = 0
    storage: str = "native"
    #: ``uns.delivered_batch`` tokens older than :data:`DELIVERED_TOKEN_DAYS` deleted
    tokens_pruned: int = 0

    def __str__(self) -> str:
        return (
            f"storage {self.storage}: {self.partitions} partitions, ensured ahead, "
            f"{len(self.dropped)} dropped by retention; {self.tokens_pruned} old delivery tokens pruned"
        )


#: how long the token of a drained spool unit is kept in ``uns.delivered_batch``. A token only matters
#: while its unit may be delivered again: after a crash between commit and the spool's acknowledgement,
#: at the bridge's next start. A bridge down longer than this with such a unit on disk could store that
#: one unit twice; a table that grows with every outage forever is the worse trade.
DELIVERED_TOKEN_DAYS = 30


def load_migrations(directory: Path = SCHEMA_DIR) -> list[Migration]:
    """The migration files in version order; a duplicate version is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration names look like 0001_name.sql (lowercase)")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def timescaledb_status(conn: asyncpg.Connection) -> tuple[bool, str]:
    """``(usable, why)``: installed, or available and preloaded."""
    installed = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    if installed:
        return True, f"timescaledb {installed} installed"
    available = await conn.fetchval(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if not available:
        return False, "the timescaledb extension is not available on this server"
    preload = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    if "timescaledb" not in (preload or ""):
        return False, "timescaledb is available but not in shared_preload_libraries"
    return True, f"timescaledb {available} available"


def _settings(settings: DatabaseConfig, storage: str) -> dict[str, str | None]:
    return {
        "storage": storage,
        "partition_interval": settings.partition_interval,
        "partitions_ahead": str(settings.partitions_ahead),
        "retention_days": None if settings.retention_days is None else str(settings.retention_days),
        "compress_after_days": None
        if settings.compress_after_days is None
        else str(settings.compress_after_days),
        "aggregates": "on" if settings.aggregates else "off",
    }


async def _write_settings(conn: asyncpg.Connection, values: dict[str, str | None]) -> None:
    await conn.executemany(
        "INSERT INTO uns.settings (key, value) VALUES ($1, $2) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        list(values.items()),
    )


async def _choose_storage(conn: asyncpg.Connection, settings: DatabaseConfig, report: MigrationReport) -> str:
    existing = None
    if await conn.fetchval("SELECT to_regclass('uns.settings')") is not None:
        existing = await conn.fetchval("SELECT value FROM uns.settings WHERE key = 'storage'")
    has_samples = await conn.fetchval("SELECT to_regclass('uns.sample')") is not None
    usable, why = await timescaledb_status(conn)
    report.timescaledb_available = usable
    if existing and has_samples:
        if settings.timescaledb == "on" and existing != "timescaledb":
            report.notes.append("timescaledb=on but the samples were created with native partitioning; kept")
        return str(existing)
    if settings.timescaledb == "off" or (settings.timescaledb == "auto" and not usable):
        if settings.timescaledb == "auto":
            report.notes.append(f"native partitioning ({why})")
        return "native"
    if not usable:
        raise MigrationError(f"timescaledb = 'on' but {why}")
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except asyncpg.PostgresError as exc:
        if settings.timescaledb == "on":
            raise MigrationError(f"CREATE EXTENSION timescaledb failed: {exc}") from exc
        report.notes.append(f"native partitioning (CREATE EXTENSION timescaledb failed: {exc})")
        return "native"
    return "timescaledb"


async def migrate(dsn: str, settings: DatabaseConfig, directory: Path = SCHEMA_DIR) -> MigrationReport:
    """Bring schema ``uns`` up to date; see the module docstring. Safe to run concurrently."""
    migrations = load_migrations(directory)
    report = MigrationReport()
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            await _migrate_locked(conn, migrations, settings, report)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()
    log.info("%s", report)
    return report


async def _migrate_locked(
    conn: asyncpg.Connection, migrations: list[Migration], settings: DatabaseConfig, report: MigrationReport
) -> None:
    await conn.execute(
        "CREATE SCHEMA IF NOT EXISTS uns;"
        "CREATE TABLE IF NOT EXISTS uns.schema_migration ("
        " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(), duration_ms double precision)"
    )
    done = {
        r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM uns.schema_migration")
    }
    storage = await _choose_storage(conn, settings, report)
    report.storage = storage
    await conn.execute("SELECT set_config('uns.storage', $1, false)", storage)
    values = _settings(settings, storage)
    for migration in migrations:
        row = done.get(migration.version)
        if row is not None:
            if row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"{migration.filename}: changed after it was applied (checksum {row['checksum'][:12]} "
                    f"recorded, file has {migration.checksum[:12]}); add a new migration instead"
                )
            report.already.append(migration.filename)
            continue
        started = time.perf_counter()
        try:
            async with conn.transaction():
                if await conn.fetchval("SELECT to_regclass('uns.settings')") is not None:
                    await _write_settings(conn, values)
                await conn.execute(migration.sql)
                if migration.version == 1:
                    await _write_settings(conn, values)
                await conn.execute(
                    "INSERT INTO uns.schema_migration (version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                    (time.perf_counter() - started) * 1000,
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"{migration.filename}: {exc}") from exc
        report.applied.append(migration.filename)
    if await conn.fetchval("SELECT to_regclass('uns.settings')") is not None:
        await _write_settings(conn, values)
    if await conn.fetchval("SELECT to_regclass('uns.sample')") is None:
        return
    if storage == "timescaledb":
        await _timescale_policies(conn, settings, report)
    else:
        await _native_aggregate_view(conn, settings)
        await _maintain(conn, int(time.time() * 1000), MaintenanceReport())


async def _native_aggregate_view(conn: asyncpg.Connection, settings: DatabaseConfig) -> None:
    if settings.aggregates:
        await conn.execute(
            "CREATE OR REPLACE VIEW uns.sample_1m AS "
            "SELECT date_trunc('minute', time) AS bucket, metric_id, "
            " min(uns.value_num(kind, v_int, v_float, v_bool)) AS min, "
            " max(uns.value_num(kind, v_int, v_float, v_bool)) AS max, "
            " avg(uns.value_num(kind, v_int, v_float, v_bool)) AS avg, count(*) AS count "
            "FROM uns.sample WHERE kind IN (1, 2, 3, 4) GROUP BY 1, 2"
        )
    else:
        await conn.execute("DROP VIEW IF EXISTS uns.sample_1m")


async def _timescale_policies(
    conn: asyncpg.Connection, settings: DatabaseConfig, report: MigrationReport
) -> None:
    """(Re)apply compression, retention and the continuous aggregate (outside a transaction)."""
    configured = await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.compression_settings"
        " WHERE hypertable_schema = 'uns' AND hypertable_name = 'sample'"
    )
    if not configured:  # once: it cannot change while chunks are compressed
        await conn.execute(
            "ALTER TABLE uns.sample SET (timescaledb.compress, timescaledb.compress_segmentby = 'metric_id', "
            "timescaledb.compress_orderby = 'time DESC, vhash')"
        )
    await conn.execute("SELECT remove_compression_policy('uns.sample', if_exists => true)")
    if settings.compress_after_days is not None:
        await conn.execute(
            "SELECT add_compression_policy('uns.sample', make_interval(days => $1))",
            settings.compress_after_days,
        )
    await conn.execute("SELECT remove_retention_policy('uns.sample', if_exists => true)")
    if settings.retention_days is not None:
        await conn.execute(
            "SELECT add_retention_policy('uns.sample', make_interval(days => $1))", settings.retention_days
        )
    if settings.aggregates:
        exists = await conn.fetchval("SELECT to_regclass('uns.sample_1m')")
        if exists is None:
            await conn.execute(
                "CREATE MATERIALIZED VIEW uns.sample_1m WITH (timescaledb.continuous) AS "
                "SELECT time_bucket('1 minute', time) AS bucket, metric_id, "
                " min(uns.value_num(kind, v_int, v_float, v_bool)) AS min, "
                " max(uns.value_num(kind, v_int, v_float, v_bool)) AS max, "
                " avg(uns.value_num(kind, v_int, v_float, v_bool)) AS avg, count(*) AS count "
                "FROM uns.sample WHERE kind IN (1, 2, 3, 4) GROUP BY 1, 2 WITH NO DATA"
            )
            await conn.execute(
                "SELECT add_continuous_aggregate_policy('uns.sample_1m', start_offset => INTERVAL '1 day', "
                "end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute', if_not_exists => true)"
            )
    else:
        await conn.execute("DROP MATERIALIZED VIEW IF EXISTS uns.sample_1m")
    report.notes.append("timescaledb policies applied")


def ahead_stamps(now_ms: int, interval: str, ahead: int) -> list[int]:
    """Millisecond stamps, one in each of the current and the next ``ahead`` partitions."""
    if interval == "month":
        return [now_ms + i * 28 * 86_400_000 for i in range(0, int(ahead * 31 / 28) + 2)]
    step = _INTERVAL_US[interval] // 1000
    return [now_ms + i * step for i in range(ahead + 1)]


async def _maintain(conn: asyncpg.Connection, now_ms: int, report: MaintenanceReport) -> MaintenanceReport:
    pruned = await conn.execute(
        "DELETE FROM uns.delivered_batch WHERE delivered_at < "
        "timestamptz 'epoch' + make_interval(secs => $1::bigint / 1e3)",
        now_ms - DELIVERED_TOKEN_DAYS * 86_400_000,
    )
    report.tokens_pruned = int(pruned.split()[-1])
    storage = await conn.fetchval("SELECT value FROM uns.settings WHERE key = 'storage'")
    report.storage = str(storage)
    if storage != "native":
        report.partitions = int(
            await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_schema = 'uns'"
            )
            or 0
        )
        return report
    interval = await conn.fetchval("SELECT value FROM uns.settings WHERE key = 'partition_interval'")
    ahead = int(await conn.fetchval("SELECT value FROM uns.settings WHERE key = 'partitions_ahead'") or 0)
    before = int(await conn.fetchval("SELECT count(*) FROM uns.sample_partition"))
    stamps = [_us_2000(ms) for ms in ahead_stamps(now_ms, str(interval), ahead)]
    async with conn.transaction():
        await conn.execute(
            "SELECT count(*) FROM uns.ensure_partitions("
            "(SELECT array_agg(timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => x / 1e6)) "
            "FROM unnest($1::bigint[]) x))",
            stamps,
        )
        report.dropped = [
            r[0]
            for r in await conn.fetch(
                "SELECT uns.apply_retention(timestamptz 'epoch' + make_interval(secs => $1::bigint / 1e3))",
                now_ms,
            )
        ]
    after = int(await conn.fetchval("SELECT count(*) FROM uns.sample_partition"))
    report.created = after - before + len(report.dropped)
    report.partitions = after
    return report


def _us_2000(ms: int) -> int:
    return (ms - 946_684_800_000) * 1000


async def maintain(dsn: str, now_ms: int | None = None) -> MaintenanceReport:
    """Create partitions ahead and drop those past retention (native); report chunks (TimescaleDB)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass('uns.sample')") is None:
            raise MigrationError("schema uns is not migrated yet: run `uns-bridge db migrate` first")
        return await _maintain(
            conn, int(time.time() * 1000) if now_ms is None else now_ms, MaintenanceReport()
        )
    finally:
        await conn.close()


async def status(dsn: str, directory: Path = SCHEMA_DIR) -> dict[str, object]:
    """Applied and pending migrations, storage, settings, partition count."""
    migrations = load_migrations(directory)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        applied: dict[int, str] = {}
        if await conn.fetchval("SELECT to_regclass('uns.schema_migration')") is not None:
            applied = {
                r[0]: r[1] for r in await conn.fetch("SELECT version, checksum FROM uns.schema_migration")
            }
        settings: dict[str, str | None] = {}
        if await conn.fetchval("SELECT to_regclass('uns.settings')") is not None:
            settings = {
                r[0]: r[1] for r in await conn.fetch("SELECT key, value FROM uns.settings ORDER BY key")
            }
        partitions = None
        if await conn.fetchval("SELECT to_regclass('uns.sample_partition')") is not None:
            partitions = await conn.fetchval("SELECT count(*) FROM uns.sample_partition")
        usable, why = await timescaledb_status(conn)
    finally:
        await conn.close()
    return {
        "applied": [m.filename for m in migrations if m.version in applied],
        "pending": [m.filename for m in migrations if m.version not in applied],
        "changed": [
            m.filename for m in migrations if m.version in applied and applied[m.version] != m.checksum
        ],
        "settings": settings,
        "partitions": partitions,
        "timescaledb": why,
        "timescaledb_usable": usable,
    }
