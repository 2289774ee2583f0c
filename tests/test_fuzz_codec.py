"""Fuzz the payload codec: arbitrary and mutated bytes through ``decode_payload`` raise only PayloadError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.wire import f_bytes, key, mutated, payload, payload_bytes, varint

codec = pytest.importorskip("uns_bridge.sparkplug.payload", reason="the codec has not landed yet")
decode_payload = codec.decode_payload
decode = pytest.importorskip("uns_bridge.sparkplug.decode")
encode_payload = codec.encode_payload
resolve_metric = codec.resolve_metric
PayloadError = codec.PayloadError

DEFAULT = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOAK = settings(max_examples=1_000_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def check_one(data: bytes) -> None:
    """The property: a Payload, or a PayloadError with a message; a decoded payload re-encodes and resolves;
    the native fast path, where it answers, answers as the Python decoder does."""
    native = decode._native_decode(data) if decode._native_decode is not None else None
    try:
        decoded = decode_payload(data)
    except PayloadError as exc:
        assert str(exc), "a PayloadError says what is wrong"
        assert native is None, "the native path accepted a payload the Python decoder rejects"
        return
    if native is not None:
        assert repr(native) == repr(decode.decode_payload_python(data))
    assert isinstance(decoded, tuple) and hasattr(decoded, "metrics")
    for metric in decoded.metrics:
        for datatype in (metric.datatype, 3, 4, 8, 10, 12, 16, 19, 33, 99):
            if datatype is None:
                continue
            try:
                resolve_metric(metric, datatype)
            except PayloadError as exc:
                assert str(exc)
    try:
        again = encode_payload(decoded)
    except PayloadError:
        return
    decode_payload(again)


@DEFAULT
@given(payload_bytes)
def test_decode_raises_only_payload_error(data: bytes) -> None:
    check_one(data)


@DEFAULT
@given(mutated(payload()))
def test_mutated_payloads(data: bytes) -> None:
    check_one(data)


@DEFAULT
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    check_one(data)


def test_known_hostile_shapes() -> None:
    bombs = [
        b"\x12" + varint(2**62),  # metrics with an absurd length
        key(2, 2) + varint(5) + b"\x0a" + varint(2**31),  # a name longer than the message
        b"\x12\x02\x12\x00" * 10_000,  # many empty metrics
        f_bytes(2, f_bytes(18, f_bytes(2, f_bytes(18, f_bytes(2, b"")))) * 200),  # nested templates
        key(2, 3) * 1000,  # deprecated group wire types
        b"\xff" * 11,  # an over-long varint
        b"",
    ]
    nest = b""
    for _ in range(2000):  # metric -> template -> metric ... 2000 deep: must not blow the stack
        nest = f_bytes(2, f_bytes(18, nest))
    bombs.append(nest)
    for data in bombs:
        check_one(data)


@pytest.mark.soak
@SOAK
@given(payload_bytes)
def test_decode_soak(data: bytes) -> None:
    check_one(data)
