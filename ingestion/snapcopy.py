"""Copying one table of a snapshot into landing, set-based, with its contract applied.

Two ways, chosen per table by :mod:`ingestion.snapshot`:

- **staged** (a table new to landing): one ``COPY ... TO STDOUT`` from the source feeds two
  ``COPY ... FROM STDIN`` at once, into a staging mirror and a staging changelog (whose rows
  carry only ``_seq`` beside the source's columns: the other change columns, the same for every
  snapshot row, are added after the load as catalog-held values), both without indexes; then
  checks, deduplication and the index builds, each table in its own landing transactions. The
  final snapshot transaction swaps the staging tables in (:mod:`ingestion.snapswap`), so
  several tables load in parallel and nothing is visible before the checkpoint commits.
- **in place** (a table landing already has, e.g. ``resync``): ``COPY`` into the emptied mirror
  in the caller's transaction, checks, deduplication, then the changelog rows from the mirror.

Contract checks: :func:`contracts.sqlcheck.suspect_predicate` selects the rows that may break
the contract, :func:`contracts.validate_row` decides for those only; a violating row becomes a
dead letter. Duplicate events (the contract's ``idempotency_key``) keep their first row (lowest
table key, then ``_seq``) by a hash aggregate and join, and are counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingestion.catalog import is_partitioned, lands_as_text
from ingestion.copypipe import Sink, pipe_copy
from ingestion.landing_indexes import create_declared_indexes
from ingestion.lsn import lsn_to_str
from ingestion.staging import Staging, staged_info
from ingestion.tables import (
    CHANGE_COLUMNS,
    CHANGE_DEFAULTS,
    SNAPSHOT_SEQ,
    TableInfo,
    change_column_def,
    changelog_unique,
    column_defs,
    create_idempotency_index,
    create_landing_tables,
    mark_resnapshot,
)

log = logging.getLogger("tidemark.ingestion")

SUSPECT_BATCH = 5_000
SEQ_CACHE = 100_000


@dataclass
class CopyResult:
    """What copying one table did.

    Attributes:
        rows: rows read from the source.
        dead: rows that broke the contract (dead letters).
        duplicates: duplicate events dropped.
    """

    rows: int = 0
    dead: int = 0
    duplicates: int = 0


@dataclass
class Job:
    """One table of a snapshot.

    Attributes:
        info: the table as landing registers it.
        contract: its contract, or None.
        contracts: the contract set (event contracts), or None.
        estimate: rows expected, or None.
        binary: COPY in binary format (built-in types, same server major version).
        result: filled by the copy.
        timings: seconds per step (copy, check, dedup, index), for logs and benchmarks.
        dead_rows: dead letters found (in-place copies keep them here until numbered).
        rebuild: statements that rebuild the staging tables' indexes (mirror, changelog).
        after_load: statements that restore the staging changelog's defaults after the load.
    """

    info: TableInfo
    contract: Any = None
    contracts: Any = None
    estimate: int | None = None
    binary: bool = False
    result: CopyResult = field(default_factory=CopyResult)
    timings: dict[str, float] = field(default_factory=dict)
    dead_rows: list[tuple] = field(default_factory=list)
    rebuild: tuple[list, list] = ([], [])
    after_load: list[sql.Composable] = field(default_factory=list)

    @property
    def idempotency_key(self) -> str | None:
        """The contract's idempotency key when the table has that column."""
        key = getattr(self.contract, "idempotency_key", None)
        return key if key in self.info.column_names else None


def wants_binary(info: TableInfo, same_major: bool) -> bool:
    """Binary COPY only between equal majors and for types landing stores as they are (not a
    user type nor an object identifier type: :func:`ingestion.catalog.lands_as_text`)."""
    return same_major and not any(lands_as_text(c.type_oid) for c in info.columns)


