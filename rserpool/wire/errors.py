"""The one exception the wire codec raises for malformed input."""

from __future__ import annotations


class CodecError(ValueError):
    """Malformed or unsupported bytes (or an unencodable message).

    The message names what is wrong: which message or parameter, the byte offset, and what was
    expected versus found. Decoders never let any other exception escape.
    """
