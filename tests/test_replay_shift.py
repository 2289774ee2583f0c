"""replay --shift-time: Sparkplug payload, metric, template member and STATE timestamps made live."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

from tests.services import MqttBroker
from tests.test_replay_broker import Subscriber, run_cli, wait_for
from uns_bridge.capture import CaptureRecord, JsonlWriter
from uns_bridge.replay import TimeShifter
from uns_bridge.sparkplug.datatypes import DataType
from uns_bridge.sparkplug.payload import decode_payload, encode_payload
from uns_bridge.sparkplug.values import Metric, Payload, Template

OLD = 1_767_225_600_000  # 2026-01-01


def sample_payload(t: int) -> bytes:
    motor = Template(metrics=(Metric("Speed", None, t - 5, DataType.Float, 1450.0),), template_ref="Motor")
    return encode_payload(
        Payload(
            t,
            (
                Metric(None, 7, t - 10, DataType.Int32, 3),
                Metric("Motor", 8, t - 20, DataType.Template, motor),
                Metric("NoTime", 9, None, DataType.Int32, 1),
            ),
            seq=4,
        ),
        omit_alias_datatypes=True,  # as DATA usually travels: the shifted copy must keep that shape
    )


def test_time_shifter_moves_every_timestamp_with_the_replay_clock() -> None:
    shifter = TimeShifter(t0_ms=OLD, start_ms=2_000_000_000_000, speed=2.0)
    record = CaptureRecord((OLD + 1000) / 1000, "spBv1.0/G/DDATA/N/D", sample_payload(OLD + 1000))
    shifted, ok = shifter.record(record)
    assert ok
    payload = decode_payload(shifted)
    assert payload.timestamp == 2_000_000_000_500 and payload.seq == 4
    assert payload.metrics[0].timestamp == 2_000_000_000_495
    template = payload.metrics[1].value
    assert isinstance(template, Template) and template.metrics[0].timestamp == 2_000_000_000_498
    assert payload.metrics[2].timestamp is None
    assert (
        payload.metrics[0].value == 3
        and payload.metrics[0].datatype is None
        and payload.metrics[1].alias == 8
    )
    state, ok = shifter.record(
        CaptureRecord(OLD / 1000, "spBv1.0/STATE/h", b'{"online":true,"timestamp":%d}' % OLD)
    )
    assert ok and json.loads(state) == {"online": True, "timestamp": 2_000_000_000_000}
    garbage, ok = shifter.record(CaptureRecord(OLD / 1000, "spBv1.0/G/NDATA/N", b"\xff\xff\xff"))
    assert not ok and garbage == b"\xff\xff\xff"
    other, ok = shifter.record(CaptureRecord(OLD / 1000, "plain/topic", b"{}"))
    assert ok and other == b"{}"


async def test_replay_shift_time_to_the_broker_looks_live(
    tmp_path: Path, mqtt_broker: MqttBroker, group_id: str
) -> None:
    path = tmp_path / "old.jsonl"
    with JsonlWriter(path) as writer:
        for i in range(5):
            t = OLD + i * 200
            writer.write(CaptureRecord(t / 1000, f"spBv1.0/{group_id}/DDATA/N/D", sample_payload(t)))
    sub = Subscriber(mqtt_broker, f"spBv1.0/{group_id}/#")
    try:
        await wait_for(lambda: sub.subscribed)
        before = time.time() * 1000
        result = await run_cli("replay", str(path), "--to", mqtt_broker.url, "--shift-time")
        after = time.time() * 1000
        assert result.returncode == 0, result.stderr
        await wait_for(lambda: len(sub.messages) == 5)
    finally:
        sub.close()
    stamps = [decode_payload(p).timestamp for _, p, _ in sub.messages]
    assert all(s is not None and before - 1000 <= s <= after + 1000 for s in stamps), (before, stamps, after)
    assert [b - a for a, b in itertools.pairwise(stamps)] == [200] * 4  # spacing kept at speed 1
    await asyncio.sleep(0)