def copy_out_statement(info: TableInfo, binary: bool, partitioned: bool = False
                       ) -> sql.Composed:
    """``COPY (select <columns> from only <table>) TO STDOUT`` of a source table; of a
    partitioned table (published as its root) every partition's rows, without ``only``."""
    cols = sql.SQL(", ").join(map(sql.Identifier, info.column_names))
    return sql.SQL("copy (select {} from {}{}) to stdout{}").format(
        cols, sql.SQL("" if partitioned else "only "),
        sql.Identifier(info.source_schema, info.source_table),
        sql.SQL(" (format binary)" if binary else ""))


def copy_in_statement(table: sql.Composable, info: TableInfo, binary: bool,
                      freeze: bool = False) -> sql.Composed:
    """``COPY <table> (<columns>) FROM STDIN`` for the relay's output."""
    options = [o for o, on in (("format binary", binary), ("freeze", freeze)) if on]
    return sql.SQL("copy {} ({}) from stdin{}").format(
        table, sql.SQL(", ").join(map(sql.Identifier, info.column_names)),
        sql.SQL(f" ({', '.join(options)})" if options else ""))


# -- contract checks -------------------------------------------------------------------------

def invalid_rows(conn: psycopg.Connection, table: sql.Composable, job: Job,
                 row_id: sql.Composable) -> Iterator[tuple[Any, list, dict]]:
    """Rows of ``table`` that break the job's contract: (row id, violations, raw row).

    Runs in the connection's open transaction; suspects are read with a server-side cursor.
    """
    from contracts import validate_row
    from contracts.sqlcheck import suspect_predicate

    info, contract = job.info, job.contract
    types = {c.name: c.type_sql for c in info.columns}
    pred = suspect_predicate(contract, types, job.contracts)
    names = info.column_names
    query = sql.SQL("select {}, {} from {} where {}").format(
        row_id, sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in names),
        table, pred.text)
    conn.execute("set local timezone = 'UTC'")
    conn.execute("set local jit = off")  # compiling the long predicate costs more than it saves
    with conn.cursor(name="tidemark_suspects") as cur:
        cur.itersize = SUSPECT_BATCH
        cur.execute(query, pred.params)
        for rec in cur:
            row = dict(zip(names, rec[1:], strict=True))
            violations = validate_row(contract, row, job.contracts)
            if violations:
                yield rec[0], violations, row


def dead_letter(job: Job, violations: list, row: dict) -> tuple[str, Jsonb, str, Jsonb]:
    """(reason, violations, contract version, raw row) of a dead letter."""
    detail = [{"column": v.column, "rule": v.rule, "message": v.message,
               "value": None if v.value is None else str(v.value)} for v in violations]
    return ("; ".join(v.message for v in violations), Jsonb(detail),
            str(job.contract.version), Jsonb(row))


# -- staged ----------------------------------------------------------------------------------

def drop_indexes(conn: psycopg.Connection, schema: str, name: str) -> list[sql.Composable]:
    """Drop every index of a table (constraints too); return the statements that rebuild them.

    The statements come from ``pg_get_constraintdef`` / ``pg_get_indexdef`` (catalog text).
    """
    table = sql.Identifier(schema, name)
    regclass = table.as_string(conn)
    rebuild: list[sql.Composable] = []
    for conname, condef, indexdef, index in conn.execute(
            "select c.conname, pg_get_constraintdef(c.oid), pg_get_indexdef(i.indexrelid),"
            " i.indexrelid::regclass::text from pg_index i left join pg_constraint c"
            " on c.conindid = i.indexrelid and c.conrelid = i.indrelid"
            " where i.indrelid = %s::regclass order by 3", (regclass,)).fetchall():
        if conname is not None:
            conn.execute(sql.SQL("alter table {} drop constraint {}").format(
                table, sql.Identifier(conname)))
            rebuild.append(sql.SQL("alter table {} add constraint {} {}").format(
                table, sql.Identifier(conname), sql.SQL(condef)))
        else:
            conn.execute(sql.SQL("drop index {}").format(sql.SQL(index)))  # regclass text
            rebuild.append(sql.SQL(indexdef))
    return rebuild


