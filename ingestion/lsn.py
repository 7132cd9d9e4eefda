"""Log sequence numbers: PostgreSQL prints them as ``X/Y`` (two hex halves); we use ints."""

from __future__ import annotations


def lsn_to_str(lsn: int) -> str:
    """Format an LSN integer as PostgreSQL prints it (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def str_to_lsn(text: str) -> int:
    """Parse ``X/Y`` into an integer LSN.

    Raises:
        ValueError: the text is not an LSN.
    """
    high, sep, low = str(text).partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r} (expected hex 'X/Y')")
    return (int(high, 16) << 32) | int(low, 16)
