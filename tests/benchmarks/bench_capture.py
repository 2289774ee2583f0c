"""Capture throughput: JSON Lines write/read per compression, pcap import, replay --direct.

Each figure stands next to a ceiling measured in the same run on the same data:
- write/read: writing/reading the same bytes as plain lines without encoding/parsing,
- pcap import: iterating the frames with dpkt and nothing else,
- replay --direct samples/s: raw binary COPY of as many narrow rows into PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from tests.benchmarks._figures import Figure
from uns_bridge.capture import CaptureRecord, JsonlReader, JsonlWriter

SUITE = "capture"
T0 = 1_764_700_000.0


def _records(n: int) -> list[CaptureRecord]:
    payload = bytes(range(256))[:120]
    return [
        CaptureRecord(T0 + i / 1000, f"spBv1.0/Plant1-Assembly/DDATA/Line1-PLC/Press{i % 7}", payload)
        for i in range(n)
    ]


def _jsonl(tmp: Path, n: int) -> list[Figure]:
    figures = []
    records = _records(n)
    for suffix in (".jsonl", ".jsonl.gz", ".jsonl.zst"):
        path = tmp / f"bench{suffix}"
        started = time.perf_counter()
        with JsonlWriter(path) as writer:
            for record in records:
                writer.write(record)
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        count = sum(1 for _ in JsonlReader(path))
        read_s = time.perf_counter() - started
        assert count == n
        # ceilings: the same lines, no JSON/base64 work
        lines = (tmp / "bench.jsonl").read_bytes().splitlines(keepends=True)
        raw = tmp / f"raw{suffix}"
        started = time.perf_counter()
        with JsonlWriter(raw) as raw_writer:  # the same compression, bytes written as they are
            for line in lines:
                raw_writer._buffer.append(line)
                raw_writer._buffered += len(line)
                if raw_writer._buffered >= 1 << 16:
                    raw_writer._drain()
        raw_write_s = time.perf_counter() - started
        from uns_bridge.capture.jsonl import _open_binary_read

        started = time.perf_counter()
        with _open_binary_read(raw) as fh:
            raw_count = sum(1 for _ in fh)
        raw_read_s = time.perf_counter() - started
        assert raw_count == n
        figures.append(
            Figure(SUITE, f"write {suffix}", n / write_s, "msg/s", n / raw_write_s, "raw line write")
        )
        figures.append(Figure(SUITE, f"read {suffix}", n / read_s, "msg/s", n / raw_read_s, "raw line read"))
    return figures


def _pcap(tmp: Path, n: int) -> list[Figure]:
    import dpkt

    from tests.capture_helpers import Side, TcpConversation, connect, publish, write_pcap
    from uns_bridge.capture.pcap import PcapReader

    conv = TcpConversation(Side("10.0.0.1", 40000, 1), Side("10.0.0.2", 1883, 1))
    conv.handshake(T0)
    conv.send(T0, True, connect())
    pending = b""
    for i in range(n):
        pending += publish(f"spBv1.0/G/DDATA/N/D{i % 5}", bytes(100))
        if len(pending) > 1400 or i == n - 1:  # MSS-sized segments, PUBLISHes split across them
            conv.send(T0 + i / 1000, True, pending[:1400])
            pending = pending[1400:]
    while pending:
        conv.send(T0 + n / 1000, True, pending[:1400])
        pending = pending[1400:]
    path = tmp / "bench.pcap"
    write_pcap(path, conv.frames)
    started = time.perf_counter()
    reader = PcapReader(path)
    count = sum(1 for _ in reader)
    import_s = time.perf_counter() - started
    assert count == n, (count, reader.problems.kept[:3])
    started = time.perf_counter()
    with open(path, "rb") as fh:
        frames = sum(1 for _ in dpkt.pcap.Reader(fh))
    raw_s = time.perf_counter() - started
    return [
        Figure(
            SUITE,
            "pcap import (PUBLISH)",
            n / import_s,
            "msg/s",
            n / raw_s,
            "dpkt frame iteration",
            note=f"{frames} frames",
        )
    ]


async def _direct(tmp: Path, rounds: int) -> list[Figure]:
    from tests import services
    from tests.benchmarks._harness import bench_database
    from tests.benchmarks.bench_ceilings import copy_ceiling, same_rows
    from uns_bridge.config import Config
    from uns_bridge.replay_direct import replay_direct
    from uns_bridge.simulator import FleetGenerator

    fleet = FleetGenerator(nodes=2, devices=5, metrics=11, rate=10, seed=1)
    path = tmp / "direct.jsonl"
    with JsonlWriter(path) as writer:
        for m in fleet.messages(int(T0 * 1000), rounds):
            writer.write(CaptureRecord(m.t_ms / 1000, m.topic, m.payload, m.qos, m.retain))
    admin = services.postgres_admin_dsn()
    async with bench_database(admin) as (dsn, _name):
        result = await replay_direct(path, Config(), dsn)
    async with bench_database(admin) as (dsn, name):
        copy_rate, cpu = await copy_ceiling(dsn, name, same_rows(max(result.samples, 10_000)), writers=1)
    return [
        Figure(
            SUITE,
            "replay --direct",
            result.samples / result.seconds,
            "samples/s",
            copy_rate,
            "raw COPY (1 conn)",
            note=f"{result.messages} msgs, {result.samples} samples; COPY {cpu}",
        )
    ]


def run(quick: bool) -> list[Figure]:
    n = 20_000 if quick else 300_000
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp_name:
        tmp = Path(tmp_name)
        figures += _jsonl(tmp, n)
        figures += _pcap(tmp, n)
        try:
            figures += asyncio.run(_direct(tmp, 50 if quick else 1000))
        except ImportError as exc:
            figures.append(Figure(SUITE, "replay --direct", 0.0, "samples/s", note=f"not available: {exc}"))
        os.sync()
    return figures
