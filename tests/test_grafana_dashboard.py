"""The example Grafana dashboard's SQL runs against a migrated database (Grafana macros substituted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import asyncpg

from uns_bridge.config import DatabaseConfig
from uns_bridge.store.migrations import migrate

DASHBOARD = Path(__file__).resolve().parents[1] / "examples" / "grafana" / "uns-bridge-dashboard.json"


def _grafana_to_sql(text: str) -> str:
    text = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 > now() - interval '1 hour'", text)
    text = text.replace("($metric)", "('Temperature')")
    return text.replace("$asset", "Plant/Line1")


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    sql = [target["rawSql"] for panel in dashboard["panels"] for target in panel["targets"]]
    sql += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return sql


async def test_every_dashboard_query_runs(database_dsn: str) -> None:
    await migrate(database_dsn, DatabaseConfig())
    queries = _queries()
    assert len(queries) >= 5
    conn = await asyncpg.connect(database_dsn)
    try:
        for query in queries:
            await conn.fetch(_grafana_to_sql(query))
    finally:
        await conn.close()
