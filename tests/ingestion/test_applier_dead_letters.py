"""What the applier's generator (:mod:`tests.ingestion.applier_differential`) found in dead
letters and their replay, one regression test each, checked by the same oracle."""

from __future__ import annotations

from pathlib import Path

import psycopg

from contracts import load_contracts
from ingestion import catch_up
from ingestion.dead_letters import replay
from tests.ingestion.applier_differential import _FRESH, RELAXED, STRICT
from tests.ingestion.applier_oracle import Where, nothing_lost
from tests.ingestion.conftest import Pair, assert_mirror_equals


def _contracts(root: Path, source: str, table: str, strict: bool, version: int):
    folder = root / source
    folder.mkdir(parents=True, exist_ok=True)
    body = (STRICT if strict else RELAXED)[table]
    (folder / f"{table}.yml").write_text(f"version: {version}\n{_FRESH}{body}")
    return load_contracts(root)


def _keyless(pair: Pair) -> None:
    pair.src_exec("create table k (a int, n numeric, big text)",
                  "alter table k replica identity full")


def test_deleting_one_of_two_equal_bad_rows_keeps_the_other_letter(pair: Pair,
                                                                   tmp_path: Path) -> None:
    """Round 35's known bug: two equal rows of a keyless table break the contract; the source
    deletes one. The delete superseded both letters: the row the source still holds was in
    neither the mirror nor the queue."""
    _keyless(pair)
    strict = _contracts(tmp_path, pair.source, "k", True, 1)
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("insert into k values (9, 1, null), (9, 1, null), (1, 1, null)",
                  "delete from k where ctid = (select min(ctid) from k where a = 9)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    # the delete took a letter's copy as it landed (round 37: it is not in the changelog)
    assert replay(pair.land, pair.source, contracts=strict) == {
        "applied": 0, "superseded": 0, "invalid": 1, "skipped": 1}
    where = Where(pair.src, pair.land, pair.source, "k", None)
    assert nothing_lost(where, settled=True) == []
    relaxed = _contracts(tmp_path, pair.source, "k", False, 2)
    assert replay(pair.land, pair.source, contracts=relaxed) == {
        "applied": 1, "superseded": 0, "invalid": 0, "skipped": 1}
    assert_mirror_equals(pair, "k")


def test_deleting_a_landed_copy_keeps_the_letter_of_an_equal_row(pair: Pair,
                                                                  tmp_path: Path) -> None:
    """A row landed under a relaxed contract, an equal one dead-lettered under a strict one;
    the source deletes one of them: the mirror's copy goes, the letter is the one left."""
    _keyless(pair)
    relaxed = _contracts(tmp_path, pair.source, "k", False, 1)
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    pair.src_exec("insert into k values (9, 2, 'x')")
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    strict = _contracts(tmp_path, pair.source, "k", True, 2)
    pair.src_exec("insert into k values (9, 2, 'x')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    # a landing transaction later (in the same one, the delete takes the letter: round 37)
    pair.src_exec("delete from k where ctid = (select min(ctid) from k)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    where = Where(pair.src, pair.land, pair.source, "k", None)
    assert nothing_lost(where) == []
    relaxed = _contracts(tmp_path, pair.source, "k", False, 3)
    assert replay(pair.land, pair.source, contracts=relaxed) == {
        "applied": 1, "superseded": 0, "invalid": 0, "skipped": 0}
    assert_mirror_equals(pair, "k")


def _bad_then_relaxed(pair: Pair, tmp_path: Path, table: str, key: tuple[str, ...],
                      *statements: str) -> dict[str, int]:
    """Run ``statements`` under the strict contracts of ``p`` and ``c2`` (the oracle holds),
    then replay under relaxed ones (the mirror equals the source); return the replay's counts."""
    strict = _keyed(pair, tmp_path)
    for stmt in statements:
        pair.src_exec(stmt)
        catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert nothing_lost(Where(pair.src, pair.land, pair.source, table, key)) == []
    _contracts(tmp_path, pair.source, "c2", False, 2)
    relaxed = _contracts(tmp_path, pair.source, "p", False, 2)
    counts = replay(pair.land, pair.source, contracts=relaxed)
    assert_mirror_equals(pair, table)
    return counts


def _keyed(pair: Pair, tmp_path: Path) -> object:
    pair.src_exec("create table p (id int primary key, n numeric, f float8, status text,"
                  " ts timestamptz, big text)",
                  "create table c2 (a int, b text, v int, note text, primary key (a, b))",
                  "alter table p alter column big set storage external",
                  "insert into p values (1, 1, 1, 'a', now(), repeat('t', 9000))",
                  "insert into c2 values (4, 'y', 3, 'n')")
    _contracts(tmp_path, pair.source, "p", True, 1)
    strict = _contracts(tmp_path, pair.source, "c2", True, 1)
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    return strict


def test_replaying_an_update_keeps_the_toast_value_it_left_unchanged(pair: Pair,
                                                                     tmp_path: Path) -> None:
    """A bad update that leaves a TOAST value alone: its letter does not hold the value (the
    stream sent it as unchanged). The replay wrote NULL over the mirror's value."""
    counts = _bad_then_relaxed(pair, tmp_path, "p", ("id",),
                               "update p set status = 'x' where id = 1")
    assert counts["applied"] == 1


def test_a_bad_key_change_takes_the_row_from_its_old_key(pair: Pair, tmp_path: Path) -> None:
    """An update moves a row to a new key and breaks the contract: the new row is a letter,
    and the old key left the source all the same. The mirror kept the old key, for ever (a
    replay adds the new key only)."""
    counts = _bad_then_relaxed(pair, tmp_path, "c2", ("a", "b"),
                               "update c2 set b = 'ym', v = null where (a, b) = (4, 'y')")
    assert counts["applied"] == 1


def test_fixing_a_bad_row_at_the_source_keeps_its_toast_value(pair: Pair, tmp_path: Path
                                                              ) -> None:
    """A bad insert is a letter; an update at the source makes the row good without touching
    its TOAST value (sent as unchanged). The value was in the letter only: the mirror got NULL,
    and the letter was superseded by the update — the value was lost."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("insert into p values (2, 1, 1, 'x', now(), repeat('u', 9000))")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("update p set status = 'a' where id = 2")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert_mirror_equals(pair, "p")
    assert nothing_lost(Where(pair.src, pair.land, pair.source, "p", ("id",))) == []


def test_fixing_a_bad_row_in_its_own_transaction_keeps_its_toast_value(pair: Pair,
                                                                       tmp_path: Path) -> None:
    """The same within one source transaction: the letter is not written yet when the update
    that fixes the row is buffered; its TOAST value comes from the batch's letter image."""
    strict = _keyed(pair, tmp_path)
    with psycopg.connect(pair.src, autocommit=True) as conn, conn.transaction():
        conn.execute("insert into p values (2, 1, 1, 'x', now(), repeat('u', 9000))")
        conn.execute("update p set status = 'a' where id = 2")
        conn.execute("update p set status = 'y', big = repeat('v', 9000) where id = 1")
        conn.execute("update p set status = 'b' where id = 1")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert_mirror_equals(pair, "p")


def test_a_bad_key_change_keeps_the_toast_value_it_left_unchanged(pair: Pair,
                                                                   tmp_path: Path) -> None:
    """Generator seed 10: a key change breaks the contract and leaves a TOAST value alone. The
    letter did not hold the value, and the old key's mirror row goes (as it must): the replay
    landed NULL. The letter now takes the value from the old key's row before it goes."""
    counts = _bad_then_relaxed(pair, tmp_path, "p", ("id",),
                               "update p set id = 7, status = 'x' where id = 1")
    assert counts["applied"] == 1


def test_a_bad_key_change_of_a_row_that_is_a_letter_keeps_its_toast_value(
        pair: Pair, tmp_path: Path) -> None:
    """Generator seeds 10 and 20: the same for a row never landed (each image broke the
    contract): the value is in the old key's letter, which the key change supersedes."""
    counts = _bad_then_relaxed(pair, tmp_path, "p", ("id",),
                               "insert into p values (2, 1, 1, 'x', now(), repeat('u', 9000))",
                               "update p set id = 9, status = 'y' where id = 2")
    # the key change's b line took the old key's letter as it landed (round 37)
    assert counts == {"applied": 1, "superseded": 0, "invalid": 0, "skipped": 1}
