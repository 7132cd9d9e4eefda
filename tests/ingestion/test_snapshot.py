"""Initial snapshot: with writes going on during it, then streaming (no gap, no duplicate); of
pgbench tables and an outbox with redelivered events (equal to the source, duplicates counted,
contract violations dead-lettered); killed with SIGKILL half-way (nothing left behind)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from ingestion import catch_up
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog, table_rows
from tidemark.demo.schema import DEMO_TABLES, apply_schema


def _writer(url: str, stop: threading.Event, counter: list[int]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        i = 0
        while not stop.is_set() and i < 3000:
            i += 1
            cid = 100_000 + i
            with conn.transaction():
                conn.execute("insert into customers values (%s, 'w', 'w@x', 'c', now(), now())",
                             (cid,))
                conn.execute("update customers set city = 'moved', updated_at = now()"
                             " where customer_id = %s", (i,))
                conn.execute("delete from customers where customer_id = %s", (cid - 1,))
            counter[0] = i


def test_snapshot_with_concurrent_writes_then_stream(pair: Pair) -> None:
    apply_schema(pair.src)
    pair.src_exec(
        "insert into customers select g, 'n' || g, 'e' || g || '@x', 'c', now(), now()"
        " from generate_series(1, 30000) g",
        "insert into stores select g, 's', 'c', 'r', now(), true from generate_series(1, 5) g")
    stop, counter = threading.Event(), [0]
    writer = threading.Thread(target=_writer, args=(pair.src, stop, counter))
    writer.start()
    try:
        first = catch_up(pair.src, pair.land, pair.source)
    finally:
        stop.set()
        writer.join()
    assert first.snapshot_rows >= 30_000
    assert counter[0] > 0, "the writer made no change while the snapshot ran"
    second = catch_up(pair.src, pair.land, pair.source)
    assert second.snapshot_rows == 0
    for table in DEMO_TABLES:
        assert_mirror_equals(pair, table)
    rows = changelog(pair.land, pair.source, "customers", "_commit_lsn, _seq")
    assert len(rows) == len(set(rows)), "a change landed twice in the changelog"
    ops = changelog(pair.land, pair.source, "customers", "_op")
    assert {o[0] for o in ops} >= {"r", "c", "u", "d"}


OUTBOX = """
create table app_events (
    outbox_id bigint generated always as identity primary key,
    event_id uuid not null, event_type text not null, event_time timestamptz not null,
    received_at timestamptz not null default now(), customer_id bigint, session_id uuid,
    payload jsonb not null);
alter table app_events replica identity full;
insert into app_events (event_id, event_type, event_time, customer_id, payload)
select md5(k::text)::uuid, 'cart_item_added', timestamptz '2026-01-01' + g * interval '1 s',
       g % 50 + 1, jsonb_build_object('cart_id', md5('c' || k)::uuid, 'product_id', g % 90 + 1,
                                      'quantity', g % 5 + 1)
from (select g, case when g % 10 = 0 then g - 1 else g end k
      from generate_series(1, 20000) g) s;
-- rows that break the contract: a payload field out of range, an unknown event type
insert into app_events (event_id, event_type, event_time, payload) values
    (gen_random_uuid(), 'cart_item_added', now(),
     '{"cart_id": "6f1e1b1e-1a1a-4b4b-8c8c-0d0d0d0d0d0d", "product_id": 1, "quantity": 99}'),
    (gen_random_uuid(), 'session_started', now(), '{"platform": "ios", "app_version": "1.x"}');
