"""UNS contract speed: rendering a value's JSON, escaping topic levels, cached metric topics.

Each figure stands next to a ceiling measured in the same run: a bare ``orjson.dumps`` of a minimal
``{"value", "timestamp"}`` dict for rendering, a plain dict lookup for cached topics, and an f-string
join for building a topic from already-valid levels.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from tests.benchmarks._figures import Figure
from uns_bridge.config import NamespaceConfig, NamespaceRule
from uns_bridge.host.effects import MetricInfo, Quality, Sample
from uns_bridge.namespace import Namespace
from uns_bridge.placement import Placer
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.uns.contract import ValueRenderer, escape_level, metric_topic

SUITE = "uns"


def _rate(n: int, work: Callable[[], object]) -> float:
    """Calls per second of ``work`` (best of three runs of ``n`` calls)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            work()
        best = min(best, time.perf_counter() - started)
    return n / best


def _loop_rate(items: list[object], work: Callable[[object], object]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for item in items:
            work(item)
        best = min(best, time.perf_counter() - started)
    return len(items) / best


def _naive(sample: Sample) -> bytes:
    info = sample.metric
    return orjson.dumps(
        {
            "value": sample.value,
            "timestamp": sample.timestamp,
            "quality": sample.quality,
            "datatype": "Double",
            "unit": info.unit,
            "source": {"group": info.group, "node": info.node, "device": info.device, "metric": info.name},
            "seq": 7,
        }
    )


def run(quick: bool) -> list[Figure]:
    n = 20_000 if quick else 300_000
    figures: list[Figure] = []
    renderer = ValueRenderer()
    cases: list[tuple[str, int, object]] = [
        ("Double", DataType.Double, 21.734),
        ("Int64", DataType.Int64, -(2**62)),
        ("String", DataType.String, "RUNNING"),
        ("Boolean", DataType.Boolean, True),
        ("Double NaN", DataType.Double, float("nan")),
    ]
    for label, datatype, value in cases:
        info = MetricInfo("Plant1-Assembly", "Line1-PLC", "Press1", "Motor/Speed", datatype, unit="rpm")
        samples = [Sample(info, 1_700_000_000_000 + i, value, Quality.GOOD) for i in range(n)]
        # the ceiling: the least any renderer must do, a bare orjson.dumps of {value, timestamp}, called the
        # same way (one Python call per sample) so both sides pay the same loop overhead
        ceiling = _loop_rate(samples, lambda s: orjson.dumps({"value": s.value, "timestamp": s.timestamp}))  # type: ignore[attr-defined]
        rate = _loop_rate(samples, lambda s: renderer.render(s, 7))  # type: ignore[arg-type]
        figures.append(
            Figure(
                SUITE,
                f"render_value {label} (full payload + seq)",
                rate,
                "values/s",
                ceiling=ceiling,
                ceiling_name="orjson.dumps {value,timestamp}",
                note=f"{len(renderer.render(samples[0], 7))} bytes",
            )
        )
        if label == "Double":
            figures.append(
                Figure(
                    SUITE,
                    "naive: orjson.dumps of the whole payload dict",
                    _loop_rate(samples, _naive),  # type: ignore[arg-type]
                    "values/s",
                    ceiling=ceiling,
                    ceiling_name="orjson.dumps {value,timestamp}",
                    note="for scale: same keys, but NaN and bytes not handled (not contract-correct)",
                )
            )

    plain = [f"Metric{i}" for i in range(1000)]
    odd = [f"a/b+{i}#" for i in range(1000)]
    figures.append(
        Figure(
            SUITE,
            "escape_level, names needing no escape",
            _loop_rate(plain * (n // 1000), escape_level),  # type: ignore[arg-type]
            "levels/s",
            ceiling=_loop_rate(plain * (n // 1000), str),
            ceiling_name="str() of the same",
        )
    )
    figures.append(
        Figure(
            SUITE,
            "escape_level, names with / + #",
            _loop_rate(odd * (n // 1000), escape_level),  # type: ignore[arg-type]
            "levels/s",
            ceiling=_loop_rate(odd * (n // 1000), str),
            ceiling_name="str() of the same",
        )
    )
    base = "uns/AcmeMotors/Detroit/Assembly/Line1/Station1/Press1"
    names = [f"Motor/Speed{i}" for i in range(1000)] * (n // 1000)
    figures.append(
        Figure(
            SUITE,
            "metric_topic (uncached) with folders",
            _loop_rate(names, lambda name: metric_topic(base, name)),  # type: ignore[arg-type]
            "topics/s",
            ceiling=_loop_rate(names, lambda name: f"{base}/{name}"),
            ceiling_name="f-string join",
        )
    )

    rule = NamespaceRule(
        "lines",
        {"group": "Plant{p}-{area}", "node": "Line{line}-PLC"},
        {"site": "Plant{p}", "area": "{area}", "line": "Line{line}", "equipment": "{device}"},
    )
    placer = Placer(Namespace.from_config(NamespaceConfig(rules=(rule,))), prefix="uns")
    infos = [
        MetricInfo("Plant1-Assembly", f"Line{i % 10}-PLC", f"Press{i % 7}", f"Motor/M{i}", DataType.Double)
        for i in range(1000)
    ]
    for info in infos:
        placer.metric_topic(info)
    table = {info: placer.metric_topic(info) for info in infos}
    cached = infos * (n // 1000)
    figures.append(
        Figure(
            SUITE,
            "Placer.metric_topic (cached)",
            _loop_rate(cached, placer.metric_topic),  # type: ignore[arg-type]
            "lookups/s",
            ceiling=_loop_rate(cached, table.__getitem__),
            ceiling_name="dict lookup",
        )
    )
    fresh = [
        MetricInfo("Plant1-Assembly", f"Line{i % 50}-PLC", f"Press{i % 9}", f"Motor/M{i}", DataType.Double)
        for i in range(n // 10)
    ]
    cold = Placer(Namespace.from_config(NamespaceConfig(rules=(rule,))), prefix="uns")
    started = time.perf_counter()
    for info in fresh:
        cold.metric_topic(info)
    elapsed = time.perf_counter() - started
    figures.append(
        Figure(SUITE, "Placer.metric_topic (first time, 450 entities)", len(fresh) / elapsed, "topics/s")
    )
    return figures