def stage_tables(conn: psycopg.Connection, job: Job, stg: Staging, lsn: int,
                 commit_at: datetime) -> tuple[list[sql.Composable], list[sql.Composable]]:
    """Create the staging mirror (same DDL as landing's) and changelog, without indexes.

    The staging changelog has the source's columns and ``_seq`` only: ``_seq`` is the one
    change column whose value differs from row to row (a sequence from
    :data:`~ingestion.tables.SNAPSHOT_SEQ` + 1 up, the column's identity for the load). The
    other change columns are the same for every snapshot row (``_op`` r, ``_lsn`` and
    ``_commit_lsn`` the snapshot LSN, ``_commit_at`` and ``_ingested_at`` ``commit_at``,
    ``_txid`` NULL), so ``job.after_load`` adds them after the load with those values as
    defaults: PostgreSQL keeps such a value once in the catalog for the rows already there (no
    rewrite), then the defaults become the changelog's own. The rows are as wide as the
    mirror's instead of ~35 % wider, and the copy writes that much less heap and WAL. The
    changelog's change columns then come in the order ``_seq, _op, _lsn, _commit_lsn,
    _commit_at, _txid, _ingested_at`` (every reader names them).

    Returns:
        The statements that rebuild the mirror's and the changelog's indexes (and turn their
        autovacuum back on).
    """
    staged = staged_info(job.info, stg)
    create_landing_tables(conn, staged, changelog=False)
    if job.idempotency_key is not None:
        # Built with the staged mirror's other indexes, in the table's worker, instead of by
        # the swap in the final, serial transaction (the landing mirror has it).
        create_idempotency_index(conn, staged, job.idempotency_key)
    create_declared_indexes(conn, staged, job.contract)  # built after the load, with the rest
    c = stg.ident("c")
    # Snapshot rows number their _seq up from SNAPSHOT_SEQ (negative), as every snapshot does:
    # a source transaction committed exactly at the snapshot's LSN is streamed at the same
    # _commit_lsn with positive _seq values, after the snapshot's rows and never equal to them.
    # One backend draws every value (the table's one COPY), so a large cache keeps them
    # contiguous while the sequence is not locked and WAL-logged every few rows. An identity
    # column rather than a nextval() default: the same sequence without a permission check per
    # row (the changelog's load: 0.92-1.00 user CPU-s against 0.98-1.05 for 1.8M pgbench rows,
    # 0.82-0.87 without _seq; bench/RESULTS.md, s37). COPY still inserts a page at a time.
    conn.execute(sql.SQL("create table {} ({}, {} generated by default as identity"
                         " (minvalue {} start with {} cache {}))").format(
        c, column_defs(job.info.columns), change_column_def("_seq"),
        sql.Literal(SNAPSHOT_SEQ + 1), sql.Literal(SNAPSHOT_SEQ + 1), sql.Literal(SEQ_CACHE)))
    # No autovacuum while the staging tables load: a vacuum right after COPY FREEZE skips every
    # all-frozen page and records reltuples = 0 for thousands of pages, and the checks and the
    # dedup planned after it join as if the table were empty (a nested loop over 200,000 rows:
    # minutes). Its work would be wasted anyway (the dedup deletes after it). The index builds
    # turn it back on (the tables are loaded, checked and deduplicated by then).
    for prefix in ("m", "c"):
        conn.execute(sql.SQL("alter table {} set (autovacuum_enabled = false)").format(
            stg.ident(prefix)))
    rebuild_m = drop_indexes(conn, *stg.at("m"))
    at = lsn_to_str(lsn)
    values = {"_op": sql.Literal("r"), "_lsn": sql.Literal(at), "_commit_lsn": sql.Literal(at),
              "_commit_at": sql.Literal(commit_at), "_ingested_at": sql.Literal(commit_at)}
    added = [name for name, _ in CHANGE_COLUMNS if name != "_seq"]
    restore = [sql.SQL("alter _seq drop identity")] + [
        sql.SQL("alter {} set default {}").format(sql.Identifier(name),
                                                  sql.SQL(CHANGE_DEFAULTS[name]))
        if name in CHANGE_DEFAULTS else sql.SQL("alter {} drop default").format(
            sql.Identifier(name)) for name in added if name in values]
    job.after_load = [
        sql.SQL("alter table {} {}").format(c, sql.SQL(", ").join(
            sql.SQL("add column {}").format(change_column_def(name, values.get(name)))
            for name in added)),
        sql.SQL("alter table {} {}").format(c, sql.SQL(", ").join(restore))]
    autovacuum = "alter table {} reset (autovacuum_enabled)"
    return ([*rebuild_m, sql.SQL(autovacuum).format(stg.ident("m"))],
            [changelog_unique(c), sql.SQL(autovacuum).format(c)])


