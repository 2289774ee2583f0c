"""``uns-bridge db migrate | status | maintain``: the PostgreSQL schema ``uns``.

* ``migrate``: apply the pending migrations of ``schemas/`` (idempotent, safe from two instances).
* ``status``: applied / pending / changed migrations, storage (TimescaleDB or native), settings.
* ``maintain``: create native partitions ahead and drop those past ``retention_days`` (run it daily,
  e.g. from cron; the writer also creates partitions it needs on demand).

Exit codes: 0 ok, 1 the database refused (error printed), 2 usage or configuration error.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable
from typing import Annotated, TypeVar

import typer

from uns_bridge.commands.config import ConfigOption, load_or_exit, mask_url

T = TypeVar("T")
DatabaseOption = Annotated[
    str | None,
    typer.Option("--database", "-d", help="PostgreSQL URL (default: database.url / UNS_DATABASE_URL)."),
]

db_app = typer.Typer(help="The PostgreSQL schema: migrate, status, maintain.", no_args_is_help=True)


def _dsn(config_path: object, database: str | None) -> tuple[str, object]:
    config, _ = load_or_exit(config_path)  # type: ignore[arg-type]
    dsn = database or config.database.url or os.environ.get("UNS_DATABASE_URL")
    if not dsn:
        typer.echo(
            "uns-bridge: no database URL: pass --database or set database.url / UNS_DATABASE_URL", err=True
        )
        raise typer.Exit(2)
    return dsn, config


def _run(coro: Awaitable[T], dsn: str) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (OSError, ConnectionError) as exc:
        typer.echo(f"uns-bridge: cannot reach the database at {mask_url(dsn)}: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # asyncpg errors, MigrationError: one clear line
        typer.echo(f"uns-bridge: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


@db_app.command("migrate")
def migrate_command(config: ConfigOption = None, database: DatabaseOption = None) -> None:
    """Apply the pending migrations (idempotent)."""
    from uns_bridge.store.migrations import migrate

    dsn, cfg = _dsn(config, database)
    report = _run(migrate(dsn, cfg.database), dsn)  # type: ignore[attr-defined]
    typer.echo(str(report))


@db_app.command("status")
def status_command(
    config: ConfigOption = None,
    database: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Applied and pending migrations, storage and settings; exit 1 when migrations are pending or changed."""
    from uns_bridge.store.migrations import status

    dsn, _ = _dsn(config, database)
    info = _run(status(dsn), dsn)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
    else:
        typer.echo(f"applied:  {', '.join(info['applied']) or '-'}")  # type: ignore[arg-type]
        typer.echo(f"pending:  {', '.join(info['pending']) or '-'}")  # type: ignore[arg-type]
        if info["changed"]:
            typer.echo(f"CHANGED after being applied: {', '.join(info['changed'])}")  # type: ignore[arg-type]
        settings = info["settings"] or {}
        typer.echo(f"storage:  {settings.get('storage', '-')} ({info['timescaledb']})")  # type: ignore[attr-defined]
        for key, value in settings.items():  # type: ignore[attr-defined]
            if key != "storage":
                typer.echo(f"  {key} = {value}")
        if info["partitions"] is not None:
            typer.echo(f"native partitions: {info['partitions']}")
    if info["pending"] or info["changed"]:
        raise typer.Exit(1)


@db_app.command("maintain")
def maintain_command(config: ConfigOption = None, database: DatabaseOption = None) -> None:
    """Create partitions ahead and apply retention (native partitioning)."""
    from uns_bridge.store.migrations import maintain

    dsn, _ = _dsn(config, database)
    report = _run(maintain(dsn), dsn)
    typer.echo(str(report))
    for name in report.dropped:
        typer.echo(f"  dropped {name}")


def register(app: typer.Typer) -> None:
    """Add ``db`` to the root app."""
    app.add_typer(db_app, name="db")
