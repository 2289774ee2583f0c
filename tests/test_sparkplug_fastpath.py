"""The decode paths agree: native (C, plain DATA read from the wire bytes), fast (plain DATA metrics,
bytes accounted for) and thorough.

Payloads are built at the wire level: plain alias/timestamp/value metrics, optionally with a datatype,
and with hostile additions the fast path must notice — an extra field it does not read, an extension,
a field with the wrong wire type, an overlong varint, a repeated field (protobuf keeps the last).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uns_bridge.sparkplug import decode
from uns_bridge.sparkplug import sparkplug_b_pb2 as pb
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import PayloadError, decode_payload
from uns_bridge.sparkplug.values import Metric, Payload

PB: Any = pb.Payload
native = decode._native_decode
needs_native = pytest.mark.skipif(
    native is None, reason="the native decoder was not built (no C compiler when the package was installed)"
)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, wire: int, body: bytes) -> bytes:
    return varint(number << 3 | wire) + body


def length_delimited(number: int, body: bytes) -> bytes:
    return field(number, 2, varint(len(body)) + body)


u64 = st.sampled_from(
    [0, 1, 127, 128, 16383, 16384, 1 << 35, (1 << 42) - 1, 1 << 42, (1 << 64) - 1]
) | st.integers(0, (1 << 64) - 1)
VALUES = {  # value field number -> (wire type, strategy of its encoded body)
    10: (0, st.integers(0, (1 << 32) - 1).map(varint)),
    11: (0, u64.map(varint)),
    12: (5, st.floats(width=32).map(lambda x: struct.pack("<f", x))),
    13: (1, st.floats().map(lambda x: struct.pack("<d", x))),
    14: (0, st.sampled_from([b"\x00", b"\x01"])),
    16: (2, st.binary(max_size=200).map(lambda b: varint(len(b)) + b)),
    15: (2, st.text(max_size=5).map(lambda s: varint(len(s.encode())) + s.encode())),
}
HOSTILE = [
    b"",
    field(5, 0, b"\x01"),  # is_historical
    field(6, 0, b"\x01"),  # is_transient
    field(7, 0, b"\x01"),  # is_null
    length_delimited(1, b"n"),  # a name
    field(30, 0, b"\x05"),  # an extension (ignored)
    field(3, 5, b"\x00\x00\x00\x00"),  # timestamp with the wrong wire type
    field(2, 0, b"\x85\x00"),  # an overlong varint alias (5)
    field(2, 0, b"\x07"),  # the alias again: the last one counts
    length_delimited(9, b""),  # empty properties
]


@st.composite
def metric_bodies(draw: st.DrawFn, typed: bool) -> bytes:
    number = draw(st.sampled_from(sorted(VALUES)))
    wire, body = VALUES[number]
    parts = []
    if draw(st.integers(0, 19)):
        parts.append(field(2, 0, varint(draw(u64))))
    if draw(st.integers(0, 19)):
        parts.append(field(3, 0, varint(draw(u64))))
    if typed:
        parts.append(field(4, 0, varint(draw(st.sampled_from(list(T)) | st.integers(0, 300)))))
    if draw(st.integers(0, 19)):
        parts.append(field(number, wire, draw(body)))
    if draw(st.integers(0, 3)) == 0:
        parts.append(draw(st.sampled_from(HOSTILE)))
    return b"".join(parts)


@st.composite
def payload_bytes(draw: st.DrawFn) -> bytes:
    typed = draw(st.booleans())
    parts = []
    if draw(st.booleans()):
        parts.append(field(1, 0, varint(draw(u64))))
    parts += [length_delimited(2, draw(metric_bodies(typed))) for _ in range(draw(st.integers(0, 6)))]
    if draw(st.booleans()):
        parts.append(field(3, 0, varint(draw(st.integers(0, 255)))))
    if draw(st.integers(0, 4)) == 0:
        parts.append(draw(st.sampled_from([length_delimited(4, b"u-1"), length_delimited(5, b"\x00"),
                                            field(40, 0, b"\x01"), field(1, 2, b"\x00")])))  # fmt: skip
    return b"".join(parts)


def outcome(fn: Any, *args: Any) -> object:
    try:
        return ("ok", repr(fn(*args)))  # repr: NaN == NaN
    except PayloadError:
        return "PayloadError"


@settings(max_examples=400, deadline=None)
@given(payload_bytes())
def test_fast_and_thorough_paths_agree(data: bytes) -> None:
    thorough = outcome(lambda d: decode._decode_thorough(PB.FromString(d), d), data)
    assert outcome(decode_payload, data) == thorough
    assert outcome(decode.decode_payload_python, data) == thorough


@needs_native
@settings(max_examples=600, deadline=None)
@given(payload_bytes())
def test_native_path_answers_only_what_the_python_paths_answer_alike(data: bytes) -> None:
    """Where the native path answers, the answer is the Python decoder's; it never answers a payload the
    Python decoder rejects, and never raises (arbitrary and mutated bytes: test_fuzz_codec.check_one)."""
    assert native is not None
    answer = native(data)
    if answer is not None:
        assert ("ok", repr(answer)) == outcome(decode.decode_payload_python, data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([10, 11, 12, 13, 14, 16]), min_size=1, max_size=20), st.booleans(), st.data())
def test_plain_data_takes_the_fast_path(numbers: list[int], typed: bool, data: st.DataObject) -> None:
    """Plain DATA metrics are decoded by the fast path (so the agreement above is not vacuous)."""
    types = {10: T.UInt32, 11: T.UInt64, 12: T.Float, 13: T.Double, 14: T.Boolean, 16: T.Bytes}
    body = field(1, 0, varint(1_777_777_777_777))
    for alias, number in enumerate(numbers):
        wire, value = VALUES[number]
        metric = field(2, 0, varint(alias * 97)) + field(3, 0, varint(data.draw(u64.filter(bool))))
        if typed:
            metric += field(4, 0, varint(types[number]))
        body += length_delimited(2, metric + field(number, wire, data.draw(value)))
    fast = decode._decode_fast(PB.FromString(body), len(body))
    assert fast is not None
    assert fast == decode._decode_thorough(PB.FromString(body), body) or "nan" in repr(fast)
    assert [m.alias for m in fast.metrics] == [i * 97 for i in range(len(numbers))]
    if native is not None:
        answer = native(body)
        assert answer is not None, "plain DATA is what the native path is for"
        assert type(answer) is Payload and all(type(m) is Metric for m in answer.metrics)
        assert repr(answer) == repr(fast)


def test_hostile_additions_leave_the_fast_path() -> None:
    plain = (
        field(2, 0, b"\x05") + field(3, 0, varint(1_777_777_777_777)) + field(13, 1, struct.pack("<d", 1.5))
    )
    for extra in HOSTILE[1:]:
        data = length_delimited(2, plain + extra)
        assert decode._decode_fast(PB.FromString(data), len(data)) is None, extra
        assert native is None or native(data) is None, extra
    data = length_delimited(2, plain)
    assert decode._decode_fast(PB.FromString(data), len(data)) is not None
    assert native is None or native(data) == decode._decode_fast(PB.FromString(data), len(data))
    # what the thorough path then makes of them
    assert decode_payload(length_delimited(2, plain + field(5, 0, b"\x01"))).metrics[0].is_historical
    assert decode_payload(length_delimited(2, plain + field(2, 0, b"\x07"))).metrics[0].alias == 7
    assert decode_payload(length_delimited(2, plain + field(30, 0, b"\x05"))).metrics[0].value == 1.5
    try:
        decode_payload(length_delimited(2, plain + field(3, 5, b"\x00\x00\x00\x00")))
    except PayloadError as exc:
        assert "timestamp (#3) has the wrong wire type" in str(exc)
    else:
        raise AssertionError("a wrong wire type was accepted")


@pytest.mark.soak
@settings(max_examples=500_000, deadline=None, database=None)
@given(payload_bytes())
def test_fast_and_thorough_paths_agree_soak(data: bytes) -> None:
    thorough = outcome(lambda d: decode._decode_thorough(PB.FromString(d), d), data)
    assert outcome(decode_payload, data) == thorough


def test_fast_path_errors_name_the_alias() -> None:
    metric = field(2, 0, b"\x07") + field(3, 0, varint(1_777_777_777_777)) + field(4, 0, varint(T.Int8))
    data = length_delimited(2, metric + field(10, 0, varint(1000)))
    try:
        decode_payload(data)
    except PayloadError as exc:
        assert str(exc) == "metric alias 7: 1000 is out of range for a 8-bit signed integer"
    else:
        raise AssertionError("an out-of-range Int8 was accepted")
    assert native is None or native(data) is None, "an error is the Python decoder's to word"
    negative = length_delimited(2, metric + field(10, 0, varint((1 << 32) - 128)))
    assert decode._decode_fast(PB.FromString(negative), len(negative)) is not None
    assert decode_payload(negative).metrics[0].value == -128


@needs_native
@pytest.mark.parametrize(
    ("datatype", "number", "wire_value", "expected"),
    [
        (T.Int8, 10, 0xFF, -1),  # value + 2^8
        (T.Int8, 10, (1 << 32) - 1, -1),  # 32-bit sign extension
        (T.Int8, 11, (1 << 64) - 128, -128),  # 64-bit sign extension
        (T.Int16, 10, 0x8000, -32768),
        (T.Int32, 10, (1 << 32) - 5, -5),
        (T.Int32, 11, (1 << 64) - 5, -5),
        (T.Int64, 11, (1 << 64) - 1, -1),
        (T.UInt8, 10, 255, 255),
        (T.UInt32, 10, (1 << 32) - 1, (1 << 32) - 1),
        (T.UInt64, 11, (1 << 64) - 1, (1 << 64) - 1),
        (T.DateTime, 11, 1_777_777_777_777, 1_777_777_777_777),
        (T.Boolean, 14, 1, True),
        (T.Int8, 10, 0x100, None),  # out of range: the Python decoder says so
        (T.UInt8, 10, 256, None),
        (T.Int16, 11, 1 << 40, None),
        (T.Float, 10, 1, None),  # the wrong value field for the datatype
        (T.String, 10, 1, None),  # a string needs string_value
        (T.Int8Array, 10, 1, None),  # a datatype the native path does not decode
        (0, 10, 1, None),  # Unknown
    ],
)
def test_native_integer_conventions(datatype: int, number: int, wire_value: int, expected: object) -> None:
    """The signed-integer conventions byte by byte: field tags 0x50 (int_value) and 0x58 (long_value)."""
    assert native is not None
    metric = b"\x10\x07" + b"\x18\x01" + field(4, 0, varint(datatype)) + field(number, 0, varint(wire_value))
    data = length_delimited(2, metric)
    answer = native(data)
    if expected is None:
        assert answer is None
        return
    assert answer is not None
    assert answer.metrics[0].value == expected and type(answer.metrics[0].value) is type(expected)
    assert answer == decode.decode_payload_python(data)


@needs_native
def test_native_payload_fields() -> None:
    assert native is not None
    metric = length_delimited(2, b"\x10\x01\x18\x02\x69" + struct.pack("<d", 2.5))
    data = field(1, 0, varint(1_777_777_777_777)) + metric + field(3, 0, b"\x2a")
    assert native(data) == Payload(1_777_777_777_777, (Metric(None, 1, 2, None, 2.5),), seq=42)
    with_uuid = data + length_delimited(4, "µ-1".encode()) + length_delimited(5, b"\x00\x01")
    answer = native(with_uuid)
    assert answer is not None and (answer.uuid, answer.body) == ("µ-1", b"\x00\x01")
    assert native(data + length_delimited(4, b"\xff")) is None  # not UTF-8: the Python decoder says so
    assert native(data + field(3, 0, b"\x01")) is None  # seq twice
    assert native(data[:-1]) is None  # truncated
    assert native(b"") == Payload(None, ())
    with pytest.raises(TypeError):
        native(bytearray(data))  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["no module", "UNS_BRIDGE_DECODER=python"])
def test_without_the_native_module_the_python_decoder_does_the_work(how: str) -> None:
    """An install without a C compiler has no ``_native``, and the environment can turn it off: decoding
    still works, in Python."""
    import os
    import subprocess
    import sys

    hide = "import sys; sys.modules['uns_bridge.sparkplug._native'] = None\n" if how == "no module" else ""
    script = (
        f"{hide}from uns_bridge.sparkplug import decode\n"
        "payload = decode.decode_payload(bytes.fromhex('120b100718022009650000c03f'))\n"
        "print(decode.DECODER, payload.metrics[0].alias, payload.metrics[0].value)\n"
    )
    env = {**os.environ, "UNS_BRIDGE_DECODER": "python" if hide == "" else ""}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.split() == ["python", "7", "1.5"]
