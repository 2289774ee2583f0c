"""JSON Lines captures: round trips in every compression, extra keys, bad lines, constant memory."""

from __future__ import annotations

import base64
import gzip
import json
import tracemalloc
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uns_bridge.capture import CaptureRecord, JsonlReader, JsonlWriter, open_capture
from uns_bridge.capture.jsonl import CaptureError, format_line

SUFFIXES = [".jsonl", ".jsonl.gz", ".jsonl.zst"]
SCHEMA = json.loads((Path(__file__).parent.parent / "schemas" / "capture.schema.json").read_text())

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10)
extras = st.none() | st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda k: k not in {"t", "topic", "payload_b64", "qos", "retain"}),
    json_scalars | st.lists(json_scalars, max_size=3),
    min_size=1,
    max_size=4,
)
records = st.builds(
    CaptureRecord,
    t=st.floats(0, 4e9, allow_nan=False),
    topic=st.text(min_size=1, max_size=40),
    payload=st.binary(max_size=200),
    qos=st.sampled_from([0, 1, 2]),
    retain=st.booleans(),
    extra=extras,
)


@pytest.mark.parametrize("suffix", SUFFIXES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(records, max_size=30))
def test_round_trip_keeps_every_field_and_extra_key(
    tmp_path: Path, suffix: str, batch: list[CaptureRecord]
) -> None:
    path = tmp_path / f"cap{suffix}"
    with JsonlWriter(path) as writer:
        for record in batch:
            writer.write(record)
    assert writer.count == len(batch)
    reader = open_capture(path)
    back = list(reader)
    assert reader.problems.count == 0
    assert back == batch


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_file_is_really_compressed_and_lines_match_the_schema(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cap{suffix}"
    with JsonlWriter(path) as writer:
        for i in range(2000):
            writer.write(
                CaptureRecord(
                    1.7e9 + i / 10, f"spBv1.0/G/NDATA/N{i % 5}", b"\x08\x01" * 20, 0, False, {"n": i}
                )
            )
    raw = path.read_bytes()
    if suffix.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b"
        text = gzip.decompress(raw)
    elif suffix.endswith(".zst"):
        assert raw[:4] == b"\x28\xb5\x2f\xfd"
        import zstandard

        text = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    else:
        text = raw
    lines = text.splitlines()
    assert len(lines) == 2000
    assert len(raw) < len(text) or not suffix.endswith(("gz", "zst"))
    for line in lines[:50]:
        jsonschema.validate(json.loads(line), SCHEMA)
    first = json.loads(lines[0])
    assert list(first)[:5] == ["t", "topic", "payload_b64", "qos", "retain"] and first["n"] == 0


def test_bad_lines_are_reported_with_their_number_and_the_rest_is_read(tmp_path: Path) -> None:
    good = format_line(CaptureRecord(1.0, "a/b", b"xyz")).decode()
    lines = [
        good,  # 1
        '{"t": 2.0, "topic": "a/b", "payload_b64": "###", "qos": 0, "retain": false}\n',  # 2 invalid base64
        '{"t": "soon", "topic": "a/b", "payload_b64": "", "qos": 0, "retain": false}\n',  # 3 wrong type
        '{"t": 3.0, "topic": "a/b", "payload_b64": "", "qos": 7, "retain": false}\n',  # 4 qos out of range
        "[1, 2]\n",  # 5 not an object
        "\n",  # 6 blank: ignored
        '{"t": 4.0, "topic": 5, "payload_b64": ""}\n',  # 7 topic not a string
        '{"t": 5.0, "topic": "a/c", "payload_b64": "'
        + base64.b64encode(b"ok").decode()
        + '"}\n',  # 8 defaults
        '{"t": 6.0, "topic": "a/b", "payload_b64": "", "retain": 1}\n',  # 9 retain not bool
        good,  # 10
        '{"t": 7.0, "topic": "a/b", "payl',  # 11 torn last line
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(lines))
    reader = JsonlReader(path)
    got = list(reader)
    assert [r.t for r in got] == [1.0, 5.0, 1.0]
    assert got[1] == CaptureRecord(5.0, "a/c", b"ok", 0, False, None)
    where = {p.where: p.message for p in reader.problems.kept}
    assert sorted(where, key=lambda w: int(w.split()[1])) == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
        "line 7",
        "line 9",
        "line 11",
    ]
    assert "base64" in where["line 2"]
    assert "'t'" in where["line 3"]
    assert "'qos'" in where["line 4"]
    assert "object" in where["line 5"]
    assert "'topic'" in where["line 7"]
    assert "'retain'" in where["line 9"]
    assert "truncated" in where["line 11"]
    assert reader.problems.count == 7 and reader.lines == 11


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_cut_off_compressed_file_keeps_what_came_before(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cut{suffix}"
    with JsonlWriter(path) as writer:
        for i in range(20_000):
            writer.write(CaptureRecord(float(i), "t/x", i.to_bytes(4, "big") * 8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reader = JsonlReader(path)
    got = list(reader)
    assert 0 < len(got) < 20_000
    assert [r.t for r in got] == [float(i) for i in range(len(got))]
    assert reader.problems.count == 1
    assert reader.problems.kept[0].where == f"line {len(got) + 1}"


def test_flush_makes_a_zst_capture_readable_while_still_open(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl.zst"
    writer = JsonlWriter(path)
    for i in range(10):
        writer.write(CaptureRecord(float(i), "t/x", b"p"))
    writer.flush()
    reader = JsonlReader(path)
    assert [r.t for r in reader] == [float(i) for i in range(10)]
    writer.close()
    assert len(list(JsonlReader(path))) == 10


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_reading_and_writing_stream_in_constant_memory(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"big{suffix}"
    payload = bytes(range(256)) * 2
    n = 30_000  # ~22 MB of JSON, far above the 4 MiB allowed
    tracemalloc.start()
    try:
        with JsonlWriter(path) as writer:
            for i in range(n):
                writer.write(CaptureRecord(i / 1000, "spBv1.0/G/DDATA/N/D", payload, 0, False))
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        count = sum(1 for _ in JsonlReader(path))
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert write_peak < 4 * 1024 * 1024, write_peak
    assert read_peak < 4 * 1024 * 1024, read_peak


def test_missing_file_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such file"):
        open_capture(tmp_path / "nope.jsonl")
