"""The host's native loop over plain DATA metrics gives exactly the effects of the Python metric loop of
``Host._process``: the same message sequence through two hosts, one with the native loop and one without,
must produce equal effects, whatever mix of known and unknown aliases, names, datatypes, values and flags
the messages carry."""

from __future__ import annotations

import gc
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.host_messages import T0, m, nbirth, new_host, payload, quality, topic
from uns_bridge.config import MqttConfig, NamespaceConfig, UnsConfig
from uns_bridge.embedded import free_port
from uns_bridge.host import host as host_module
from uns_bridge.host.effects import Sample, Samples
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import encode_payload
from uns_bridge.sparkplug.values import Metric, Payload
from uns_bridge.uns import sink as sink_module
from uns_bridge.uns.publisher import UnsPublisher
from uns_bridge.uns.sink import UnsSink

native = pytest.mark.skipif(
    host_module._native_plain is None, reason="the native host loop is not built here"
)

#: born metrics: alias -> (name, datatype, birth value); the device's aliases are these plus DEVICE
BORN = {
    1: ("Temp", T.Double, 20.5),
    2: ("Ratio", T.Float, 0.5),
    3: ("Count", T.Int32, 5),  # alias-only negatives go to the coercion (Python)
    4: ("Total", T.Int64, 7),
    5: ("Big", T.UInt64, 2**63),
    6: ("Run", T.Boolean, True),
    7: ("Mode", T.String, "auto"),
    8: ("Blob", T.Bytes, b"\x00"),
    9: ("Small", T.Int8, 1),
}
DEVICE = 20
VALUES = {
    T.Double: st.floats(allow_nan=True) | st.sampled_from([-0.0, math.nan]),
    T.Float: st.sampled_from([0.5, -2.0, math.inf, 1e-3]),
    T.Int32: st.integers(-(2**31), 2**31 - 1),
    T.Int64: st.integers(-(2**63), 2**63 - 1),
    T.UInt64: st.integers(0, 2**64 - 1),
    T.Boolean: st.booleans(),
    T.String: st.text(max_size=5),
    T.Bytes: st.binary(max_size=5),
    T.Int8: st.integers(-128, 127),
}


@st.composite
def data_metric(draw: st.DrawFn) -> Metric:
    alias = draw(st.integers(1, 11))  # 10 and 11 are unknown
    datatype = draw(st.sampled_from(list(VALUES)))
    if alias in BORN and draw(st.booleans()):
        datatype = BORN[alias][1]  # mostly the born type, sometimes another one
    null = draw(st.integers(0, 9)) == 0
    value = None if null else draw(VALUES[datatype])
    name = draw(st.sampled_from([None] * 6 + ["Temp", "Nope"]))
    return m(
        name,
        None if name is not None and draw(st.booleans()) else alias,
        datatype,
        value,
        ts=draw(st.none() | st.just(T0 + 5)),
        is_historical=draw(st.booleans()),
        is_transient=draw(st.integers(0, 7)) == 0,
        is_null=null,
        properties=quality(draw(st.sampled_from([192, 0, 500]))) if draw(st.integers(0, 7)) == 0 else None,
    )


def run(messages: list[tuple[str, bytes]], use_native: bool) -> str:
    saved = host_module._native_plain
    if not use_native:
        host_module._native_plain = None
    try:
        host = new_host()
        effects = []
        for i, (where, data) in enumerate(messages):
            effects.append(host.receive(where, data, T0 + 10 * (i + 1)))
        return repr(effects)
    finally:
        host_module._native_plain = saved


def on_device(metrics: list[Metric]) -> list[Metric]:
    return [x if x.alias is None else x._replace(alias=x.alias + DEVICE) for x in metrics]


def born(seq_device: int) -> list[tuple[str, bytes]]:
    metrics = [m(name, alias, dt, value) for alias, (name, dt, value) in BORN.items()]
    dbirth = encode_payload(Payload(T0, tuple(on_device(metrics)), seq_device))
    return [(topic("NBIRTH"), nbirth(0, metrics=metrics)), (topic("DBIRTH", "D1"), dbirth)]


