"""The example analyst queries of ``schemas/queries.sql`` run against real data and give the right answers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from tests.store_helpers import T0, defined, store
from uns_bridge.host.effects import (
    Anomaly,
    AnomalyKind,
    MetricInfo,
    NodeOffline,
    NodeOnline,
    Sample,
    Samples,
)
from uns_bridge.sparkplug.datatypes import DataType

QUERIES = Path(__file__).resolve().parents[1] / "schemas" / "queries.sql"
MIN = 60_000


def load_queries() -> dict[str, str]:
    text = QUERIES.read_text()
    parts = re.split(r"^-- name: (\w+)\n", text, flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def bind(sql: str, variables: dict[str, str]) -> str:
    """Substitute psql ``:'name'`` variables as quoted literals (what psql -v does)."""

    def literal(match: re.Match[str]) -> str:
        return "'" + variables[match.group(1)].replace("'", "''") + "'"

    return re.sub(r":'(\w+)'", literal, sql)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


async def test_example_queries(database_dsn: str, group_id: str) -> None:
    speed = MetricInfo(group_id, "N1", "D1", "Motor/Speed", DataType.Double, unit="rpm")
    count = MetricInfo(group_id, "N1", "D1", "Count", DataType.UInt64)
    async with store(database_dsn) as writer:
        await writer.handle(
            [
                NodeOnline(group_id, "N1", 0, T0),
                defined(writer, speed, count),
                Samples(tuple(Sample(speed, T0 + i * 10_000, float(i)) for i in range(12))),  # two minutes
                Samples((Sample(count, T0, 2**64 - 1),)),
                NodeOffline(group_id, "N1", T0 + 5 * MIN, "NDEATH", 0),
                NodeOnline(group_id, "N1", 1, T0 + 7 * MIN),
                NodeOffline(group_id, "N1", T0 + 9 * MIN, "connection lost", 1),
                Anomaly(AnomalyKind.SEQ_GAP, "gap", T0 + MIN, "t", group_id, "N1"),
                Anomaly(AnomalyKind.DECODE_ERROR, "bad", T0 + MIN, "t", dead_letter=True, payload=b"xy"),
            ]
        )
        await writer.flush()
    asset = f"unassigned/{group_id}/N1/D1"
    variables = {
        "asset": asset, "metric": "Motor/Speed", "line": f"unassigned/{group_id}", "group": group_id,
        "node": "N1", "since": iso(T0 - MIN), "until": iso(T0 + 10 * MIN),
    }  # fmt: skip
    queries = load_queries()
    assert set(queries) == {
        "latest_value", "current_values", "line_window", "per_minute", "downtime", "seq_gaps", "dead_letters",
    }  # fmt: skip
    conn = await asyncpg.connect(database_dsn)
    try:
        run = {name: await conn.fetch(bind(sql, variables)) for name, sql in queries.items()}
    finally:
        await conn.close()
    latest = run["latest_value"][0]
    assert json.loads(latest["value"]) == 11.0 and latest["unit"] == "rpm" and latest["quality"] == "GOOD"
    current = {r["metric"]: json.loads(r["value"]) for r in run["current_values"]}
    assert current == {"Motor/Speed": 11.0, "Count": 2**64 - 1}
    assert [r["value_num"] for r in run["line_window"] if r["metric"] == "Motor/Speed"] == [
        float(i) for i in range(12)
    ]
    assert [(r["min"], r["max"], r["count"]) for r in run["per_minute"]] == [(0.0, 5.0, 6), (6.0, 11.0, 6)]
    downtime = [(r["downtime"].total_seconds(), r["reason"]) for r in run["downtime"]]
    assert downtime == [(120.0, "NDEATH"), (60.0, "connection lost")]
    assert [(r["event"], r["count"]) for r in run["seq_gaps"] if r["group_id"] == group_id] == [
        ("seq_gap", 1)
    ]
    assert [(r["reason"], r["bytes"]) for r in run["dead_letters"]] == [("bad", 2)]
