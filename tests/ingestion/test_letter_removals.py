"""Removals on a keyed table with waiting dead letters (round 38): the applier looks only at
the removed keys a letter may hold (:func:`ingestion.letter_removals.lettered_removals`); a
removal of any other key lands as on a table without letters."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg

from contracts import ContractSet, load_contracts
from ingestion import catch_up, resync
from ingestion.dead_letters import purge_dead_letters, replay
from ingestion.letter_removals import letter_keys, lettered_removals, plain_keys
from ingestion.tables import load_tables
from tests.ingestion.applier_oracle import Where, nothing_lost
from tests.ingestion.conftest import Pair, assert_mirror_equals
from tests.ingestion.test_applier_dead_letters import _keyed


def _letters(pair: Pair) -> list[tuple]:
    with psycopg.connect(pair.land) as conn:
        return conn.execute(
            "select raw_row ->> 'a', raw_row ->> 'b', replay_result from tidemark.dead_letters"
            " where source = %s and table_name = 'c2' order by id", (pair.source,)).fetchall()


def _deletes(pair: Pair) -> list[tuple]:
    with psycopg.connect(pair.land) as conn:
        info = load_tables(conn, pair.source)["c2"]
        return conn.execute(psycopg.sql.SQL("select a, b from {} where _op = 'd' order by a")
                            .format(info.changelog)).fetchall()


def test_the_letter_keys_of_a_composite_key_are_the_streams(pair: Pair, tmp_path: Path
                                                            ) -> None:
    """The removed keys a written letter holds, found by key (bytes per column, as the stream's),
    and those of the letters the applier made."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("insert into c2 values (6, 'w x', null, 'n')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    removed = {(b"6", b"w x"), (b"4", b"y")}
    with psycopg.connect(pair.land) as conn:
        info = load_tables(conn, pair.source)["c2"]
        assert plain_keys(info)
        assert letter_keys(conn.cursor(), info, removed) == {(b"6", b"w x")}
        assert letter_keys(conn.cursor(), info, set()) == set()
    assert lettered_removals(removed, None, lambda keys: keys & {(b"6", b"w x")}) == {
        (b"6", b"w x")}
    assert lettered_removals(removed, {(b"4", b"y")}, lambda keys: set()) == {(b"4", b"y")}


def test_deletes_beside_a_letter_land_and_a_delete_of_its_key_takes_it(pair: Pair,
                                                                       tmp_path: Path) -> None:
    """A bad insert is a letter (an earlier landing: its key is read from the table). One
    source transaction deletes it and a landed row: the letter is superseded and logs no
    delete; the landed row's delete lands. Then a delete of a key no letter holds, alone."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("insert into c2 values (6, 'w', null, 'n'), (5, 'z', 1, 'n'),"
                  " (7, 'v', 1, 'n'), (8, 'u', null, 'n')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("delete from c2 where a in (5, 6)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert _letters(pair) == [("6", "w", "superseded"), ("8", "u", None)]
    assert _deletes(pair) == [(5, "z")]
    pair.src_exec("delete from c2 where a = 7")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert _deletes(pair) == [(5, "z"), (7, "v")]
    assert nothing_lost(Where(pair.src, pair.land, pair.source, "c2", ("a", "b"))) == []


def test_a_letter_of_the_same_landing_is_taken_by_a_later_batchs_delete(pair: Pair,
                                                                        tmp_path: Path
                                                                        ) -> None:
    """A bad insert and, in a later source transaction of the same catch-up, its delete and
    a landed row's: the letter the applier made (not read from the table) is taken."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("insert into c2 values (5, 'z', 1, 'n')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("insert into c2 values (6, 'w', null, 'n')",
                  "delete from c2 where a in (5, 6)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert _letters(pair) == [("6", "w", "superseded")]
    assert _deletes(pair) == [(5, "z")]
    assert_mirror_equals(pair, "c2")
    assert nothing_lost(Where(pair.src, pair.land, pair.source, "c2", ("a", "b"))) == []


def test_a_delete_of_a_key_no_letter_holds_is_logged_whatever_other_letters_wait(
        pair: Pair, tmp_path: Path) -> None:
    """Two bad inserts are letters; one is purged while waiting (``dlq purge --waiting``: its
    change is gone for good), so neither the mirror nor a letter holds its row. The source then
    deletes that row: the delete is logged, as on a table without waiting letters (round 39:
    round 38 dropped it only while some other key's letter waited), and the other letter still
    waits."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("insert into c2 values (6, 'w', null, 'n'), (8, 'u', null, 'n')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    with psycopg.connect(pair.land) as conn:
        conn.execute("update tidemark.dead_letters set first_seen_at = now() - interval '2 days'"
                     " where source = %s and table_name = 'c2' and raw_row ->> 'a' = '6'",
                     (pair.source,))
    assert purge_dead_letters(pair.land, pair.source, timedelta(days=1), waiting=True) == 1
    pair.src_exec("delete from c2 where a = 6")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert _deletes(pair) == [(6, "w")]
    assert _letters(pair) == [("8", "u", None)]
    assert nothing_lost(Where(pair.src, pair.land, pair.source, "c2", ("a", "b"))) == []


_BAG_CONTRACT = ("version: {v}\nfreshness: {{warn_after: 15m, error_after: 1h}}\n"
                 "compatibility: none\nallowed_lateness: 1h\nprimary_key: []\ncolumns:\n"
                 "  a: {{type: {t}}}\n  s: {{type: text, {s}}}\n")


def test_a_void_letter_of_a_keyless_tables_previous_type_leaves_its_removals_landing(
        pair: Pair, tmp_path: Path) -> None:
    # A keyless table's letter committed before a resync's snapshot (void: the snapshot holds
    # its effect), of 'abc' in a column the resync found integer, still waits. A later removal
    # that found no mirror copy looked for its row among every waiting letter of the table,
    # each cast to the landing's types: "invalid input syntax for type integer: "abc"", and
    # the source stopped for good.
    folder = tmp_path / pair.source
    folder.mkdir()

    def contracts(version: int, a_type: str, strict: bool) -> ContractSet:
        s = "allowed_values: [a]" if strict else "nullable: true"
        (folder / "k.yml").write_text(_BAG_CONTRACT.format(v=version, t=a_type, s=s))
        return load_contracts(tmp_path)

    pair.src_exec("create table k (a text, s text)", "alter table k replica identity full",
                  "insert into k values ('1', 'a'), ('abc', 'x'), ('2', 'x')")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts(1, "text", True))
    pair.write_and_land("alter table k alter a type integer using case a when 'abc' then 99"
                        " else a::integer end", "insert into k values (3, 'x')")
    strict = contracts(2, "integer", True)
    resync(pair.src, pair.land, pair.source, "k", contracts=strict)  # paused: change_type
    pair.src_exec("insert into k values (4, 'x')")  # a letter of the current snapshot
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("delete from k where a = 4", "insert into k values (5, 'a')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    with psycopg.connect(pair.land) as conn:
        letters = conn.execute("select raw_row ->> 'a', replay_result from"
                               " tidemark.dead_letters where table_name = 'k'"
                               " order by commit_lsn, seq").fetchall()
    assert ("abc", None) in letters and ("4", "superseded") in letters, letters
    # and the remedy, a replay, failed on it the same way (its supersession read every letter)
    assert replay(pair.land, pair.source, contracts=contracts(3, "integer", False))[
        "invalid"] == 0
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select replay_result from tidemark.dead_letters where table_name"
                            " = 'k' and raw_row ->> 'a' = 'abc'").fetchall() == [("superseded",)]
    assert_mirror_equals(pair, "k")
