"""PostgreSQL COPY text format: escaping values for COPY FROM and parsing COPY TO output.

Values are ``bytes`` in the type's text output form (what pgoutput sends) or ``None`` for NULL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

NULL = b"\\N"
NEEDS_ESCAPE = re.compile(rb"[\\\t\n\r]")
_ESCAPES = {b"\\": b"\\\\", b"\t": b"\\t", b"\n": b"\\n", b"\r": b"\\r"}
_UNESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def escape(value: bytes | None) -> bytes:
    """Escape one value for COPY text format (NULL becomes ``\\N``)."""
    if value is None:
        return NULL
    if NEEDS_ESCAPE.search(value) is None:
        return value
    return NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], value)


def encode_row(values: Iterable[bytes | None]) -> bytes:
    """One COPY text line (with its newline) for ``values``."""
    return b"\t".join([escape(v) for v in values]) + b"\n"


def _unescape_one(match: re.Match[bytes]) -> bytes:
    token = match.group(1)
    if token in _SIMPLE:
        return _SIMPLE[token]
    if token[:1] == b"x" and len(token) > 1:
        return bytes([int(token[1:], 16)])
    if token[:1].isdigit():
        return bytes([int(token, 8) & 0xFF])
    return token


def unescape(field: bytes) -> bytes | None:
    """Decode one field of COPY text output (``\\N`` is NULL)."""
    if field == NULL:
        return None
    if b"\\" not in field:
        return field
    return _UNESCAPE.sub(_unescape_one, field)


def parse_lines(chunks: Iterable[bytes]) -> Iterator[list[bytes | None]]:
    """Parse COPY TO STDOUT text output, given as arbitrary chunks, into rows of values."""
    rest = b""
    for chunk in chunks:
        data = rest + bytes(chunk)
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield [unescape(f) for f in line.split(b"\t")]
    if rest:
        yield [unescape(f) for f in rest.split(b"\t")]
