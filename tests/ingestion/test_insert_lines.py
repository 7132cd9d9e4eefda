"""The insert hot path gives the same staging line as the general path, for any values."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime

import pytest

from ingestion.batch import TxnContext, line
from ingestion.decoder import row_change
from ingestion.insert_lines import insert_line

_TRICKY = [b"\t", b"\\", b"\n", b"\r", b"\\N", b"", b"a\tb", b"\xc3\xa9", b"NaN", b"-Infinity",
           b"{1,2}", b'"q"', b" ", b"\x00x"[1:]]


def _insert_message(relid: int, values: list[bytes | None]) -> bytes:
    out = [b"I", struct.pack(">I", relid), b"N", struct.pack(">h", len(values))]
    for v in values:
        out.append(b"n" if v is None else b"t" + struct.pack(">i", len(v)) + v)
    return b"".join(out)


def _value(rng: random.Random) -> bytes | None:
    pick = rng.random()
    if pick < 0.15:
        return None
    if pick < 0.5:
        return b"".join(rng.choice(_TRICKY) for _ in range(rng.randint(1, 3)))
    return bytes(rng.choice(b"abcxyz019 .-:+\t\\\n\r") for _ in range(rng.randint(0, 12)))


@pytest.mark.parametrize("seed", range(5))
def test_hot_path_line_equals_general_line(seed: int) -> None:
    rng = random.Random(seed)
    txn = TxnContext(0x5_0000_1000 + seed, datetime(2026, 12, 2, 21, 0, tzinfo=UTC), 777)
    for n in range(2_000):
        values = [_value(rng) for _ in range(rng.randint(1, 8))]
        msg = _insert_message(16384, values)
        lsn = rng.randint(1, 2**40)
        made = insert_line(msg, lsn, 2 * n, txn.tail)
        assert made is not None
        _, _, _, _, new, _ = row_change(msg)
        assert made[1] == new
        assert made[0] == line(new, b"c", lsn, 2 * n, txn), values


def test_other_column_forms_take_the_general_path() -> None:
    txn = TxnContext(1, None, None)
    ok = _insert_message(1, [b"1", None])
    assert insert_line(ok, 5, 2, txn.tail) == (b"1\t\\N\tc\t0/5\t2\t0/1\t\\N\t\\N\t\\N\t\\N\tt\n",
                                               [b"1", None])
    binary = ok[:8] + b"b" + ok[9:]
    assert insert_line(binary, 5, 2, txn.tail) is None
    toast = ok[:-1] + b"u"
    assert insert_line(toast, 5, 2, txn.tail) is None
    assert insert_line(ok + b"junk", 5, 2, txn.tail) is None
    with pytest.raises((IndexError, struct.error)):  # the caller falls back to the decoder
        insert_line(ok[:-3], 5, 2, txn.tail)