"""


def _contracts_for(source: str, tmp_path: Path) -> Path:
    from contracts.loader import PACKAGE_ROOT

    root = tmp_path / "contracts"
    (root / source / "events").mkdir(parents=True)
    shutil.copy(PACKAGE_ROOT / "shop" / "app_events.yml", root / source)
    for event in (PACKAGE_ROOT / "shop" / "events").glob("*.yml"):
        shutil.copy(event, root / source / "events")
    return root


def test_pgbench_and_outbox_snapshot(pair: Pair, tmp_path: Path) -> None:
    from contracts import load_contracts
    from ingestion.status import status
    from tidemark.stack.embedded import server_binary

    subprocess.run([str(server_binary("pgbench")), "-i", "-q", "-s", "2", pair.src], check=True,
                   capture_output=True)
    pair.src_exec("alter table pgbench_history replica identity full", OUTBOX)
    seen: list = []
    staged: list = []
    once = threading.Lock()  # the snapshot's copy threads report progress concurrently

    def progress(report: object) -> None:
        seen.append(report)
        if not getattr(report, "rows", 0):
            return
        with once:
            if staged:
                return
            with psycopg.connect(pair.land) as conn:  # copying: the staging tables exist
                staged.extend(conn.execute(  # staged mirrors and changelogs
                    "select relname, reloptions from pg_class where relkind = 'r' and"
                    " relnamespace in (to_regnamespace(%s), to_regnamespace(%s))",
                    (f"_tidemark_snapm_{pair.source}", f"_tidemark_snapc_{pair.source}")
                ).fetchall())

    stats = catch_up(pair.src, pair.land, pair.source,
                     contracts=load_contracts(_contracts_for(pair.source, tmp_path)),
                     on_progress=progress)
    # A vacuum right after COPY FREEZE would record reltuples = 0 and turn the checks' and the
    # dedup's joins into nested loops: no autovacuum on staging tables while they load.
    assert len(staged) == 10 and all(o == ["autovacuum_enabled=false"] for _, o in staged), staged
    for table in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers"):
        assert_mirror_equals(pair, table)
    with psycopg.connect(pair.src) as conn:
        kept = Counter(r[0] for r in conn.execute(
            "select t::text from (select distinct on (event_id) * from app_events"
            " where outbox_id <= 20000 order by event_id, outbox_id) t"))
    assert table_rows(pair.land, pair.source, "app_events") == kept
    with psycopg.connect(pair.land) as conn:
        dups = conn.execute("select dropped from tidemark.duplicate_events where source = %s"
                            " and table_name = 'app_events'", (pair.source,)).fetchone()[0]
        dead = conn.execute("select op, reason, commit_lsn::text, seq from tidemark.dead_letters"
                            " where source = %s order by seq", (pair.source,)).fetchall()
        cl = conn.execute(f'select count(*), count(distinct (_commit_lsn, _seq)) from'
                          f' cdc."{pair.source}__app_events"').fetchone()
    assert dups == 2000, "every tenth event was a redelivery"
    assert [d[0] for d in dead] == ["r", "r"]
    assert "quantity" in dead[0][1] and "1.x" in dead[1][1]
    assert cl == (18000, 18000), "the changelog holds each kept event once"
    with psycopg.connect(pair.land) as conn:
        defaults = dict(conn.execute(
            "select a.attname, pg_get_expr(d.adbin, d.adrelid) from pg_attrdef d join"
            " pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum where"
            " d.adrelid = %s::regclass", (f'cdc."{pair.source}__app_events"',)).fetchall())
    assert defaults == {"_ingested_at": "clock_timestamp()"}, "the load's defaults are gone"
    with psycopg.connect(pair.land) as conn:
        options = conn.execute(
            "select count(*), count(reloptions) from pg_class where oid = any(%s::regclass[])",
            ([f'"{pair.source}".app_events', f'cdc."{pair.source}__app_events"',
              f'"{pair.source}".pgbench_accounts', f'cdc."{pair.source}__pgbench_accounts"'],)
        ).fetchone()
    assert options == (4, 0), "autovacuum is back on for the landing tables"
    with psycopg.connect(pair.land) as conn:
        indexes = dict(conn.execute(
            "select indexname, indexdef from pg_indexes where schemaname = %s and"
            " tablename = 'app_events'", (pair.source,)).fetchall())
    # The idempotency key's index and the contract's declared ones are built with the staged
    # mirror's primary key, and keep the names the streaming applier gives them.
    assert sorted(indexes) == ["app_events__event_id_idem", "app_events__event_time_idx",
                               "app_events_pkey"], indexes
    assert indexes["app_events__event_id_idem"].endswith("USING btree (event_id)")
    assert indexes["app_events__event_time_idx"].endswith("USING btree (event_time)")
    assert stats.snapshot_rows == 200_000 + 2 + 20 + 20_002
    assert seen[-1].done and seen[-1].rows == stats.snapshot_rows
    assert [p.rows for p in seen] == sorted(p.rows for p in seen)
    snap = status(pair.src, pair.land, pair.source)["snapshot"]
    assert snap["state"] == "done" and snap["rows"] == stats.snapshot_rows
    # Streaming after the snapshot: no gap, no duplicate.
    pair.src_exec("update pgbench_accounts set abalance = abalance + 1 where aid <= 100",
                  "delete from pgbench_tellers where tid = 1")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "pgbench_accounts")
    assert_mirror_equals(pair, "pgbench_tellers")


def test_sigkill_during_snapshot_leaves_nothing(pair: Pair, tmp_path: Path) -> None:
    from tidemark.stack.embedded import server_binary

    subprocess.run([str(server_binary("pgbench")), "-i", "-q", "-s", "10", pair.src],
                   check=True, capture_output=True)
    pair.register()
    env = {**os.environ, "TIDEMARK_SOURCE_URL": pair.src, "TIDEMARK_LANDING_URL": pair.land,
           "TIDEMARK_HOME": str(tmp_path / "home")}
    argv = [sys.executable, "-m", "tidemark.cli.main", "ingest", "run", "--no-contracts"]
    log = (tmp_path / "ingest.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        copying = False
        with psycopg.connect(pair.land, autocommit=True) as conn:
            while time.monotonic() < deadline and not copying:
                with contextlib.suppress(psycopg.errors.UndefinedTable):
                    copying = conn.execute(
                        "select exists (select 1 from tidemark.snapshot_progress where source ="
                        " %s and state = 'copying' and rows_copied > 0)",
                        (pair.source,)).fetchone()[0]
                time.sleep(0.02)
        assert copying, (tmp_path / "ingest.log").read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from pg_tables where schemaname = %s or"
                            " (schemaname = 'cdc' and tablename like %s)",
                            (pair.source, f"{pair.source}%")).fetchone()[0] == 0
        assert conn.execute("select count(*) from tidemark.replicated_tables where source = %s",
                            (pair.source,)).fetchone()[0] == 0
        assert conn.execute("select count(*) from tidemark.checkpoints where source = %s and"
                            " snapshot_done_at is not null", (pair.source,)).fetchone()[0] == 0
    stats = catch_up(pair.src, pair.land, pair.source)
    assert stats.snapshot_rows == 1_000_000 + 10 + 100
    assert_mirror_equals(pair, "pgbench_accounts")
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select to_regnamespace(%s)", (f"_tidemark_snap_{pair.source}",)
                            ).fetchone()[0] is None, "the staging schema was cleaned up"


def test_full_resnapshot_reloads_existing_tables_in_place(pair: Pair) -> None:
    from ingestion.resync import resync

    pair.src_exec("create table t (id int primary key, v text)",
                  "insert into t select g, 'v' || g from generate_series(1, 5000) g")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(f'create view public.t_view as select id from "{pair.source}".t')
    pair.src_exec("delete from t where id <= 100", "insert into t values (9999, 'new')")
    message = resync(pair.src, pair.land, pair.source)
    assert "snapshot of 4901 rows" in message
    assert_mirror_equals(pair, "t")
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select count(*) from public.t_view").fetchone()[0] == 4901
        snapshots = conn.execute(
            f'select _commit_lsn, count(*) from cdc."{pair.source}__t" where _op = \'r\''
            f' group by 1 order by 1').fetchall()
    assert [n for _, n in snapshots] == [5000, 4901], "each snapshot's rows, once"


def test_outbox_dedup_keeps_each_first_valid_event(pair: Pair, tmp_path: Path) -> None:
    """Events sent 1, 2, 3 or 5 times, some first copies breaking the contract: the snapshot
    keeps exactly the first valid copy of each event id, counts the others as duplicates and
    dead-letters the invalid ones (the dedup's hash holds only the duplicated keys)."""
    from contracts import load_contracts

    pair.src_exec(OUTBOX.split("insert into")[0], """
        insert into app_events (event_id, event_type, event_time, customer_id, payload)
        select md5(k::text)::uuid, 'cart_item_added', timestamptz '2026-01-01' + g * interval '1 s',
               k, jsonb_build_object('cart_id', md5('c' || k)::uuid, 'product_id', g,
                                     'quantity', case when c = 1 and k % 10 = 0 then 99 else c end)
        from (select k, c, row_number() over (order by k, c) g
              from generate_series(1, 400) k,
                   generate_series(1, (array[1, 2, 3, 5])[k % 4 + 1]) c) s
        order by g""",
        # An outbox relay marks the first copies sent: the updated rows move behind their later
        # copies on disk, which a snapshot's COPY reads first (it kept a later copy before).
        """update app_events set received_at = received_at + interval '1 s' where outbox_id in
           (select min(outbox_id) from app_events group by event_id having count(*) > 1)""")
    catch_up(pair.src, pair.land, pair.source,
             contracts=load_contracts(_contracts_for(pair.source, tmp_path)))
    with psycopg.connect(pair.src) as conn:
        valid = "(payload ->> 'quantity')::int <= 50"
        kept = Counter(r[0] for r in conn.execute(
            "select t::text from (select distinct on (event_id) * from app_events"
            f" where {valid} order by event_id, outbox_id) t"))
        expected_dups, expected_dead = conn.execute(
            f"select count(*) filter (where {valid}) - count(distinct event_id) filter (where"
            f" {valid}), count(*) filter (where not {valid}) from app_events").fetchone()
    assert expected_dups > 0 and expected_dead > 0
    assert table_rows(pair.land, pair.source, "app_events") == kept
    with psycopg.connect(pair.land) as conn:
        dups = conn.execute("select dropped from tidemark.duplicate_events where source = %s"
                            " and table_name = 'app_events'", (pair.source,)).fetchone()[0]
        dead = conn.execute("select count(*) from tidemark.dead_letters where source = %s",
                            (pair.source,)).fetchone()[0]
        cl = conn.execute(f'select count(*), count(distinct event_id) from'
                          f' cdc."{pair.source}__app_events"').fetchone()
    assert (dups, dead) == (expected_dups, expected_dead)
    assert cl == (len(kept), len(kept)), "the changelog holds each kept event once"


def test_log_and_status_report_the_same_snapshot_rate(pair: Pair, caplog) -> None:
    """The log line said 45,441 rows/s where `tidemark ingest status` said 47,543 for the same
    snapshot: they timed different intervals. Both now time the first progress row to the
    landing commit."""
    import logging
    import re

    from ingestion.status import status

    pair.src_exec("create table big (id int primary key, v text)",
                  "insert into big select g, md5(g::text) from generate_series(1, 200000) g")
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    catch_up(pair.src, pair.land, pair.source, timeout_s=120)
    logged = next(float(m.group(1)) for r in caplog.records
                  if (m := re.search(r"snapshot of 1 table, 200,000 rows in .* \((\d+) rows/s\)",
                                     r.getMessage())))
    shown = status(pair.src, pair.land, pair.source)["snapshot"]["rows_per_s"]
    assert round(shown) == logged, (logged, shown)


def test_a_table_joining_later_logs_its_own_snapshot_time(pair: Pair, caplog) -> None:
    """A table created while streaming is copied alone; its log line said "0 tables, 0 rows in
    1074.5 s": the time and rate were read over every progress row of the source, the initial
    snapshot's an hour earlier too. They are now this snapshot's own, in `ingest status` too."""
    import logging
    import re

    from ingestion.status import status

    pair.src_exec("create table first (id int primary key)",
                  "insert into first select generate_series(1, 1000)")
    catch_up(pair.src, pair.land, pair.source, timeout_s=120)
    with psycopg.connect(pair.land, autocommit=True) as conn:  # the initial snapshot, long ago
        conn.execute("update tidemark.snapshot_progress set started_at = started_at - interval"
                     " '1 hour', finished_at = finished_at - interval '1 hour'"
                     " where source = %s", (pair.source,))
    pair.src_exec("create table later (id int primary key)",
                  "insert into later select generate_series(1, 500)")
    caplog.clear()
    caplog.set_level(logging.INFO, logger="tidemark.ingestion")
    catch_up(pair.src, pair.land, pair.source, timeout_s=120)
    lines = [m for r in caplog.records
             if (m := re.search(r"snapshot of (\d+) tables?, ([\d,]+) rows in ([\d.]+) s",
                                r.getMessage()))]
    assert [(m.group(1), m.group(2)) for m in lines] == [("1", "500")], caplog.text
    assert float(lines[0].group(3)) < 600, lines[0].group(0)
    shown = status(pair.src, pair.land, pair.source)["snapshot"]  # the latest snapshot
    assert (shown["tables_total"], shown["rows"]) == (1, 500) and shown["elapsed_s"] < 600
    assert_mirror_equals(pair, "later")


def _column_shapes(conn: psycopg.Connection, table: str) -> set[tuple]:
    """(name, type, NOT NULL, default, identity) of each column of ``table`` (a regclass
    text)."""
    return set(conn.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " pg_get_expr(d.adbin, d.adrelid), a.attidentity from pg_attribute a left join"
        " pg_attrdef d on"
        " d.adrelid = a.attrelid and d.adnum = a.attnum where a.attrelid = %s::regclass"
        " and a.attnum > 0 and not a.attisdropped", (table,)).fetchall())


