"""What grows with history, bounded: `tidemark dlq list` shows a page, `tidemark dlq purge` and
`tidemark ingest prune` delete old dead letters and changelog rows in batches, and replay's
superseded check reads the changelog once per table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingestion import catch_up
from ingestion.dead_letters import list_dead_letters, purge_dead_letters, replay
from ingestion.resync import resync
from ingestion.retention import prune_changelog
from tests.ingestion.conftest import Pair, changelog, table_rows
from tests.ingestion.test_dead_letters import contracts_for
from tests.support import letter_heap_reads
from tidemark.demo.schema import apply_schema


def cli(p: Pair, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDEMARK_SOURCE_URL": p.src, "TIDEMARK_LANDING_URL": p.land,
           "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "tidemark.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def seed_letters(p: Pair, waiting: int, replayed: int, age: str, table: str = "t") -> None:
    """Dead letters written by SQL: ``waiting`` never replayed, ``replayed`` superseded."""
    with psycopg.connect(p.land, autocommit=True) as conn:
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, raw_row, first_seen_at, replayed_at, replay_result)"
            " select %s, %s, '0/10', ('0/' || to_hex(16 + i))::pg_lsn, i, 'c', 'bad', '{}',"
            " now() - %s::interval + i * interval '1 ms',"
            " case when i > %s then now() end, case when i > %s then 'superseded' end"
            " from generate_series(1, %s) i",
            (p.source, table, age, waiting, waiting, waiting + replayed))


def test_dlq_list_shows_the_oldest_page_and_says_how_many(pair: Pair) -> None:
    """On main `dlq list` printed every letter and had no --limit."""
    pair.register()
    with psycopg.connect(pair.land, autocommit=True) as conn:
        from ingestion.state import ensure_state

        ensure_state(conn, pair.source)
    seed_letters(pair, waiting=250, replayed=10, age="1 day")
    out = cli(pair, "dlq", "list", "--source", pair.source)
    assert out.returncode == 0, out.stderr
    assert "The 100 oldest of 250 dead letters; --limit N shows more" in out.stdout
    ids = [d["id"] for d in json.loads(cli(pair, "dlq", "list", "--source", pair.source,
                                           "--json").stdout)]
    assert ids == list(range(1, 101))
    out = cli(pair, "dlq", "list", "--source", pair.source, "--limit", "all", "--json")
    assert len(json.loads(out.stdout)) == 250
    out = cli(pair, "dlq", "list", "--source", pair.source, "--limit", "300", "--all")
    assert out.returncode == 0 and "oldest of" not in out.stdout
    out = cli(pair, "dlq", "list", "--source", pair.source, "--limit", "lots")
    assert out.returncode == 2 and "expected a number of letters or 'all'" in out.stderr


def test_dlq_purge_deletes_old_resolved_letters_in_batches(pair: Pair) -> None:
    """On main there was no `dlq purge`: resolved letters stayed for ever."""
    pair.register()
    with psycopg.connect(pair.land, autocommit=True) as conn:
        from ingestion.state import ensure_state

        ensure_state(conn, pair.source)
    seed_letters(pair, waiting=30, replayed=45, age="40 days")
    seed_letters(pair, waiting=2, replayed=3, age="1 day", table="u")
    # batches of 7 go past the waiting letters and stop at the young ones
    assert purge_dead_letters(pair.land, pair.source, timedelta(days=30), batch=7) == 45
    out = cli(pair, "dlq", "purge", "--older-than", "30d", "--source", pair.source)
    assert out.returncode == 0, out.stderr
    assert "Deleted 0 replayed dead letters" in out.stdout
    out = cli(pair, "dlq", "purge", "--older-than", "30d", "--waiting", "--source", pair.source,
              "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"deleted": 30}
    left = list_dead_letters(pair.land, pair.source, include_replayed=True)
    assert len(left) == 5
    out = cli(pair, "dlq", "purge", "--older-than", "a month", "--source", pair.source)
    assert out.returncode == 2 and "expected a duration like" in out.stderr


def test_replay_superseded_is_one_query_per_table(pair: Pair, tmp_path: Path) -> None:
    """Several letters of a table: superseded by a later change, or not, decided together."""
    apply_schema(pair.src)
    strict = contracts_for(pair.source, tmp_path / "v1")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec(*(f"insert into stores values ({i}, 's', 'c', 'atlantis', now(), true)"
                    for i in range(1, 6)),
                  "update stores set region = 'south' where store_id in (2, 4)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    relaxed = contracts_for(pair.source, tmp_path / "v2", extra_regions="atlantis")
    counts = replay(pair.land, pair.source, contracts=relaxed)
    assert counts == {"applied": 3, "superseded": 2, "invalid": 0, "skipped": 0}
    assert table_rows(pair.src, "public", "stores") == table_rows(pair.land, pair.source, "stores")


def age_changelog(p: Pair, table: str, days: int, where: str = "true") -> None:
    with psycopg.connect(p.land, autocommit=True) as conn:
        conn.execute(f"update cdc.{p.source}__{table} set _ingested_at = now() - interval"
                     f" '{days} days' where {where}")


def test_ingest_prune_deletes_old_changelog_rows_in_batches(pair: Pair) -> None:
    """On main there was no `ingest prune`: the changelog grew for ever."""
    for name, rows in (("t", 120), ("u", 1)):
        pair.src_exec(f"create table {name} (id int primary key, v text)")
        catch_up(pair.src, pair.land, pair.source)
        pair.src_exec(f"insert into {name} select i, 'a' from generate_series(1, {rows}) i")
        catch_up(pair.src, pair.land, pair.source)
        age_changelog(pair, name, 100)
    pair.src_exec("update t set v = 'b' where id <= 5")
    catch_up(pair.src, pair.land, pair.source)
    # the old inserts go (in batches of 50), the five recent updates stay
    result = prune_changelog(pair.land, pair.source, timedelta(days=90), table="t",
                             batch_rows=50)
    assert result == {"t": {"deleted": 120, "kept_for": None, "stopped": None}}
    assert [r[0] for r in changelog(pair.land, pair.source, "t", "_op")] == ["u"] * 5
    assert table_rows(pair.src, "public", "t") == table_rows(pair.land, pair.source, "t")
    pair.register()
    out = cli(pair, "ingest", "prune", "--older-than", "90d", "--source", pair.source)
    assert out.returncode == 0, out.stderr
    assert "Deleted 1 changelog rows" in out.stdout
    assert changelog(pair.land, pair.source, "u") == []
    out = cli(pair, "ingest", "prune", "--older-than", "90x", "--source", pair.source)
    assert out.returncode == 2 and "expected a duration like" in out.stderr
    out = cli(pair, "ingest", "prune", "--older-than", "90d", "--table", "nope",
              "--source", pair.source)
    assert out.returncode == 2 and "'nope' is not replicated" in out.stderr


def test_prune_keeps_what_a_waiting_dead_letter_needs(pair: Pair, tmp_path: Path) -> None:
    """A letter of store 1 waits; the later change of store 1 must stay, or replay would apply
    the letter over it."""
    apply_schema(pair.src)
    strict = contracts_for(pair.source, tmp_path / "v1")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("insert into stores values (2, 'ok', 'c', 'north', now(), true)",
                  "insert into stores values (1, 'bad', 'c', 'atlantis', now(), true)",
                  "update stores set region = 'south' where store_id = 1")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    age_changelog(pair, "stores", 100)
    result = prune_changelog(pair.land, pair.source, timedelta(days=90), table="stores")
    assert result["stores"]["deleted"] == 1
    assert "waiting dead letter" in result["stores"]["kept_for"]
    relaxed = contracts_for(pair.source, tmp_path / "v2", extra_regions="atlantis")
    assert replay(pair.land, pair.source, contracts=relaxed)["superseded"] == 1
    assert table_rows(pair.src, "public", "stores") == table_rows(pair.land, pair.source, "stores")
    # once the letter is replayed (resolved), nothing holds the old rows back
    result = prune_changelog(pair.land, pair.source, timedelta(days=90), table="stores")
    assert result["stores"] == {"deleted": 1, "kept_for": None, "stopped": None}


def test_status_names_a_slot_that_retains_wal(pair: Pair) -> None:
    """On main `tidemark status` said nothing of a slot holding WAL back (a stopped ingestion, a
    slot nobody reads); now it names the slot, the size and the fix."""
    from tidemark.cli.status import wal_layer, wal_warnings
    from tidemark.stack.databases import Databases

    pair.src_exec("create table t (id int primary key, v text)")
    catch_up(pair.src, pair.land, pair.source)  # the slot, then nobody reads it
    pair.src_exec("insert into t select i, repeat('x', 200) from generate_series(1, 20000) i")
    pair.register()
    dbs = Databases(source=pair.src, landing=pair.land, source_ingest=pair.src,
                    landing_app=pair.land, landing_dbt=pair.land, reader=pair.land, server=None)
    found = wal_layer(dbs, min_bytes=0)
    rows = [r for r in found if r["slot"] == f"tidemark_{pair.source}"]
    assert len(rows) == 1 and rows[0]["retained_wal_bytes"] > 0, found
    assert not rows[0]["active"]
    text = wal_warnings(rows)[0]
    assert f"replication slot tidemark_{pair.source}" in text and "GB of WAL" in text
    assert f"pg_drop_replication_slot('tidemark_{pair.source}')" in text
    assert "max_slot_wal_keep_size" in text
    default = 5 * 1024**3  # TIDEMARK_SLOT_WAL_WARN_GB's default
    assert not [r for r in wal_layer(dbs, default) if r["slot"] == f"tidemark_{pair.source}"]


def _paused_with_old_changelog(p: Pair) -> None:
    """Table a: 40 changelog rows landed 100 days ago, then paused by a type change (the
    resync alters its changelog)."""
    p.src_exec("create table a (id int primary key, v int)")
    catch_up(p.src, p.land, p.source)
    p.src_exec("insert into a select g, g from generate_series(1, 40) g")
    catch_up(p.src, p.land, p.source)
    age_changelog(p, "a", 100)
    p.src_exec("alter table a alter column v type text", "insert into a values (41, 'x')")
    catch_up(p.src, p.land, p.source)


def _waiting_on(p: Pair, relation: str, timeout_s: float = 30.0) -> None:
    """Until another session waits for a lock on ``relation``."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(p.land, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("select exists (select 1 from pg_locks where not granted and"
                            " relation = to_regclass(%s))", (relation,)).fetchone()[0]:
                return
            time.sleep(0.1)
    raise AssertionError(f"nothing waited for {relation}")


