"""Coverage-guided fuzzing of ``Host.receive`` with atheris: the input is a sequence of (topic, payload).

    python -m tests.fuzz.fuzz_host -atheris_runs=2000000

A finding is any exception from the host, or a rejected message that is not dead-lettered.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from uns_bridge.host import effects as fx
    from uns_bridge.host.host import Host, HostConfig
    from uns_bridge.sparkplug.payload import PayloadError, decode_payload
    from uns_bridge.sparkplug.topic import SparkplugTopic, TopicError, parse_topic

TOPICS = [
    "spBv1.0/G/NBIRTH/E1",
    "spBv1.0/G/NDATA/E1",
    "spBv1.0/G/NDEATH/E1",
    "spBv1.0/G/DBIRTH/E1/D1",
    "spBv1.0/G/DDATA/E1/D1",
    "spBv1.0/G/DDEATH/E1/D1",
    "spBv1.0/STATE/other",
]


def _rejected(topic: str, data: bytes) -> bool:
    try:
        parsed = parse_topic(topic)
    except TopicError:
        return True
    if not isinstance(parsed, SparkplugTopic):
        return False
    try:
        decode_payload(data)
    except PayloadError:
        return True
    return False


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    host = Host(HostConfig(host_id="fuzz", role="active", reorder_timeout_ms=200, rebirth_interval_ms=100))
    now = 1_700_000_000_000
    host.connected(now)
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        if fdp.ConsumeBool():
            topic = TOPICS[fdp.ConsumeIntInRange(0, len(TOPICS) - 1)]
        else:
            topic = fdp.ConsumeUnicodeNoSurrogates(40)
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
        now += fdp.ConsumeIntInRange(0, 1000)
        effects = host.receive(topic, payload, now)
        if _rejected(topic, payload) and not any(
            isinstance(e, fx.Anomaly) and e.dead_letter for e in effects
        ):
            raise AssertionError(f"rejected message on {topic!r} not dead-lettered")
        host.tick(now)
    host.connection_lost(now + 1)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
