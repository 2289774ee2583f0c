"""Helpers for fault tests: a minimal real PostgreSQL batch sink and sent/stored/duplicated/lost counting."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg


class JsonIds:
    """A batch codec for batches that are lists of integer sample ids."""

    def encode(self, batch: list[int]) -> bytes:
        return json.dumps(batch).encode()

    def decode(self, data: bytes) -> list[int]:
        value = json.loads(data)
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise ValueError("not a list of ids")
        return value


class TableSink:
    """Writes batches of ids with COPY into ``fault_sample(id, pos)`` in one transaction per batch.

    ``pos`` (a bigserial) records the order rows arrived in. With ``idempotent`` a spool token is stored
    in ``fault_applied`` in the same transaction and a batch whose token is there is skipped: the
    pattern that makes a drain after a crash exactly-once.
    """

    def __init__(self, dsn: str, *, idempotent: bool = False) -> None:
        self.dsn = dsn
        self.idempotent = idempotent
        self._conn: asyncpg.Connection | None = None
        self.commits = 0

    async def create(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS fault_sample (id bigint NOT NULL, pos bigserial);"
                "CREATE TABLE IF NOT EXISTS fault_applied (token bigint PRIMARY KEY)"
            )
        finally:
            await conn.close()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=3)
        return self._conn

    async def deliver(self, batch: list[int], token: int | None = None) -> None:
        conn = await self._connection()
        try:
            async with conn.transaction():
                if self.idempotent and token is not None:
                    done = await conn.fetchval(
                        "INSERT INTO fault_applied VALUES ($1) ON CONFLICT DO NOTHING RETURNING token", token
                    )
                    if done is None:
                        return
                await conn.copy_records_to_table(
                    "fault_sample", records=[(i,) for i in batch], columns=["id"]
                )
        except BaseException:
            if not conn.is_closed():
                conn.terminate()
            self._conn = None
            raise
        self.commits += 1

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None


@dataclass(frozen=True)
class Counts:
    sent: int
    stored: int
    duplicated: int
    lost: int
    out_of_order: int

    def line(self, label: str) -> str:
        return (
            f"{label}: sent={self.sent} stored={self.stored} duplicated={self.duplicated} "
            f"lost={self.lost} out_of_order={self.out_of_order}"
        )


async def count(dsn: str, sent: Sequence[int]) -> Counts:
    """Compare the ids in ``fault_sample`` with ``sent``."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id FROM fault_sample ORDER BY pos")
    finally:
        await conn.close()
    ids = [r["id"] for r in rows]
    distinct = set(ids)
    expected = set(sent)
    disorder = sum(1 for a, b in itertools.pairwise(ids) if b < a)
    return Counts(
        sent=len(sent),
        stored=len(distinct & expected),
        duplicated=len(ids) - len(distinct),
        lost=len(expected - distinct),
        out_of_order=disorder,
    )
