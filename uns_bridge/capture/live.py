"""Talking to a broker for captures: the MQTT URL, recording a live subscription, publishing a replay.

Kept free of the Sparkplug codec: recording stores bytes as they came, publishing sends bytes as given
(timestamp shifting happens before, in :mod:`uns_bridge.replay`).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiomqtt

from uns_bridge.capture.jsonl import CaptureRecord, JsonlWriter

DEFAULT_URL = "mqtt://127.0.0.1:1883"


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None


def parse_mqtt_url(url: str) -> BrokerAddress:
    """``mqtt://[user@]host[:port]`` or ``mqtts://...``; :class:`ValueError` with the reason otherwise.

    A password never comes from the URL's command line: it is read from ``UNS_MQTT_PASSWORD``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"{url!r}: the scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    if parts.password:
        raise ValueError(f"{url!r}: put the password in UNS_MQTT_PASSWORD, not in the URL")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    return BrokerAddress(parts.hostname, port, tls, unquote(parts.username) if parts.username else None)


@asynccontextmanager
async def connect(url: str, client_id_prefix: str) -> AsyncIterator[aiomqtt.Client]:
    address = parse_mqtt_url(url)
    client = aiomqtt.Client(
        address.host,
        address.port,
        identifier=f"{client_id_prefix}-{uuid.uuid4().hex[:8]}",
        username=address.username,
        password=os.environ.get("UNS_MQTT_PASSWORD") if address.username else None,
        tls_context=ssl.create_default_context() if address.tls else None,
        clean_session=True,
        max_queued_outgoing_messages=10_000,
    )
    async with client:
        yield client


@dataclass
class RecordStats:
    messages: int = 0
    bytes: int = 0
    started: float = 0.0


async def record(
    url: str,
    out: Path,
    filters: Iterable[str],
    *,
    duration: float | None = None,
    count: int | None = None,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[RecordStats], None] | None = None,
    on_subscribed: Callable[[], None] | None = None,
) -> RecordStats:
    """Subscribe to ``filters`` (QoS 1) and write every message to ``out`` until a limit or ``stop``.

    The file is flushed about once a second and closed cleanly however the loop ends, so the last line
    is never torn.
    """
    stop = stop or asyncio.Event()
    stats = RecordStats(started=time.time())
    deadline = None if duration is None else time.monotonic() + duration
    with JsonlWriter(out) as writer:
        async with connect(url, "uns-bridge-record") as client:
            for topic_filter in filters:
                await client.subscribe(topic_filter, qos=1)
            if on_subscribed is not None:
                on_subscribed()
            last_flush = time.monotonic()
            messages = aiter(client.messages)
            stopper = asyncio.ensure_future(stop.wait())
            try:
                while not stop.is_set() and (count is None or stats.messages < count):
                    timeout = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                    if timeout <= 0:
                        break
                    getter = asyncio.ensure_future(anext(messages))
                    done, _ = await asyncio.wait(
                        {getter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter not in done:
                        getter.cancel()
                        await asyncio.gather(getter, return_exceptions=True)
                    else:
                        message = getter.result()
                        payload = message.payload
                        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
                        writer.write(
                            CaptureRecord(
                                time.time(),
                                str(message.topic),
                                bytes(data),
                                message.qos,
                                bool(message.retain),
                            )
                        )
                        stats.messages += 1
                        stats.bytes += len(data)
                    now = time.monotonic()
                    if now - last_flush >= 1.0:
                        writer.flush()
                        last_flush = now
                        if on_progress is not None:
                            on_progress(stats)
            finally:
                stopper.cancel()
                await asyncio.gather(stopper, return_exceptions=True)
    if on_progress is not None:
        on_progress(stats)
    return stats
