"""Sparkplug B payloads: bytes ⇄ the immutable values of :mod:`uns_bridge.sparkplug.values`.

The public face of the codec (see docs/internals.md "Codec"); the work is done in
:mod:`~uns_bridge.sparkplug.decode`, :mod:`~uns_bridge.sparkplug.encode` and
:mod:`~uns_bridge.sparkplug.coerce`. :class:`PayloadError` is the only exception :func:`decode_payload`,
:func:`encode_payload`, :func:`resolve_metric` and :func:`coerce_value` raise on bad input; its message
says what is wrong and where.
"""

from __future__ import annotations

from uns_bridge.sparkplug.coerce import coerce_value
from uns_bridge.sparkplug.decode import decode_payload, resolve_metric
from uns_bridge.sparkplug.encode import encode_payload
from uns_bridge.sparkplug.errors import PayloadError

__all__ = ["PayloadError", "coerce_value", "decode_payload", "encode_payload", "resolve_metric"]
