"""The native binary COPY encoder: what it writes, the server stores exactly as asyncpg's encoder does.

Each check copies the same rows twice into a real PostgreSQL table of the sample shape, once with
asyncpg's ``copy_records_to_table`` and once with the native stream, and compares the stored rows as
text (so NaN, -0.0 and every byte count). Rows come from the writer's own value encoding of every kind
of Sparkplug value, and from raw cells at the edges of each column type.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uns_bridge.store import pgcopy
from uns_bridge.store import values as V
from uns_bridge.store.batch import SAMPLE_COLUMNS, SAMPLE_KINDS

native = pytest.mark.skipif(pgcopy.ENCODER != "native", reason="the native COPY encoder is not built here")

I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
I16 = st.integers(min_value=-(2**15), max_value=2**15 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, math.nan, 5e-324])
TEXTS = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)
#: microseconds since 2000 inside PostgreSQL's timestamp range (4713 BC .. 294276 AD)
TIMES = st.integers(min_value=-211_813_488_000_000_000, max_value=9_223_371_331_200_000_000 - 1)

#: values as the host hands them to the writer (every column the writer's encoding fills)
SPARKPLUG_VALUES = (
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | FLOATS
    | st.booleans()
    | TEXTS
    | st.binary(max_size=16)
    | st.none()
    | st.lists(FLOATS, max_size=6)
    | st.lists(TEXTS, max_size=3)
)

TABLE = (
    "CREATE TEMP TABLE copied_{n} (time timestamptz, metric_id bigint, vhash bigint, kind smallint,"
    " quality smallint, is_historical boolean, v_int bigint, v_float double precision, v_bool boolean,"
    " v_text text, v_bytes bytea, v_json jsonb, v_floats double precision[])"
)


def writer_row(t: int, mid: int, value: object, quality: int, historical: bool) -> tuple[Any, ...]:
    cols, vhash = V.encode(value)
    return (t, mid, vhash, cols[0], quality, historical, *cols[1:])


@st.composite
def raw_rows(draw: st.DrawFn) -> tuple[Any, ...]:
    """A row of any cells of the right column types, NULL anywhere."""

    def maybe(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | strategy)

    return (
        maybe(TIMES),
        maybe(I64),
        maybe(I64),
        maybe(I16),
        maybe(I16),
        maybe(st.booleans()),
        maybe(I64),
        maybe(FLOATS),
        maybe(st.booleans()),
        maybe(TEXTS),
        maybe(st.binary(max_size=16)),
        maybe(st.sampled_from(['{"a":1}', "[]", '"é"', "null", "1.5e300"])),
        maybe(st.lists(FLOATS, max_size=5) | st.tuples(FLOATS, FLOATS)),
    )


ROWS = st.lists(
    st.builds(writer_row, TIMES, I64, SPARKPLUG_VALUES, st.sampled_from([0, 1, 2]), st.booleans())
    | raw_rows(),
    min_size=1,
    max_size=40,
)


async def stored_both_ways(dsn: str, rows: list[tuple[Any, ...]]) -> tuple[list[str], list[str]]:
    """The rows as the server stores them: (asyncpg's encoder, the native stream), as sorted row texts."""
    data = pgcopy.encode(rows, SAMPLE_KINDS)
    assert data is not None, "the native encoder declined rows it is meant to take"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.set_type_codec(  # as the writer's connections have it (store.writer.setup_connection)
            "timestamptz",
            schema="pg_catalog",
            encoder=lambda us: (us,),
            decoder=lambda t: t[0],
            format="tuple",
        )
        await conn.execute("SET extra_float_digits = 3")
        for n in (1, 2):
            await conn.execute(TABLE.format(n=n))
        await conn.copy_records_to_table("copied_1", records=rows, columns=SAMPLE_COLUMNS)
        await conn.copy_to_table("copied_2", source=memoryview(data), columns=SAMPLE_COLUMNS, format="binary")
        texts = []
        for n in (1, 2):
            found = await conn.fetch(f"SELECT c::text FROM copied_{n} c ORDER BY 1")
            texts.append([r[0] for r in found])
        return texts[0], texts[1]
    finally:
        await conn.close()


@native
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
async def test_native_stream_stores_what_asyncpg_stores(
    database_dsn: str, rows: list[tuple[Any, ...]]
) -> None:
    by_asyncpg, by_native = await stored_both_ways(database_dsn, rows)
    assert len(by_asyncpg) == len(rows)
    assert by_native == by_asyncpg


@native
async def test_edges_of_every_column_type(database_dsn: str) -> None:
    edge = (
        (-211_813_488_000_000_000, -(2**63), 2**63 - 1, -(2**15), 2**15 - 1, True, 0, -0.0, False,
         "", b"", "{}", []),
        (0, 0, 0, 0, 0, False, -1, math.inf, True, "\U0001f600 é", b"\x00\xff", '{"k":[1,"x"]}',
         [math.nan, -math.inf, 5e-324]),
        (None,) * 13,
    )  # fmt: skip
    by_asyncpg, by_native = await stored_both_ways(database_dsn, list(edge))
    assert by_native == by_asyncpg
    assert len(by_native) == 3


@native
def test_stream_layout() -> None:
    """Signature, header, one tuple per row (field count, length-prefixed big-endian cells), trailer."""
    data = pgcopy.encode([(7, -2, True), (None, 1, False)], b"qh?")
    assert data is not None
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00" and data[11:19] == bytes(8)
    body = data[19:]
    assert body[:2] == struct.pack(">h", 3)
    assert body[2:14] == struct.pack(">iq", 8, 7)
    assert body[14:20] == struct.pack(">ih", 2, -2)
    assert body[20:25] == struct.pack(">ib", 1, 1)
    assert body[25:27] == struct.pack(">h", 3) and body[27:31] == struct.pack(">i", -1)
    assert body[-2:] == struct.pack(">h", -1)
    assert len(body) == 2 + 12 + 6 + 5 + 2 + 4 + 6 + 5 + 2


@native
@pytest.mark.parametrize(
    ("row", "kinds"),
    [
        ((2**63,), b"q"),  # beyond bigint
        ((2**15,), b"h"),  # beyond smallint
        ((True,), b"q"),  # a bool is no integer here
        ((1,), b"d"),  # an int in a double column
        ((1.0,), b"q"),
        (("x",), b"y"),
        ((b"x",), b"t"),
        (("\ud800",), b"t"),  # a lone surrogate: not UTF-8
        (([1.0, None],), b"D"),  # NULL elements are asyncpg's business
        (([1],), b"D"),
        ((1, 2), b"q"),  # a row of the wrong length
    ],
)
def test_declines_what_it_does_not_encode_exactly(row: tuple[Any, ...], kinds: bytes) -> None:
    """None, not an exception: the writer then hands the rows to asyncpg, which stores them or says why not."""
    assert pgcopy.encode([(1,) * len(kinds), row], kinds) is None


@native
def test_rejects_unknown_column_kinds() -> None:
    with pytest.raises(ValueError, match="unknown column kind x"):
        pgcopy.encode([(1,)], b"x")


@native
def test_writer_rows_of_plain_samples_take_the_native_path() -> None:
    """The hot path's rows (floats and integers) are encoded natively, so the agreement above is not vacuous."""
    rows = [writer_row(1_000_000 * i, i, v, 0, False) for i, v in enumerate([1.5, -7, 2**62, math.nan, True])]
    data = pgcopy.encode(rows, SAMPLE_KINDS)
    assert data is not None and data.count(struct.pack(">h", 13)) >= len(rows)


@native
@given(st.lists(st.tuples(st.integers(-3, 3), I64, FLOATS), max_size=60))
def test_order_by_is_a_stable_sort_of_the_rows(rows: list[tuple[int, int, float]]) -> None:
    """The stream with ``order_by`` is the stream of the rows stably sorted by that column; the list stays."""
    before = list(rows)
    assert pgcopy.encode(rows, b"hqd", 0) == pgcopy.encode(sorted(rows, key=lambda r: r[0]), b"hqd")
    assert rows == before


@native
def test_order_by_declines_a_key_that_is_no_int() -> None:
    assert pgcopy.encode([(1, 2.0), (None, 1.0)], b"qd", 0) is None
    assert pgcopy.encode([(1, 2.0), (True, 1.0)], b"qd", 0) is None
    with pytest.raises(ValueError, match="order_by"):
        pgcopy.encode([(1,)], b"q", 1)


@pytest.mark.parametrize("use_native", [True, False])
@given(rows=st.lists(st.tuples(I64, st.none() | st.booleans() | st.just(2**64) | I64), max_size=20))
def test_int_range_is_min_and_max_or_none(rows: list[tuple[int, Any]], use_native: bool) -> None:
    """The partition check's span: (min, max) of a column of 64-bit ints, None for no rows or another cell."""
    saved = pgcopy._int_range
    if not use_native:
        pgcopy._int_range = None
    try:
        assert pgcopy.int_range(rows, 0) == (
            (min(r[0] for r in rows), max(r[0] for r in rows)) if rows else None
        )
        plain = all(type(r[1]) is int and -(2**63) <= r[1] < 2**63 for r in rows)
        expected = (min(r[1] for r in rows), max(r[1] for r in rows)) if rows and plain else None
        assert pgcopy.int_range(rows, 1) == expected
    finally:
        pgcopy._int_range = saved
