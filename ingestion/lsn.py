"""Log sequence numbers: PostgreSQL prints them as ``X/Y`` (two hex halves); we use ints."""

from __future__ import annotations

from psycopg import sql


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


def wal_position(kind: str = "") -> sql.Composed:
    """SQL for a source server's WAL position now, on a primary or a standby.

    A standby (PostgreSQL 16 and later stream logical changes from one) refuses the WAL control
    functions; its position is the WAL it has replayed, in the same LSN space as its primary's.

    Args:
        kind: ``""`` (written), ``"insert"`` or ``"flush"``: which ``pg_current_wal_*lsn()``
            a primary answers with.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in ("", "insert", "flush"):
        raise ValueError(f"unknown WAL position kind {kind!r} (expected '', 'insert' or 'flush')")
    current = sql.SQL("pg_current_wal_{}lsn()".format(f"{kind}_" if kind else ""))
    return sql.SQL("(case when pg_is_in_recovery() then pg_last_wal_replay_lsn()"
                   " else {} end)").format(current)


WAL_NOW = wal_position()
"""SQL for a source server's WAL position now (:func:`wal_position`)."""