def test_prune_during_a_resync_of_the_table_stops_saying_why(pair: Pair) -> None:
    """On main the prune waited, saying nothing, until the resync's transaction ended (the
    resync had altered the changelog): here, with a lock timeout, it failed with
    LockNotAvailable."""
    _paused_with_old_changelog(pair)
    blocker = psycopg.connect(pair.land)
    # the resync's last step writes tidemark.schema_history: it stops there, its locks held
    blocker.execute("lock table tidemark.schema_history in share mode")
    resync_errors: list[BaseException] = []

    def run_resync() -> None:
        try:
            resync(pair.src, pair.land, pair.source, "a")
        except BaseException as exc:  # reported by the test thread
            resync_errors.append(exc)

    worker = threading.Thread(target=run_resync)
    worker.start()
    try:
        _waiting_on(pair, "tidemark.schema_history")
        options = conninfo_to_dict(pair.land).get("options") or ""
        impatient = make_conninfo(pair.land, options=f"{options} -c lock_timeout=3000".strip())
        # a prune that waited for the resync's lock would raise LockNotAvailable after 3 s (its
        # seconds are not asserted: a loaded CI machine takes seconds for the call itself)
        result = prune_changelog(impatient, pair.source, timedelta(days=90), table="a")
        assert result == {"a": {"deleted": 0, "kept_for": None, "stopped": (
            f"a resync of {pair.source}.a is running; prune it again when the resync has "
            f"finished")}}
    finally:
        blocker.rollback()
        blocker.close()
        worker.join(60)
    assert not resync_errors
    result = prune_changelog(pair.land, pair.source, timedelta(days=90), table="a")
    assert result == {"a": {"deleted": 40, "kept_for": None, "stopped": None}}
    catch_up(pair.src, pair.land, pair.source)
    assert table_rows(pair.src, "public", "a") == table_rows(pair.land, pair.source, "a")


