"""ingestion/merge.py: the outbox duplicate check is linear (no correlated scan of the staging
table, the quadratic plan that made a 10,000-event snapshot take 20 s), and drops exactly the
duplicates: against the mirror and within the batch (first copy kept); a large batch's plain
inserts fall back to upserts when a key is there already."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingestion.batch import Batch
from ingestion.merge import (
    BIG_BATCH,
    create_staging,
    drop_duplicate_events,
    duplicate_events_sql,
    land_batch,
)
from ingestion.state import ensure_state
from ingestion.tables import ColumnInfo, TableInfo, create_landing_tables


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
                     " _commit_lsn, _last) select 100000 + g, case when g % 10 = 0 then g"
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
        conn.execute("insert into stg_t (id, v, _op, _lsn, _seq, _commit_lsn, _last) select g,"
                     " 1, 'c', '0/1', 2 * g, '0/5', true from generate_series(1, %s) g",
                     (BIG_BATCH + 10,))
        batch = Batch(info, lines=[b""] * (BIG_BATCH + 10))
        batch.saw(5)
        with conn.cursor() as cur:
            land_batch(cur, info, stg, batch)
        assert conn.execute("select count(*), sum(v) from f.t").fetchone() == (
            BIG_BATCH + 10, BIG_BATCH + 10)
        assert conn.execute('select count(*) from cdc."f__t"').fetchone()[0] == BIG_BATCH + 10