def copy_staged(src: psycopg.Connection, m: psycopg.Connection, c: psycopg.Connection, job: Job,
                stg: Staging, on_rows: Callable[[int], None] | None = None,
                on_copied: Callable[[], None] | None = None) -> None:
    """Load one table into its staging mirror and changelog, check it, build the indexes.

    ``m`` and ``c`` are two landing connections (the two loads run in separate backends);
    the staging tables exist already (:func:`stage_tables`, committed). Each step commits;
    ``on_copied`` is called when the rows are in, before the checks.
    """
    info = job.info
    mt, ct = stg.ident("m"), stg.ident("c")
    t = time.monotonic()
    for conn, table in ((m, mt), (c, ct)):
        conn.execute(sql.SQL("truncate {}").format(table))  # allows COPY FREEZE
    out = copy_out_statement(info, job.binary, is_partitioned(src, info.source_oid))
    job.result.rows = pipe_copy(src, out, [
        Sink(m, copy_in_statement(mt, info, job.binary, freeze=True)),
        Sink(c, copy_in_statement(ct, info, job.binary, freeze=True))], on_rows)
    m.commit()
    for statement in job.after_load:
        c.execute(statement)
    c.commit()
    job.timings["copy"] = time.monotonic() - t
    if on_copied is not None:
        on_copied()
    if job.contract is not None:
        t = time.monotonic()
        _check_staged(m, c, job, stg)
        job.timings["check"] = time.monotonic() - t
    if job.idempotency_key is not None:
        t = time.monotonic()
        _dedup_staged(m, c, job, stg)
        job.timings["dedup"] = time.monotonic() - t


def _hash_joins(*conns: psycopg.Connection) -> None:
    """No nested loop in the connections' open transactions: the staging tables have no
    statistics yet, and a join of two of them misestimated as tiny must not become quadratic."""
    for conn in conns:
        conn.execute("set local enable_nestloop = off")


