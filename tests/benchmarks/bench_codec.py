"""Codec throughput: typed decode of DDATA payloads next to two floors on the same bytes, same run.

* ``raw protobuf parse``: ``Payload.FromString`` alone.
* ``minimal loop``: parse, then read each metric's alias, timestamp and value field
  (``getattr(m, m.WhichOneof("value"))``) — the least any decoder built on protobuf does.

Payloads of 10, 100 and 1,000 metrics (a plant's mix: Double, Float, Int32 incl. negatives, Boolean,
Int64), alias-only as edge nodes send DATA; once without datatypes (the wire value is kept for
``resolve_metric``) and once with them (decoded straight to typed values). Also the birth (names,
datatypes, properties) and encode. Measured as the best of interleaved rounds, so a busy machine
disturbs all three alike. Target: full decode at most 1.5x the minimal loop (ratio >= 0.67).

``decode`` is what the bridge runs: the native fast path when it was built (``_native.c``), else the
Python decoder. The Python decoder alone is measured too, so both stay in view.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from tests.benchmarks._figures import Figure
from uns_bridge.sparkplug import sparkplug_b_pb2 as pb
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.decode import DECODER, decode_payload_python
from uns_bridge.sparkplug.payload import decode_payload, encode_payload
from uns_bridge.sparkplug.values import Metric, Payload, PropertySet, PropertyValue

SUITE = "codec"
PB: Any = pb.Payload
NOW = 1_777_777_777_777


def ddata(n: int, rng: random.Random) -> Payload:
    """``n`` alias-only metrics of a typical mix, each with its own timestamp."""
    metrics = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            metric = Metric(None, i, NOW + i, T.Double, rng.uniform(-1e3, 1e3))
        elif kind == 1:
            metric = Metric(None, i, NOW + i, T.Float, round(rng.uniform(0, 100), 1))
        elif kind == 2:
            metric = Metric(None, i, NOW + i, T.Int32, rng.randint(-50_000, 50_000))
        elif kind == 3:
            metric = Metric(None, i, NOW + i, T.Boolean, rng.random() < 0.5)
        else:
            metric = Metric(None, i, NOW + i, T.Int64, rng.randint(0, 1 << 40))
        metrics.append(metric)
    return Payload(NOW, tuple(metrics), seq=7)


def birth(n: int, rng: random.Random) -> Payload:
    unit = PropertySet((("engUnit", PropertyValue(T.String, "degC")),))
    metrics = tuple(
        m._replace(name=f"Area/Line/Tag{m.alias}", properties=unit) for m in ddata(n, rng).metrics
    )
    return Payload(NOW, metrics, seq=0)


def _minimal(data: bytes) -> None:
    for m in PB.FromString(data).metrics:
        _ = (m.alias, m.timestamp, getattr(m, m.WhichOneof("value")))


def _parse(data: bytes) -> None:
    PB.FromString(data)


def _best(functions: dict[str, Callable[[], object]], number: int, rounds: int) -> dict[str, float]:
    """Best seconds per call of each function, measured in interleaved rounds."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, fn in functions.items():
            started = time.perf_counter()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (time.perf_counter() - started) / number)
    return best


def run(quick: bool) -> list[Figure]:
    rng = random.Random(20261202)
    figures: list[Figure] = []
    rounds = 5 if quick else 25
    for n in (10, 100, 1000):
        number = max(2, (2_000 if quick else 10_000) // n)
        untyped = encode_payload(ddata(n, rng), omit_alias_datatypes=True)
        typed = encode_payload(ddata(n, rng))
        born = encode_payload(birth(n, rng))
        decoded = decode_payload(typed)
        best = _best(
            {
                "parse": partial(_parse, untyped),
                "minimal": partial(_minimal, untyped),
                "decode": partial(decode_payload, untyped),
                "minimal typed": partial(_minimal, typed),
                "decode typed": partial(decode_payload, typed),
                "python": partial(decode_payload_python, untyped),
                "python typed": partial(decode_payload_python, typed),
                "minimal birth": partial(_minimal, born),
                "decode birth": partial(decode_payload, born),
                "encode": partial(encode_payload, decoded),
            },
            number,
            rounds,
        )
        rate = {name: n / seconds for name, seconds in best.items()}
        figures += [
            Figure(SUITE, f"raw protobuf parse, {n}-metric DDATA", rate["parse"], "metrics/s"),
            Figure(SUITE, f"minimal loop, {n}-metric DDATA", rate["minimal"], "metrics/s",
                   ceiling=rate["parse"], ceiling_name="raw parse"),
            Figure(SUITE, f"decode {n}-metric DDATA (no datatypes)", rate["decode"], "metrics/s",
                   ceiling=rate["minimal"], ceiling_name="minimal loop", target_ratio=1 / 1.5,
                   note=f"{DECODER}, {best['decode'] / n * 1e9:.0f} ns/metric vs {best['minimal'] / n * 1e9:.0f}"),
            Figure(SUITE, f"decode {n}-metric DDATA (typed)", rate["decode typed"], "metrics/s",
                   ceiling=rate["minimal typed"], ceiling_name="minimal loop", target_ratio=1 / 1.5,
                   note=f"{DECODER}, {best['decode typed'] / n * 1e9:.0f} ns/metric"),
            Figure(SUITE, f"Python decoder alone, {n}-metric DDATA (no datatypes)", rate["python"],
                   "metrics/s", ceiling=rate["minimal"], ceiling_name="minimal loop",
                   note=f"{best['python'] / n * 1e9:.0f} ns/metric"),
            Figure(SUITE, f"Python decoder alone, {n}-metric DDATA (typed)", rate["python typed"],
                   "metrics/s", ceiling=rate["minimal typed"], ceiling_name="minimal loop",
                   note=f"{best['python typed'] / n * 1e9:.0f} ns/metric"),
            Figure(SUITE, f"decode {n}-metric DBIRTH (names, properties)", rate["decode birth"],
                   "metrics/s", ceiling=rate["minimal birth"], ceiling_name="minimal loop"),
            Figure(SUITE, f"encode {n}-metric DDATA", rate["encode"], "metrics/s"),
        ]  # fmt: skip
    return figures


if __name__ == "__main__":
    for figure in run(quick=False):
        print(figure.line())
