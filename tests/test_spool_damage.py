"""The spool against damaged files (hypothesis) and against SIGKILL at any moment (real subprocesses)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uns_bridge.store.spool import HEADER_SIZE, Spool, encode_record

SEGMENT = 700
HYPO = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_all(spool: Spool) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while batch := spool.read(max_records=50):
        out.extend((r.seq, r.payload) for r in batch)
    return out


def build(directory: Path, data: list[bytes]) -> list[Path]:
    with Spool.open(directory, segment_bytes=SEGMENT, max_bytes=1 << 24) as spool:
        for p in data:
            spool.append(p)
    return sorted(directory.glob("*.seg"))


def frames_by_file(data: list[bytes]) -> list[list[tuple[int, int, int]]]:
    """For each segment file the (seq, start, end) of every record, by replaying the rotation rule."""
    files: list[list[tuple[int, int, int]]] = []
    size = SEGMENT + 1
    for seq, p in enumerate(data, start=1):
        n = HEADER_SIZE + len(p)
        if size + n > SEGMENT:
            files.append([])
            size = 0
        files[-1].append((seq, size, size + n))
        size += n
    return files


payload_lists = st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=25)


def check_consistent(got: list[tuple[int, bytes]], data: list[bytes]) -> None:
    seqs = [s for s, _ in got]
    assert seqs == sorted(set(seqs)), "records come back once each, in order"
    for seq, payload in got:
        assert 1 <= seq <= len(data)
        assert payload == data[seq - 1], f"record {seq} came back altered"


@HYPO
@given(data=payload_lists, cut=st.integers(min_value=0, max_value=10_000))
def test_truncated_last_segment_keeps_the_exact_prefix(data: list[bytes], cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        files = build(directory, data)
        last = files[-1]
        cut = cut % (last.stat().st_size + 1)
        with open(last, "r+b") as handle:
            handle.truncate(cut)
        layout = frames_by_file(data)
        expected = [seq for f in layout[:-1] for seq, _, _ in f] + [
            s for s, _, end in layout[-1] if end <= cut
        ]
        with Spool.open(directory, segment_bytes=SEGMENT) as spool:
            got = read_all(spool)
            assert [s for s, _ in got] == expected
            check_consistent(got, data)
            torn = [d for d in spool.report.damage if d.kind == "torn-tail"]
            complete = max([end for _, _, end in layout[-1] if end <= cut], default=0)
            assert sum(d.length for d in torn) == cut - complete
            assert len(spool.report.damage) == len(torn)
            new = spool.append(b"after")
        assert new == (expected[-1] + 1 if expected else 1) or new > max(expected, default=0)
        with Spool.open(directory, segment_bytes=SEGMENT) as spool:
            assert spool.report.clean, spool.report.summary()
            assert [s for s, _ in read_all(spool)] == [*expected, new]


@HYPO
@given(data=payload_lists, where=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_one_flipped_byte_costs_exactly_the_record_it_hit(data: list[bytes], where: int, mask: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        files = build(directory, data)
        layout = frames_by_file(data)
        file_index = where % len(files)
        size = files[file_index].stat().st_size
        position = (where // len(files)) % size
        raw = bytearray(files[file_index].read_bytes())
        raw[position] ^= mask
        files[file_index].write_bytes(bytes(raw))
        hit = next(seq for seq, start, end in layout[file_index] if start <= position < end)
        with Spool.open(directory, segment_bytes=SEGMENT) as spool:
            got = read_all(spool)
            check_consistent(got, data)
            assert [s for s, _ in got] == [s for s in range(1, len(data) + 1) if s != hit]
            assert len(spool.report.damage) == 1
            assert not spool.report.clean


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.integers(min_value=1, max_value=64)),
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("zero"), st.integers(min_value=0), st.integers(min_value=1, max_value=300)),
)


@HYPO
@given(data=payload_lists, mutations=st.lists(st.tuples(st.integers(min_value=0), mutation), max_size=6))
def test_any_damage_never_raises_and_never_alters_a_record(
    data: list[bytes], mutations: list[tuple[int, tuple[str, int, object]]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        files = build(directory, data)
        for which, (kind, where, arg) in mutations:
            path = files[which % len(files)]
            raw = bytearray(path.read_bytes())
            pos = where % (len(raw) + 1)
            if kind == "flip" and raw:
                raw[pos % len(raw)] ^= int(arg)  # type: ignore[call-overload]
            elif kind == "insert":
                raw[pos:pos] = bytes(arg)  # type: ignore[call-overload]
            elif kind == "delete":
                del raw[pos : pos + int(arg)]  # type: ignore[call-overload]
            elif kind == "truncate":
                del raw[pos:]
            elif kind == "zero":
                raw[pos : pos + int(arg)] = bytes(len(raw[pos : pos + int(arg)]))  # type: ignore[call-overload]
            path.write_bytes(bytes(raw))
        with Spool.open(directory, segment_bytes=SEGMENT) as spool:
            got = read_all(spool)
            check_consistent(got, data)
            untouched = {
                seq
                for i, f in enumerate(frames_by_file(data))
                for seq, _, _ in f
                if all(w % len(files) != i for w, _ in mutations)
            }
            assert untouched <= {s for s, _ in got}, "records in undamaged segments all survive"
            new = spool.append(b"after")
            assert new > max((s for s, _ in got), default=0)
        with Spool.open(directory, segment_bytes=SEGMENT) as spool:
            again = read_all(spool)
            assert again[:-1] == got or again[:-1] == [g for g in got if g[0] < new]
            assert again[-1] == (new, b"after")


@HYPO
@given(blob=st.binary(max_size=3000), name=st.integers(min_value=0, max_value=10**6))
def test_arbitrary_bytes_as_a_segment_never_raise(blob: bytes, name: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / f"{name:020d}.seg").write_bytes(blob)
        (directory / "state.json").write_bytes(blob[:40])
        with Spool.open(directory, segment_bytes=SEGMENT) as spool:
            read_all(spool)
            new = spool.append(b"x")
            assert new >= name
        with Spool.open(directory, segment_bytes=SEGMENT) as spool:
            assert read_all(spool)[-1] == (new, b"x")


def test_frame_embedded_inside_garbage_is_found() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / f"{1:020d}.seg").write_bytes(b"junk" * 10 + encode_record(3, b"hi") + b"tail-junk")
        with Spool.open(directory, segment_bytes=SEGMENT) as spool:
            assert read_all(spool) == [(3, b"hi")]
            assert [d.kind for d in spool.report.damage] == ["corrupt", "torn-tail"]


# ----------------------------------------------------------------------------- SIGKILL at any moment
CHILD = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from uns_bridge.store.spool import Spool

    def payload(seq):
        return hashlib.sha256(str(seq).encode()).digest() * (seq % 40)

    spool = Spool.open(Path(sys.argv[1]), segment_bytes=4096, max_bytes=1 << 26, fsync=sys.argv[2])
    while True:
        seq = spool.append(payload(spool.next_seq))
        print("A", seq, flush=True)
        if seq % 7 == 0:
            records = spool.read(max_records=5)
            if records:
                spool.ack(records[-1].seq)
                print("K", records[-1].seq, flush=True)
    """
)


