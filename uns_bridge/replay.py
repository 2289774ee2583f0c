"""Replaying captures: to a broker with the original timing (scaled), optionally made to look live.

``--shift-time`` maps every time of the capture onto now with the same clock that paces the replay:
a capture time ``t`` (ms) becomes ``start + (t - t0) / speed`` where ``t0`` is the first message's
receive time and ``start`` the wall clock when the pass began (``speed`` 1 with ``--max-speed``). It is
applied to the Sparkplug payload timestamp, every metric timestamp (template members included) and the
``timestamp`` of STATE messages, so a host sees data that could have been produced right now. Only those
fields change: the payload is edited at the protobuf level, so every other byte of meaning (datatypes left
out of DATA metrics, unknown fields, the exact wire types) stays as captured. Payloads that do not parse
are sent unchanged (and counted).

The direct replay into the pipeline lives in :mod:`uns_bridge.replay_direct`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uns_bridge.capture.jsonl import CaptureRecord, Problem, open_capture
from uns_bridge.capture.live import connect


@dataclass
class ReplayStats:
    messages: int = 0
    passes: int = 0
    #: payloads --shift-time could not decode (sent unchanged)
    unshifted: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    started: float = 0.0


def count_records(path: Path, **options: Any) -> int:
    """Records in a capture (one pass over it), for progress totals."""
    reader = open_capture(path, **options)
    return sum(1 for _ in reader)


class TimeShifter:
    """Maps capture times (ms) onto wall-clock times (ms): ``start + (t - t0) / speed``."""

    def __init__(self, t0_ms: int, start_ms: int, speed: float) -> None:
        self.t0_ms = t0_ms
        self.start_ms = start_ms
        self.speed = speed

    def __call__(self, t_ms: int) -> int:
        return self.start_ms + round((t_ms - self.t0_ms) / self.speed)

    def record(self, record: CaptureRecord) -> tuple[bytes, bool]:
        """The payload of a record with its times shifted; ``False`` when it could not be shifted."""
        topic = record.topic
        if topic.startswith("spBv1.0/STATE/") or topic.startswith("STATE/"):
            return self._state(record.payload)
        if not topic.startswith("spBv1.0/"):
            return record.payload, True
        from google.protobuf.message import DecodeError

        from uns_bridge.sparkplug import sparkplug_b_pb2 as pb

        message = pb.Payload()
        try:
            message.ParseFromString(record.payload)
        except (DecodeError, ValueError):
            return record.payload, False
        if message.HasField("timestamp"):
            message.timestamp = max(0, self(message.timestamp))
        for metric in message.metrics:
            self._metric(metric)
        return message.SerializeToString(), True

    def _metric(self, metric: Any) -> None:
        """Shift one protobuf metric in place (and the members of a template value, recursively)."""
        if metric.HasField("timestamp"):
            metric.timestamp = max(0, self(metric.timestamp))
        if metric.HasField("template_value"):
            for member in metric.template_value.metrics:
                self._metric(member)

    def _state(self, payload: bytes) -> tuple[bytes, bool]:
        try:
            obj = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return payload, payload in (b"ONLINE", b"OFFLINE")
        if isinstance(obj, dict) and isinstance(obj.get("timestamp"), int):
            obj["timestamp"] = self(obj["timestamp"])
            return json.dumps(obj, separators=(",", ":")).encode(), True
        return payload, False


async def replay_to_broker(
    path: Path,
    url: str,
    *,
    speed: float | None = 1.0,
    loop: bool = False,
    shift_time: bool = False,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[ReplayStats], None] | None = None,
    reader_options: dict[str, Any] | None = None,
) -> ReplayStats:
    """Publish a capture to a broker. ``speed=None``: as fast as possible. Returns what was sent."""
    stop = stop or asyncio.Event()
    stats = ReplayStats(started=time.time())
    options = reader_options or {}
    async with connect(url, "uns-bridge-replay") as client:
        while not stop.is_set():
            reader = open_capture(path, **options)
            records: Iterator[CaptureRecord] = iter(reader)
            wall0: float | None = None
            shifter: TimeShifter | None = None
            t0 = 0.0
            last_report = 0.0
            for record in records:
                if stop.is_set():
                    break
                if wall0 is None:
                    wall0, t0 = time.monotonic(), record.t
                    shifter = TimeShifter(record.t_ms, round(time.time() * 1000), speed or 1.0)
                if speed is not None:
                    delay = wall0 + (record.t - t0) / speed - time.monotonic()
                    if delay > 0:
                        try:
                            await asyncio.wait_for(stop.wait(), delay)
                            break
                        except TimeoutError:
                            pass
                payload = record.payload
                if shift_time and shifter is not None:
                    payload, ok = shifter.record(record)
                    stats.unshifted += not ok
                await client.publish(record.topic, payload, qos=record.qos, retain=record.retain)
                stats.messages += 1
                now = time.monotonic()
                if on_progress is not None and now - last_report > 0.1:
                    last_report = now
                    on_progress(stats)
                if speed is None and stats.messages % 500 == 0:
                    await asyncio.sleep(0)
            stats.passes += 1
            if stats.passes == 1:
                stats.problems = list(reader.problems.kept)
                stats.problem_count = reader.problems.count
            if not loop or wall0 is None:
                break
    if on_progress is not None:
        on_progress(stats)
    return stats
