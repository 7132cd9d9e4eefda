"""Turning decoded changes into batch lines: keys, unchanged TOAST values, contracts, pauses.

:class:`ChangeBuffer` is the change-facing half of :class:`ingestion.applier.Applier` (which adds
transactions and flushing). Rows are identified by the table's key. An update that changes the
key writes a ``b`` line for the old key (the row leaves it) before the new image; an unchanged
TOAST value in such an update belongs to the row under the old key. A keyless table
(``REPLICA IDENTITY FULL``) is a bag: every update is a ``b`` line with the whole old row and a
``u`` line with the new one; when the new row breaks the table's contract, the ``b`` line lands
and the new row goes to the dead letters (:mod:`ingestion.dead_letters` replays it as that ``u``
line).

Inserts and plain updates take a short path (one line, one dict entry per key; straight from the
message, :meth:`ChangeBuffer.add_plain`, when nothing needs care); everything else the general
one.
"""

from __future__ import annotations

import struct
from typing import Any

from psycopg.types.json import Jsonb

from ingestion.batch import Batch, TxnContext, line, row_text
from ingestion.decoder import UNCHANGED, Value
from ingestion.insert_lines import INSERT, UPDATE, insert_line
from ingestion.letter_removals import supersede
from ingestion.lsn import lsn_to_str
from ingestion.tables import TableInfo

_OPS = {"r": b"r", "c": b"c", "u": b"u", "d": b"d"}


def _text(v: Value) -> str | None:
    if v is None or v is UNCHANGED:
        return None
    return v.decode("utf-8", "replace")


def row_json(info: TableInfo, values: list[Value] | None) -> dict[str, Any] | None:
    """A row as ``{column: text or null}`` (unchanged TOAST values are left out)."""
    if values is None:
        return None
    return {c: _text(v) for c, v in zip(info.column_names, values, strict=False)
            if v is not UNCHANGED}


def key_row(info: TableInfo, key: Any) -> list[Value]:
    """A row with only the key columns set (the old key of a key-changing update)."""
    row: list[Value] = [None] * len(info.columns)
    parts = (key,) if len(info.key_idx) == 1 else key
    for i, v in zip(info.key_idx, parts, strict=True):
        row[i] = v
    return row


def key_of(info: TableInfo, values: list[Value]) -> Any:
    """A row's key: the value itself for a one-column key, else a tuple."""
    idx = info.key_idx
    return values[idx[0]] if len(idx) == 1 else tuple([values[i] for i in idx])