def expected_payload(seq: int) -> bytes:
    return hashlib.sha256(str(seq).encode()).digest() * (seq % 40)


@pytest.mark.parametrize("policy", ["never", "batch"])
def test_sigkill_at_any_moment_loses_no_appended_record(tmp_path: Path, policy: str) -> None:
    rng = random.Random(policy)
    appended: set[int] = set()
    acked = 0
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), policy],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert child.stdout is not None
            for _ in range(rng.randint(20, 400)):
                line = child.stdout.readline()
                assert line, "the child died on its own"
                kind, number = line.split()
                if kind == "A":
                    appended.add(int(number))
                else:
                    acked = max(acked, int(number))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            assert child.stdout is not None
            child.stdout.close()
        with Spool.open(tmp_path, segment_bytes=4096) as spool:
            assert spool.acked >= acked, "an acknowledgement the child reported is persisted"
            got = read_all(spool)
            seqs = [s for s, _ in got]
            for seq, payload in got:
                assert payload == expected_payload(seq)
            must_have = {s for s in appended if s > spool.acked}
            assert must_have <= set(seqs), f"lost appended records: {sorted(must_have - set(seqs))[:5]}"
            assert seqs == list(range(spool.acked + 1, spool.acked + 1 + len(seqs))), "no holes"
            assert not [d for d in spool.report.damage if d.kind == "corrupt"]
    print(f"appended {len(appended)} records over 6 SIGKILLs ({policy}); acked up to {acked}; nothing lost")


# ------------------------------------------------------------------------------ a disk that fills up
DISK_FULL_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from uns_bridge.store.spool import Spool

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
    spool = Spool.open(Path(sys.argv[1]), segment_bytes=1 << 20, fsync="never")
    failures = 0
    for i in range(200):
        try:
            seq = spool.append(bytes([i % 256]) * 97)
        except OSError as exc:
            failures += 1
            print("E", type(exc).__name__, flush=True)
            if failures == 3:
                break
        else:
            print("A", seq, flush=True)
    """
)


def test_disk_full_append_raises_and_leaves_the_spool_consistent(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    appended = [int(n) for kind, n in zip(lines[::2], lines[1::2], strict=True) if kind == "A"]
    assert lines.count("E") == 3, done.stdout
    with Spool.open(tmp_path) as spool:
        got = read_all(spool)
        assert spool.report.clean, spool.report.summary()
    assert [s for s, _ in got] == appended, "exactly the records whose append returned"
    assert all(p == bytes([s - 1]) * 97 for s, p in got)
