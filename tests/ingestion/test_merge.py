"""ingestion/merge.py: the outbox duplicate check is linear (no correlated scan of the staging
table, the quadratic plan that made a 10,000-event snapshot take 20 s), and drops exactly the
duplicates: against the mirror and within the batch (first copy kept); a large batch's plain
inserts fall back to upserts when a key is there already."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from ingestion.applier import Applier
from ingestion.batch import Batch
from ingestion.merge import (
    BIG_BATCH,
    EMPTIED_AT_COMMIT,
    appended_rows_sql,
    create_staging,
    drop_duplicate_events,
    duplicate_events_sql,
    land_batch,
)
from ingestion.state import ensure_state
from ingestion.tables import ColumnInfo, TableInfo, create_landing_tables
from tests.support import FEW_LOCKS_CONF, create_database, start_test_server


def test_duplicate_event_check_is_linear_and_exact(module_db: str) -> None:
    with psycopg.connect(module_db) as conn:
        ensure_state(conn, "m")
        info = TableInfo("m", "outbox", "public", "outbox", 1,
                         [ColumnInfo("outbox_id", 20, -1, "bigint"),
                          ColumnInfo("event_id", 23, -1, "integer")], ["outbox_id"])
        create_landing_tables(conn, info)
        conn.execute("create index on m.outbox (event_id)")
        conn.execute("insert into m.outbox select g, g from generate_series(1, 50000) g")
        conn.execute("analyze m.outbox")
        stg = sql.Identifier("stg_outbox")
        create_staging(conn, info, stg)
        # 20,000 staged events: every 10th already landed, every 10th (+1) a repeat in the batch.
        conn.execute("insert into stg_outbox (outbox_id, event_id, _op, _lsn, _seq,"
                     " _commit_lsn, _tidemark_last) select 100000 + g, case when g % 10 = 0 then g"
                     " when g % 10 = 1 then 1000000 + g - 2 else 1000000 + g end, 'c', '0/1',"
                     " 2 * g, '0/1', true from generate_series(1, 20000) g")
        plan = "\n".join(r[0] for r in conn.execute(
            sql.SQL("explain (costs off) ") + duplicate_events_sql(info, stg, "event_id")))
        assert "SubPlan" not in plan, plan
        with conn.cursor() as cur:
            assert drop_duplicate_events(cur, info, stg, "event_id") == 3999
        left = conn.execute("select count(*), count(distinct event_id), min(_seq) filter"
                            " (where event_id = 1000009) from stg_outbox").fetchone()
        assert left == (16001, 16001, 18)


def test_large_insert_batch_whose_keys_are_in_the_mirror_falls_back_to_upserts(
        module_db: str) -> None:
    """A replayed insert (its key already in the mirror) must not fail the landing transaction:
    the plain insert of a large batch runs in a savepoint and falls back to an upsert."""
    with psycopg.connect(module_db) as conn:
        ensure_state(conn, "f")
        info = TableInfo("f", "t", "public", "t", 1, [ColumnInfo("id", 23, -1, "integer"),
                                                      ColumnInfo("v", 23, -1, "integer")],
                         ["id"])
        create_landing_tables(conn, info)
        conn.execute("insert into f.t select g, 0 from generate_series(1, 10) g")
        stg = sql.Identifier("stg_t")
        create_staging(conn, info, stg)
        conn.execute("insert into stg_t (id, v, _op, _lsn, _seq, _commit_lsn, _tidemark_last)"
                     " select g, 1, 'c', '0/1', 2 * g, '0/5', true from generate_series(1, %s) g",
                     (BIG_BATCH + 10,))
        batch = Batch(info, lines=[b""] * (BIG_BATCH + 10), inserts=True)
        batch.saw(5)
        with conn.cursor() as cur:
            land_batch(cur, info, stg, batch)
        assert conn.execute("select count(*), sum(v) from f.t").fetchone() == (
            BIG_BATCH + 10, BIG_BATCH + 10)
        assert conn.execute('select count(*) from cdc."f__t"').fetchone()[0] == BIG_BATCH + 10


def test_large_batch_of_updates_only_lands_without_the_insert_statement(module_db: str
                                                                        ) -> None:
    """A large batch of updates (no insert) skips the statement of inserts and its savepoint;
    its images land as upserts, each key's last, and every change reaches the changelog."""
    with psycopg.connect(module_db) as conn:
        applier, info = _appends(conn, "uo", ["id"], BIG_BATCH + 10)
        applier.commit(0x600, None)
        applier.begin()
        applier.start_source_txn(0x700, datetime(2026, 12, 6, 17, 0, tzinfo=UTC), 8)
        for i in range(1, 2 * BIG_BATCH + 1):  # keys 1..BIG_BATCH, then 11..BIG_BATCH + 10
            key = i if i <= BIG_BATCH else i - BIG_BATCH + 10
            applier.add(info, "u", [str(key).encode(), b"u%d" % i], None, 0x610 + i, 2 * i,
                        unchanged=False)
        batch = applier.batches[(info.name, False)]
        assert batch.updates and not batch.inserts
        applier.commit(0x800, None)
        rows = dict(conn.execute("select id, note from uo.t").fetchall())
        want = {i: _expected_note(i) for i in range(1, BIG_BATCH + 11)}
        want.update({k: f"u{k + BIG_BATCH - 10}" for k in range(11, BIG_BATCH + 11)})
        want.update({k: f"u{k}" for k in range(1, 11)})
        assert rows == want
        assert conn.execute("select count(*) from cdc.uo__t where _op = 'u'").fetchone()[0] \
            == 2 * BIG_BATCH