def test_snapshot_changelog_rows_are_as_narrow_as_the_mirrors(pair: Pair) -> None:
    """A snapshot's changelog rows store the source's columns and ``_seq`` only: the change
    columns that are the same for every snapshot row are held once in the catalog. They read
    as before, the changelog has the landing DDL (names, types, NOT NULL, defaults, unique
    key), and streamed rows carry their own values."""
    from ingestion.tables import create_landing_tables, load_tables

    pair.src_exec("create table t (id int primary key, n int, pad text)",
                  "insert into t select g, g % 7, repeat('x', 40) from generate_series(1, 20000) g")
    catch_up(pair.src, pair.land, pair.source)
    table = f'cdc."{pair.source}__t"'
    with psycopg.connect(pair.land) as conn:
        missing = {r[0] for r in conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and atthasmissing",
            (table,))}
        sizes = conn.execute("select pg_relation_size(%s::regclass), pg_relation_size(%s)",
                             (table, f'"{pair.source}".t')).fetchone()
        snap = conn.execute(
            f"select count(*), count(distinct _seq), min(_seq) = -2147483646 and max(_seq) ="
            f" -2147483646 + 19999, bool_and(_op = 'r'"
            f" and _lsn = _commit_lsn and _txid is null and _ingested_at = _commit_at),"
            f" count(distinct _commit_lsn), count(distinct _commit_at) from {table}").fetchone()
        shape = _column_shapes(conn, table)
        unique = conn.execute("select pg_get_indexdef(indexrelid) like '%%UNIQUE%%(_commit_lsn,"
                              " _seq)' from pg_index where indrelid = %s::regclass",
                              (table,)).fetchall()
        info = load_tables(conn, pair.source)["t"]
        conn.execute("create schema fresh")
        create_landing_tables(conn, dataclasses.replace(info, source="fresh", name="t"))
        want = _column_shapes(conn, "cdc.fresh__t")
        sequences = conn.execute("select count(*) from pg_class where relkind = 'S' and"
                                 " relnamespace in (select oid from pg_namespace where nspname"
                                 " in ('cdc', %s))", (pair.source,)).fetchone()[0]
    assert missing == {"_op", "_lsn", "_commit_lsn", "_commit_at", "_ingested_at"}
    assert sizes[0] <= sizes[1] * 1.05, f"changelog {sizes[0]} bytes, mirror {sizes[1]}"
    assert snap == (20000, 20000, True, True, 1, 1), snap
    assert shape == want, "the changelog's columns are the landing DDL's"
    assert sequences == 0, "the load's _seq numbering left no sequence behind"
    assert unique == [(True,)]
    pair.src_exec("update t set n = -1 where id <= 3", "insert into t values (0, 0, 'new')")
    catch_up(pair.src, pair.land, pair.source)
    assert_mirror_equals(pair, "t")
    with psycopg.connect(pair.land) as conn:
        streamed = conn.execute(
            f"select _op, _txid is not null, _ingested_at > _commit_at, _lsn <> _commit_lsn"
            f" or _seq > 0 from {table} where _op <> 'r' order by _commit_lsn, _seq").fetchall()
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute(f"insert into {table} (id, _op, _lsn, _commit_lsn, _seq) values"
                         f" (1, null, '0/1', '0/1', 1)")
    assert streamed == [("u", True, True, True)] * 3 + [("c", True, True, True)]


