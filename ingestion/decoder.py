"""Decoder of PostgreSQL's ``pgoutput`` logical replication protocol, version 1.

Each message of the stream (the payload of an XLogData frame) decodes to one of the dataclasses
below. Column values stay in PostgreSQL's text output form, as ``bytes``; ``None`` is SQL NULL and
:data:`UNCHANGED` marks an unchanged TOASTed value that the sender omitted (the applier carries the
previous value forward). Reference: PostgreSQL docs, "Logical Replication Message Formats".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ingestion.errors import DecodeError

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class _Unchanged:
    """Marker of an unchanged TOASTed value ('u' in TupleData)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = _Unchanged()
Value = bytes | None | _Unchanged

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_BEGIN = struct.Struct(">QqI")
_COMMIT = struct.Struct(">bQQq")
_RELHEAD = struct.Struct(">I")
_COLTAIL = struct.Struct(">Ii")
_MSGHEAD = struct.Struct(">bQ")


def pg_time(micros: int) -> datetime:
    """Convert PostgreSQL's microseconds since 2000-01-01 UTC into a datetime."""
    return PG_EPOCH + timedelta(microseconds=micros)


@dataclass(slots=True)
class Column:
    """A column of a Relation message.

    Attributes:
        name: column name.
        type_oid: the column's type OID on the source.
        typmod: the type modifier (-1 if none).
        is_key: part of the replica identity.
    """

    name: str
    type_oid: int
    typmod: int
    is_key: bool


@dataclass(slots=True)
class Relation:
    """'R': the shape of a table, sent before its first change and after each schema change."""

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: list[Column] = field(default_factory=list)


@dataclass(slots=True)
class TypeMsg:
    """'Y': a user-defined type used by a following Relation."""

    oid: int
    namespace: str
    name: str


@dataclass(slots=True)
class Begin:
    """'B': start of a source transaction."""

    final_lsn: int
    commit_time: int
    xid: int


@dataclass(slots=True)
class Commit:
    """'C': end of a source transaction."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(slots=True)
class Origin:
    """'O': the transaction was replicated from another node."""

    origin_lsn: int
    name: str


@dataclass(slots=True)
class Insert:
    """'I': a new row."""

    relid: int
    new: list[Value]


@dataclass(slots=True)
class Update:
    """'U': a changed row; ``old`` is the old key ('K') or whole old row ('O'), if sent."""

    relid: int
    old_kind: str | None
    old: list[Value] | None
    new: list[Value]


@dataclass(slots=True)
class Delete:
    """'D': a deleted row; ``old`` is its key ('K') or whole row ('O')."""

    relid: int
    old_kind: str
    old: list[Value]


@dataclass(slots=True)
class Truncate:
    """'T': one TRUNCATE statement over one or more tables."""

    options: int
    relids: list[int]

    @property
    def cascade(self) -> bool:
        """Whether CASCADE was given."""
        return bool(self.options & 1)

    @property
    def restart_identity(self) -> bool:
        """Whether RESTART IDENTITY was given."""
        return bool(self.options & 2)


@dataclass(slots=True)
class Message:
    """'M': a logical decoding message (``pg_logical_emit_message``)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Decoded = (Begin | Commit | Origin | Relation | TypeMsg | Insert | Update | Delete | Truncate
           | Message)


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("utf-8"), end + 1


def tuple_data(buf: bytes, pos: int, _unpack: object = _I32.unpack_from
               ) -> tuple[list[Value], int, bool]:
    """Decode TupleData starting at ``pos``.

    Returns:
        The values, the next position, and whether a value was sent as unchanged TOAST.
    """
    ncols = (buf[pos] << 8) | buf[pos + 1]
    pos += 2
    values: list[Value] = []
    append = values.append
    unchanged = False
    for _ in range(ncols):
        kind = buf[pos]
        if kind == 116 or kind == 98:  # 't' text, 'b' binary
            start = pos + 5
            pos = start + _unpack(buf, pos + 1)[0]
            append(buf[start:pos])
        elif kind == 110:  # 'n'
            append(None)
            pos += 1
        elif kind == 117:  # 'u'
            append(UNCHANGED)
            unchanged = True
            pos += 1
        else:
            raise DecodeError(f"pgoutput TupleData: unknown column kind {chr(kind)!r} "
                              f"at byte {pos}")
    if pos > len(buf):
        raise DecodeError(f"pgoutput TupleData: truncated ({len(buf)} bytes)")
    return values, pos, unchanged


