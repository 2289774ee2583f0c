"""Operations: Prometheus text metrics and a health endpoint, served on the event loop.

:class:`BridgeMetrics` keeps plain integer counters (cheap on the hot path) and exposes them, with the
gauges registered by the other parts (queue depths, connectivity, writer counters), through a
collector on a private :class:`prometheus_client.CollectorRegistry`. :class:`MetricsServer` answers

* ``GET /metrics``: Prometheus text exposition format;
* ``GET /health``: JSON ``{"status": "ok" | "degraded", "checks": {...}, ...}``, HTTP 200 when every
  check passes (MQTT session connected, database reachable), 503 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from uns_bridge.host.effects import (
    Anomaly,
    AnomalyKind,
    DeviceOffline,
    DeviceOnline,
    Effect,
    MetricsDefined,
    MetricsStale,
    NodeOffline,
    NodeOnline,
    RebirthRequested,
    Samples,
)

log = logging.getLogger(__name__)

_PREFIX = "uns_bridge_"


class BridgeMetrics:
    """Counters of the whole bridge; ``observe(effects)`` counts what the host decided."""

    def __init__(self) -> None:
        self.started = time.time()
        self.messages = 0
        self.message_bytes = 0
        self.samples = 0
        self.metrics_defined = 0
        self.node_births = 0
        self.node_deaths = 0
        self.device_births = 0
        self.device_deaths = 0
        self.stale_metrics = 0
        self.rebirth_requests = 0
        self.seq_gaps = 0
        self.dead_letters = 0
        self.anomalies: dict[str, int] = {}
        self.sink_errors = 0
        self.host_errors = 0
        self.connects = 0
        self.connection_losses = 0
        #: name -> (help, callable giving the current value)
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        #: name -> (help, callable giving a monotonically growing total)
        self._counters: dict[str, tuple[str, Callable[[], float]]] = {}
        #: name -> callable giving True when healthy
        self._checks: dict[str, Callable[[], bool]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))

    # --- hot path ---
    def message(self, size: int) -> None:
        self.messages += 1
        self.message_bytes += size

    def observe(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            kind = type(effect)
            if kind is Samples:
                self.samples += len(effect.samples)  # type: ignore[union-attr]
            elif kind is MetricsDefined:
                self.metrics_defined += len(effect.metrics)  # type: ignore[union-attr]
            elif kind is MetricsStale:
                self.stale_metrics += len(effect.metrics)  # type: ignore[union-attr]
            elif kind is NodeOnline:
                self.node_births += 1
            elif kind is NodeOffline:
                self.node_deaths += 1
            elif kind is DeviceOnline:
                self.device_births += 1
            elif kind is DeviceOffline:
                self.device_deaths += 1
            elif kind is RebirthRequested:
                self.rebirth_requests += 1
            elif isinstance(effect, Anomaly):
                self.anomalies[effect.kind.value] = self.anomalies.get(effect.kind.value, 0) + 1
                if effect.kind is AnomalyKind.SEQ_GAP:
                    self.seq_gaps += 1
                if effect.dead_letter:
                    self.dead_letters += 1

    # --- registration by the other parts ---
    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Expose ``uns_bridge_<name>`` as a gauge read at scrape time."""
        self._gauges[name] = (help_text, read)

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Expose ``uns_bridge_<name>_total`` read at scrape time (e.g. the writer's own counters)."""
        self._counters[name] = (help_text, read)

    def check(self, name: str, healthy: Callable[[], bool]) -> None:
        """Add a health check (``/health`` answers 503 while any check is false)."""
        self._checks[name] = healthy

    # --- reading ---
    def counters(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "message_bytes": self.message_bytes,
            "samples": self.samples,
            "metrics_defined": self.metrics_defined,
            "node_births": self.node_births,
            "node_deaths": self.node_deaths,
            "device_births": self.device_births,
            "device_deaths": self.device_deaths,
            "stale_metrics": self.stale_metrics,
            "rebirth_requests": self.rebirth_requests,
            "seq_gaps": self.seq_gaps,
            "dead_letters": self.dead_letters,
            "sink_errors": self.sink_errors,
            "host_errors": self.host_errors,
            "connects": self.connects,
            "connection_losses": self.connection_losses,
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, bool] = {}
        for name, healthy in self._checks.items():
            try:
                checks[name] = bool(healthy())
            except Exception:
                checks[name] = False
        ok = all(checks.values())
        body: dict[str, Any] = {
            "status": "ok" if ok else "degraded",
            "checks": checks,
            "uptime_s": round(time.time() - self.started, 1),
            "messages": self.messages,
            "samples": self.samples,
        }
        return ok, body

    def render(self) -> bytes:
        return generate_latest(self.registry)


_HELP = {
    "messages": "MQTT messages received by the Sparkplug session",
    "message_bytes": "payload bytes received by the Sparkplug session",
    "samples": "metric values decoded (births and data)",
    "metrics_defined": "metrics defined by births",
    "node_births": "edge node births (NBIRTH)",
    "node_deaths": "edge node deaths (NDEATH, connection loss, shutdown)",
    "device_births": "device births (DBIRTH)",
    "device_deaths": "device deaths",
    "stale_metrics": "metrics turned STALE",
    "rebirth_requests": "rebirth requests (NCMD) sent",
    "seq_gaps": "Sparkplug seq gaps detected",
    "dead_letters": "messages kept as dead letters",
    "sink_errors": "errors raised by a sink (store or UNS) while handling effects",
    "host_errors": "messages the host core failed on (a bug; the message is skipped)",
    "connects": "successful connections of the Sparkplug session",
    "connection_losses": "lost connections of the Sparkplug session",
}


class _Collector(Collector):
    def __init__(self, metrics: BridgeMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._m
        for name, value in m.counters().items():
            yield CounterMetricFamily(_PREFIX + name, _HELP.get(name, name), value=value)
        anomalies = CounterMetricFamily(_PREFIX + "anomalies", "protocol anomalies by kind", labels=["kind"])
        for kind, value in sorted(m.anomalies.items()):
            anomalies.add_metric([kind], value)
        yield anomalies
        for name, (help_text, read) in m._counters.items():
            with contextlib.suppress(Exception):
                yield CounterMetricFamily(_PREFIX + name, help_text, value=float(read()))
        for name, (help_text, read) in m._gauges.items():
            with contextlib.suppress(Exception):
                yield GaugeMetricFamily(_PREFIX + name, help_text, value=float(read()))
        up = GaugeMetricFamily(_PREFIX + "up", "health checks (1 healthy, 0 not)", labels=["check"])
        _, body = m.health()
        for name, healthy in body["checks"].items():
            up.add_metric([name], 1.0 if healthy else 0.0)
        yield up


class MetricsServer:
    """A small HTTP/1.1 server for ``/metrics`` and ``/health`` on the running event loop."""

    def __init__(self, metrics: BridgeMetrics, host: str = "127.0.0.1", port: int = 9780) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror} (set http.port)"
            ) from None
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("metrics on %s/metrics, health on %s/health", self.url, self.url)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, content_type, body = self._route(method, path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()
        if path == "/health":
            ok, body = self.metrics.health()
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", orjson.dumps(body)
        if path == "/":
            return "200 OK", "text/plain", b"uns-bridge: /metrics /health\n"
        return "404 Not Found", "text/plain", b"not found\n"
