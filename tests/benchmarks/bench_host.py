"""Host core speed: ``Host.receive`` on a stream of 100-metric DDATA next to ``decode_payload`` alone.

Both run on the same pre-encoded bytes in the same run: a 100-metric DBIRTH (mixed datatypes, aliases),
then alias-only DDATA without datatypes, seq continuing and wrapping. The ceiling is the codec's typed
decoding, which the host must do anyway; the rest of the host's cost is sequencing, alias resolution,
coercion with the birth's datatype and building the Sample effects.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from tests.benchmarks._figures import Figure
from uns_bridge.host.effects import Samples
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import decode_payload, encode_payload
from uns_bridge.sparkplug.values import Metric, Payload

METRICS = 100
T0 = 1_700_000_000_000
_TYPES = [T.Double, T.Float, T.Int32, T.Int64, T.Boolean, T.UInt16]
NODE = "spBv1.0/bench/%s/edge"


def _value(rng: random.Random, datatype: int) -> object:
    if datatype in (T.Double, T.Float):
        return float(rng.randrange(-1000, 1000)) / 4
    if datatype == T.Boolean:
        return rng.random() < 0.5
    if datatype == T.UInt16:
        return rng.randrange(65536)
    return rng.randrange(-1000, 1000)


def stream(messages: int = 512) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(births, DDATA) as (topic, bytes); DDATA seq runs 2, 3, ... wrapping, so the list can be cycled
    whenever its length is a multiple of 256."""
    rng = random.Random(7)
    types = [_TYPES[i % len(_TYPES)] for i in range(METRICS)]
    nbirth = Payload(T0, (Metric("bdSeq", None, T0, T.Int64, 0),), seq=0)
    dbirth = Payload(
        T0,
        tuple(
            Metric(f"m{i}", i + 1, T0, t, _value(rng, t))  # type: ignore[arg-type]
            for i, t in enumerate(types)
        ),
        seq=1,
    )
    births = [(NODE % "NBIRTH", encode_payload(nbirth)), (NODE % "DBIRTH" + "/dev", encode_payload(dbirth))]
    data = []
    for k in range(messages):
        ts = T0 + 1 + k
        metrics = tuple(
            Metric(None, i + 1, ts, t, _value(rng, t))  # type: ignore[arg-type]
            for i, t in enumerate(types)
        )
        raw = encode_payload(Payload(ts, metrics, seq=(k + 2) % 256), omit_alias_datatypes=True)
        data.append((NODE % "DDATA" + "/dev", raw))
    return births, data


def _rate(step: Callable[[int], int], seconds: float) -> float:
    """Samples per second of ``step(i)`` (which returns the samples it produced), best of 3 rounds."""
    step(0)
    best = 0.0
    i = 1
    for _ in range(3):
        produced = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            produced += step(i)
            i += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, produced / (now - start))
    return best


def run(quick: bool) -> list[Figure]:
    seconds = 0.6 if quick else 3.0
    births, data = stream()
    count = len(data)
    host = Host(HostConfig(host_id="bench", role="passive"))
    host.will(T0)
    host.connected(T0)
    for topic, raw in births:
        host.receive(topic, raw, T0)
    clock = [T0 + 1]

    def through_host(i: int) -> int:
        topic, raw = data[i % count]
        clock[0] += 1
        produced = 0
        for effect in host.receive(topic, raw, clock[0]):
            if isinstance(effect, Samples):
                produced += len(effect.samples)
            else:
                raise AssertionError(f"unexpected effect in a clean stream: {effect}")
        return produced

    def codec_only(i: int) -> int:
        return len(decode_payload(data[i % count][1]).metrics)

    codec = _rate(codec_only, seconds)
    hosted = _rate(through_host, seconds)
    name = f"DDATA {METRICS} metrics"
    return [
        Figure("host", f"{name}: decode_payload alone", codec, "samples/s"),
        Figure(
            "host",
            f"{name}: Host.receive",
            hosted,
            "samples/s",
            ceiling=codec,
            ceiling_name="decode_payload",
            note=f"{hosted / METRICS:,.0f} messages/s",
        ),
    ]


if __name__ == "__main__":
    for figure in run(quick=True):
        print(figure.line())