def row_change(buf: bytes) -> tuple[int, int, str | None, list[Value] | None,
                                   list[Value] | None, bool]:
    """Decode an Insert, Update or Delete without building a message object (the hot path).

    Returns:
        (kind byte, relation OID, old kind 'K'/'O'/None, old values, new values, whether the
        new values hold unchanged TOAST).
    """
    kind = buf[0]
    relid = _U32.unpack_from(buf, 1)[0]
    tag = buf[5]
    if kind == 73:  # 'I'
        return kind, relid, None, None, tuple_data(buf, 6)[0], False
    if kind == 68:  # 'D'
        return kind, relid, chr(tag), tuple_data(buf, 6)[0], None, False
    if tag == 78:  # 'N'
        new, _, unchanged = tuple_data(buf, 6)
        return kind, relid, None, None, new, unchanged
    old, pos, _ = tuple_data(buf, 6)
    new, _, unchanged = tuple_data(buf, pos + 1)
    return kind, relid, chr(tag), old, new, unchanged


def decode(buf: bytes) -> Decoded:
    """Decode one pgoutput message.

    Args:
        buf: the payload of one XLogData frame.

    Returns:
        The decoded message.

    Raises:
        DecodeError: the kind is unknown or the data is truncated.
    """
    try:
        return _decode(buf)
    except (struct.error, IndexError, ValueError, DecodeError) as exc:
        kind = chr(buf[0]) if buf else "?"
        raise DecodeError(f"pgoutput message {kind!r} of {len(buf)} bytes is malformed: {exc}. "
                          f"Is the slot using pgoutput with proto_version 1?") from None


def _decode(buf: bytes) -> Decoded:
    kind = buf[0]
    if kind in (73, 85, 68):  # 'I', 'U', 'D'
        _, relid, old_kind, old, new, _ = row_change(buf)
        if kind == 73:
            return Insert(relid, new)
        if kind == 68:
            return Delete(relid, old_kind, old)
        return Update(relid, old_kind, old, new)
    if kind == 66:  # 'B'
        final_lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
        return Begin(final_lsn, ts, xid)
    if kind == 67:  # 'C'
        flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
        return Commit(flags, commit_lsn, end_lsn, ts)
    if kind == 82:  # 'R'
        (oid,) = _RELHEAD.unpack_from(buf, 1)
        namespace, pos = _cstring(buf, 5)
        name, pos = _cstring(buf, pos)
        identity = chr(buf[pos])
        (ncols,) = _I16.unpack_from(buf, pos + 1)
        pos += 3
        columns = []
        for _ in range(ncols):
            flags = buf[pos]
            colname, pos = _cstring(buf, pos + 1)
            type_oid, typmod = _COLTAIL.unpack_from(buf, pos)
            pos += 8
            columns.append(Column(colname, type_oid, typmod, bool(flags & 1)))
        return Relation(oid, namespace or "pg_catalog", name, identity, columns)
    if kind == 89:  # 'Y'
        (oid,) = _U32.unpack_from(buf, 1)
        namespace, pos = _cstring(buf, 5)
        name, _ = _cstring(buf, pos)
        return TypeMsg(oid, namespace, name)
    if kind == 84:  # 'T'
        (nrels,) = _I32.unpack_from(buf, 1)
        options = buf[5]
        relids = [_U32.unpack_from(buf, 6 + 4 * i)[0] for i in range(nrels)]
        return Truncate(options, relids)
    if kind == 79:  # 'O'
        (origin_lsn,) = struct.unpack_from(">Q", buf, 1)
        name, _ = _cstring(buf, 9)
        return Origin(origin_lsn, name)
    if kind == 77:  # 'M'
        flags, lsn = _MSGHEAD.unpack_from(buf, 1)
        prefix, pos = _cstring(buf, 10)
        (length,) = _I32.unpack_from(buf, pos)
        return Message(bool(flags & 1), lsn, prefix, bytes(buf[pos + 4:pos + 4 + length]))
    raise DecodeError(f"unknown pgoutput message kind {chr(kind)!r} ({len(buf)} bytes); "
                      f"Tidemark decodes proto_version 1 (R, Y, B, C, I, U, D, T, O, M).")
