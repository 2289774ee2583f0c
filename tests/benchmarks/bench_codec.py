"""Codec speed: typed decoding of DDATA next to two floors measured on the same bytes in the same run.

* raw parse: ``Payload.FromString`` alone (upb);
* minimal loop: parse, then read each metric's alias, timestamp and value field — the least any decoder
  must do;
* ``decode_payload``: our full typed decoding (target: at most 1.5x the minimal loop);
* ``decode_payload`` + ``resolve_metric`` with the birth's datatype (what the host does for alias-only
  DATA); and ``encode_payload``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from tests.benchmarks._figures import Figure
from uns_bridge.sparkplug import sparkplug_b_pb2 as pb
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import decode_payload, encode_payload, resolve_metric
from uns_bridge.sparkplug.values import Metric, Payload

_TYPES = [T.Double, T.Float, T.Int32, T.Int64, T.Boolean, T.UInt16]


def _ddata(count: int, with_datatypes: bool) -> tuple[bytes, list[int]]:
    rng = random.Random(count)
    types = [_TYPES[i % len(_TYPES)] for i in range(count)]
    metrics = []
    for i, datatype in enumerate(types):
        value: object
        if datatype in (T.Double, T.Float):
            value = round(rng.uniform(-100, 100), 2)
        elif datatype == T.Boolean:
            value = rng.random() < 0.5
        elif datatype == T.UInt16:
            value = rng.randrange(65536)
        else:
            value = rng.randrange(-1000, 1000)
        metrics.append(Metric(None, i, 1_700_000_000_000 + i, datatype, value))  # type: ignore[arg-type]
    payload = Payload(1_700_000_000_000, tuple(metrics), seq=1)
    return encode_payload(payload, omit_alias_datatypes=not with_datatypes), [int(t) for t in types]


def _rate(fn: Callable[[], object], metrics: int, seconds: float) -> float:
    """Metrics per second of ``fn`` (best of 3 timed rounds)."""
    fn()
    best = float("inf")
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            fn()
            n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = min(best, (now - start) / n)
    return metrics / best


def run(quick: bool) -> list[Figure]:
    seconds = 0.6 if quick else 3.0
    figures: list[Figure] = []
    parse = pb.Payload.FromString  # type: ignore[attr-defined]
    for count in (10, 100, 1000):
        data, types = _ddata(count, with_datatypes=False)

        def minimal(data: bytes = data) -> int:
            total = 0
            for m in parse(data).metrics:
                field = m.WhichOneof("value")
                total += m.alias + m.timestamp + (1 if field is None else 0)
                getattr(m, field) if field else None
            return total

        def resolved(data: bytes = data, types: list[int] = types) -> None:
            for m, datatype in zip(decode_payload(data).metrics, types, strict=True):
                resolve_metric(m, datatype)

        raw_rate = _rate(lambda data=data: parse(data), count, seconds)
        floor = _rate(minimal, count, seconds)
        typed = _rate(lambda data=data: decode_payload(data), count, seconds)
        full = _rate(resolved, count, seconds)
        typed_payload = decode_payload(_ddata(count, with_datatypes=True)[0])
        encode = _rate(lambda p=typed_payload: encode_payload(p, omit_alias_datatypes=True), count, seconds)
        name = f"DDATA {count} metrics"
        figures += [
            Figure("codec", f"{name}: raw protobuf parse", raw_rate, "metrics/s"),
            Figure("codec", f"{name}: minimal loop", floor, "metrics/s"),
            Figure(
                "codec",
                f"{name}: decode_payload",
                typed,
                "metrics/s",
                ceiling=floor,
                ceiling_name="minimal loop",
                target_ratio=1 / 1.5,
            ),
            Figure(
                "codec",
                f"{name}: decode + resolve_metric",
                full,
                "metrics/s",
                ceiling=floor,
                ceiling_name="minimal loop",
            ),
            Figure(
                "codec",
                f"{name}: encode_payload",
                encode,
                "metrics/s",
                ceiling=raw_rate,
                ceiling_name="raw parse",
            ),
        ]
    return figures
