"""The on-disk spool: framing, acknowledgement, size policies, recovery from damaged segment files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from uns_bridge.store.spool import (
    HEADER_SIZE,
    MAGIC,
    RecordTooLarge,
    Spool,
    SpoolFull,
    encode_record,
)


def payloads(n: int, size: int = 50) -> list[bytes]:
    return [(f"record-{i:06d}-".encode() * 10)[:size] for i in range(n)]


def drain(spool: Spool) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while True:
        batch = spool.read(max_records=7)
        if not batch:
            return out
        out.extend((r.seq, r.payload) for r in batch)


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_append_read_ack_roundtrip_and_persistence(tmp_path: Path) -> None:
    data = payloads(100)
    with Spool.open(tmp_path, segment_bytes=1024, max_bytes=1 << 20) as spool:
        seqs = [spool.append(p) for p in data]
        assert seqs == list(range(1, 101))
        assert len(segment_files(tmp_path)) > 1, "small segments must rotate"
        assert drain(spool) == list(zip(seqs, data, strict=True))
        assert spool.read() == []
        spool.ack(40)
        assert spool.pending_count() == 60
    with Spool.open(tmp_path, segment_bytes=1024, max_bytes=1 << 20) as spool:
        assert spool.report.clean, spool.report.summary()
        assert spool.report.pending == 60
        assert drain(spool) == list(zip(seqs[40:], data[40:], strict=True))
        assert spool.next_seq == 101
        assert spool.append(b"more") == 101
        spool.ack(101)
        assert spool.is_empty()
    assert segment_files(tmp_path) == [] or all(f.stat().st_size < 1024 for f in segment_files(tmp_path))
    with Spool.open(tmp_path) as spool:
        assert spool.is_empty()
        assert spool.next_seq == 102, "sequence numbers never repeat, even after everything was acknowledged"


def test_acked_segments_are_deleted(tmp_path: Path) -> None:
    with Spool.open(tmp_path, segment_bytes=512, max_bytes=1 << 20) as spool:
        for p in payloads(60):
            spool.append(p)
        before = len(segment_files(tmp_path))
        drain(spool)
        spool.ack(59)
        after = segment_files(tmp_path)
        assert before > 5 and len(after) == 1
        assert spool.pending_count() == 1


def test_rewind_rereads_unacknowledged(tmp_path: Path) -> None:
    with Spool.open(tmp_path) as spool:
        for p in payloads(10):
            spool.append(p)
        first = spool.read(max_records=4)
        assert [r.seq for r in first] == [1, 2, 3, 4]
        spool.ack(2)
        spool.rewind()
        assert [r.seq for r in spool.read(max_records=4)] == [3, 4, 5, 6]


def test_read_respects_max_bytes_but_returns_at_least_one(tmp_path: Path) -> None:
    with Spool.open(tmp_path) as spool:
        for p in payloads(5, size=100):
            spool.append(p)
        assert len(spool.read(max_records=10, max_bytes=250)) == 2
        assert len(spool.read(max_records=10, max_bytes=10)) == 1


def test_ack_of_unknown_record_is_refused(tmp_path: Path) -> None:
    with Spool.open(tmp_path) as spool:
        spool.append(b"x")
        with pytest.raises(ValueError, match="newest is 1"):
            spool.ack(2)


def test_block_policy_raises_spool_full_and_frees_after_ack(tmp_path: Path) -> None:
    with Spool.open(tmp_path, segment_bytes=1000, max_bytes=3000, when_full="block") as spool:
        n = 0
        with pytest.raises(SpoolFull, match="full"):
            while True:
                spool.append(b"p" * 80)
                n += 1
        assert spool.size_bytes <= 3000
        assert spool.dropped == 0
        assert spool.pending_count() == n
        drain(spool)
        spool.ack(n)
        spool.append(b"p" * 80)  # room again


def test_drop_oldest_policy_counts_what_it_drops(tmp_path: Path) -> None:
    with Spool.open(tmp_path, segment_bytes=1000, max_bytes=3000, when_full="drop-oldest") as spool:
        for i in range(200):
            spool.append(b"%05d" % i + b"p" * 75)
            assert spool.size_bytes <= 3000
        kept = drain(spool)
        assert spool.dropped + len(kept) == 200
        assert spool.dropped > 0
        assert [s for s, _ in kept] == list(range(201 - len(kept), 201)), "the newest records are kept"
    with Spool.open(tmp_path, segment_bytes=1000, max_bytes=3000, when_full="drop-oldest") as spool:
        assert spool.dropped + spool.pending_count() == 200


def test_record_larger_than_a_segment_is_refused(tmp_path: Path) -> None:
    with Spool.open(tmp_path, segment_bytes=100, max_bytes=1000) as spool:
        with pytest.raises(RecordTooLarge):
            spool.append(b"x" * 100)
        assert spool.append(b"x" * (100 - HEADER_SIZE)) == 1


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        Spool.open(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="when_full"):
        Spool.open(tmp_path, when_full="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_bytes"):
        Spool.open(tmp_path, segment_bytes=1000, max_bytes=10)


@pytest.mark.parametrize("policy", ["always", "batch", "never"])
def test_every_fsync_policy_keeps_records(tmp_path: Path, policy: str) -> None:
    with Spool.open(tmp_path, fsync=policy) as spool:  # type: ignore[arg-type]
        for p in payloads(20):
            spool.append(p)
        spool.sync()
        spool.ack(5)
    with Spool.open(tmp_path) as spool:
        assert spool.pending_count() == 15


def test_torn_tail_is_truncated_and_reported(tmp_path: Path) -> None:
    data = payloads(10)
    with Spool.open(tmp_path) as spool:
        for p in data:
            spool.append(p)
    seg = segment_files(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as handle:
        handle.truncate(size - 7)  # cut the last record short
    with Spool.open(tmp_path) as spool:
        assert [d.kind for d in spool.report.damage] == ["torn-tail"]
        assert "torn tail" in spool.report.summary()
        assert [p for _, p in drain(spool)] == data[:9]
        assert seg.stat().st_size == size - len(encode_record(10, data[9])), "the torn bytes are gone"
        assert spool.append(b"after") == 10, "the torn record's number is reused: it was never stored"
    with Spool.open(tmp_path) as spool:
        assert spool.report.clean
        assert [p for _, p in drain(spool)] == [*data[:9], b"after"]


def test_corrupt_middle_record_is_skipped_by_resync(tmp_path: Path) -> None:
    data = payloads(10)
    with Spool.open(tmp_path) as spool:
        for p in data:
            spool.append(p)
    seg = segment_files(tmp_path)[0]
    raw = bytearray(seg.read_bytes())
    frame = len(encode_record(1, data[0]))
    raw[4 * frame + HEADER_SIZE + 3] ^= 0xFF  # damage record 5's payload
    seg.write_bytes(bytes(raw))
    with Spool.open(tmp_path) as spool:
        assert [(d.kind, d.offset, d.length) for d in spool.report.damage] == [("corrupt", 4 * frame, frame)]
        got = drain(spool)
    assert [s for s, _ in got] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert [p for _, p in got] == data[:4] + data[5:]


def test_damage_after_open_is_skipped_on_read(tmp_path: Path) -> None:
    data = payloads(6)
    with Spool.open(tmp_path) as spool:
        for p in data:
            spool.append(p)
        seg = segment_files(tmp_path)[0]
        frame = len(encode_record(1, data[0]))
        with open(seg, "r+b") as handle:
            handle.seek(2 * frame + 1)
            handle.write(b"\x00\x00")  # break record 3's magic
        assert [s for s, _ in drain(spool)] == [1, 2, 4, 5, 6]
        assert [d.kind for d in spool.report.damage] == ["corrupt"]


def test_bad_state_file_means_redeliver_everything(tmp_path: Path) -> None:
    with Spool.open(tmp_path) as spool:
        for p in payloads(5):
            spool.append(p)
        spool.ack(3)
    (tmp_path / "state.json").write_text("{not json")
    with Spool.open(tmp_path) as spool:
        assert spool.report.state_problem is not None and "invalid" in spool.report.state_problem
        assert spool.pending_count() == 5
    (tmp_path / "state.json").write_text(json.dumps({"acked": -4}))
    with Spool.open(tmp_path) as spool:
        assert spool.report.state_problem is not None


def test_garbage_files_and_names_never_crash(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001.seg").write_bytes(os.urandom(5000) + MAGIC + b"\xff" * 30)
    (tmp_path / "00000000000000000009.seg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "state.json.tmp123").write_text("partial")
    with Spool.open(tmp_path) as spool:
        assert spool.pending_count() == 0
        assert spool.report.foreign_files == ["notes.txt"]
        assert not (tmp_path / "state.json.tmp123").exists()
        seq = spool.append(b"fresh")
        assert seq >= 9, "new records sort after every existing segment name"
    with Spool.open(tmp_path) as spool:
        assert [p for _, p in drain(spool)] == [b"fresh"]


def test_closed_spool_refuses_use(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    spool.close()
    spool.close()
    with pytest.raises(Exception, match="closed"):
        spool.append(b"x")


def test_block_policy_reclaims_an_acknowledged_active_segment(tmp_path: Path) -> None:
    with Spool.open(tmp_path, segment_bytes=1000, max_bytes=1000, when_full="block") as spool:
        spool.append(b"a" * 300)
        spool.ack(1)  # the young active segment is kept for appending ...
        assert spool.size_bytes > 0
        spool.append(b"b" * 900)  # ... but reclaimed when the room is needed
        assert [r.payload for r in spool.read(5)] == [b"b" * 900]


def test_tokens_are_stable_per_spool_and_differ_between_spools(tmp_path: Path) -> None:
    with Spool.open(tmp_path / "a") as a, Spool.open(tmp_path / "b") as b:
        assert a.spool_id != b.spool_id
        assert a.token(1) != b.token(1)
        assert a.token(1) != a.token(2)
        assert -(2**63) <= a.token(7) < 2**63
        first = a.token(5)
    with Spool.open(tmp_path / "a") as again:
        assert again.token(5) == first, "a reopened spool keeps its name"
    (tmp_path / "a" / "state.json").unlink()
    with Spool.open(tmp_path / "a") as renamed:
        assert renamed.token(5) != first, "a spool whose state was lost gets a new name"


def test_inflight_unit_is_persisted_until_acknowledged(tmp_path: Path) -> None:
    with Spool.open(tmp_path) as spool:
        for p in payloads(6):
            spool.append(p)
        spool.begin(1, 4)
        with pytest.raises(ValueError):
            spool.begin(3, 9)
    with Spool.open(tmp_path) as spool:
        assert spool.inflight == (1, 4), "a crash keeps the unit's bounds"
        assert [r.seq for r in spool.read(10, upto_seq=4)] == [1, 2, 3, 4]
        assert spool.token(1, 4) != spool.token(1, 3)
        spool.ack(4)
        assert spool.inflight is None
    with Spool.open(tmp_path) as spool:
        assert spool.inflight is None and spool.pending_count() == 2
