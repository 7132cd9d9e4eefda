"""The hot path of inserts and plain updates: a pgoutput Insert, or an Update that sent no old
row, straight to its staging line.

Most changes a busy source sends are inserts of plain rows, or updates that keep the key (no
old key or row sent: ``N`` follows the relation id, and the TupleData starts where an
Insert's does): every column sent as text, no NULL that needs care, nothing COPY must escape.
For them this path skips the general machinery
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
INSERT = b"%b\tc\t%X/%X\t%d%b"
"""The line's format after the table's columns for an Insert (``_op`` 'c')."""
UPDATE = b"%b\tu\t%X/%X\t%d%b"
"""The same for an Update's new image (``_op`` 'u')."""


def insert_line(buf: bytes, lsn: int, seq: int, tail: bytes, fmt: bytes = INSERT,
                _unpack: object = _I32.unpack_from) -> tuple[bytes, list] | None:
    """The staging line of an Insert message (``fmt`` :data:`INSERT`), or of an Update message
    that sent no old row (:data:`UPDATE`; the caller checks the ``N``), and its values, or None.

    The line equals :func:`ingestion.batch.line`'s for the same change. Values are ``bytes``
    (text form) or None for SQL NULL. None is returned when a column is sent in another form
    (binary, unchanged TOAST) or the message is cut short or too long, for
    :func:`ingestion.decoder.row_change` to decode or reject.

    Args:
        buf: the message (``buf[0]`` is ``I``, or ``U`` with ``buf[5]`` ``N``).
        lsn: its LSN (``_lsn``).
        seq: its ``_seq``.
        tail: the transaction's :attr:`ingestion.batch.TxnContext.tail`.
        fmt: :data:`INSERT` or :data:`UPDATE`.
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
    return fmt % (row, lsn >> 32, lsn & 0xFFFFFFFF, seq, tail), values