def test_a_table_rewritten_between_the_initial_snapshot_and_its_copy_lands_whole(
        pair: Pair) -> None:
    """A rewriting ALTER TABLE committed after the slot's snapshot and before the copy reads the
    table: the table looks empty to that snapshot (rewrites are not MVCC-safe), and it used to
    land with 0 rows, silently. The session starts again with a new slot and snapshot."""
    pair.src_exec("create table t (id int primary key, n int)",
                  "insert into t select g, g from generate_series(1, 500) g")
    rewritten: list[bool] = []

    def rewrite_once(progress: object) -> None:  # the copy of t begins: snapshot taken
        if "t" in getattr(progress, "current", ()) and not rewritten:
            rewritten.append(True)
            pair.src_exec("alter table t alter column n type bigint")

    catch_up(pair.src, pair.land, pair.source, on_progress=rewrite_once)
    assert rewritten
    assert_mirror_equals(pair, "t")


def test_a_table_never_analyzed_gets_the_planners_row_estimate(pair: Pair) -> None:
    """A database just restored from a dump has no statistics (reltuples -1) until autovacuum
    reaches it: the snapshot then had no row estimate, so no total and no ETA in `ingest
    status` and `tidemark up`, and no largest-first order of the copies. The source planner's
    estimate from the table's size stands in; a table without a page is 0 rows."""
    pair.src_exec("create table big (id int primary key, note text)"
                  " with (autovacuum_enabled = false)",
                  "insert into big select g, md5(g::text) from generate_series(1, 20000) g",
                  "create table empty (id int primary key) with (autovacuum_enabled = false)",
                  "create table small (id int primary key) with (autovacuum_enabled = false)",
                  "insert into small select generate_series(1, 200)",
                  "create table known (id int primary key)",
                  "insert into known select generate_series(1, 300)", "analyze known")
    with psycopg.connect(pair.src) as conn:
        reltuples = dict(conn.execute("select relname, reltuples from pg_class where relname in"
                                      " ('big', 'empty')").fetchall())
    assert reltuples == {"big": -1, "empty": -1}
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land) as conn:
        estimates = dict(conn.execute(
            "select table_name, rows_estimate from tidemark.snapshot_progress where source = %s",
            (pair.source,)).fetchall())
    assert estimates["known"] == 300 and estimates["empty"] == 0
    assert 10_000 <= estimates["big"] <= 40_000, estimates
    assert 100 <= estimates["small"] <= 400, estimates  # the planner takes 1 page for 10
