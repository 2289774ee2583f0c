"""The UNS sink's native coalescing loop leaves exactly the state of the Python loop of
``UnsSink._samples``: pending set (order included), last values, topic cache and counters, for any mix
of live and historical samples, new and cached topics and a pending set that fills up."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns_bridge.config import MqttConfig, NamespaceConfig, UnsConfig
from uns_bridge.embedded import free_port
from uns_bridge.host.effects import MetricInfo, Sample, Samples
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer
from uns_bridge.uns import sink as sink_module
from uns_bridge.uns.publisher import UnsPublisher
from uns_bridge.uns.sink import UnsSink

native = pytest.mark.skipif(sink_module._native_coalesce is None, reason="the native sink loop is not built")

INFOS = [MetricInfo("G", "N", "D" if i % 3 else None, f"m{i}", 10) for i in range(12)]
SAMPLES = st.builds(
    Sample, st.sampled_from(INFOS), st.integers(0, 9), st.floats(allow_nan=False), st.just(0), st.booleans()
)
EFFECTS = st.lists(
    st.tuples(st.lists(SAMPLES, max_size=15), st.none() | st.integers(0, 255)), min_size=1, max_size=6
)


async def state(effects: list[tuple[list[Sample], int | None]], limit: int, use_native: bool) -> str:
    settings_ = UnsConfig(prefix="uns", max_pending=limit)
    placer = Placer(Namespace.from_config(NamespaceConfig()), prefix="uns")
    # a real publisher that never connected: a full pending set drops new topics at once (no waiting)
    publisher = UnsPublisher(MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}"), settings_)
    sink = UnsSink(placer, publisher, settings_)
    saved = sink_module._native_coalesce
    if not use_native:
        sink_module._native_coalesce = None
    try:
        for samples, seq in effects:
            await sink.handle([Samples(tuple(samples), seq)])
    finally:
        sink_module._native_coalesce = saved
    return repr(
        (
            list(sink._pending.items()),
            sorted((info.name, s) for info, s in sink._last.items()),
            sorted((info.name, t) for info, t in sink._topics.items()),
            sink.values_in,
            sink.coalesced,
            sink.dropped,
        )
    )


@native
@settings(max_examples=200, deadline=None)
@given(EFFECTS, st.integers(1, 14))
async def test_native_coalescing_leaves_the_python_loops_state(
    effects: list[tuple[list[Sample], int | None]], limit: int
) -> None:
    assert await state(effects, limit, True) == await state(effects, limit, False)


@native
async def test_cached_topics_are_coalesced_natively() -> None:
    """Once a metric's topic is cached, its live values never reach the Python loop (the check has teeth)."""
    calls: list[tuple[int, int, int]] = []
    real = sink_module._native_coalesce
    assert real is not None

    def counting(*args: object) -> tuple[int, int, int]:
        result = real(*args)
        calls.append(result)
        return result

    warm = [(list(Sample(info, 1, 1.0) for info in INFOS), 1)]
    again = [(list(Sample(info, 2, 2.0) for info in INFOS), 2)]
    sink_module._native_coalesce = counting
    try:
        settings_ = UnsConfig(prefix="uns")
        sink = UnsSink(
            Placer(Namespace.from_config(NamespaceConfig()), prefix="uns"),
            UnsPublisher(MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}"), settings_),
            settings_,
        )
        for samples, seq in warm + again:
            await sink.handle([Samples(tuple(samples), seq)])
    finally:
        sink_module._native_coalesce = real
    assert calls[-1] == (len(INFOS), len(INFOS), len(INFOS))  # one call took the whole second effect
    # pending (sample, seq) pairs: tracked by the collector exactly when their sample is
    assert all(gc.is_tracked(pair) == gc.is_tracked(pair[0]) for pair in sink._pending.values())