def _check_staged(m: psycopg.Connection, c: psycopg.Connection, job: Job, stg: Staging) -> None:
    """Dead letters out of both staging tables (the same rows: same data, same verdict)."""
    dead = stg.ident("d")
    c.execute(sql.SQL("create table {} (seq integer, reason text, violations jsonb,"
                      " contract_version text, raw_row jsonb)").format(dead))
    bad: list[int] = []
    with c.cursor() as cur:
        rows = []
        for seq, violations, row in invalid_rows(c, stg.ident("c"), job, sql.SQL("_seq")):
            bad.append(seq)
            rows.append((seq, *dead_letter(job, violations, row)))
            if len(rows) >= SUSPECT_BATCH:
                cur.executemany(sql.SQL("insert into {} values (%s, %s, %s, %s, %s)").format(
                    dead), rows)
                rows = []
        if rows:
            cur.executemany(sql.SQL("insert into {} values (%s, %s, %s, %s, %s)").format(dead),
                            rows)
    c.commit()
    if not bad:
        return
    info = job.info
    # Joined on the dead letters' seq (a hash join), never a list scanned per row.
    _hash_joins(c, m)
    if info.key:
        # The dead rows' keys, read before they leave the changelog, remove them from the mirror.
        keys = sql.SQL(", ").join(sql.Identifier("c", k) for k in info.key)
        c.execute(sql.SQL("create table {} as select {} from {} c join {} d on d.seq = c._seq"
                          ).format(stg.ident("k"), keys, stg.ident("c"), dead))
    c.execute(sql.SQL("delete from {} c using {} d where d.seq = c._seq").format(
        stg.ident("c"), dead))
    c.commit()
    if info.key:
        match = sql.SQL(" and ").join(sql.SQL("m.{} = k.{}").format(sql.Identifier(k),
                                                                      sql.Identifier(k))
                                      for k in info.key)
        m.execute(sql.SQL("delete from {} m using {} k where {}").format(
            stg.ident("m"), stg.ident("k"), match))
    else:
        # Same data, same verdicts: the mirror's invalid rows are found the same way.
        ctids = [str(rid) for rid, _, _ in invalid_rows(m, stg.ident("m"), job, sql.SQL("ctid"))]
        m.execute(sql.SQL("delete from {} where ctid = any(%s::tid[])").format(stg.ident("m")),
                  (ctids,))
    m.commit()
    job.result.dead = len(bad)
    log.info("snapshot: %d rows of %s broke the contract (dead letters)", len(bad),
             job.info.qualified)


def _dedup_staged(m: psycopg.Connection, c: psycopg.Connection, job: Job, stg: Staging) -> None:
    """Keep the first row of each idempotency key (lowest table key, then ``_seq``); drop the
    rest from both.

    Only keys seen more than once go into the join's hash table (``having count(*) > 1``): the
    same rows are deleted, from a hash of the duplicated keys instead of every key (200,000
    events with 10 % redeliveries: 0.19-0.24 instead of 0.35-0.42 backend CPU-s).
    """
    info, idem = job.info, sql.Identifier(job.idempotency_key)
    ct, mt, dups = stg.ident("c"), stg.ident("m"), stg.ident("x")
    keys = info.key or info.column_names
    key_list = sql.SQL(", ").join(map(sql.Identifier, keys))
    _hash_joins(c)
    c.execute(sql.SQL("create table {} as select {} from {} limit 0").format(dups, key_list, ct))
    # First by the table's key (an outbox's serial id: the order the events were written), not
    # by _seq: COPY reads in physical order, and a row the application updated (marked sent) or
    # written into space a vacuum freed sits after a later copy; only duplicated keys are sorted.
    order = sql.SQL(", ").join([*(sql.Identifier("c", k) for k in info.key),
                                sql.Identifier("c", "_seq")])
    c.execute(sql.SQL(
        "with dup as (select {idem} k from {ct} where {idem} is not null group by {idem}"
        " having count(*) > 1), firsts as (select distinct on (c.{idem}) c.{idem} k, c._seq s"
        " from {ct} c join dup d on c.{idem} = d.k order by c.{idem}, {order}),"
        " gone as (delete from {ct} c using firsts f where c.{idem} = f.k and c._seq <> f.s"
        " returning {cols}) insert into {dups} select * from gone").format(
            idem=idem, ct=ct, dups=dups, order=order,
            cols=sql.SQL(", ").join(sql.Identifier("c", k) for k in keys)))
    job.result.duplicates = c.execute(sql.SQL("select count(*) from {}").format(dups)
                                      ).fetchone()[0]
    c.commit()
    if not job.result.duplicates:
        return
    _hash_joins(m)
    if info.key:
        match = sql.SQL(" and ").join(sql.SQL("m.{} = x.{}").format(sql.Identifier(k),
                                                                      sql.Identifier(k))
                                      for k in info.key)
        m.execute(sql.SQL("delete from {} m using {} x where {}").format(mt, dups, match))
    else:
        m.execute(sql.SQL(
            "delete from {mt} where ctid in (select ctid from (select ctid, row_number() over"
            " (partition by {idem} order by ctid) n from {mt} where {idem} is not null) r"
            " where n > 1)").format(mt=mt, idem=idem))
    m.commit()