class ChangeBuffer:
    """Buffers changes as batch lines (the applier's attributes are declared there)."""

    source: str
    contracts: Any
    flush_rows: int
    batches: dict[tuple[str, bool], Batch]
    txn: TxnContext | None
    rows_in_txn: int
    _dead: list[list]
    _bag_letters: dict[tuple[str, bytes], list[list]]
    _lettered: dict[str, bool]
    _made_keys: dict[str, set[Any]]
    _paused: list[tuple]
    _cached: tuple | None

    def contract_for(self, info: TableInfo) -> Any:  # pragma: no cover - Applier's
        raise NotImplementedError

    def flush(self, info: TableInfo) -> None:  # pragma: no cover - Applier's
        raise NotImplementedError

    def _pause(self, info: TableInfo, reason: str) -> None:  # pragma: no cover - Applier's
        raise NotImplementedError

    def _batch(self, info: TableInfo) -> Batch:
        txn = self.txn
        cached = self._cached
        if cached is not None and cached[0] is info and cached[1] is txn:
            return cached[2]
        changelog_only = txn.commit_lsn < info.snapshot_lsn
        batch = self.batches.get((info.name, changelog_only))
        if batch is None:
            batch = Batch(info, changelog_only, self.contract_for(info), dead=self._dead)
            self.batches[(info.name, changelog_only)] = batch
        batch.saw(txn.commit_lsn)
        self._cached = (info, txn, batch)
        return batch

    def add(self, info: TableInfo, op: str, new: list[Value] | None, old: list[Value] | None,
            lsn: int, seq: int, old_kind: str | None = None, unchanged: bool | None = None
            ) -> None:
        """Buffer one change (``op`` r, c, u or d) of the current source transaction.

        Args:
            info: the table.
            op: the change kind.
            new: the new row (r, c, u).
            old: the old key ('K') or whole old row ('O'), if sent.
            lsn: the change's LSN.
            seq: its ``_seq`` (even in the stream; ``seq - 1`` is free for a ``b`` line).
            old_kind: 'K', 'O' or None.
            unchanged: whether ``new`` holds unchanged TOAST values (None: look).
        """
        if info.stream_positions is not None:
            new, old = info.project(new), info.project(old)
        if info.paused_reason is not None or (
                not info.key_idx and old_kind != "O" and (op == "u" or op == "d")):
            self._add_paused(info, op, new, old, lsn, seq)
            return
        batch = self._batch(info)
        if op == "c" or op == "r" or (op == "u" and old is None and unchanged is False):
            if op != "u":
                batch.inserts = True
            if batch.contract is not None and self._rejected(batch, op, new, None, lsn, seq):
                if info.key_idx:
                    self._letter(batch, key_of(info, new), new)
                else:
                    self._bag_letters.setdefault((info.name, row_text(new)), []).append(
                        self._dead[-1])
                return
            if info.key_idx:
                self._put(batch, key_of(info, new), line(new, _OPS[op], lsn, seq, self.txn),
                          None, op == "u")
            else:
                batch.lines.append(line(new, _OPS[op], lsn, seq, self.txn))
        elif info.key_idx:
            if not self._add_keyed(info, batch, op, new, old, lsn, seq, old_kind, unchanged):
                return
        elif not self._add_keyless(batch, op, new, old, lsn, seq):
            return
        self.rows_in_txn += 1
        if len(batch.lines) >= self.flush_rows:
            self.flush(info)

    def add_plain(self, info: TableInfo, buf: bytes, lsn: int, seq: int,
                  update: bool = False) -> bool:
        """Buffer the Insert message ``buf`` (or, if ``update``, the Update message) of the
        current source transaction, if it can take the hot path (:mod:`ingestion.insert_lines`);
        False leaves it to :meth:`add`.

        An Update takes it only on a keyed table and when it sent no old key or row (the key
        did not change): then its line is the new image, as :meth:`add` makes it.

        Args:
            info: the table.
            buf: the pgoutput Insert or Update message.
            lsn: its LSN.
            seq: its ``_seq``.
            update: ``buf`` is an Update.
        """
        if info.paused_reason is not None or info.stream_positions is not None:
            return False
        idx = info.key_idx
        if update and not idx:
            return False  # a keyless table's update without the old row pauses (add)
        batch = self._batch(info)
        if batch.contract is not None:
            return False
        try:
            if update and buf[5] != 78:  # 'N': no old key or row
                return False
            made = insert_line(buf, lsn, seq, self.txn.tail, UPDATE if update else INSERT)
        except (IndexError, struct.error):
            return False  # the general path says what is wrong
        if made is None:
            return False
        text, values = made
        if not idx:
            batch.lines.append(text)
        else:
            key = values[idx[0]] if len(idx) == 1 else tuple([values[i] for i in idx])
            images = batch.images
            if key in images or batch.origins:
                self._put(batch, key, text, None, update)
            else:
                images[key] = len(batch.lines)
                batch.lines.append(text)
                if update:
                    batch.updates = True
        if not update:
            batch.inserts = True
        self.rows_in_txn += 1
        if len(batch.lines) >= self.flush_rows:
            self.flush(info)
        return True

    def _add_paused(self, info: TableInfo, op: str, new: list[Value] | None,
                    old: list[Value] | None, lsn: int, seq: int) -> None:
        if info.paused_reason is None:
            self._pause(info, f"Table {info.qualified} has no key and its {op!r} change came "
                              f"without the old row: set REPLICA IDENTITY FULL on the source "
                              f"table (or add a primary key), then run "
                              f"`tidemark ingest resync {info.name}`.")
        self._keep(info, op, new, old, lsn, seq)
        self.rows_in_txn += 1

    def _keep(self, info: TableInfo, op: str, new: list[Value] | None, old: list[Value] | None,
              lsn: int, seq: int) -> None:
        """Keep a change of a paused table raw (``tidemark.paused_changes``)."""
        txn = self.txn
        new_row, old_row = row_json(info, new), row_json(info, old)
        self._paused.append((self.source, info.name, lsn_to_str(txn.commit_lsn), seq,
                             lsn_to_str(lsn), op, txn.commit_at, txn.xid,
                             None if new_row is None else Jsonb(new_row),
                             None if old_row is None else Jsonb(old_row)))

    @staticmethod
    def _put(batch: Batch, key: Any, text: bytes, origin: tuple | None = None,
             update: bool = False) -> None:
        """Append the line of ``key`` (an update's new image if ``update``), superseding the
        key's earlier line."""
        images = batch.images
        number = images.get(key)
        if batch.letters:
            batch.letters.pop(key, None)  # this line is the key's latest image now
            batch.pending.pop(key, None)
            batch.letter_origins.pop(key, None)
        if number is not None:
            batch.supersede(number)
            if not update:
                batch.reinserts = True
        if update:
            batch.updates = True
        images[key] = len(batch.lines)
        batch.lines.append(text)
        if origin is not None:
            batch.origins[key] = origin
        elif batch.origins:
            batch.origins.pop(key, None)

    def _add_keyed(self, info: TableInfo, batch: Batch, op: str, new: list[Value] | None,
                   old: list[Value] | None, lsn: int, seq: int, old_kind: str | None,
                   unchanged: bool | None) -> bool:
        txn = self.txn
        if op == "d":
            values = old if old is not None else [None] * len(info.columns)
            self._remove(batch, key_of(info, values), line(values, b"d", lsn, seq, txn), seq)
            return True
        key = key_of(info, new)
        okey = key
        if old is not None:
            okey = key_of(info, old)
            if okey is UNCHANGED or (isinstance(okey, tuple) and UNCHANGED in okey):
                okey = key
        left = origin = None
        if op == "u" and (unchanged or (unchanged is None and UNCHANGED in new)):
            left, origin = self._resolve(batch, info, okey, new, old, old_kind)
        if batch.contract is not None and self._rejected(batch, op, new, left, lsn, seq):
            if okey != key and left:  # filled before the b line lands (side_tables)
                chained = batch.pending.get(okey) if batch.pending else None
                batch.completions.append((self._dead[-1][9].obj, origin, left,
                                          chained[-1][9].obj if chained else None))
            # the key's latest image, for a later unchanged value (and where its own come from)
            self._letter(batch, key, new, origin if left else None)
            if okey != key:
                # The row left its old key on the source whatever its new image: the b line
                # lands (it also supersedes the old key's earlier letters), the letter holds the
                # new row (a replay adds it under the new key) with the TOAST values the update
                # left unchanged, read from the old key's row before the b line lands.
                self._remove(batch, okey, line(key_row(info, okey) if old_kind != "O" else old,
                                               b"b", lsn, seq - 1, txn), seq - 1)
                self.rows_in_txn += 1
            return False
        if okey != key:
            gone = old if old_kind == "O" else key_row(info, okey)
            self._remove(batch, okey, line(gone, b"b", lsn, seq - 1, txn), seq - 1)
        self._put(batch, key, line(new, _OPS[op], lsn, seq, txn, left, origin), origin,
                  op == "u")
        return True

    def _add_keyless(self, batch: Batch, op: str, new: list[Value] | None,
                     old: list[Value] | None, lsn: int, seq: int) -> bool:
        txn = self.txn
        if op == "d":
            if not self._take_letter(batch.info, old):
                batch.lines.append(line(old, b"d", lsn, seq, txn))
                batch.removes = True
            return True
        for i, v in enumerate(new):
            if v is UNCHANGED:  # the whole old row came with the change
                new[i] = old[i]
        if not self._take_letter(batch.info, old):
            batch.lines.append(line(old, b"b", lsn, seq - 1, txn))
            batch.removes = True
        if batch.contract is not None and self._rejected(batch, op, new, None, lsn, seq):
            # The old row leaves the bag all the same: the dead letter is the new row alone,
            # which a replay adds (a keyless row has no key a letter could keep the old one by).
            self._bag_letters.setdefault((batch.info.name, row_text(new)), []).append(
                self._dead[-1])
            return True
        batch.lines.append(line(new, _OPS[op], lsn, seq, txn))
        return True

    def _take_letter(self, info: TableInfo, old: list[Value]) -> bool:
        """Whether a removal of the keyless row ``old`` takes the copy a dead letter of this
        landing transaction holds (not written yet): the letter is written superseded, and the
        removal, which changes no mirror row, writes no changelog line.

        A change that did not change the mirror is not in the changelog: otherwise, once a replay
        adds an equal letter at its own (earlier) position, the changelog replays to a copy
        fewer than the mirror holds. Copies are equal, so taking a letter's rather than the
        mirror's leaves the same rows. A removal whose row is held by an older letter only is
        found as the batch lands (:func:`ingestion.letter_removals.take_letters`).
        """
        held = self._bag_letters.get((info.name, row_text(old))) if self._bag_letters else None
        if not held:
            return False
        supersede([held.pop()])  # the newest: the copies are equal
        return True

    def _letter(self, batch: Batch, key: Any, values: list[Value],
                origin: tuple | None = None) -> None:
        """Note that the keyed row ``key``'s latest image is the dead letter just written, and
        the mirror key its unresolved unchanged values come from (``origin``)."""
        batch.letters[key] = values
        if origin is not None:
            batch.letter_origins[key] = origin
        elif batch.letter_origins:
            batch.letter_origins.pop(key, None)
        batch.pending.setdefault(key, []).append(self._dead[-1])
        self._made_keys.setdefault(batch.info.name, set()).add(key)

    def _remove(self, batch: Batch, key: Any, text: bytes, seq: int) -> None:
        """Add the removal line ``text`` (``b`` or ``d``, its ``_seq`` ``seq``) of ``key``,
        unless it removes nothing.

        A change that did not change the mirror is not in the changelog. When the key's latest
        image is a dead letter of this batch and the batch's line before it removed the row
        (the mirror holds none), the removal takes the letters instead: they are written
        superseded, and no line is added. When the batch has no line of the key, the mirror
        decides as the batch lands (:func:`ingestion.letter_removals.take_keyed_letters`).
        """
        pending = batch.pending.get(key) if batch.pending else None
        if pending:
            prev = batch.previous(key)
            if prev is not None and prev[0] is None:
                supersede(pending)
                del batch.pending[key]
                batch.letters.pop(key, None)
                batch.letter_origins.pop(key, None)
                return
            if prev is None:
                batch.takes[(self.txn.commit_lsn, seq)] = pending
        self._put(batch, key, text)
        batch.removes = True
        batch.removed.add(key)

    @staticmethod
    def _resolve(batch: Batch, info: TableInfo, okey: Any, values: list[Value],
                 old: list[Value] | None, old_kind: str | None
                 ) -> tuple[list[str] | None, tuple | None]:
        """Carry unchanged TOAST values forward from the row's previous image in the batch (under
        its old key: a dead-lettered image if that is the latest), else from the old row; return
        the columns left for the mirror and the mirror key they come from."""
        prev = batch.previous(okey)
        pv = prev[0] if prev is not None else None
        letter = batch.letters.get(okey) if batch.letters else None  # newer than pv
        # a value the letter left unchanged is where the letter's own comes from (a rejected
        # key change's: its old key), not in pv, which is older
        lorigin = batch.letter_origins.get(okey) if letter is not None else None
        left = []
        for i, v in enumerate(values):
            if v is not UNCHANGED:
                continue
            if letter is not None and letter[i] is not UNCHANGED:
                values[i] = letter[i]
            elif lorigin is None and pv is not None and pv[i] is not UNCHANGED:
                values[i] = pv[i]
            elif lorigin is None and old is not None and old_kind == "O" \
                    and old[i] is not UNCHANGED:
                values[i] = old[i]
            else:
                left.append(info.columns[i].name)
        if not left:
            return None, None
        batch.unresolved.update(left)
        if lorigin is not None:
            return left, lorigin
        if pv is not None and prev[1] is not None:
            return left, prev[1]
        return left, (okey,) if len(info.key_idx) == 1 else okey

    def _rejected(self, batch: Batch, op: str, values: list[Value], unresolved: list[str] | None,
                  lsn: int, seq: int) -> bool:
        from contracts import validate_row

        info, contract = batch.info, batch.contract
        row = {c: _text(v) for c, v in zip(info.column_names, values, strict=False)
               if v is not UNCHANGED}
        violations = [v for v in validate_row(contract, row, self.contracts)
                      if not unresolved or v.column not in unresolved]
        if not violations:
            return False
        txn = self.txn
        self._lettered[info.name] = True
        reason = "; ".join(v.message for v in violations)
        detail = [{"column": v.column, "rule": v.rule, "message": v.message,
                   "value": None if v.value is None else str(v.value)} for v in violations]
        self._dead.append([self.source, info.name, lsn_to_str(lsn), lsn_to_str(txn.commit_lsn),
                           seq, op, reason, Jsonb(detail), str(contract.version),
                           Jsonb(row_json(info, values)), txn.commit_at, txn.xid, None, None])
        return True
