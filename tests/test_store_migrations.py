"""Migrations against the real PostgreSQL: from empty, re-run, two at once, checksums, the db command."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from tests.store_helpers import settings
from uns_bridge.cli import app
from uns_bridge.store.migrations import SCHEMA_DIR, MigrationError, load_migrations, migrate, status

EXPECTED_RELATIONS = {
    "asset", "edge_node", "device", "metric", "metric_current", "lifecycle", "dead_letter", "sample",
    "samples", "current", "metrics", "settings", "schema_migration", "sample_partition", "sample_1m",
}  # fmt: skip


async def _relations(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'uns' AND c.relkind IN ('r', 'p', 'v', 'm') AND c.relispartition = false"
        )
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def test_migrate_from_empty_then_again(database_dsn: str) -> None:
    files = [m.filename for m in load_migrations()]
    first = await migrate(database_dsn, settings())
    assert first.applied == files and first.already == []
    assert first.storage == "native"
    assert await _relations(database_dsn) >= EXPECTED_RELATIONS
    second = await migrate(database_dsn, settings())
    assert second.applied == [] and second.already == files
    info = await status(database_dsn)
    assert info["pending"] == [] and info["changed"] == [] and info["applied"] == files


async def test_two_migrations_at_once(database_dsn: str) -> None:
    reports = await asyncio.gather(*(migrate(database_dsn, settings()) for _ in range(3)))
    applied = [r.applied for r in reports]
    assert sum(1 for a in applied if a) == 1, applied  # exactly one instance did the work
    conn = await asyncpg.connect(database_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM uns.schema_migration") == len(load_migrations())
    finally:
        await conn.close()


async def test_changed_migration_is_refused(database_dsn: str, tmp_path: Path) -> None:
    directory = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, directory, ignore=shutil.ignore_patterns("*.json", "queries.sql"))
    await migrate(database_dsn, settings(), directory)
    path = directory / "0003_views.sql"
    path.write_text(path.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match=r"0003_views\.sql: changed after it was applied"):
        await migrate(database_dsn, settings(), directory)
    # a new file is applied on top
    (directory / "0099_extra.sql").write_text("CREATE TABLE uns.extra (x int);")
    path.write_text(path.read_text().removesuffix("\n-- edited\n"))
    report = await migrate(database_dsn, settings(), directory)
    assert report.applied == ["0099_extra.sql"]


async def test_timescaledb_on_without_the_extension_is_a_clear_error(database_dsn: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        available = await conn.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
    finally:
        await conn.close()
    if available:
        pytest.skip("timescaledb is available on this server")
    with pytest.raises(
        MigrationError, match="timescaledb = 'on' but the timescaledb extension is not available"
    ):
        await migrate(database_dsn, settings(timescaledb="on"))


def test_db_commands(database_dsn: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["db", "status", "--database", database_dsn])
    assert result.exit_code == 1 and "pending:  0001_catalog.sql" in result.output
    result = runner.invoke(app, ["db", "migrate", "--database", database_dsn])
    assert result.exit_code == 0, result.output
    assert f"{len(load_migrations())} migration(s) applied, 0 already" in result.output
    result = runner.invoke(app, ["db", "status", "--database", database_dsn])
    assert result.exit_code == 0 and "storage:  native" in result.output
    result = runner.invoke(app, ["db", "maintain", "--database", database_dsn])
    assert result.exit_code == 0 and "partitions" in result.output
    result = runner.invoke(app, ["db", "migrate", "--database", "postgresql://postgres@127.0.0.1:1/none"])
    assert result.exit_code == 1 and "cannot reach the database" in result.output


def test_the_migrations_ship_inside_the_package() -> None:
    """An installed package (a wheel, not this checkout) must find its migrations: they are read from
    ``uns_bridge/schemas``, which in the checkout links to the top-level ``schemas/``."""
    import uns_bridge
    from uns_bridge.store import migrations

    package = Path(uns_bridge.__file__).resolve().parent
    assert package / "schemas" == migrations.SCHEMA_DIR
    top = Path(__file__).resolve().parent.parent / "schemas"
    shipped = sorted(p.name for p in migrations.SCHEMA_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    assert shipped == sorted(p.name for p in top.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    assert [m.filename for m in migrations.load_migrations()] == shipped