def _appends(conn: psycopg.Connection, schema: str, key: list[str], rows: int, first: int = 1
             ) -> tuple[Applier, TableInfo]:
    """An applier holding ``rows`` inserts (values COPY must escape, NULLs) of one source
    transaction committed at 0/500."""
    ensure_state(conn, schema)
    info = TableInfo(schema, "t", "public", "t", 1, [ColumnInfo("id", 23, -1, "integer"),
                                                     ColumnInfo("note", 25, -1, "text")], key)
    if not conn.execute("select to_regclass(%s)", (f"{schema}.t",)).fetchone()[0]:
        create_landing_tables(conn, info)
    conn.commit()
    applier = Applier(conn, schema, "slot", "pub")
    applier.begin()
    applier.start_source_txn(0x500, datetime(2026, 12, 2, 21, 0, tzinfo=UTC), 7)
    for i in range(first, first + rows):
        note = None if i % 7 == 0 else b"n\t%d\\x\ny" % i if i % 5 == 0 else b"n%d" % i
        applier.add(info, "c", [str(i).encode(), note], None, 0x400 + i, 2 * i)
    return applier, info


def _expected_note(i: int) -> str | None:
    return None if i % 7 == 0 else f"n\t{i}\\x\ny" if i % 5 == 0 else f"n{i}"


def test_large_batch_of_new_rows_lands_without_staging(module_db: str) -> None:
    """A large batch of inserts is COPYed straight into the changelog and the mirror filled from
    there: no staging table, every value (escapes, NULLs) and every meta column as staged."""
    with psycopg.connect(module_db) as conn:
        applier, info = _appends(conn, "ap", ["id"], BIG_BATCH + 10)
        assert applier.batches[(info.name, False)].appends_only()
        applier.commit(0x600, None)
        assert applier._staging == {}, "the batch went through a staging table"
        assert conn.execute("select count(*) from ap.t").fetchone()[0] == BIG_BATCH + 10
        bad = conn.execute(
            "select count(*) from ap.t m join cdc.ap__t c using (id) where m.note is distinct"
            " from c.note or c._op <> 'c' or c._seq <> 2 * id or c._lsn <> ('0/'"
            " || to_hex(1024 + id))::pg_lsn or c._commit_lsn <> '0/500' or c._txid <> 7"
            " or c._commit_at <> '2026-12-02 21:00+00'").fetchone()[0]
        assert bad == 0
        for i in (5, 7, 35, 36):
            assert conn.execute("select note from ap.t where id = %s", (i,)).fetchone()[0] \
                == _expected_note(i)


def test_replayed_batch_of_new_rows_takes_the_staged_path(module_db: str) -> None:
    """When the changelog has rows of the batch's commit range already (a replay), the direct
    COPY would fail on the changelog's unique key: nothing is written and the staged path skips
    the known changes; keys already in the mirror become upserts."""
    with psycopg.connect(module_db) as conn:
        applier, info = _appends(conn, "rp", ["id"], BIG_BATCH + 10)
        applier.commit(0x600, None)
        conn.execute("update rp.t set note = 'stale' where id <= 100")
        conn.commit()
        applier, info = _appends(conn, "rp", ["id"], BIG_BATCH + 20)  # the same and 10 more
        applier.commit(0x600, None)
        assert applier._staging != {}, "the replay did not take the staged path"
        assert conn.execute("select count(*), count(*) filter (where note = 'stale')"
                            " from rp.t").fetchone() == (BIG_BATCH + 20, 0)
        assert conn.execute("select count(*), count(distinct (_commit_lsn, _seq))"
                            " from cdc.rp__t").fetchone() == (BIG_BATCH + 20, BIG_BATCH + 20)


