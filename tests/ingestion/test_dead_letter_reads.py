"""What the dead-letter reads cost as the queue grows: each reads the letters it needs, not every
letter of a table or a source (bench/dead_letter_queries.py measures them at a week of the 10x
demo's letters). Heap pages of ``tidemark.dead_letters`` read are the measure: load-independent.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg

from contracts import load_contracts
from ingestion import catch_up
from ingestion.dead_letters import replay
from ingestion.landing_indexes import ensure_declared_indexes
from ingestion.source_admin import remove_source
from tests.ingestion.conftest import Pair, assert_mirror_equals
from tests.support import letter_heap_reads

_CONTRACT = ("version: 1\nfreshness: {warn_after: 15m, error_after: 1h}\n"
             "compatibility: backward\nallowed_lateness: 1h\nprimary_key: [id]\ncolumns:\n"
             "  id: {type: integer}\n  status: {type: text, allowed_values: [a, b]}\n"
             "  big: {type: text, nullable: true}\n")
LETTERS = 20_000


def _strict(pair: Pair, tmp_path: Path) -> object:
    """Table ``p`` (a TOAST column) under a contract, and ``LETTERS`` waiting letters of other
    keys of it."""
    (tmp_path / pair.source).mkdir()
    (tmp_path / pair.source / "p.yml").write_text(_CONTRACT)
    contracts = load_contracts(tmp_path)
    pair.src_exec("create table p (id int primary key, status text, big text)",
                  "alter table p alter column big set storage external")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    _seed_letters(pair.land, pair.source, "p", waiting=True)
    return contracts


def _seed_letters(land: str, source: str, table: str, *, waiting: bool,
                  age: str = "30 days") -> None:
    """``LETTERS`` letters of ``table`` (keys 100,001 on; a row of 600 bytes, a dozen
    letters a page as in the demo's queue), first seen and committed ``age``
    ago, waiting or resolved; at commit LSNs past any change the tests make, so the letters the
    tests look up are the oldest (a backward walk in commit order meets every seeded one
    first)."""
    with psycopg.connect(land, autocommit=True) as conn:
        # no autovacuum worker may read the letters while a test counts the applier's reads
        # (the seed's insert would launch one: its vacuum and analyze read every page)
        conn.execute("alter table tidemark.dead_letters set (autovacuum_enabled = false)")
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, raw_row, commit_at, first_seen_at, replayed_at, replay_result)"
            " select %s, %s, 'F0/10', ('F0/' || to_hex(16 + i))::pg_lsn, 0, 'c', 'bad',"
            " jsonb_build_object('id', (100000 + i)::text, 'status', 'x', 'big', repeat('b', 600)),"
            " now() - %s::interval, now() - %s::interval, case when %s then null else now() end,"
            " case when %s then null else 'applied' end from generate_series(1, %s) i",
            (source, table, age, age, waiting, waiting, LETTERS))
        conn.execute("vacuum analyze tidemark.dead_letters")


def _reads_to_land(pair: Pair, contracts: object, statement: str) -> int:
    """Heap pages of the letters read to land ``statement``'s change, after a bad insert of row
    2 (a TOAST value) made it a letter only."""
    pair.src_exec("insert into p values (2, 'x', repeat('u', 9000))")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    before = letter_heap_reads(pair.land)
    pair.src_exec(statement)
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    return letter_heap_reads(pair.land) - before


def test_fixing_a_bad_row_reads_its_own_letters_not_every_waiting_one(pair: Pair,
                                                                     tmp_path: Path) -> None:
    """A bad row is a letter only; an update at the source fixes it and leaves its TOAST value
    unchanged: the applier takes the value from the row's latest letter, per batch. On main
    that lookup walked every waiting letter of the table (the partial index in commit order,
    filtered by the key inside ``raw_row``): a heap page each."""
    contracts = _strict(pair, tmp_path)
    assert _reads_to_land(pair, contracts, "update p set status = 'a' where id = 2") < 50
    assert_mirror_equals(pair, "p")


def test_a_bad_key_change_of_a_letter_reads_its_own_letters(pair: Pair, tmp_path: Path
                                                              ) -> None:
    """A row that is a letter only changes its key and breaks the contract again: the new
    letter takes the TOAST value it left unchanged from the old key's latest letter. On main
    that read walked every waiting letter of the table."""
    contracts = _strict(pair, tmp_path)
    assert _reads_to_land(pair, contracts, "update p set id = 9, status = 'y' where id = 2") < 50
    with psycopg.connect(pair.land) as conn:
        big = conn.execute("select raw_row ->> 'big' from tidemark.dead_letters where"
                           " table_name = 'p' and raw_row ->> 'id' = '9'").fetchone()[0]
    assert big == "u" * 9000


def test_a_replay_counts_the_letters_replayed_before_without_reading_them(
        pair: Pair, tmp_path: Path) -> None:
    """`dlq replay` reports how many letters of its scope were replayed before. On main that
    count read every letter of the source (a sequential scan: 1.5 s at a week of the 10x
    demo's letters)."""
    pair.src_exec("create table p (id int primary key, status text, big text)")
    catch_up(pair.src, pair.land, pair.source)
    _seed_letters(pair.land, pair.source, "p", waiting=False)
    before = letter_heap_reads(pair.land)
    assert replay(pair.land, pair.source, table="p") == {
        "applied": 0, "superseded": 0, "invalid": 0, "skipped": LETTERS}
    assert letter_heap_reads(pair.land) - before < 50


def test_a_replay_since_reads_the_letters_of_its_window_only(pair: Pair) -> None:
    """`dlq replay --since 1h` with a month-old queue of waiting letters and resolved ones: it
    reads the letters of the last hour (none), not the queue. On main the time filter was a
    volatile expression: every waiting letter of the source was read, and every resolved one
    for the count."""
    pair.src_exec("create table p (id int primary key, status text, big text)")
    catch_up(pair.src, pair.land, pair.source)
    _seed_letters(pair.land, pair.source, "p", waiting=True)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute("update tidemark.dead_letters set seq = 1")  # distinct from the next seed
    _seed_letters(pair.land, pair.source, "p", waiting=False)
    before = letter_heap_reads(pair.land)
    assert replay(pair.land, pair.source, since=timedelta(hours=1)) == {
        "applied": 0, "superseded": 0, "invalid": 0, "skipped": 0}
    assert letter_heap_reads(pair.land) - before < 50


def test_an_existing_landing_gets_the_letter_index_and_loses_a_stale_one(
        pair: Pair, tmp_path: Path) -> None:
    """The upgrade path: a landing older than the letter indexes gets them from the same pass
    that builds the contracts' mirror indexes (a stream's start, a catch-up), concurrently; an
    index of the table's older key is dropped."""
    contracts = _strict(pair, tmp_path)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        name = conn.execute(
            "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid where"
            " i.indrelid = 'tidemark.dead_letters'::regclass and obj_description(c.oid) like"
            " 'tidemark: waiting dead letters by key of %'").fetchone()[0]
        conn.execute(f'alter index tidemark."{name}" rename to stale_letters')
    assert ensure_declared_indexes(pair.land, pair.source, contracts) == [f"tidemark.{name}"]
    with psycopg.connect(pair.land, autocommit=True) as conn:
        names = {r[0] for r in conn.execute(
            "select indexname from pg_indexes where schemaname = 'tidemark' and"
            " tablename = 'dead_letters'")}
        snap = conn.execute("select coalesce(snapshot_lsn, '0/0') from tidemark.replicated_tables"
                            " where source = %s and table_name = 'p'", (pair.source,)).fetchone()[0]
        plan = "\n".join(r[0] for r in conn.execute(  # as ingestion.side_tables reads
            "explain select raw_row ->> 'big' from tidemark.dead_letters d where d.source = %s"
            " and d.table_name = 'p' and d.replayed_at is null and d.commit_lsn >= %s and"
            " d.raw_row ? 'big' and (d.raw_row ->> 'id')::integer = 100007 order by"
            " d.commit_lsn desc, d.seq desc limit 1", (pair.source, snap)))
    assert name in names and "stale_letters" not in names
    assert name in plan
    assert ensure_declared_indexes(pair.land, pair.source, contracts) == []


def test_a_key_of_a_type_read_by_the_settings_gets_no_letter_index(pair: Pair,
                                                                    tmp_path: Path) -> None:
    """A ``timestamptz`` key is read from text by the session's time zone: no index may hold
    that cast. The pass builds none, says nothing is wrong, and the lookups work as before."""
    (tmp_path / pair.source).mkdir()
    (tmp_path / pair.source / "e.yml").write_text(
        _CONTRACT.replace("primary_key: [id]", "primary_key: [at]").replace(
            "id: {type: integer}", "at: {type: timestamptz}"))
    contracts = load_contracts(tmp_path)
    pair.src_exec("create table e (at timestamptz primary key, status text, big text)",
                  "alter table e alter column big set storage external",
                  "insert into e values ('2026-01-01', 'x', repeat('u', 9000))")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert ensure_declared_indexes(pair.land, pair.source, contracts) == []
    pair.src_exec("update e set status = 'a'")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert_mirror_equals(pair, "e")


def _letter_indexes(land: str) -> list[str]:
    with psycopg.connect(land) as conn:
        return [r[0] for r in conn.execute(
            "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid where"
            " i.indrelid = 'tidemark.dead_letters'::regclass and obj_description(c.oid) like"
            " 'tidemark: waiting dead letters by key of %'")]


def test_removing_a_source_counts_its_letters_without_reading_them_and_drops_their_index(
        pair: Pair, tmp_path: Path) -> None:
    """`tidemark source remove` reports how many letters it leaves from the counts (on main a
    ``count(*)`` of the source's letters: 0.4 s at a week of the 10x demo's), and drops the
    source's letter indexes (on main they outlived it)."""
    _strict(pair, tmp_path)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute("update tidemark.dead_letters set seq = 1")  # distinct from the next seed
    _seed_letters(pair.land, pair.source, "p", waiting=False)
    pair.register()
    assert len(_letter_indexes(pair.land)) == 1
    before = letter_heap_reads(pair.land)
    report = remove_source(pair.land, pair.source)
    assert letter_heap_reads(pair.land) - before < 50
    assert f"{2 * LETTERS} dead letters, schema history and duplicate counts in tidemark.*" \
        in report.landing_left
    assert _letter_indexes(pair.land) == []