@native
@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["NDATA", "DDATA"]),
            st.lists(data_metric(), min_size=1, max_size=12),
            st.booleans(),
            st.booleans(),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_native_loop_gives_the_python_loops_effects(
    messages: list[tuple[str, list[Metric], bool, bool, int]],
) -> None:
    wire = born(1)
    for seq, (kind, metrics, typed, stamped, aliases_of) in enumerate(messages, start=2):
        where = topic(kind, "D1" if kind == "DDATA" else None)
        if kind == "DDATA" and aliases_of:  # mostly the device's aliases, sometimes the node's
            metrics = on_device(metrics)
        data = encode_payload(
            Payload(T0 + 1 if stamped else None, tuple(metrics), seq % 256), omit_alias_datatypes=not typed
        )
        wire.append((where, data))
    assert run(wire, True) == run(wire, False)


@native
def test_plain_data_is_done_natively() -> None:
    """Alias-only values of the born types never reach the Python loop (so the check above has teeth)."""
    samples = natively_made_samples()
    # a metric's info and atoms only: no cycle can pass through a sample, so the collector does not walk them
    assert not any(gc.is_tracked(s) for s in samples)


def natively_made_samples() -> list[Sample]:
    """The samples of one DDATA of every born metric, asserted to be made by the native loop in one call."""
    wire = born(1)
    metrics = [m(None, alias, dt, value) for alias, (_, dt, value) in BORN.items()]
    wire.append((topic("DDATA", "D1"), payload(on_device(metrics), 2)))
    host = new_host()
    for where, data in wire[:-1]:
        host.receive(where, data, T0)
    reached: list[int] = []
    plain = host_module._native_plain
    assert plain is not None

    def counting(metrics: tuple[Metric, ...], start: int, *rest: object) -> int:
        done = plain(metrics, start, *rest)
        reached.append(done)
        return done

    host_module._native_plain = counting
    try:
        effects = host.receive(wire[-1][0], wire[-1][1], T0 + 1)
    finally:
        host_module._native_plain = plain
    assert reached == [len(BORN)]  # one call, all of them
    samples = [s for e in effects if hasattr(e, "samples") for s in e.samples]
    assert [s.value for s in samples] == [v for _, _, v in BORN.values()]
    return samples


@native
@pytest.mark.skipif(sink_module._native_coalesce is None, reason="the native sink loop is not built here")
async def test_untracked_samples_stay_untracked_in_the_uns_pending_set() -> None:
    """The UNS sink's pending (sample, seq) pairs of plain samples are not walked by the collector either."""
    samples = natively_made_samples()
    settings_ = UnsConfig(prefix="uns")
    sink = UnsSink(
        Placer(Namespace.from_config(NamespaceConfig()), prefix="uns"),
        UnsPublisher(MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}"), settings_),
        settings_,
    )
    for seq in (1, 2):  # the second time every topic is cached: the native loop takes them all
        await sink.handle([Samples(tuple(samples), seq)])
    assert len(sink._pending) == len(samples)
    assert not any(gc.is_tracked(pair) for pair in sink._pending.values())


@native
@pytest.mark.parametrize(
    ("born", "width"),
    [(T.Int8, 8), (T.Int16, 16), (T.Int32, 32), (T.Int64, 64)],
    ids=["Int8", "Int16", "Int32", "Int64"],
)
def test_signed_values_in_both_sender_conventions_agree(born: int, width: int) -> None:
    """Alias-only negatives as senders put them on the wire: the width's two's complement, 32- and 64-bit
    sign extension, and values in none of these (an error the Python loop words)."""
    half = 1 << (width - 1)
    raws = [
        0,
        half - 1,
        half,
        (1 << width) - 1,
        (1 << 32) - half,
        (1 << 32) - 1,
        (1 << 64) - half,
        (1 << 64) - 1,
    ]
    raws += [(1 << width), (1 << 32) - half - 1, (1 << 64) - half - 1]  # out of range for some widths
    metrics = [m("v", 1, born, 0)]
    wire = [(topic("NBIRTH"), nbirth(0, metrics=metrics))]
    for seq, raw in enumerate(sorted({r for r in raws if 0 <= r < 1 << 64}), start=1):
        carrier = T.UInt32 if raw < (1 << 32) else T.UInt64  # the raw wire integer, datatype left off
        wire.append((topic("NDATA"), payload([m(None, 1, carrier, raw)], seq)))
    native_effects = run(wire, True)
    assert native_effects == run(wire, False)
    assert "-1" in native_effects  # the conversions happened (not every value an error)
