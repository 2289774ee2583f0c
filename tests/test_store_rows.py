"""The writer's native sample-row loop gives exactly the rows, current values and dead letters of the
Python loop (``StoreWriter._python_rows``), sample for sample, whatever mix of samples comes in."""

from __future__ import annotations

import gc
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns_bridge.config import DatabaseConfig, NamespaceConfig
from uns_bridge.host.effects import MetricInfo, Quality, Sample, Samples
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.store import writer as writer_module
from uns_bridge.store.writer import StoreWriter

native = pytest.mark.skipif(
    writer_module._native_rows is None, reason="the native row loop is not built here"
)

INFOS = [MetricInfo("G", "N", "D" if i % 2 else None, f"m{i}", DataType.Double, alias=i) for i in range(6)]

VALUES = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([-0.0, math.nan, 5e-324])
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.booleans()
    | st.text(max_size=4)
    | st.binary(max_size=4)
    | st.none()
    | st.lists(st.floats(), max_size=3)
)
#: ms since 1970, including times outside 64-bit microseconds (dead letters) and non-int oddities
TIMESTAMPS = (
    st.integers(min_value=0, max_value=2_000_000_000_000)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([9_223_372_036_854_775, 9_223_372_036_854_776 + 946_684_800_000])
)
SAMPLES = st.builds(
    Sample,
    st.sampled_from(INFOS),
    TIMESTAMPS,
    VALUES,
    st.sampled_from(list(Quality)),
    st.booleans(),
)


def fresh_writer() -> StoreWriter:
    placer = Placer(Namespace.from_config(NamespaceConfig()), prefix="uns")
    return StoreWriter("postgresql://unused", DatabaseConfig(), placer)


def state(writer: StoreWriter) -> tuple[str, str, str, str]:
    """Everything the loop leaves behind, as text (NaN compares equal to itself there)."""
    batch = writer._batch
    dead = [row[1:] for row in batch.dead_letters]  # without the time they were written
    return repr(batch.samples), repr(sorted(writer._current.items())), repr(batch.metrics), repr(dead)


def run(samples: list[Sample], use_native: bool, known: int, chunks: int) -> tuple[str, str, str, str]:
    writer = fresh_writer()
    for info in INFOS[:known]:  # some metrics already have ids, the others are learned on the way
        writer._learn_metric(info, 0)
    saved = writer_module._native_rows
    if not use_native:
        writer_module._native_rows = None
    try:
        step = max(1, len(samples) // chunks)
        for first in range(0, len(samples), step):
            writer._samples(Samples(tuple(samples[first : first + step]), None))
    finally:
        writer_module._native_rows = saved
    return state(writer)


@native
@settings(max_examples=300, deadline=None)
@given(st.lists(SAMPLES, max_size=30), st.integers(0, len(INFOS)), st.integers(1, 4))
def test_native_rows_equal_python_rows(samples: list[Sample], known: int, chunks: int) -> None:
    assert run(samples, True, known, chunks) == run(samples, False, known, chunks)


@native
def test_plain_samples_are_done_natively() -> None:
    """Floats and 64-bit ints of known metrics never reach the Python loop (so the check above has teeth)."""
    writer = fresh_writer()
    for info in INFOS:
        writer._learn_metric(info, 0)
    samples = tuple(
        Sample(info, 1_700_000_000_000 + i, v)
        for i, (info, v) in enumerate(zip(INFOS, [1.5, -3, 2**63 - 1, math.inf, 0, -0.0], strict=True))
    )
    called: list[Any] = []
    writer._python_rows = called.append  # type: ignore[method-assign]
    writer._samples(Samples(samples, 1))
    assert called == []
    assert len(writer._batch.samples) == len(samples)
    assert writer._batch.samples[1][:7] == (
        (1_700_000_000_001 - 946_684_800_000) * 1000,
        writer._metric_ids[INFOS[1]],
        -3,
        1,
        0,
        False,
        -3,
    )


@native
@settings(max_examples=200, deadline=None)
@given(st.lists(SAMPLES, max_size=30), st.integers(0, len(INFOS)))
def test_native_current_rows_equal_python_current_rows(samples: list[Sample], known: int) -> None:
    """``_rows.current_rows`` makes the metric_current rows ``_python_current_rows`` defines, and leaves the
    collector tracking exactly the rows that hold a container (a list of floats, say)."""
    writer = fresh_writer()
    for info in INFOS[:known]:
        writer._learn_metric(info, 0)
    writer._samples(Samples(tuple(samples), None))
    native_rows = writer_module._current_rows(writer._current)
    python_rows = writer_module._python_current_rows(writer._current)
    assert repr(native_rows) == repr(python_rows)
    for row in native_rows:
        assert gc.is_tracked(row) == any(isinstance(cell, list | dict | tuple) for cell in row), row


@native
def test_rows_of_plain_samples_are_not_tracked_by_the_collector() -> None:
    """Plain rows hold ints, floats, bools and None only: no reference cycle can pass through them, so
    the native loop tells the cyclic collector not to walk them (the Python loop's rows are untracked by
    the collector's first pass instead); a row with a list stays tracked."""
    writer = fresh_writer()
    for info in INFOS:
        writer._learn_metric(info, 0)
    writer._samples(
        Samples((Sample(INFOS[0], 1_700_000_000_000, 1.5), Sample(INFOS[1], 1_700_000_000_001, 7)), 1)
    )
    writer._samples(Samples((Sample(INFOS[2], 1_700_000_000_002, [1.0, 2.0]),), 2))
    plain, plain_int, listed = writer._batch.samples
    assert not gc.is_tracked(plain) and not gc.is_tracked(plain_int)
    assert gc.is_tracked(listed)
