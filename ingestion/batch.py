"""Batches: the changes of one table inside one landing transaction, as COPY text lines.

A line is one row of the table's staging table (see :data:`STAGING_META`): the table's columns in
PostgreSQL's text form, then ``_ord`` (order in the landing transaction), ``_op``, ``_lsn``,
``_seq``, ``_unchanged`` (columns sent as unchanged TOAST that nothing in the batch resolves: they
are read from the mirror), ``_origin`` (the key, as text, of the mirror row those values come
from), ``_commit_lsn``, ``_commit_at``, ``_txid`` and last ``_last`` (false once a later line of
the batch has the same key: the mirror only needs the last image of each key).

Operations (``_op``): ``r`` snapshot read, ``c`` insert, ``u`` update (new image), ``b`` the old
image of an update that moved the row (a key change, or any update of a keyless table), ``d``
delete (old image). Every line goes to the changelog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ingestion.copytext import NEEDS_ESCAPE, escape
from ingestion.decoder import UNCHANGED, Value
from ingestion.lsn import lsn_to_str

if TYPE_CHECKING:
    from ingestion.tables import TableInfo

STAGING_META = ("_ord bigint, _op text, _lsn pg_lsn, _seq integer, _unchanged text[],"
                " _origin text[], _commit_lsn pg_lsn, _commit_at timestamptz, _txid bigint,"
                " _last boolean")
"""The staging table's columns after the table's own, in line order."""

LAST = b"\tt\n"
SUPERSEDED = b"\tf\n"


@dataclass
class TxnContext:
    """The source transaction the next changes belong to.

    Attributes:
        commit_lsn: its commit LSN (``_commit_lsn``).
        commit_at: its commit time.
        xid: its transaction id.
        seq: the last ``_seq`` handed out in it (see :meth:`next_seq`).
        suffix: the line tail shared by its changes.
    """

    commit_lsn: int
    commit_at: datetime | None
    xid: int | None
    seq: int = 0
    suffix: bytes = b""

    def __post_init__(self) -> None:
        at = self.commit_at.isoformat().encode() if self.commit_at else b"\\N"
        xid = str(self.xid).encode() if self.xid is not None else b"\\N"
        self.suffix = (b"\t" + lsn_to_str(self.commit_lsn).encode() + b"\t" + at + b"\t" + xid
                       + LAST)

    def next_seq(self, count: int = 2) -> int:
        """Reserve ``count`` sequence numbers; return the last one.

        A stream change takes two: its own (even) and the one before it for the old image a
        ``b`` line may need, so ``_seq`` orders both inside the transaction.
        """
        self.seq += count
        return self.seq


@dataclass
class Image:
    """The last image of a key in the batch.

    Attributes:
        values: the row (None once deleted or moved away).
        origin: the mirror key its unresolved unchanged-TOAST values come from, or None.
        line: index of its line in the batch.
    """

    values: list[Value] | None
    origin: tuple | None
    line: int


@dataclass
class Batch:
    """Buffered lines of one table.

    Attributes:
        info: the table (its shape when the lines were made).
        changelog_only: the lines predate the table's snapshot: changelog, not mirror.
        lines: COPY text lines for the staging table.
        images: last image per key (keyed tables).
        unresolved: columns some line needs from the mirror (unchanged TOAST).
        removes: whether a line removes a mirror row (``b`` or ``d``).
    """

    info: TableInfo
    changelog_only: bool = False
    lines: list[bytes] = field(default_factory=list)
    images: dict[tuple, Image] = field(default_factory=dict)
    unresolved: set[str] = field(default_factory=set)
    removes: bool = False

    def supersede(self, image: Image | None) -> None:
        """Mark an earlier line of the same key as not the last one."""
        if image is not None:
            line = self.lines[image.line]
            self.lines[image.line] = line[:-3] + SUPERSEDED


def array_literal(items: list[str] | tuple) -> bytes:
    """A text[] literal, escaped for COPY text."""
    out = []
    for item in items:
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        out.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return escape(("{" + ",".join(out) + "}").encode())


def encode_line(values: list[Value], head: bytes, unchanged: list[str] | None,
                origin: tuple | None, txn: TxnContext) -> bytes:
    """One staging line.

    Args:
        values: the row (bytes, None for NULL; unresolved UNCHANGED values become NULL).
        head: ``_ord``, ``_op``, ``_lsn`` and ``_seq``, tab-separated.
        unchanged: columns to read from the mirror, or None.
        origin: the mirror key to read them from.
        txn: the source transaction.
    """
    # Fast path: NUL never occurs in PostgreSQL text, so one search over the joined row tells
    # whether any value needs COPY escaping.
    plain = [v if v.__class__ is bytes else b"\\N" for v in values]
    joined = b"\0".join(plain)
    if NEEDS_ESCAPE.search(joined) is None:
        row = joined.replace(b"\0", b"\t")
    else:
        row = b"\t".join([b"\\N" if v is None or v is UNCHANGED else escape(v) for v in values])
    if unchanged:
        tail = b"\t" + array_literal(unchanged) + b"\t" + array_literal(origin or ())
    else:
        tail = b"\t\\N\t\\N"
    return row + b"\t" + head + tail + txn.suffix


def head(ord_: int, op: bytes, lsn: int, seq: int) -> bytes:
    """The ``_ord``, ``_op``, ``_lsn``, ``_seq`` fields of a line."""
    return b"%d\t%s\t%X/%X\t%d" % (ord_, op, lsn >> 32, lsn & 0xFFFFFFFF, seq)
