"""Batches: the changes of one table inside one landing transaction, as COPY text lines.

A line is one row of the table's staging table (see :data:`STAGING_META`): the table's columns in
PostgreSQL's text form, then ``_op``, ``_lsn``, ``_seq``, ``_commit_lsn``, ``_commit_at``,
``_txid`` (up to here a line is also a changelog row, see :data:`CHANGELOG_FIELDS`), then
``_tidemark_unchanged`` (columns sent as unchanged TOAST that nothing in the batch resolves: they
are read from the mirror), ``_tidemark_origin`` (the key, as text, of the mirror row those values
come from) and last ``_tidemark_last`` (false once a later line of the batch has the same key: the
mirror only needs the last image of each key). Lines are ordered by ``(_commit_lsn, _seq)``.

Operations (``_op``): ``r`` snapshot read, ``c`` insert, ``u`` update (new image), ``b`` the old
image of an update that moved the row (a key change, or any update of a keyless table), ``d``
delete (old image). Every line goes to the changelog.

This is the hot path of ingestion: a line is built with a few C-level operations (one join, one
scan for characters COPY must escape), and a batch remembers only each key's line number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ingestion.copytext import escape, unescape
from ingestion.decoder import UNCHANGED, Value
from ingestion.lsn import lsn_to_str

if TYPE_CHECKING:
    from ingestion.tables import TableInfo

STAGING_META = ("_op text, _lsn pg_lsn, _seq integer, _commit_lsn pg_lsn,"
                " _commit_at timestamptz, _txid bigint, _tidemark_unchanged text[],"
                " _tidemark_origin text[], _tidemark_last boolean")
"""The staging table's columns after the table's own, in line order."""

CHANGELOG_FIELDS = ("_op", "_lsn", "_seq", "_commit_lsn", "_commit_at", "_txid")
"""The changelog's columns after the table's own, in line order (a line's first fields)."""

PLAIN_END = b"\t\\N\t\\N\tt\n"
"""How a line with no unresolved values that is its key's last ends: cut it, and the line is a
changelog row (see :func:`changelog_rows`)."""

SUPERSEDED = b"\tf\n"
_ESCAPED = re.compile(rb"[\\\n\r]")


@dataclass
class TxnContext:
    """The source transaction the next changes belong to.

    Attributes:
        commit_lsn: its commit LSN (``_commit_lsn``).
        commit_at: its commit time.
        xid: its transaction id.
        seq: the last ``_seq`` handed out in it (see :meth:`next_seq`).
        suffix: ``_commit_lsn``, ``_commit_at`` and ``_txid``, shared by its lines.
        tail: ``suffix`` followed by :data:`PLAIN_END`: the tail of a line with no unresolved
            unchanged values.
    """

    commit_lsn: int
    commit_at: datetime | None
    xid: int | None
    seq: int = 0
    suffix: bytes = b""
    tail: bytes = b""

    def __post_init__(self) -> None:
        at = self.commit_at.isoformat().encode() if self.commit_at else b"\\N"
        xid = str(self.xid).encode() if self.xid is not None else b"\\N"
        self.suffix = b"\t" + lsn_to_str(self.commit_lsn).encode() + b"\t" + at + b"\t" + xid
        self.tail = self.suffix + PLAIN_END

    def next_seq(self, count: int = 2) -> int:
        """Reserve ``count`` sequence numbers; return the last one.

        A stream change takes two: its own (even) and the one before it for the old image a
        ``b`` line may need, so ``_seq`` orders both inside the transaction.
        """
        self.seq += count
        return self.seq


def row_text(values: list[Value]) -> bytes:
    """The table's columns of a line: values in COPY text form, tab-separated.

    NULL and unresolved unchanged-TOAST values become ``\\N``.
    """
    try:
        row = b"\t".join(values)
    except TypeError:  # NULL or unchanged values
        return _row_text_slow(values)
    if row.count(b"\t") != len(values) - 1 or _ESCAPED.search(row) is not None:
        return _row_text_slow(values)
    return row


def _row_text_slow(values: list[Value]) -> bytes:
    plain = [v if v.__class__ is bytes else b"" for v in values]
    probe = b"\t".join(plain)
    if probe.count(b"\t") == len(values) - 1 and _ESCAPED.search(probe) is None:
        return b"\t".join([v if v.__class__ is bytes else b"\\N" for v in values])
    return b"\t".join([escape(v) if v.__class__ is bytes else b"\\N" for v in values])


def array_literal(items: list[str] | tuple) -> bytes:
    """A text[] literal, escaped for COPY text."""
    out = []
    for item in items:
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        out.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return escape(("{" + ",".join(out) + "}").encode())


_ELEMENT = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_array_literal(text: bytes) -> list[str]:
    """The elements of a literal :func:`array_literal` made (before COPY escaping)."""
    return [re.sub(r"\\(.)", r"\1", m) for m in _ELEMENT.findall(text.decode())]


def line(values: list[Value], op: bytes, lsn: int, seq: int, txn: TxnContext,
         unchanged: list[str] | None = None, origin: tuple | None = None) -> bytes:
    """One staging line (see the module docstring)."""
    end = PLAIN_END if not unchanged else (
        b"\t" + array_literal(unchanged) + b"\t" + array_literal(origin or ()) + b"\tt\n")
    return b"%b\t%b\t%X/%X\t%d%b%b" % (row_text(values), op, lsn >> 32, lsn & 0xFFFFFFFF, seq,
                                      txn.suffix, end)


@dataclass
class Batch:
    """Buffered lines of one table.

    Attributes:
        info: the table (its shape when the lines were made).
        changelog_only: the lines predate the table's snapshot: changelog, not mirror.
        contract: the table's contract, or None.
        lines: COPY text lines for the staging table.
        images: per key, the number of the key's last line.
        origins: per key whose last line has unresolved unchanged values, the mirror key they
            come from.
        unresolved: columns some line needs from the mirror (unchanged TOAST).
        letters: per key whose latest image is a dead letter of the batch, that image.
        pending: per such key, its dead letters of the batch (not written yet).
        letter_origins: per key of ``letters`` whose image left unchanged values unresolved,
            the mirror key they come from (a rejected key change's: its old key, which its
            letter is completed from as the batch lands).
        takes: per removal line (``_commit_lsn``, ``_seq``) of a key the batch holds as
            letters only, those letters: superseded if the mirror has no row of the key either
            (:func:`ingestion.letter_removals.take_keyed_letters`).
        completions: letters of rejected key changes to complete from the old key's row.
        dead: the applier's list of dead letters not written yet when the batch began.
        removes: whether a line removes a mirror row (``b`` or ``d``).
        removed: the keys of its removal lines (keyed tables).
        updates: whether a line is an update's new image (its key may be in the mirror).
        inserts: whether a line is an insert's or a snapshot read's image (``c``, ``r``).
        reinserts: whether an insert follows an earlier line of its key (a delete, a move).
        first_commit: the lowest ``_commit_lsn`` of its lines.
        last_commit: the highest.
    """

    info: TableInfo
    changelog_only: bool = False
    contract: Any = None
    lines: list[bytes] = field(default_factory=list)
    images: dict[Any, int] = field(default_factory=dict)
    origins: dict[Any, tuple] = field(default_factory=dict)
    unresolved: set[str] = field(default_factory=set)
    letters: dict[Any, list] = field(default_factory=dict)
    pending: dict[Any, list[list]] = field(default_factory=dict)
    letter_origins: dict[Any, tuple] = field(default_factory=dict)
    takes: dict[tuple[int, int], list[list]] = field(default_factory=dict)
    completions: list[tuple[dict, tuple, list[str], dict | None]] = field(default_factory=list)
    dead: list[list] | None = None
    removes: bool = False
    removed: set[Any] = field(default_factory=set)
    updates: bool = False
    inserts: bool = False
    reinserts: bool = False
    first_commit: int | None = None
    last_commit: int = 0

    def saw(self, commit_lsn: int) -> None:
        """Note that lines of the transaction committed at ``commit_lsn`` follow."""
        if self.first_commit is None or commit_lsn < self.first_commit:
            self.first_commit = commit_lsn
        self.last_commit = max(self.last_commit, commit_lsn)

    def supersede(self, number: int) -> None:
        """Mark line ``number`` as not the last one of its key."""
        text = self.lines[number]
        self.lines[number] = text[:-3] + SUPERSEDED

    def previous(self, key: Any) -> tuple[list[Value] | None, tuple | None] | None:
        """The key's last image in the batch, read back from its line: (values, or None once
        deleted or moved away; the mirror key its unresolved values come from). None when the
        batch has no line for the key."""
        number = self.images.get(key)
        if number is None:
            return None
        fields = self.lines[number].split(b"\t")
        ncols = len(self.info.columns)
        if fields[ncols] in (b"b", b"d"):
            return None, None
        values: list[Value] = [unescape(f) for f in fields[:ncols]]
        unchanged = unescape(fields[ncols + 6])
        if unchanged is not None:
            names = self.info.column_names
            for name in parse_array_literal(unchanged):
                values[names.index(name)] = UNCHANGED
        return values, self.origins.get(key)

    def appends_only(self) -> bool:
        """Whether every line is a new key's only image with nothing left to the mirror: then
        the lines, cut at :data:`PLAIN_END`, are the changelog's new rows and the mirror's."""
        return not (self.removes or self.updates or self.reinserts or self.unresolved
                    or self.origins)


def changelog_rows(lines: list[bytes]) -> bytes | None:
    """The COPY text of ``lines`` as changelog rows (:data:`CHANGELOG_FIELDS`), or None when a
    line does not end in :data:`PLAIN_END`.

    A raw newline ends a line and nowhere else (values are escaped), so the replacement cuts
    exactly one ending per line, or the lengths say otherwise.
    """
    data = b"".join(lines)
    rows = data.replace(PLAIN_END, b"\n")
    if len(data) - len(rows) != len(lines) * (len(PLAIN_END) - 1):
        return None
    return rows
