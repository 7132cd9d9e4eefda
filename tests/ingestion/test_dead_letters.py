"""Contracts at ingestion: violating rows go to tidemark.dead_letters instead of the mirror, replay
re-validates against the current contract without overwriting newer state (idempotent), and
duplicate outbox events are dropped and counted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from contracts import load_contracts
from ingestion import catch_up
from ingestion.dead_letters import list_dead_letters, replay, show_dead_letter
from tests.ingestion.conftest import Pair, changelog, table_rows
from tidemark.demo.schema import apply_schema

SHOP = Path(__file__).resolve().parents[2] / "contracts" / "shop"


def contracts_for(source: str, root: Path, extra_regions: str = "") -> object:
    shutil.copytree(SHOP, root / source, dirs_exist_ok=True)
    if extra_regions:
        path = root / source / "stores.yml"
        path.write_text(path.read_text().replace("central]", f"central, {extra_regions}]"))
    return load_contracts(root)


def mirror_ids(p: Pair, table: str, key: str) -> set:
    with psycopg.connect(p.land) as conn:
        return {r[0] for r in conn.execute(f"select {key} from {p.source}.{table}")}


def test_violations_dead_letter_and_replay(pair: Pair, tmp_path: Path) -> None:
    apply_schema(pair.src)
    strict = contracts_for(pair.source, tmp_path / "v1")
    pair.src_exec("insert into stores values (1, 'ok', 'c', 'north', now(), true)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("insert into stores values (2, 'bad', 'c', 'atlantis', now(), true)",
                  "insert into stores values (3, 'bad', 'c', 'atlantis', now(), true)",
                  "update stores set region = 'south' where store_id = 3")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert mirror_ids(pair, "stores", "store_id") == {1, 3}
    letters = list_dead_letters(pair.land, pair.source)
    assert [(d["table_name"], d["op"], d["raw_row"]["store_id"]) for d in letters] == [
        ("stores", "c", "2"), ("stores", "c", "3")]
    first = show_dead_letter(pair.land, letters[0]["id"])
    assert "atlantis" in first["reason"] and first["contract_version"] == "1"
    assert first["violations"][0]["column"] == "region"

    # Store 3 is superseded by its later valid update (never overwritten); store 2 still breaks
    # the same contract and is kept. Under a contract allowing the region, store 2 lands.
    counts = replay(pair.land, pair.source, contracts=strict)
    assert counts == {"applied": 0, "superseded": 1, "invalid": 1, "skipped": 0}
    relaxed = contracts_for(pair.source, tmp_path / "v2", extra_regions="atlantis")
    counts = replay(pair.land, pair.source, contracts=relaxed)
    assert counts == {"applied": 1, "superseded": 0, "invalid": 0, "skipped": 1}
    assert table_rows(pair.src, "public", "stores") == table_rows(pair.land, pair.source, "stores")
    again = replay(pair.land, pair.source, contracts=relaxed)
    assert again["applied"] == 0 and again["skipped"] == 2
    assert list_dead_letters(pair.land, pair.source) == []
    ops = changelog(pair.land, pair.source, "stores", "store_id, _op")
    assert ops.count((2, "c")) == 1


def test_duplicate_outbox_events_are_dropped_and_counted(pair: Pair, tmp_path: Path) -> None:
    apply_schema(pair.src)
    contracts = contracts_for(pair.source, tmp_path / "c")
    payload = '{"platform": "ios", "app_version": "1.2.3"}'
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    insert = ("insert into app_events (event_id, event_type, event_time, payload)"
              " values (%s, 'session_started', now(), %s)")
    with psycopg.connect(pair.src, autocommit=True) as conn:
        conn.execute(insert, (first, payload))
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    with psycopg.connect(pair.src, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(insert, (first, payload))  # duplicate of a landed event
            conn.execute(insert, (second, payload))
            conn.execute(insert, (second, payload))  # duplicate within one transaction
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    with psycopg.connect(pair.land) as conn:
        events = conn.execute(f"select event_id::text from {pair.source}.app_events"
                              " order by outbox_id").fetchall()
        dropped = conn.execute("select dropped from tidemark.duplicate_events where source = %s",
                               (pair.source,)).fetchone()[0]
    assert [e[0] for e in events] == [first, second]
    assert dropped == 2
    assert len(changelog(pair.land, pair.source, "app_events", "event_id")) == 2


def test_json_null_payload_is_dead_lettered_and_listed_verbatim(pair: Pair, tmp_path: Path
                                                                ) -> None:
    """Issue 10 item 8: a JSON ``null`` payload fails its contract; `tidemark dlq list` shows
    reasons with brackets (``[a-z]`` in a pattern) as they are, not as rich markup."""
    apply_schema(pair.src)
    contracts = contracts_for(pair.source, tmp_path / "c")
    pair.src_exec("insert into app_events (event_id, event_type, event_time, payload) values"
                  " (gen_random_uuid(), 'session_started', now(), 'null'::jsonb)",
                  "insert into products values (1, 'p', 'Not Lower', 1.00, '{}', true)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    letters = list_dead_letters(pair.land, pair.source)
    reasons = {d["table_name"]: d["reason"] for d in letters}
    assert "expected a JSON object, got null" in reasons["app_events"]
    assert "[a-z]" in reasons["products"]
    with psycopg.connect(pair.land) as conn:
        landed = conn.execute(f"select count(*) from {pair.source}.app_events").fetchone()[0]
    assert landed == 0
    pair.register()  # the CLI knows sources from the registry
    env = {**os.environ, "TIDEMARK_SOURCE_URL": pair.src, "TIDEMARK_LANDING_URL": pair.land,
           "COLUMNS": "400"}
    out = subprocess.run([sys.executable, "-m", "tidemark.cli.main", "dlq", "list",
                          "--source", pair.source], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "[a-z]" in out.stdout


def test_replay_of_a_window_and_a_table(pair: Pair, tmp_path: Path) -> None:
    """`dlq replay --since 6h`: only letters of changes committed in the window; `--table`."""
    from datetime import timedelta

    apply_schema(pair.src)
    strict = contracts_for(pair.source, tmp_path / "v1")
    pair.src_exec("insert into stores values (1, 'old', 'c', 'atlantis', now(), true)",
                  "insert into stores values (2, 'new', 'c', 'atlantis', now(), true)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute("update tidemark.dead_letters set commit_at = commit_at - interval '8 hours'"
                     " where raw_row->>'store_id' = '1'")
    relaxed = contracts_for(pair.source, tmp_path / "v2", extra_regions="atlantis")
    assert replay(pair.land, pair.source, contracts=relaxed, table="orders",
                  since=timedelta(hours=6)) == {"applied": 0, "superseded": 0, "invalid": 0,
                                                "skipped": 0}
    counts = replay(pair.land, pair.source, contracts=relaxed, table="stores",
                    since=timedelta(hours=6))
    assert counts == {"applied": 1, "superseded": 0, "invalid": 0, "skipped": 0}
    assert mirror_ids(pair, "stores", "store_id") == {2}
    assert [d["raw_row"]["store_id"] for d in list_dead_letters(pair.land, pair.source)] == ["1"]


def letter_then(pair: Pair, tmp_path: Path, *statements: str) -> dict[str, int]:
    """Store 2 breaks the contract (a dead letter), then ``statements`` run on the source; the
    letter is replayed under a contract allowing it. Returns replay's counts."""
    apply_schema(pair.src)
    strict = contracts_for(pair.source, tmp_path / "v1")
    pair.src_exec("insert into stores values (1, 'ok', 'c', 'north', now(), true)",
                  "insert into stores values (2, 'bad', 'c', 'atlantis', now(), true)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert mirror_ids(pair, "stores", "store_id") == {1}
    pair.src_exec(*statements)
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    relaxed = contracts_for(pair.source, tmp_path / "v2", extra_regions="atlantis")
    return replay(pair.land, pair.source, contracts=relaxed)


def test_replay_after_a_truncate_is_superseded(pair: Pair, tmp_path: Path) -> None:
    """On m29 the letter was applied over the later TRUNCATE (its ``t`` changelog row has no
    key): the mirror held store 2, which the source no longer has."""
    counts = letter_then(pair, tmp_path, "truncate stores cascade",
                         "insert into stores values (3, 'ok', 'c', 'north', now(), true)")
    assert counts == {"applied": 0, "superseded": 1, "invalid": 0, "skipped": 0}
    assert mirror_ids(pair, "stores", "store_id") == {3}
    assert table_rows(pair.src, "public", "stores") == table_rows(pair.land, pair.source, "stores")


def test_replay_after_a_delete_of_the_key_is_superseded(pair: Pair, tmp_path: Path) -> None:
    """A later DELETE of the letter's key supersedes it (already so on m29); since round 37 as
    the delete lands, which removed no mirror row and so writes no changelog row."""
    counts = letter_then(pair, tmp_path, "delete from stores where store_id = 2")
    assert counts == {"applied": 0, "superseded": 0, "invalid": 0, "skipped": 1}
    assert [(r[0], r[1]) for r in changelog(pair.land, pair.source, "stores", "store_id, _op")
            if r[0] == 2] == []
    assert table_rows(pair.src, "public", "stores") == table_rows(pair.land, pair.source, "stores")


def test_replay_after_a_resync_of_the_table_is_superseded(pair: Pair, tmp_path: Path) -> None:
    """Landing missed the delete of store 2 (the publication did not publish deletes then); a
    resync of the table repairs the mirror. On m29 the older letter was then applied over the
    resync's snapshot, bringing store 2 back."""
    from ingestion import resync
    from ingestion.names import publication_name

    pub = publication_name(pair.source)
    apply_schema(pair.src)
    strict = contracts_for(pair.source, tmp_path / "v1")
    pair.src_exec("insert into stores values (1, 'ok', 'c', 'north', now(), true)",
                  "insert into stores values (2, 'bad', 'c', 'atlantis', now(), true)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec(f"alter publication {pub} set (publish = 'insert, update, truncate')",
                  "delete from stores where store_id = 2",
                  "update stores set store_name = 'still ok' where store_id = 1",
                  f"alter publication {pub} set (publish = 'insert, update, delete, truncate')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    resync(pair.src, pair.land, pair.source, "stores", contracts=strict)
    relaxed = contracts_for(pair.source, tmp_path / "v2", extra_regions="atlantis")
    counts = replay(pair.land, pair.source, contracts=relaxed)
    assert counts == {"applied": 0, "superseded": 1, "invalid": 0, "skipped": 0}
    assert table_rows(pair.src, "public", "stores") == table_rows(pair.land, pair.source, "stores")


def test_replay_of_a_keyless_table_after_a_truncate_is_superseded(pair: Pair) -> None:
    """A keyless table's letter has no key to be overtaken by, but a later TRUNCATE still
    supersedes it (on m29 keyless letters were never checked, and landed over the truncate)."""
    pair.src_exec("create table k (v text)", "alter table k replica identity full")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("insert into k values ('a')")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land, autocommit=True) as conn:  # a letter of that transaction
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, raw_row) select %s, 'k', _lsn, _commit_lsn, _seq + 1, 'c', 'bad',"
            " '{\"v\": \"ghost\"}' from " + f"cdc.{pair.source}__k", (pair.source,))
    pair.src_exec("truncate k", "insert into k values ('b')")
    catch_up(pair.src, pair.land, pair.source)
    counts = replay(pair.land, pair.source)
    assert counts == {"applied": 0, "superseded": 1, "invalid": 0, "skipped": 0}
    assert table_rows(pair.src, "public", "k") == table_rows(pair.land, pair.source, "k")