def test_new_rows_whose_keys_are_in_the_mirror_become_upserts(module_db: str) -> None:
    """Keys in the mirror but not in the changelog's range (landed by a resync snapshot): the
    plain insert from the changelog falls back to an upsert, nothing fails."""
    with psycopg.connect(module_db) as conn:
        applier, info = _appends(conn, "up", ["id"], 1)
        applier.rollback()
        conn.execute("insert into up.t select g, 'old' from generate_series(1, 10) g")
        conn.commit()
        applier, info = _appends(conn, "up", ["id"], BIG_BATCH + 10)
        applier.commit(0x600, None)
        assert applier._staging == {}
        assert conn.execute("select count(*), count(*) filter (where note = 'old')"
                            " from up.t").fetchone() == (BIG_BATCH + 10, 0)


def test_keyless_batch_of_new_rows_lands_every_copy(module_db: str) -> None:
    with psycopg.connect(module_db) as conn:
        applier, info = _appends(conn, "kl", [], BIG_BATCH)
        applier.start_source_txn(0x501, None, 8)
        for i in range(1, 11):  # equal rows again: a bag keeps both copies
            note = _expected_note(i)
            applier.add(info, "c", [str(i).encode(), None if note is None else note.encode()],
                        None, 0x5000 + i, 2 * i)
        applier.commit(0x600, None)
        assert applier._staging == {}
        assert conn.execute("select count(*), count(distinct (id, note)) from kl.t"
                            ).fetchone() == (BIG_BATCH + 10, BIG_BATCH)
        assert conn.execute("select count(*) from cdc.kl__t").fetchone()[0] == BIG_BATCH + 10


def test_mirror_reads_new_rows_through_the_changelog_index_at_scale(module_db: str) -> None:
    """The mirror's rows come from the changelog by its (_commit_lsn, _seq) index, never by a
    scan of the whole changelog: checked with EXPLAIN on 500,000 changelog rows that were never
    analyzed (a catch-up outruns autovacuum) and after ANALYZE."""
    with psycopg.connect(module_db, autocommit=True) as conn:
        ensure_state(conn, "sc")
        info = TableInfo("sc", "t", "public", "t", 1, [ColumnInfo("id", 23, -1, "integer"),
                                                       ColumnInfo("note", 25, -1, "text")],
                         ["id"])
        create_landing_tables(conn, info)
        conn.execute("alter table cdc.sc__t set (autovacuum_enabled = off)")
        conn.execute("insert into cdc.sc__t (id, note, _op, _lsn, _commit_lsn, _seq) select g,"
                     " 'x', 'c', '0/1', ('0/' || to_hex(g / 10000 + 1))::pg_lsn, g"
                     " from generate_series(1, 500000) g")
        explain = sql.SQL("explain (costs off) ") + appended_rows_sql(info)
        for analyzed in (False, True):
            if analyzed:
                conn.execute("analyze cdc.sc__t")
            plan = "\n".join(r[0] for r in conn.execute(explain, ("0/33", "0/34")))
            assert "Index" in plan and "Seq Scan on sc__t" not in plan, plan


@pytest.fixture(scope="module")
def few_locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database on a server of its own whose lock table holds a few hundred locks."""
    server = start_test_server(tmp_path_factory.mktemp("fewlocks"), roles=False,
                               conf=FEW_LOCKS_CONF)
    yield create_database(server, "few_locks")
    server.stop()


def test_commit_costs_nothing_per_staging_table_of_the_session(few_locks: str) -> None:
    """A session that staged changes of 400 tables (writes spread over an ERP's tables) then
    commits a transaction that touched one: with ``on commit delete rows`` PostgreSQL empties
    all 400 at that commit, each under an ACCESS EXCLUSIVE lock (with its TOAST table and
    index: 1,200 locks, "out of shared memory" here; ~200 ms a commit at 900 tables on a
    default server). Their rows stay instead, and the applier truncates a table before its
    next batch (but for the first EMPTIED_AT_COMMIT tables of a session)."""
    with psycopg.connect(few_locks) as conn:
        conn.execute("create schema m")
        conn.commit()
        idents = []
        for i in range(400):
            info = TableInfo("m", f"t{i}", "public", f"t{i}", 1,
                             [ColumnInfo("id", 23, -1, "integer"),
                              ColumnInfo("v", 25, -1, "text")], ["id"])
            idents.append(sql.Identifier(f"stg_t{i}"))
            create_staging(conn, info, idents[-1], i < EMPTIED_AT_COMMIT)  # as the applier
            conn.execute(sql.SQL("insert into {} (id, v) values (1, 'x')").format(idents[-1]))
            conn.commit()
        conn.execute(sql.SQL("insert into {} (id, v) values (2, 'y')").format(idents[-1]))
        conn.commit()  # main: out of shared memory
        assert conn.execute(sql.SQL("select count(*) from {}").format(idents[-1])).fetchone()[0] \
            == 2  # kept: the applier truncates it before its next batch
        assert conn.execute(sql.SQL("select count(*) from {}").format(idents[0])).fetchone()[0] \
            == 0  # one of the first EMPTIED_AT_COMMIT: emptied at commit
