"""The codec's one exception type."""

from __future__ import annotations


class PayloadError(ValueError):
    """The bytes are not a valid Sparkplug B payload, or a value does not fit its datatype.

    The message says what is wrong and where (which metric, property, cell or parameter)."""
