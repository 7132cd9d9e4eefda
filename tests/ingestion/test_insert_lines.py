"""The hot path of inserts and plain updates gives the same staging lines (and the same batch) as
the general path, for any values."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime

import pytest

from ingestion.batch import Batch, TxnContext, line
from ingestion.changes import ChangeBuffer
from ingestion.decoder import row_change
from ingestion.insert_lines import UPDATE, insert_line
from ingestion.tables import ColumnInfo, TableInfo

_TRICKY = [b"\t", b"\\", b"\n", b"\r", b"\\N", b"", b"a\tb", b"\xc3\xa9", b"NaN", b"-Infinity",
           b"{1,2}", b'"q"', b" ", b"\x00x"[1:]]


def _insert_message(relid: int, values: list[bytes | None], kind: bytes = b"I") -> bytes:
    out = [kind, struct.pack(">I", relid), b"N", struct.pack(">h", len(values))]
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


@pytest.mark.parametrize("seed", range(3))
def test_hot_path_update_line_equals_general_line(seed: int) -> None:
    """An Update that sent no old row ('N') has an Insert's layout: its line is the new image's."""
    rng = random.Random(100 + seed)
    txn = TxnContext(0x7_0000_2000 + seed, datetime(2026, 12, 6, 17, 0, tzinfo=UTC), 42)
    for n in range(2_000):
        values = [_value(rng) for _ in range(rng.randint(1, 8))]
        msg = _insert_message(16384, values, b"U")
        lsn = rng.randint(1, 2**40)
        made = insert_line(msg, lsn, 2 * n, txn.tail, UPDATE)
        assert made is not None
        kind, _, old_kind, old, new, unchanged = row_change(msg)
        assert (kind, old_kind, old, unchanged) == (85, None, None, False)
        assert made == (line(new, b"u", lsn, 2 * n, txn), new), values


class _Buffer(ChangeBuffer):
    """A change buffer without a landing (no contracts, never flushed)."""

    def __init__(self, commit_lsn: int) -> None:
        self.source, self.contracts, self.flush_rows = "s", None, 10**9
        self.batches, self.rows_in_txn, self._cached = {}, 0, None
        self._dead, self._bag_letters, self._lettered, self._made_keys = [], {}, {}, {}
        self._paused = []
        self.txn = TxnContext(commit_lsn, datetime(2026, 12, 6, tzinfo=UTC), 9)

    def contract_for(self, info: TableInfo) -> None:
        return None

    def _pause(self, info: TableInfo, reason: str) -> None:
        info.paused_reason = reason


def _state(batch: Batch) -> tuple:
    return (batch.lines, batch.images, batch.updates, batch.inserts, batch.reinserts, batch.removes,
            batch.origins, batch.first_commit, batch.last_commit)


@pytest.mark.parametrize("key", [["id"], ["id", "k"], []])
def test_hot_path_batch_equals_general_batch(key: list[str]) -> None:
    """Inserts and key-keeping updates of the same keys in any order (superseding, re-inserting)
    leave the same batch through :meth:`ChangeBuffer.add_plain` as through :meth:`add`; a
    keyless table's update, a key change (old key sent) and an unchanged TOAST value are left
    to :meth:`add`."""
    rng = random.Random(len(key))
    cols = [ColumnInfo("id", 23, -1, "integer"), ColumnInfo("k", 25, -1, "text"),
            ColumnInfo("v", 25, -1, "text")]
    hot, general = _Buffer(0x9_0000), _Buffer(0x9_0000)
    info_h = TableInfo("s", "t", "public", "t", 1, cols, key)
    info_g = TableInfo("s", "t", "public", "t", 1, cols, key)
    taken = 0
    for n in range(3_000):
        ident = str(rng.randint(1, 40)).encode()
        values = [ident, rng.choice([b"a", b"b\tc"]), _value(rng)]
        kind = rng.choice([b"I", b"U"] if key else [b"I"])  # a keyless update pauses
        msg = _insert_message(16384, values, kind)
        lsn, seq = 1_000 + n, 2 * n + 2
        taken += hot.add_plain(info_h, msg, lsn, seq, kind == b"U")
        _, _, old_kind, old, new, unchanged = row_change(msg)
        general.add(info_g, "c" if kind == b"I" else "u", new, old, lsn, seq, old_kind, unchanged)
    assert taken == 3_000
    assert _state(hot.batches[("t", False)]) == _state(general.batches[("t", False)])
    assert hot.rows_in_txn == general.rows_in_txn
    moved = msg[:5] + b"K" + msg[6:]  # an old key sent: the general path's (a key change)
    toast = _insert_message(16384, [b"1", b"a", None], b"U")[:-1] + b"u"
    assert not hot.add_plain(info_h, moved, 9_999, 99_998, update=True)
    assert not hot.add_plain(info_h, toast, 9_999, 99_998, update=True)
    if not key:
        assert not hot.add_plain(info_h, msg[:1].replace(b"I", b"U") + msg[1:], 9_999, 99_998,
                                 update=True)
