"""Spool throughput: append per fsync policy, read+ack, and recovery scan, next to raw file I/O ceilings."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from tests.benchmarks._figures import Figure
from uns_bridge.store.spool import Spool, encode_record

SUITE = "spool"


def _raw_write(path: Path, frames: list[bytes], fsync_every: bool) -> float:
    """Seconds to write the same bytes with bare os.write (the ceiling: no framing, no bookkeeping)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    started = time.perf_counter()
    try:
        for frame in frames:
            os.write(fd, frame)
            if fsync_every:
                os.fsync(fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def run(quick: bool) -> list[Figure]:
    figures: list[Figure] = []
    size = 4096  # a spooled batch of a few dozen samples
    payload = os.urandom(size)
    counts = {
        "never": 5_000 if quick else 50_000,
        "batch": 5_000 if quick else 50_000,
        "always": 200 if quick else 2_000,
    }
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as tmp:
        root = Path(tmp)
        for policy, n in counts.items():
            directory = root / policy
            frames = [encode_record(i + 1, payload) for i in range(n)]
            ceiling_s = _raw_write(root / f"raw-{policy}", frames, fsync_every=policy == "always")
            spool = Spool.open(directory, fsync=policy, max_bytes=1 << 40, segment_bytes=64 << 20)  # type: ignore[arg-type]
            started = time.perf_counter()
            for _ in range(n):
                spool.append(payload)
            spool.sync()
            elapsed = time.perf_counter() - started
            figures.append(
                Figure(
                    SUITE,
                    f"append 4 KiB records, fsync={policy}",
                    n / elapsed,
                    "records/s",
                    ceiling=n / ceiling_s,
                    ceiling_name="bare os.write" + (" + fsync" if policy == "always" else ""),
                    note=f"{n * size / elapsed / 1e6:.0f} MB/s",
                )
            )
            if policy == "never":
                started = time.perf_counter()
                drained = 0
                while records := spool.read(max_records=256):
                    drained += len(records)
                    spool.ack(records[-1].seq)
                elapsed = time.perf_counter() - started
                assert drained == n
                figures.append(Figure(SUITE, "read + ack (256 per ack)", drained / elapsed, "records/s"))
            spool.close()
        # recovery: open a spool of n records, scanned and checksummed, next to reading the bytes
        directory = root / "batch"
        data_bytes = sum(p.stat().st_size for p in directory.glob("*.seg"))
        started = time.perf_counter()
        for p in directory.glob("*.seg"):
            p.read_bytes()
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        spool = Spool.open(directory, segment_bytes=64 << 20)
        open_s = time.perf_counter() - started
        assert spool.pending_count() == counts["batch"]
        spool.close()
        figures.append(
            Figure(
                SUITE,
                "recovery scan on open",
                data_bytes / open_s / 1e6,
                "MB/s",
                ceiling=data_bytes / read_s / 1e6,
                ceiling_name="reading the files",
            )
        )
    return figures
