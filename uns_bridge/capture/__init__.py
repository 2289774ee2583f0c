"""Capture files: JSON Lines captures (plain, gzip, zstd) and pcap/pcapng import.

One MQTT message is a :class:`CaptureRecord`. :func:`open_capture` reads any supported file by its name
(``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``, ``.pcap``, ``.pcapng``) and yields records in file order;
problems with the input (a torn line, bad base64, a garbled packet) are collected on the reader's
``problems`` with their line or packet number and never stop the reading.
"""

from __future__ import annotations

from uns_bridge.capture.jsonl import (
    CaptureError,
    CaptureReader,
    CaptureRecord,
    JsonlReader,
    JsonlWriter,
    Problem,
    open_capture,
)

__all__ = [
    "CaptureError",
    "CaptureReader",
    "CaptureRecord",
    "JsonlReader",
    "JsonlWriter",
    "Problem",
    "open_capture",
]
