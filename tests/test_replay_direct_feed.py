"""The replay feed loop: timers checked once per capture time give exactly the per-message result.

``feed_capture`` skips the timer check for a message with the same capture time as the one before
(and yields to the event loop now and then). These tests run the real host core and placer against a
recording sink and compare every effect, in order, with the plain loop that checks the timers before
every message -- on fleet captures whose faults make reorder timeouts and deferred rebirths fire.
The CLI's missing-database error is checked as a user sees it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from uns_bridge.app import host_config
from uns_bridge.capture import CaptureRecord
from uns_bridge.config import Config
from uns_bridge.host.effects import AnomalyKind, Effect, RebirthRequested
from uns_bridge.host.host import Host
from uns_bridge.namespace import Namespace
from uns_bridge.pipeline import Pipeline
from uns_bridge.placement import Placer
from uns_bridge.replay_direct import feed_capture, run_timers
from uns_bridge.simulator import FleetGenerator

T0_MS = 1_767_225_600_000


class Recorder:
    """A sink that keeps the repr of every effect it is handed, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, effects: Sequence[Effect]) -> None:
        self.seen.extend(repr(e) for e in effects)

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


def pipeline(config: Config) -> tuple[Pipeline, Recorder]:
    sink = Recorder()
    placer = Placer(Namespace.from_config(config.namespace), prefix=config.uns.prefix)
    return Pipeline(Host(host_config(config)), placer, sink, None), sink


def capture(seed: int, jitter: bool) -> list[CaptureRecord]:
    fleet = FleetGenerator(
        nodes=3, devices=2, metrics=4, rate=20, seed=seed,
        faults={"gap": 0.08, "reorder": 0.1, "death": 0.02, "devicedeath": 0.03, "duplicate": 0.05},
    )  # fmt: skip
    records = []
    for k, m in enumerate(fleet.messages(T0_MS, 400)):
        t_ms = m.t_ms + (k % 3 if jitter else 0)  # jitter: some times distinct, some repeated, some back
        records.append(CaptureRecord(t_ms / 1000, m.topic, m.payload, m.qos, m.retain))
    return records


async def per_message(config: Config, records: list[CaptureRecord]) -> list[str]:
    """The reference: timers run before every single message."""
    pipe, sink = pipeline(config)
    for k, record in enumerate(records):
        if k == 0:
            await pipe.connected(record.t_ms)
        await run_timers(pipe, record.t_ms)
        await pipe.feed(record.topic, record.payload, record.t_ms)
    await run_timers(pipe, None)
    return sink.seen


async def fed(config: Config, records: list[CaptureRecord]) -> list[str]:
    pipe, sink = pipeline(config)
    assert await feed_capture(pipe, records, config) == len(records)
    return sink.seen


@pytest.mark.parametrize("jitter", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_feed_capture_equals_checking_timers_before_every_message(seed: int, jitter: bool) -> None:
    config = Config()
    records = capture(seed, jitter)
    expected = asyncio.run(per_message(config, records))
    got = asyncio.run(fed(config, records))
    # the capture must exercise the timers, or the comparison proves nothing
    assert any(f"kind=<AnomalyKind.{AnomalyKind.SEQ_GAP.name}" in e for e in expected), "no reorder timeout"
    assert any(e.startswith(RebirthRequested.__name__) for e in expected)
    assert len(got) == len(expected)
    assert got == expected


def test_zero_intervals_check_the_timers_before_every_message() -> None:
    base = Config()
    config = replace(base, host=replace(base.host, reorder_timeout_ms=0, rebirth_interval_ms=0))
    records = capture(4, jitter=False)
    assert asyncio.run(fed(config, records)) == asyncio.run(per_message(config, records))


def test_missing_database_names_the_config_key(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "UNS_DATABASE_URL" and k != "UNS_CONFIG"}
    env["COLUMNS"] = "200"
    done = subprocess.run(
        [sys.executable, "-m", "uns_bridge", "replay", str(path), "--direct"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "--database URL, UNS_DATABASE_URL or [database] url in the config file" in out, out
