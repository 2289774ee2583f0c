"""Host core speed: ``Host.receive`` on a stream of alias-only DDATA next to ``decode_payload`` alone.

Both run on the same bytes in the same run, interleaved: the host's figure includes decoding, so the
ratio says how much of the hot path is Sparkplug state (seq, alias resolution, datatype coercion,
samples) on top of the codec. The stream cycles through all 256 seq values (wrap included), one
DBIRTH-born device, metric timestamps on every value.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from functools import partial

from tests.benchmarks._figures import Figure
from uns_bridge.host.effects import Samples
from uns_bridge.host.host import Host, HostConfig
from uns_bridge.sparkplug.datatypes import DataType as T
from uns_bridge.sparkplug.payload import decode_payload, encode_payload
from uns_bridge.sparkplug.values import Metric, Payload

SUITE = "host"
T0 = 1_700_000_000_000
_TYPES = (T.Double, T.Float, T.Int32, T.Int64, T.Boolean, T.UInt16)
NODE = "spBv1.0/Bench/NBIRTH/E1"
DEVICE = "spBv1.0/Bench/DBIRTH/E1/D1"
DDATA = "spBv1.0/Bench/DDATA/E1/D1"


def _value(datatype: int, rng: random.Random) -> object:
    if datatype in (T.Double, T.Float):
        return float(rng.randrange(-1000, 1000)) / 4
    if datatype == T.Boolean:
        return rng.random() < 0.5
    if datatype == T.UInt16:
        return rng.randrange(65536)
    return rng.randrange(-1000, 1000)


def _stream(n: int, rng: random.Random) -> tuple[bytes, bytes, list[bytes]]:
    """NBIRTH (seq 0), DBIRTH of ``n`` metrics (seq 1), and 256 DDATA (seq 2..255, 0, 1) of all of them."""
    types = [_TYPES[i % len(_TYPES)] for i in range(n)]
    nbirth = encode_payload(
        Payload(
            T0,
            (Metric("bdSeq", 0, T0, T.Int64, 1), Metric("Node Control/Rebirth", 1, T0, T.Boolean, False)),
            0,
        )
    )
    dbirth = encode_payload(
        Payload(T0, tuple(Metric(f"m{i}", 10 + i, T0, t, _value(t, rng)) for i, t in enumerate(types)), 1)  # type: ignore[arg-type]
    )
    data = []
    for k in range(256):
        ts = T0 + 1_000 * (k + 1)
        metrics = tuple(Metric(None, 10 + i, ts + i, t, _value(t, rng)) for i, t in enumerate(types))  # type: ignore[arg-type]
        data.append(encode_payload(Payload(ts, metrics, (k + 2) % 256), omit_alias_datatypes=True))
    return nbirth, dbirth, data


def _best(functions: dict[str, Callable[[], int]], rounds: int) -> dict[str, float]:
    """Best seconds per call of each function (each call handles one whole cycle), interleaved rounds."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, fn in functions.items():
            started = time.perf_counter()
            calls = fn()
            best[name] = min(best[name], (time.perf_counter() - started) / calls)
    return best


def _through_host(host: Host, data: list[bytes], n: int, clock: list[int]) -> int:
    """One cycle of the stream through ``Host.receive``; checks that every value became a sample."""
    now = clock[0]
    receive = host.receive
    got = 0
    for raw in data:
        now += 1
        for effect in receive(DDATA, raw, now):
            if type(effect) is Samples:
                got += len(effect.samples)
            else:
                raise AssertionError(f"unexpected effect in a clean stream: {effect!r}")
    clock[0] = now
    assert got == n * len(data), got
    return len(data)


def _decode_only(data: list[bytes]) -> int:
    for raw in data:
        decode_payload(raw)
    return len(data)


def run(quick: bool) -> list[Figure]:
    rng = random.Random(20261202)
    figures: list[Figure] = []
    rounds = 3 if quick else 15
    for n in (10, 100) if quick else (10, 100, 1000):
        nbirth, dbirth, data = _stream(n, rng)
        host = Host(HostConfig(host_id="bench", role="passive"))
        host.will(T0)
        host.connected(T0)
        host.receive(NODE, nbirth, T0)
        host.receive(DEVICE, dbirth, T0)
        clock = [T0]
        best = _best(
            {
                "host": partial(_through_host, host, data, n, clock),
                "decode": partial(_decode_only, data),
            },
            rounds,
        )
        host_rate = n / best["host"]
        decode_rate = n / best["decode"]
        extra_ns = (best["host"] - best["decode"]) / n * 1e9
        figures += [
            Figure(SUITE, f"decode_payload alone, {n}-metric DDATA", decode_rate, "samples/s"),
            Figure(SUITE, f"Host.receive, {n}-metric DDATA (alias only)", host_rate, "samples/s",
                   ceiling=decode_rate, ceiling_name="decode alone",
                   note=f"host adds {extra_ns:.0f} ns/sample on top of decoding "
                        f"({best['host'] / n * 1e9:.0f} vs {best['decode'] / n * 1e9:.0f} ns)"),
        ]  # fmt: skip
    return figures


if __name__ == "__main__":
    for figure in run(quick=False):
        print(figure.line())
