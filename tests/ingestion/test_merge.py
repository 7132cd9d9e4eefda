"""ingestion/merge.py: the outbox duplicate check is linear (no correlated scan of the staging
table, the quadratic plan that made a 10,000-event snapshot take 20 s), and drops exactly the
duplicates: against the mirror and within the batch (first copy kept)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ingestion.merge import create_staging, drop_duplicate_events, duplicate_events_sql
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
