"""A change that did not change the mirror is not in the changelog (round 37, the applier's
generator: pytest seeds 23, 32 and 1001, bench seed 2001).

A removal (a ``d``, or the ``b`` old row of an update) whose row is held only by a dead letter
removes nothing from the mirror: it takes the letter's copy instead (the letter is superseded as
it lands) and writes no changelog row. Before, the removal was logged: after a replay applied an
equal letter at its own, earlier position, the changelog replayed to one copy fewer than the
mirror and the source held (what dbt history is built from was one row short).
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from ingestion import catch_up
from ingestion.dead_letters import replay
from tests.ingestion.applier_oracle import Where, nothing_lost
from tests.ingestion.conftest import Pair, assert_changelog_replays, assert_mirror_equals, changelog
from tests.ingestion.test_applier_dead_letters import (
    _bad_then_relaxed,
    _contracts,
    _keyed,
    _keyless,
)


def _ops(pair: Pair, table: str) -> list[str]:
    return [r[0] for r in changelog(pair.land, pair.source, table, "_op")]


def _one_transaction(pair: Pair, *statements: str) -> None:
    with psycopg.connect(pair.src, autocommit=True) as conn, conn.transaction():
        for stmt in statements:
            conn.execute(stmt)


def _settled(pair: Pair, table: str, key: tuple[str, ...] | None) -> None:
    assert nothing_lost(Where(pair.src, pair.land, pair.source, table, key), settled=True) == []
    assert_mirror_equals(pair, table)
    assert_changelog_replays(pair, table, list(key) if key else None)


def _caught_up_one_by_one(pair: Pair, tmp_path: Path, *statements: str) -> None:
    """Under the strict contract of ``p``, each statement in its own landing transaction: the
    mirror equals the source and the oracle holds."""
    strict = _keyed(pair, tmp_path)
    for stmt in statements:
        pair.src_exec(stmt)
        catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert_mirror_equals(pair, "p")
    assert nothing_lost(Where(pair.src, pair.land, pair.source, "p", ("id",))) == []


def test_deleting_a_row_held_by_a_letter_is_not_logged(pair: Pair, tmp_path: Path) -> None:
    """Bench seed 2001: two equal bad rows of a keyless table (two letters), the source deletes
    one, a relaxed replay applies the other at its own position. The delete was logged after
    that position: the changelog replayed to 0 copies, mirror and source held 1."""
    _keyless(pair)
    strict = _contracts(tmp_path, pair.source, "k", True, 1)
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("insert into k values (9, 1, null), (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("delete from k where ctid = (select min(ctid) from k)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert _ops(pair, "k") == []
    relaxed = _contracts(tmp_path, pair.source, "k", False, 2)
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 1
    assert _ops(pair, "k") == ["c"]
    _settled(pair, "k", None)


def test_removals_of_letters_in_their_own_transaction_are_not_logged(pair: Pair,
                                                                     tmp_path: Path) -> None:
    """The same within one source transaction (the letters are not written yet when the batch
    lands), with an update of a letter's row that stays bad: its ``b`` line removed nothing
    either."""
    _keyless(pair)
    strict = _contracts(tmp_path, pair.source, "k", True, 1)
    pair.src_exec("insert into k values (1, 1, 'x')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    _one_transaction(pair,
                     "insert into k values (9, 1, null), (9, 1, null), (8, 2, null)",
                     "delete from k where ctid = (select min(ctid) from k where a = 9)",
                     "update k set a = 7 where a = 8",
                     "delete from k where a = 1")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert _ops(pair, "k") == ["r", "d"]
    relaxed = _contracts(tmp_path, pair.source, "k", False, 2)
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 2
    _settled(pair, "k", None)


def test_a_row_removed_from_a_letter_and_inserted_again_lands(pair: Pair, tmp_path: Path
                                                              ) -> None:
    """A letter's row deleted and inserted again (good now) in one transaction: the batch
    netted the two to nothing, so the new row did not land and the letter waited for it."""
    _keyless(pair)
    strict = _contracts(tmp_path, pair.source, "k", True, 1)
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("insert into k values (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    relaxed = _contracts(tmp_path, pair.source, "k", False, 2)
    _one_transaction(pair,
                     "delete from k",
                     "insert into k values (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    assert _ops(pair, "k") == ["c"]
    assert_mirror_equals(pair, "k")
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 0
    _settled(pair, "k", None)


def test_a_good_update_after_a_bad_one_keeps_the_toast_value_the_bad_one_set(
        pair: Pair, tmp_path: Path) -> None:
    """A bad update sets a TOAST value (a letter holds it), a good one leaves it alone (sent as
    unchanged): the good row took the mirror's older value. The value set last, by the letter
    the good update supersedes, is the source's."""
    _caught_up_one_by_one(pair, tmp_path,
                          "update p set status = 'x', big = repeat('v', 9000) where id = 1",
                          "update p set status = 'a' where id = 1")


