"""Coverage-guided fuzzing of the payload codec with atheris (``pip install -e '.[fuzz]'``).

    python -m tests.fuzz.fuzz_payload -atheris_runs=2000000 [corpus_dir]

Any exception other than PayloadError is a finding (atheris prints it and saves the input).
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from uns_bridge.sparkplug.payload import PayloadError, decode_payload, encode_payload, resolve_metric


def one_input(data: bytes) -> None:
    try:
        decoded = decode_payload(data)
    except PayloadError:
        return
    for metric in decoded.metrics:
        for datatype in (metric.datatype or 0, 4, 12, 16, 19):
            with contextlib.suppress(PayloadError):
                resolve_metric(metric, datatype)
    with contextlib.suppress(PayloadError):
        decode_payload(encode_payload(decoded))


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
