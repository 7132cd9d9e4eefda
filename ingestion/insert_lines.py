"""The insert hot path: a pgoutput Insert message straight to its staging line.

Most changes a busy source sends are inserts of plain rows: every column sent as text, no NULL
that needs care, nothing COPY must escape. For them this path skips the general machinery
(:func:`ingestion.decoder.row_change`, :meth:`ingestion.changes.ChangeBuffer.add`): one loop
over the TupleData that slices out the column texts, one join, three byte searches for
characters COPY would need escaped, and one format with the transaction's shared tail. Anything
else — a paused table, a stream shape older than the table, a contract to validate, a binary
or unchanged-TOAST column — returns ``None`` and takes the general path, which gives the same
line.
"""

from __future__ import annotations

import struct

from ingestion.batch import row_text

_I32 = struct.Struct(">i")


def insert_line(buf: bytes, lsn: int, seq: int, tail: bytes,
                _unpack: object = _I32.unpack_from) -> tuple[bytes, list] | None:
    """The staging line (``_op`` 'c') of an Insert message and its values, or None.

    The line equals :func:`ingestion.batch.line`'s for the same change. Values are ``bytes``
    (text form) or None for SQL NULL. None is returned when a column is sent in another form
    (binary, unchanged TOAST) or the message is cut short or too long, for
    :func:`ingestion.decoder.row_change` to decode or reject.

    Args:
        buf: the message (``buf[0] == ord('I')``).
        lsn: its LSN (``_lsn``).
        seq: its ``_seq``.
        tail: the transaction's :attr:`ingestion.batch.TxnContext.tail`.
    """
    ncols = (buf[6] << 8) | buf[7]
    pos = 8
    values: list = []
    append = values.append
    nulls = False
    for _ in range(ncols):
        kind = buf[pos]
        if kind == 116:  # 't'
            start = pos + 5
            pos = start + _unpack(buf, pos + 1)[0]
            append(buf[start:pos])
        elif kind == 110:  # 'n'
            append(None)
            nulls = True
            pos += 1
        else:
            return None
    if pos != len(buf):
        return None
    if nulls:
        row = row_text(values)
    else:
        row = b"\t".join(values)
        if row.count(b"\t") != ncols - 1 or b"\\" in row or b"\n" in row or b"\r" in row:
            row = row_text(values)  # escapes what needs it
    return b"%b\tc\t%X/%X\t%d%b" % (row, lsn >> 32, lsn & 0xFFFFFFFF, seq, tail), values