def build_indexes(conn: psycopg.Connection, statements: list[sql.Composable],
                  table: sql.Identifier | None = None,
                  settings: dict[str, str] | None = None) -> None:
    """Rebuild the dropped indexes; with ``table``, refresh its planner statistics too.

    ``settings`` (name: value) hold for the builds' transaction only (``SET LOCAL``), e.g. the
    parallel workers and the sort memory of each build.
    """
    for name, value in (settings or {}).items():
        conn.execute("select set_config(%s, %s, true)", (name, value))
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    if table is None:
        return
    conn.autocommit = True
    try:
        conn.execute(sql.SQL("analyze {}").format(table))
    finally:
        conn.autocommit = False


# -- in place --------------------------------------------------------------------------------

def copy_in_place(src: psycopg.Connection, conn: psycopg.Connection, job: Job, lsn: int,
                  commit_at: datetime, on_rows: Callable[[int], None] | None = None,
                  first: bool = False) -> None:
    """Replace a landing table's rows with the snapshot's, in the caller's transaction.

    The mirror is emptied and loaded by COPY; rows breaking the contract become dead letters
    (written to ``tidemark.dead_letters`` here), duplicates are dropped, then the changelog
    gains a ``t`` row (:func:`~ingestion.tables.mark_resnapshot`, unless this is the table's
    ``first`` snapshot) and one ``r`` row per mirror row, ``_seq`` numbered up from
    :data:`~ingestion.tables.SNAPSHOT_SEQ`.
    """
    info = job.info
    conn.execute(sql.SQL("delete from {}").format(info.mirror))
    if not first:
        mark_resnapshot(conn, info, lsn)
    out = copy_out_statement(info, job.binary, is_partitioned(src, info.source_oid))
    job.result.rows = pipe_copy(src, out,
                                [Sink(conn, copy_in_statement(info.mirror, info, job.binary))],
                                on_rows)
    if job.contract is not None:
        bad = list(invalid_rows(conn, info.mirror, job, sql.SQL("ctid")))
        if bad:
            conn.execute(sql.SQL("delete from {} where ctid = any(%s::tid[])").format(
                info.mirror), ([str(b[0]) for b in bad],))
            job.dead_rows = [dead_letter(job, v, row) for _, v, row in bad]
            job.result.dead = len(bad)
    if job.idempotency_key is not None:
        idem = sql.Identifier(job.idempotency_key)
        cur = conn.execute(sql.SQL(
            "delete from {m} where ctid in (select ctid from (select ctid, row_number() over"
            " (partition by {idem} order by ctid) n from {m} where {idem} is not null) r"
            " where n > 1)").format(m=info.mirror, idem=idem))
        job.result.duplicates = cur.rowcount
    cols = sql.SQL(", ").join(map(sql.Identifier, info.column_names))
    at = lsn_to_str(lsn)
    cur = conn.execute(sql.SQL(
        "insert into {} ({}, _op, _lsn, _commit_lsn, _seq, _commit_at, _txid)"
        " select {}, 'r', %s, %s, %s + row_number() over (), %s, null from {}"
        " on conflict do nothing").format(info.changelog, cols, cols, info.mirror),
        (at, at, SNAPSHOT_SEQ, commit_at))
    if job.dead_rows:
        first = SNAPSHOT_SEQ + cur.rowcount + 1
        with conn.cursor() as c:
            c.executemany(
                "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
                " reason, violations, contract_version, raw_row, commit_at) values (%s, %s,"
                " %s::pg_lsn, %s::pg_lsn, %s, 'r', %s, %s, %s, %s, %s) on conflict do nothing",
                [(info.source, info.name, at, at, first + i, *d, commit_at)
                 for i, d in enumerate(job.dead_rows)])