def test_a_toast_value_landed_after_a_letter_is_the_one_kept(pair: Pair, tmp_path: Path
                                                              ) -> None:
    """The letter's value is older than the mirror's when a change of the key landed after it:
    then the mirror's value stays."""
    _caught_up_one_by_one(pair, tmp_path,
                          "update p set status = 'x', big = repeat('v', 9000) where id = 1",
                          "update p set status = 'b', big = repeat('w', 9000) where id = 1",
                          "update p set status = 'a' where id = 1")


def test_deleting_a_key_held_by_a_letter_is_not_logged(pair: Pair, tmp_path: Path) -> None:
    """The same rule for a keyed table: a bad insert is a letter, the source deletes the row.
    The ``d`` was logged though it removed no mirror row (a delete of a key the changelog never
    had); now the letter is superseded as the delete lands, in the next landing transaction or
    in the same one, and for a rejected key change's ``b`` line too."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("insert into p values (2, 1, 1, 'x', now(), 'u')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("delete from p where id = 2")
    _one_transaction(pair,
                     "insert into p values (3, 1, 1, 'x', now(), 'u'),"
                     " (4, 1, 1, 'y', now(), 'w')",
                     "delete from p where id = 3",
                     "update p set id = 5, status = 'z' where id = 4",
                     "update p set id = 6 where id = 5",
                     "insert into c2 values (7, 'q', -1, null)")
    pair.src_exec("delete from c2 where a = 7")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert [r[0] for r in changelog(pair.land, pair.source, "p", "_op")] == ["r"]
    assert [r[0] for r in changelog(pair.land, pair.source, "c2", "_op")] == ["r"]
    with psycopg.connect(pair.land) as conn:
        waiting = conn.execute("select raw_row ->> 'id' from tidemark.dead_letters where"
                               " source = %s and replayed_at is null", (pair.source,)).fetchall()
    assert waiting == [("6",)]
    _contracts(tmp_path, pair.source, "c2", False, 2)
    relaxed = _contracts(tmp_path, pair.source, "p", False, 2)
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 1
    for table, key in (("p", ("id",)), ("c2", ("a", "b"))):
        _settled(pair, table, key)


def test_a_bad_key_change_after_a_bad_update_keeps_the_toast_value_it_set(
        pair: Pair, tmp_path: Path) -> None:
    """Generator seed 3 (round 37's steps): a bad update sets a TOAST value, then a bad key
    change leaves it alone. The key change's letter was completed from the old key's mirror
    row, older than the letter that set the value: the replay landed the older value."""
    counts = _bad_then_relaxed(pair, tmp_path, "p", ("id",),
                               "update p set status = 'x', big = repeat('v', 9000) where id = 1",
                               "update p set id = 7, status = 'y' where id = 1")
    assert counts["applied"] == 1


def test_a_letter_from_before_a_column_was_added_replays_with_its_default(
        pair: Pair, tmp_path: Path) -> None:
    """Generator seed 4 (round 37's DDL step): bad rows are letters, then the source adds a
    column with a default, which the rows that existed read. The letters lacked it: a replay
    landed NULL there (keyless: a row the source does not hold)."""
    _keyless(pair)
    _keyed(pair, tmp_path)
    strict = _contracts(tmp_path, pair.source, "k", True, 1)
    pair.src_exec("insert into p values (2, 1, 1, 'x', now(), 'u')",
                  "insert into k values (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("alter table p add column e int default 7",
                  "alter table k add column e int default 7",
                  "insert into p values (3, 1, 1, 'a', now(), 'v', 8)",
                  "insert into k values (1, 1, null, 8)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    _contracts(tmp_path, pair.source, "k", False, 2)
    _contracts(tmp_path, pair.source, "c2", False, 2)
    relaxed = _contracts(tmp_path, pair.source, "p", False, 2)
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 2
    for table, key in (("p", ("id",)), ("k", None)):
        _settled(pair, table, key)


def test_two_bad_key_changes_in_one_transaction_keep_the_toast_value(pair: Pair,
                                                                     tmp_path: Path) -> None:
    """Generator seed 36: two key changes in one landing transaction, each breaking the
    contract, leave a TOAST value alone. The second letter was completed from the first one's
    key, whose letter was not written yet: it held no value, and the replay landed none."""
    _keyed(pair, tmp_path)
    strict = _contracts(tmp_path, pair.source, "p", True, 1)
    _one_transaction(pair, "update p set id = 7, status = 'x' where id = 1",
                     "update p set id = 8, status = 'y' where id = 7")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    relaxed = _contracts(tmp_path, pair.source, "p", False, 2)
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 1
    _settled(pair, "p", ("id",))


def test_a_delete_after_a_schema_change_takes_a_letter_of_the_same_landing(pair: Pair,
                                                                           tmp_path: Path
                                                                           ) -> None:
    """Generator seed 50: a bad insert, a column added, the row deleted, in one landing
    transaction. The schema change flushed the table's batch, and with it the note of the
    letter not written yet: the delete, which removed no mirror row, was dropped, and the
    letter waited for a row the source no longer held (a replay added it back)."""
    _keyed(pair, tmp_path)
    strict = _contracts(tmp_path, pair.source, "p", True, 1)
    pair.src_exec("insert into p (id, status) values (4, null)",
                  "alter table p add column e int default 7",
                  "delete from p where id = 4")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert 4 not in [r[0] for r in changelog(pair.land, pair.source, "p", "id")]
    relaxed = _contracts(tmp_path, pair.source, "p", False, 2)
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 0
    _settled(pair, "p", ("id",))


def test_a_column_added_after_a_bad_update_does_not_overtake_its_letter(pair: Pair,
                                                                        tmp_path: Path) -> None:
    """Generator seed 59 (round 38): a bad update sets a TOAST value (a letter holds it), the
    source adds a column with a default, a good update leaves the TOAST value alone. The added
    column's changelog row (the mirror's older row plus the default, at the ``ALTER``'s
    position) came after the letter, as if the source had changed the row since: the good
    update took the mirror's older value. Each step in its own landing transaction."""
    _caught_up_one_by_one(pair, tmp_path,
                          "update p set status = 'x', big = repeat('v', 9000) where id = 1",
                          "alter table p add column e int default 7",
                          "update p set status = 'a' where id = 1")
    _settled(pair, "p", ("id",))


def test_a_column_added_after_a_bad_update_in_one_landing_keeps_its_toast_value(
        pair: Pair, tmp_path: Path) -> None:
    """The same in one landing transaction (the letter is not written yet at the ``ALTER``),
    with a bad update after the column that leaves the value alone too (its letter does not
    hold it)."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("update p set status = 'x', big = repeat('v', 9000) where id = 1",
                  "alter table p add column e int default 7",
                  "update p set status = 'y' where id = 1",
                  "update p set status = 'a', e = 8 where id = 1")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert_mirror_equals(pair, "p")
    _settled(pair, "p", ("id",))


def test_a_column_added_after_a_bad_update_does_not_supersede_its_letter(
        pair: Pair, tmp_path: Path) -> None:
    """A replay after the ``ALTER``: the letter was superseded by the added column's changelog
    row, and the row the source holds was lost (the mirror kept the older one)."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("update p set status = 'x', big = repeat('v', 9000) where id = 1",
                  "alter table p add column e int default 7")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("insert into p values (2, 1, 1, 'a', now(), 'w', 8)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert nothing_lost(Where(pair.src, pair.land, pair.source, "p", ("id",))) == []
    relaxed = _contracts(tmp_path, pair.source, "p", False, 2)
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 1
    assert_mirror_equals(pair, "p")
    _settled(pair, "p", ("id",))


def test_a_good_update_after_a_bad_key_change_in_one_landing_keeps_the_toast_value(
        pair: Pair, tmp_path: Path) -> None:
    """Bench seed 2056 (round 38): a key change breaks the contract and leaves a TOAST value
    alone (its letter is completed from the old key's row as the batch lands), then a good
    update of the new key, in the same landing transaction, leaves it alone too. The good row
    landed NULL: the letter it took the value from was not completed yet."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("update p set id = 5, status = 'x' where id = 1",
                  "update p set status = 'a' where id = 5")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert_mirror_equals(pair, "p")
    _settled(pair, "p", ("id",))


def _mirror_e(pair: Pair) -> list[tuple]:
    with psycopg.connect(pair.land) as conn:
        return conn.execute(psycopg.sql.SQL("select id, status, e from {} order by id").format(
            psycopg.sql.Identifier(pair.source, "p"))).fetchall()


def _held_row_has_default(pair: Pair, tmp_path: Path, mirror: list[tuple]) -> None:
    """The mirror's rows (id, status, e) are ``mirror`` (row 1 held by its letter, with the
    default), the oracle holds on every column, and the relaxed replay applies the letter."""
    assert _mirror_e(pair) == mirror
    assert nothing_lost(Where(pair.src, pair.land, pair.source, "p", ("id",)), lagging=False) == []
    relaxed = _contracts(tmp_path, pair.source, "p", False, 2)
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 1
    _settled(pair, "p", ("id",))


def test_a_row_held_by_a_letter_reads_the_added_columns_default(pair: Pair,
                                                                tmp_path: Path) -> None:
    """Round 38's leftover: a bad update (a letter, the mirror keeps the older row), then the
    source adds a column with a default. The source's row reads the default; the mirror's read
    NULL (a ``nullable: false`` contract on the column failed in dbt) until the letter replayed.
    Now the mirror's row reads it, the changelog records it before the letter (which stays the
    row's latest image), and the relaxed replay applies the letter."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("update p set status = 'x' where id = 1")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("alter table p add column e int default 7",
                  "insert into p (id, status, e) values (2, 'a', 8)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    _held_row_has_default(pair, tmp_path, [(1, "a", 7), (2, "a", 8)])


def test_a_row_held_by_a_letter_of_the_same_transaction_reads_the_default(pair: Pair,
                                                                         tmp_path: Path) -> None:
    """The same with the bad update and the ``ALTER`` in one source transaction (the letter is
    not written yet when the column comes), and a good update of another row after it."""
    strict = _keyed(pair, tmp_path)
    pair.src_exec("insert into p (id, status) values (3, 'a')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    _one_transaction(pair, "update p set status = 'x' where id = 1",
                     "alter table p add column e int default 7",
                     "update p set status = 'b' where id = 3")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    _held_row_has_default(pair, tmp_path, [(1, "a", 7), (3, "b", 7)])
