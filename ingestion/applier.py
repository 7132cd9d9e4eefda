"""The applier: writes decoded changes into landing, set-based, one landing transaction at a time.

Changes are buffered per table as COPY text lines. A *flush* COPYs a table's buffer into a
session-local staging table and applies it with one statement per kind of work: changelog rows
(``INSERT ... SELECT``), mirror deletes and mirror upserts (the net effect per key, by
``DISTINCT ON`` over the change order). :meth:`Applier.commit` flushes everything, writes the
checkpoint and commits, so changes and checkpoint are durable together or not at all.

Staging columns: the table's columns, then ``_ord`` (order in the batch), ``_op``, ``_lsn``,
``_seq``, ``_unchanged`` (columns sent as unchanged TOAST that no earlier change in the batch
resolves: filled from the mirror), ``_commit_lsn``, ``_commit_at``, ``_txid``. ``_op = 'x'`` marks
the old key of an update that changed the key: a delete for the mirror, no changelog row.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingestion.copytext import NEEDS_ESCAPE, escape
from ingestion.decoder import UNCHANGED, Value
from ingestion.errors import TablesChangedError
from ingestion.lsn import lsn_to_str
from ingestion.state import add_duplicates, save_checkpoint
from ingestion.tables import TableInfo, table_versions

log = logging.getLogger("tidemark.ingestion")

COPY_CHUNK = 1 << 20
_ROW_OPS = ("r", "c", "u")


@dataclass
class _Buffer:
    lines: list[bytes] = field(default_factory=list)
    images: dict[tuple, list[Value] | None] = field(default_factory=dict)
    unresolved: set[str] = field(default_factory=set)
    multi: bool = False
    rows: int = 0


@dataclass
class TxnContext:
    """The source transaction the next changes belong to."""

    commit_lsn: int
    commit_at: datetime | None
    xid: int | None
    suffix: bytes = b""

    def __post_init__(self) -> None:
        at = self.commit_at.isoformat().encode() if self.commit_at else b"\\N"
        xid = str(self.xid).encode() if self.xid is not None else b"\\N"
        self.suffix = b"\t" + lsn_to_str(self.commit_lsn).encode() + b"\t" + at + b"\t" + xid


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


class Applier:
    """Buffers changes and applies them to landing in set-based statements.

    Args:
        conn: a landing connection (not autocommit) used only by this applier.
        source: the source name.
        slot: replication slot name (recorded in the checkpoint).
        publication: publication name (recorded in the checkpoint).
        contracts: the contract set, or None to apply without validation.
        flush_rows: buffered rows of one table that trigger a flush inside the transaction.
    """

    def __init__(self, conn: psycopg.Connection, source: str, slot: str, publication: str,
                 contracts: Any = None, flush_rows: int = 50_000) -> None:
        self.conn = conn
        self.source = source
        self.slot = slot
        self.publication = publication
        self.contracts = contracts
        self.flush_rows = flush_rows
        self.buffers: dict[str, _Buffer] = {}
        self.tables: dict[str, TableInfo] = {}
        self.txn: TxnContext | None = None
        self.in_txn = False
        self.rows_in_txn = 0
        self._ord = 0
        self._dead: list[tuple] = []
        self._paused: list[tuple] = []
        self._staging: dict[tuple[str, int], sql.Identifier] = {}
        self._staging_dirty: set[str] = set()
        self._contract_cache: dict[str, Any] = {}
        self.wait_hook: Callable[[], None] = lambda: None

    # -- transaction ------------------------------------------------------------------------

    def begin(self) -> None:
        """Open the landing transaction if none is open (takes the source's advisory lock).

        Waits first for a landing commit still running in the background (see
        :meth:`detach`): the connection has one user at a time.
        """
        self.wait_hook()
        if self.in_txn:
            return
        self.conn.execute("select pg_advisory_xact_lock(hashtext(%s))",
                          (f"tidemark:ingest:{self.source}",))
        self.in_txn = True
        self.rows_in_txn = 0

    def start_source_txn(self, commit_lsn: int, commit_at: datetime | None, xid: int | None
                         ) -> None:
        """Set the source transaction of the following changes."""
        self.txn = TxnContext(commit_lsn, commit_at, xid)

    def commit(self, lsn: int, commit_at: datetime | None, snapshot_lsn: int | None = None
               ) -> int:
        """Flush everything, write the checkpoint and commit the landing transaction.

        Args:
            lsn: end LSN of the last source transaction included.
            commit_at: its source commit time.
            snapshot_lsn: set when this transaction completes the initial snapshot.

        Returns:
            The number of changes applied by this landing transaction.
        """
        self.begin()
        self.flush_all()
        rows = self.rows_in_txn
        save_checkpoint(self.conn, self.source, self.slot, self.publication, lsn_to_str(lsn),
                        commit_at, rows,
                        lsn_to_str(snapshot_lsn) if snapshot_lsn is not None else None)
        self.conn.commit()
        self.in_txn = False
        self._staging_dirty.clear()
        self.rows_in_txn = 0
        return rows

    def detach(self) -> tuple[dict[str, _Buffer], list[tuple], list[tuple], int]:
        """Hand over everything buffered since the last commit (for a background commit)."""
        pending = (self.buffers, self._dead, self._paused, self.rows_in_txn)
        self.buffers, self._dead, self._paused, self.rows_in_txn = {}, [], [], 0
        return pending

    def commit_detached(self, pending: tuple[dict[str, _Buffer], list[tuple], list[tuple], int],
                        lsn: int, commit_at: datetime | None,
                        versions: dict[str, tuple[int, bool]] | None = None) -> int:
        """Apply what :meth:`detach` returned, write the checkpoint and commit.

        Runs on the background thread while the stream thread keeps decoding; the stream thread
        touches the connection again only after this returned (``wait_hook``).
        """
        buffers, dead, paused, rows = pending
        if not self.in_txn:
            self.conn.execute("select pg_advisory_xact_lock(hashtext(%s))",
                              (f"tidemark:ingest:{self.source}",))
            self.in_txn = True
        if versions is not None and table_versions(self.conn, self.source) != versions:
            self.conn.rollback()
            self.in_txn = False
            raise TablesChangedError(f"tables of source {self.source!r} changed in landing (a "
                                     f"resync) while changes were in flight; restarting the "
                                     f"session from the checkpoint")
        for name, buf in buffers.items():
            self._flush_buffer(self.tables[name], buf)
        self._write_side_tables(dead, paused)
        save_checkpoint(self.conn, self.source, self.slot, self.publication, lsn_to_str(lsn),
                        commit_at, rows)
        self.conn.commit()
        self.in_txn = False
        self._staging_dirty.clear()
        return rows

    def rollback(self) -> None:
        """Abandon the landing transaction and every buffered change."""
        self.buffers.clear()
        self._dead.clear()
        self._paused.clear()
        self._staging_dirty.clear()
        self.in_txn = False
        with contextlib.suppress(psycopg.Error):
            self.conn.rollback()

    # -- changes ----------------------------------------------------------------------------

    def contract_for(self, info: TableInfo) -> Any:
        """The table's contract, or None."""
        if self.contracts is None:
            return None
        if info.name not in self._contract_cache:
            try:
                self._contract_cache[info.name] = self.contracts.table(self.source, info.name)
            except Exception:
                self._contract_cache[info.name] = None
        return self._contract_cache[info.name]

    def add(self, info: TableInfo, op: str, new: list[Value] | None, old: list[Value] | None,
            lsn: int, seq: int, old_kind: str | None = None) -> None:
        """Buffer one change (``op`` r, c, u or d) of the current source transaction."""
        txn = self.txn
        assert txn is not None, "start_source_txn first"
        if info.paused_reason is not None:
            self._paused.append((self.source, info.name, lsn_to_str(txn.commit_lsn), seq,
                                 lsn_to_str(lsn), op, txn.commit_at, txn.xid,
                                 Jsonb(row_json(info, new)), Jsonb(row_json(info, old))))
            self.rows_in_txn += 1
            return
        buf = self.buffers.get(info.name)
        if buf is None:
            buf = self.buffers[info.name] = _Buffer()
        key_idx = info.key_idx
        unchanged: list[str] = []
        if op == "d":
            values = old if old is not None else [None] * len(info.columns)
            key = tuple([values[i] for i in key_idx])
            buf.images[key] = None
            buf.multi = True
        else:
            values = new
            key = tuple([values[i] for i in key_idx])
            if op == "u":
                if old is not None:
                    okey = tuple([old[i] for i in key_idx])
                    if okey != key and UNCHANGED not in okey:
                        self._line(buf, info, okey_row(info, okey), "x", lsn, seq, [])
                        buf.images[okey] = None
                        buf.multi = True
                if UNCHANGED in values:
                    unchanged = self._resolve(buf, info, key, values, old, old_kind)
            if key in buf.images:
                buf.multi = True
            buf.images[key] = values
            contract = self.contract_for(info)
            if contract is not None and self._rejected(info, contract, op, values, unchanged,
                                                       lsn, seq):
                return
        self._line(buf, info, values, op, lsn, seq, unchanged)
        self.rows_in_txn += 1
        if buf.rows >= self.flush_rows:
            self.flush(info)

    def _resolve(self, buf: _Buffer, info: TableInfo, key: tuple, values: list[Value],
                 old: list[Value] | None, old_kind: str | None) -> list[str]:
        """Carry unchanged TOAST values forward; return the columns left for the mirror."""
        prev = buf.images.get(key)
        left = []
        for i, v in enumerate(values):
            if v is not UNCHANGED:
                continue
            if prev is not None and prev[i] is not UNCHANGED:
                values[i] = prev[i]
            elif old is not None and old_kind == "O" and old[i] is not UNCHANGED:
                values[i] = old[i]
            else:
                left.append(info.columns[i].name)
        buf.unresolved.update(left)
        return left

    def _rejected(self, info: TableInfo, contract: Any, op: str, values: list[Value],
                  unchanged: list[str], lsn: int, seq: int) -> bool:
        from contracts import validate_row

        row = {c: _text(v) for c, v in zip(info.column_names, values, strict=False)
               if v is not UNCHANGED}
        violations = [v for v in validate_row(contract, row, self.contracts)
                      if v.column not in unchanged]
        if not violations:
            return False
        txn = self.txn
        reason = "; ".join(v.message for v in violations)
        detail = [{"column": v.column, "rule": v.rule, "message": v.message,
                   "value": None if v.value is None else str(v.value)} for v in violations]
        self._dead.append((self.source, info.name, lsn_to_str(lsn), lsn_to_str(txn.commit_lsn),
                           seq, op, reason, Jsonb(detail), str(contract.version),
                           Jsonb(row_json(info, values)), txn.commit_at, txn.xid))
        return True

    def _line(self, buf: _Buffer, info: TableInfo, values: list[Value], op: str, lsn: int,
              seq: int, unchanged: list[str]) -> None:
        self._ord += 1
        # Fast path: NUL never occurs in PostgreSQL text, so one search over the joined row
        # tells whether any value needs COPY escaping.
        plain = [v if v.__class__ is bytes else b"\\N" for v in values]
        joined = b"\0".join(plain)
        if NEEDS_ESCAPE.search(joined) is None:
            parts = [joined.replace(b"\0", b"\t")]
        else:
            parts = [b"\\N" if v is None or v is UNCHANGED else escape(v) for v in values]
        if unchanged:
            arr = "{" + ",".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"'
                                 for c in unchanged) + "}"
            unch = escape(arr.encode())
        else:
            unch = b"\\N"
        meta = b"%d\t%s\t%X/%X\t%d\t%s" % (self._ord, op.encode(), lsn >> 32,
                                              lsn & 0xFFFFFFFF, seq, unch)
        parts.append(meta)
        buf.lines.append(b"\t".join(parts) + self.txn.suffix + b"\n")
        buf.rows += 1

    def truncate(self, infos: list[TableInfo], lsn: int, seq: int) -> int:
        """Apply a TRUNCATE: empty the mirrors and write a ``t`` changelog row per table.

        Returns:
            How many sequence numbers were used.
        """
        self.begin()
        self.flush_all()
        txn = self.txn
        used = 0
        for info in infos:
            if info.paused_reason is not None:
                self._paused.append((self.source, info.name, lsn_to_str(txn.commit_lsn),
                                     seq + used, lsn_to_str(lsn), "t", txn.commit_at, txn.xid,
                                     None, None))
            else:
                self.conn.execute(sql.SQL("truncate {}").format(info.mirror))
                self.conn.execute(
                    sql.SQL("insert into {} (_op, _lsn, _commit_lsn, _seq, _commit_at, _txid)"
                            " values ('t', %s, %s, %s, %s, %s) on conflict do nothing"
                            ).format(info.changelog),
                    (lsn_to_str(lsn), lsn_to_str(txn.commit_lsn), seq + used, txn.commit_at,
                     txn.xid))
            used += 1
            self.rows_in_txn += 1
        return used

    # -- flushing ---------------------------------------------------------------------------

    def flush_all(self) -> None:
        """Apply every buffered change (inside the open landing transaction)."""
        for name in list(self.buffers):
            info = self.tables.get(name)
            if info is not None:
                self.flush(info)
        self._write_side_tables(self._dead, self._paused)
        self._dead, self._paused = [], []

    def _write_side_tables(self, dead: list[tuple], paused: list[tuple]) -> None:
        if dead:
            with self.conn.cursor() as cur:
                cur.executemany(
                    "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq,"
                    " op, reason, violations, contract_version, raw_row, commit_at, txid) values"
                    " (%s, %s, %s::pg_lsn, %s::pg_lsn, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " on conflict (source, table_name, commit_lsn, seq) do nothing", dead)
        if paused:
            with self.conn.cursor() as cur:
                cur.executemany(
                    "insert into tidemark.paused_changes (source, table_name, commit_lsn, seq,"
                    " lsn, op, commit_at, txid, row_data, old_data) values (%s, %s, %s::pg_lsn,"
                    " %s, %s::pg_lsn, %s, %s, %s, %s, %s) on conflict do nothing", paused)

    def staging(self, info: TableInfo) -> sql.Identifier:
        """The session's staging table for ``info``'s current version (created on first use)."""
        key = (info.name, info.version)
        ident = self._staging.get(key)
        if ident is None:
            ident = sql.Identifier(f"_tidemark_stg_{len(self._staging)}")
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type_sql))
                for c in info.columns)
            self.conn.execute(sql.SQL(
                "create temp table {} ({}, _ord bigint, _op text, _lsn pg_lsn, _seq integer,"
                " _unchanged text[], _commit_lsn pg_lsn, _commit_at timestamptz, _txid bigint)"
                " on commit delete rows").format(ident, cols))
            self._staging[key] = ident
        return ident

    def flush(self, info: TableInfo) -> None:
        """COPY one table's buffer into staging and apply it."""
        buf = self.buffers.pop(info.name, None)
        if buf is None or not buf.lines:
            return
        self.begin()
        self._flush_buffer(info, buf)

    def _flush_buffer(self, info: TableInfo, buf: _Buffer) -> None:
        if not buf.lines:
            return
        stg = self.staging(info)
        if info.name in self._staging_dirty:
            self.conn.execute(sql.SQL("truncate {}").format(stg))
        self._staging_dirty.add(info.name)
        with self.conn.cursor() as cur:
            with cur.copy(sql.SQL("copy {} from stdin").format(stg)) as copy:
                chunk: list[bytes] = []
                size = 0
                for line in buf.lines:
                    chunk.append(line)
                    size += len(line)
                    if size >= COPY_CHUNK:
                        copy.write(b"".join(chunk))
                        chunk, size = [], 0
                if chunk:
                    copy.write(b"".join(chunk))
            self._apply_staging(cur, info, stg, buf)

    def _apply_staging(self, cur: psycopg.Cursor, info: TableInfo, stg: sql.Identifier,
                       buf: _Buffer) -> None:
        cols = sql.SQL(", ").join(map(sql.Identifier, info.column_names))
        scols = sql.SQL(", ").join(sql.Identifier("s", c) for c in info.column_names)
        key_match = sql.SQL(" and ").join(
            sql.SQL("{} = {}").format(sql.Identifier("m", k), sql.Identifier("s", k))
            for k in info.key)
        for col in sorted(buf.unresolved):
            cur.execute(sql.SQL(
                "update {} s set {} = m.{} from {} m where {} and s._unchanged @> array[%s]"
            ).format(stg, sql.Identifier(col), sql.Identifier(col), info.mirror, key_match),
                (col,))
        contract = self.contract_for(info)
        idem = getattr(contract, "idempotency_key", None) if contract is not None else None
        if idem and idem in info.column_names:
            self._dedup(cur, info, stg, idem)
        cur.execute(sql.SQL(
            "insert into {} ({}, _op, _lsn, _commit_lsn, _seq, _commit_at, _txid)"
            " select {}, _op, _lsn, _commit_lsn, _seq, _commit_at, _txid from {} s"
            " where _op <> 'x' on conflict do nothing"
        ).format(info.changelog, cols, scols, stg))
        keys = sql.SQL(", ").join(map(sql.Identifier, info.key))
        non_key = [c for c in info.column_names if c not in info.key]
        if non_key:
            action = sql.SQL("do update set {}").format(sql.SQL(", ").join(
                sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
                for c in non_key))
        else:
            action = sql.SQL("do nothing")
        if not buf.multi:
            cur.execute(sql.SQL(
                "insert into {} ({}) select {} from {} s where _op in ('r', 'c', 'u')"
                " on conflict ({}) {}").format(info.mirror, cols, scols, stg, keys, action))
            return
        last = sql.SQL("select distinct on ({}) * from {} order by {}, _ord desc").format(
            keys, stg, keys)
        cur.execute(sql.SQL(
            "delete from {} m using ({}) s where s._op in ('d', 'x') and {}"
        ).format(info.mirror, last, key_match))
        cur.execute(sql.SQL(
            "insert into {} ({}) select {} from ({}) s where s._op in ('r', 'c', 'u')"
            " on conflict ({}) {}").format(info.mirror, cols, scols, last, keys, action))

    def _dedup(self, cur: psycopg.Cursor, info: TableInfo, stg: sql.Identifier, idem: str
               ) -> None:
        col = sql.Identifier(idem)
        # INTERIM (branch i12, until i10a/i10b replace the snapshot and outbox dedup): an index
        # on the staging table's idempotency column turns the correlated EXISTS below from a scan
        # of the whole staging table per row (quadratic: ~12 min for the default demo snapshot)
        # into an index probe. Remove together with this query.
        cur.execute(sql.SQL("create index if not exists {} on {} ({})").format(
            sql.Identifier(stg.as_string(self.conn).strip('"') + f"_{idem}"), stg, col))
        cur.execute(sql.SQL(
            "with d as (delete from {} s where s._op in ('r', 'c') and s.{} is not null and"
            " (exists (select 1 from {} m where m.{} = s.{}) or exists (select 1 from {} p"
            " where p.{} = s.{} and p._op in ('r', 'c') and p._ord < s._ord)) returning 1)"
            " select count(*) from d").format(stg, col, info.mirror, col, col, stg, col, col))
        dropped = cur.fetchone()[0]
        if dropped:
            add_duplicates(self.conn, self.source, info.name, dropped)
            log.info("%s: dropped %d duplicate event(s) by %s", info.qualified, dropped, idem)


def okey_row(info: TableInfo, key: tuple) -> list[Value]:
    """A row with only the key columns set (the old key of a key-changing update)."""
    row: list[Value] = [None] * len(info.columns)
    for i, v in zip(info.key_idx, key, strict=True):
        row[i] = v
    return row
