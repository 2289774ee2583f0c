"""The Prometheus text and /health endpoints, served on the event loop from a private registry."""

from __future__ import annotations

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.bridge_helpers import http_get
from uns_bridge.host.effects import (
    Anomaly,
    AnomalyKind,
    MetricInfo,
    NodeOnline,
    RebirthRequested,
    Sample,
    Samples,
)
from uns_bridge.metrics import BridgeMetrics, MetricsServer


def _values(text: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


async def test_metrics_count_effects_and_health_follows_checks() -> None:
    metrics = BridgeMetrics()
    database_up = [True]
    metrics.check("database", lambda: database_up[0])
    metrics.gauge("writer_queue_depth", "rows waiting", lambda: 17)
    metrics.counter("samples_written", "rows committed", lambda: 5)
    info = MetricInfo("G", "N", None, "Temp", 10)
    metrics.message(40)
    metrics.observe(
        [
            NodeOnline("G", "N", 0, 1),
            Samples((Sample(info, 1, 1.5), Sample(info, 2, 2.5))),
            Anomaly(AnomalyKind.SEQ_GAP, "gap", 1, "t"),
            Anomaly(AnomalyKind.DECODE_ERROR, "bad", 1, "t", dead_letter=True),
            RebirthRequested("G", "N", 1, "gap"),
        ]
    )
    server = MetricsServer(metrics, port=0)
    await server.start()
    try:
        status, body = await http_get(server.port, "/metrics")
        assert status == 200
        values = _values(body)
        assert values["uns_bridge_messages_total"] == 1
        assert values["uns_bridge_message_bytes_total"] == 40
        assert values["uns_bridge_samples_total"] == 2
        assert values["uns_bridge_seq_gaps_total"] == 1
        assert values["uns_bridge_dead_letters_total"] == 1
        assert values["uns_bridge_rebirth_requests_total"] == 1
        assert values["uns_bridge_node_births_total"] == 1
        assert values["uns_bridge_anomalies_total{kind=decode_error}"] == 1
        assert values["uns_bridge_writer_queue_depth"] == 17
        assert values["uns_bridge_samples_written_total"] == 5
        assert values["uns_bridge_up{check=database}"] == 1

        status, body = await http_get(server.port, "/health")
        assert status == 200
        assert orjson.loads(body)["status"] == "ok"
        database_up[0] = False
        status, body = await http_get(server.port, "/health")
        assert status == 503
        health = orjson.loads(body)
        assert health["status"] == "degraded" and health["checks"] == {"database": False}

        assert (await http_get(server.port, "/nope"))[0] == 404
        assert (await http_get(server.port, "/metrics", "POST"))[0] == 405
    finally:
        await server.stop()


async def test_a_check_that_raises_counts_as_unhealthy() -> None:
    metrics = BridgeMetrics()

    def broken() -> bool:
        raise RuntimeError("no")

    metrics.check("broken", broken)
    ok, body = metrics.health()
    assert not ok and body["checks"] == {"broken": False}


async def test_port_taken_gives_a_clear_error() -> None:
    first = MetricsServer(BridgeMetrics(), port=0)
    await first.start()
    try:
        second = MetricsServer(BridgeMetrics(), port=first.port)
        try:
            await second.start()
        except OSError as exc:
            assert "http.port" in str(exc) and str(first.port) in str(exc)
        else:
            await second.stop()
            raise AssertionError("a taken port must fail")
    finally:
        await first.stop()
