"""Regenerate ``demo-plant.jsonl.gz``: one minute of the simulated demo plant, deterministically.

    python examples/captures/make_demo_capture.py [--out examples/captures/demo-plant.jsonl.gz]

Four edge nodes (``Plant1-Assembly/Line1-PLC``, ``Plant1-Paint/Line1-PLC``, ``Plant1-Packaging/Line1-PLC``,
``Plant1-Welding/Line1-PLC``), two devices each (``Press1``, ``Robot1``), all eleven kinds of metric
(analog, counter, state machine, alarm, string, template ``Motor``, DataSet, FloatArray, Int8), one data
round per second. A few faults make the replay summary interesting: a seq gap, a device that dies and is
born again, and an edge node whose connection dies (its Will NDEATH) and comes back with the next bdSeq.
The same script always writes the same messages (fixed seed and start time).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from uns_bridge.capture import CaptureRecord, JsonlWriter
from uns_bridge.simulator import FleetGenerator

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HERE = Path(__file__).resolve().parent


def build(out: Path, rounds: int = 60) -> int:
    fleet = FleetGenerator(
        nodes=4,
        devices=2,
        metrics=11,
        rate=1.0,
        group_prefix="Plant1",
        seed=45,
        faults={"gap": 0.01, "devicedeath": 0.01, "death": 0.01},
    )
    with JsonlWriter(out) as writer:
        for message in fleet.messages(START_MS, rounds):
            # the broker delivers a few ms after the node sent it
            writer.write(
                CaptureRecord(
                    (message.t_ms + 3) / 1000, message.topic, message.payload, message.qos, message.retain
                )
            )
    return writer.count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "demo-plant.jsonl.gz")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    count = build(args.out, args.rounds)
    print(f"wrote {count} messages to {args.out}")


if __name__ == "__main__":
    main()