def test_resync_waits_for_a_prune_batch_before_locking_the_mirror(pair: Pair) -> None:
    """A prune batch running (its shared lock held): the resync waits for it before it empties
    the mirror, which readers meanwhile still read; then it finishes."""
    _paused_with_old_changelog(pair)
    batch = psycopg.connect(pair.land)
    batch.execute("select pg_advisory_xact_lock_shared(hashtext('tidemark:changelog'),"
                  " hashtext(%s))", (f"{pair.source}.a",))
    worker = threading.Thread(target=resync, args=(pair.src, pair.land, pair.source, "a"))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        with psycopg.connect(pair.land, autocommit=True) as conn:
            while not conn.execute("select exists (select 1 from pg_locks where not granted"
                                   " and locktype = 'advisory')").fetchone()[0]:
                assert time.monotonic() < deadline, "the resync never waited"
                time.sleep(0.1)
            conn.execute("set lock_timeout = 2000")
            assert conn.execute(f'select count(*) from "{pair.source}".a').fetchone()[0] == 40
    finally:
        batch.rollback()
        batch.close()
        worker.join(60)
    assert table_rows(pair.src, "public", "a") == table_rows(pair.land, pair.source, "a")


def test_prune_finds_the_oldest_waiting_letter_without_reading_resolved_ones(pair: Pair
                                                                            ) -> None:
    """20,000 resolved letters precede 20,000 waiting ones in commit order. The prune's bound
    (the table's oldest waiting letter) is the first entry of an index of waiting letters in
    commit order. On main it read either every waiting letter of the table (their partial
    index was not in commit order) or, as at a week of the 10x demo's letters, the unique index
    of every letter past the resolved ones: a heap fetch each (2 s a table, bench/RESULTS.md
    e36)."""
    pair.src_exec("create table t (id int primary key, v text)")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("insert into t select i, 'a' from generate_series(1, 10) i")
    catch_up(pair.src, pair.land, pair.source)
    age_changelog(pair, "t", 100)
    resolved = 20_000
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, raw_row, replayed_at, replay_result)"
            " select %s, 't', '0/10', ('0/' || to_hex(16 + i))::pg_lsn, 0, 'c', 'bad', '{}',"
            " case when i <= %s then now() end, case when i <= %s then 'applied' end"
            " from generate_series(1, %s) i", (pair.source, resolved, resolved, 2 * resolved))
        conn.execute("vacuum analyze tidemark.dead_letters")
    before = letter_heap_reads(pair.land)
    result = prune_changelog(pair.land, pair.source, timedelta(days=90), table="t")
    assert result["t"] == {"deleted": 0, "stopped": None,
                           "kept_for": f"a waiting dead letter at commit LSN 0/{17 + resolved:X}"}
    assert letter_heap_reads(pair.land) - before < 50
