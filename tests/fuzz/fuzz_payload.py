"""Coverage-guided fuzzing of the payload codec with atheris (``pip install -e '.[fuzz]'``).

    python -m tests.fuzz.fuzz_payload -atheris_runs=2000000 [corpus_dir]

Any exception other than PayloadError is a finding, and so is any payload where the native fast path's
answer differs from the Python decoder's (atheris prints it and saves the input).
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from uns_bridge.sparkplug.decode import _native_decode, decode_payload_python
    from uns_bridge.sparkplug.payload import PayloadError, decode_payload, encode_payload, resolve_metric


def one_input(data: bytes) -> None:
    native = _native_decode(data) if _native_decode is not None else None
    try:
        decoded = decode_payload(data)
    except PayloadError:
        if native is not None:
            raise AssertionError("the native path accepted a payload the Python decoder rejects") from None
        return
    if native is not None and repr(native) != repr(decode_payload_python(data)):
        raise AssertionError(f"native and Python decoders disagree: {native!r}")
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
