"""Binary COPY of the store's rows: the native encoder when it is built, asyncpg's otherwise.

:mod:`uns_bridge.store._pgcopy` (built from ``_pgcopy.c`` when the package is installed with a C
compiler) writes a whole batch's COPY stream in one call; asyncpg's ``copy_records_to_table`` encodes
row by row through its codecs, which was a fifth of the bridge's CPU at 150,000 samples/s. The native
encoder answers only for rows whose every cell it knows (see the column kinds below) and returns None
otherwise, so a batch it declines goes to asyncpg, which stores it or says what is wrong with it.
``UNS_BRIDGE_PGCOPY=asyncpg`` turns the native encoder off (escape hatch and A/B benchmarks).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from uns_bridge.native import extension

#: column kinds, one letter per column: ``T`` timestamptz (int µs since 2000), ``q`` bigint,
#: ``h`` smallint, ``?`` boolean, ``d`` double, ``t`` text, ``y`` bytea, ``j`` jsonb (str), ``D`` double[]
Kinds = bytes

_encode: Callable[[list[tuple[Any, ...]], bytes, int], bytes | None] | None = None
_int_range: Callable[[list[tuple[Any, ...]], int], tuple[int, int] | None] | None = None
_pgcopy = extension("uns_bridge.store._pgcopy", "UNS_BRIDGE_PGCOPY", "asyncpg")
if _pgcopy is not None:
    _encode = _pgcopy.encode
    _int_range = _pgcopy.int_range

#: which encoder writes COPY streams in this process (``uns-bridge --version`` says it)
ENCODER = "native" if _encode is not None else "asyncpg"


def encode(rows: list[tuple[Any, ...]], kinds: Kinds, order_by: int | None = None) -> bytes | None:
    """The binary COPY stream of ``rows`` (stably sorted by the int column ``order_by`` when given), or
    None where the native encoder is absent or declines."""
    return None if _encode is None else _encode(rows, kinds, -1 if order_by is None else order_by)


def int_range(rows: list[tuple[Any, ...]], column: int) -> tuple[int, int] | None:
    """(lowest, highest) of an int column of ``rows``; None for no rows or a cell that is not such an int."""
    if _int_range is not None:
        return _int_range(rows, column)
    cells = [row[column] for row in rows]
    if not cells or not all(type(c) is int and -(1 << 63) <= c < 1 << 63 for c in cells):
        return None
    return min(cells), max(cells)


async def copy_rows(
    conn: asyncpg.Connection,
    table: str,
    rows: list[tuple[Any, ...]],
    columns: Sequence[str],
    kinds: Kinds,
    *,
    schema_name: str | None = None,
    order_by: int | None = None,
) -> None:
    """``COPY table (columns) FROM STDIN (FORMAT binary)`` of ``rows``, encoded natively when possible.

    With ``order_by`` the rows are copied stably sorted by that (int) column; without the native
    encoder ``rows`` itself is sorted for asyncpg."""
    data = encode(rows, kinds, order_by)
    if data is None:
        if order_by is not None:
            rows.sort(key=operator.itemgetter(order_by))
        await conn.copy_records_to_table(table, schema_name=schema_name, records=rows, columns=columns)
    else:
        # a memoryview: asyncpg would take plain bytes for a file name (os.fspath accepts bytes)
        await conn.copy_to_table(
            table, schema_name=schema_name, source=memoryview(data), columns=columns, format="binary"
        )
