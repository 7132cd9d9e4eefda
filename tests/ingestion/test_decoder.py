"""The pgoutput decoder on message bytes laid out as the protocol documents them (the other tests
decode a real server's stream; these cover kinds that are awkward to provoke: Origin, Type,
non-transactional Message, Update with old key, Truncate options, and malformed input)."""

from __future__ import annotations

import struct

import pytest

from ingestion.copytext import encode_row, parse_lines
from ingestion.decoder import (
    UNCHANGED,
    Begin,
    Commit,
    Message,
    Origin,
    Relation,
    Truncate,
    TypeMsg,
    Update,
    decode,
    pg_time,
)
from ingestion.errors import DecodeError
from ingestion.lsn import lsn_to_str, str_to_lsn


def tup(*values: bytes | None | str) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "u":
            out += b"u"
        else:
            out += b"t" + struct.pack(">i", len(v)) + v
    return out


def test_transaction_frame_and_metadata_messages() -> None:
    begin = decode(b"B" + struct.pack(">QqI", 0x1_0000_0010, 1_000_000, 42))
    assert begin == Begin(0x1_0000_0010, 1_000_000, 42)
    assert pg_time(begin.commit_time).isoformat() == "2000-01-01T00:00:01+00:00"
    commit = decode(b"C" + struct.pack(">bQQq", 0, 5, 9, 7))
    assert commit == Commit(0, 5, 9, 7)
    assert decode(b"O" + struct.pack(">Q", 77) + b"node_a\0") == Origin(77, "node_a")
    assert decode(b"Y" + struct.pack(">I", 16500) + b"public\0mood\0") == TypeMsg(
        16500, "public", "mood")
    msg = decode(b"M" + struct.pack(">bQ", 0, 123) + b"tidemark\0" + struct.pack(">i", 2) + b"hi")
    assert msg == Message(False, 123, "tidemark", b"hi")


def test_relation_update_with_old_key_and_truncate() -> None:
    rel = decode(b"R" + struct.pack(">I", 5) + b"public\0We ird\0" + b"d" + struct.pack(">h", 2)
                 + b"\x01id\0" + struct.pack(">Ii", 23, -1)
                 + b"\x00body\0" + struct.pack(">Ii", 25, -1))
    assert isinstance(rel, Relation) and rel.name == "We ird" and rel.replica_identity == "d"
    assert [(c.name, c.is_key) for c in rel.columns] == [("id", True), ("body", False)]
    upd = decode(b"U" + struct.pack(">I", 5) + b"K" + tup(b"1", None) + b"N" + tup(b"2", "u"))
    assert upd == Update(5, "K", [b"1", None], [b"2", UNCHANGED])
    trunc = decode(b"T" + struct.pack(">ibII", 2, 3, 5, 6))
    assert trunc == Truncate(3, [5, 6]) and trunc.cascade and trunc.restart_identity


def test_malformed_and_unknown_messages_are_clear_errors() -> None:
    with pytest.raises(DecodeError, match="unknown pgoutput message kind 'Z'"):
        decode(b"Z123")
    with pytest.raises(DecodeError, match="malformed"):
        decode(b"I" + struct.pack(">I", 5) + b"N" + struct.pack(">h", 1) + b"t\0\0")


def test_lsn_and_copy_text_round_trip() -> None:
    assert lsn_to_str(str_to_lsn("16/B374D848")) == "16/B374D848"
    values = [b"a\tb\\c\nd\re", None, b"", b"\\N"]
    assert list(parse_lines([encode_row(values)])) == [values]