def test_replay_applies_letters_in_commit_order_not_text_order(pair: Pair) -> None:
    """Two letters of one key at commit LSNs 5/FFFFFF0 and 5/10000000: as text the later one
    sorts first. On m29 replay ordered by the ``commit_lsn::text`` it selected, applied the
    newer image first and left the older one in the mirror."""
    pair.src_exec("create table t (id int primary key, v text)")
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, raw_row) values (%s, 't', '5/FFFFFF0', '5/FFFFFF0', 1, 'c', 'bad',"
            " '{\"id\": \"1\", \"v\": \"old\"}'), (%s, 't', '5/10000000', '5/10000000', 1, 'u',"
            " 'bad', '{\"id\": \"1\", \"v\": \"new\"}')", (pair.source, pair.source))
    assert replay(pair.land, pair.source)["applied"] == 2
    with psycopg.connect(pair.land) as conn:
        assert conn.execute(f"select v from {pair.source}.t").fetchall() == [("new",)]


def test_a_batchs_dead_letters_are_written_in_one_statement(pair: Pair, tmp_path: Path) -> None:
    # The applier wrote a batch's letters one INSERT each (executemany): 300 bad rows of one
    # transaction were 300 statements, 300 runs of the trigger keeping the waiting count and
    # 300 rows in tidemark.dead_letter_counts. Now one statement: one run, one count row.
    apply_schema(pair.src)
    strict = contracts_for(pair.source, tmp_path / "v1")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("insert into stores select g, 'bad', 'c', 'atlantis', now(), true"
                  " from generate_series(1, 300) g")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    with psycopg.connect(pair.land) as conn:
        rows = conn.execute("select waiting from tidemark.dead_letter_counts where source = %s",
                            (pair.source,)).fetchall()
        ids = [r[0] for r in conn.execute(
            "select (raw_row ->> 'store_id')::int from tidemark.dead_letters where source = %s"
            " order by id", (pair.source,))]
    assert rows == [(300,)]
    assert ids == list(range(1, 301))  # in change order
