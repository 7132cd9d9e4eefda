"""``tidemark ingest prune`` and a keyless table's waiting dead letters (round 38).

Prune keeps a table's changelog from its oldest waiting letter's commit on, and deletes what came
before. A keyless letter's replay counted the changelog since the table's last reset against the
mirror: with the older rows pruned, copies the mirror holds looked like copies the source removed
from the letters, and waiting letters the source still holds were superseded.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from ingestion import catch_up
from ingestion.dead_letters import replay
from ingestion.retention import prune_changelog
from tests.ingestion.applier_oracle import Where, nothing_lost
from tests.ingestion.conftest import Pair, assert_mirror_equals
from tests.ingestion.test_applier_dead_letters import _contracts, _keyless


def test_a_pruned_changelog_does_not_supersede_an_equal_keyless_letter(pair: Pair,
                                                                       tmp_path: Path) -> None:
    """A row lands under a relaxed contract; an equal row breaks the strict one (a letter);
    prune deletes the first row's changelog row; the relaxed replay must add the letter's copy
    (the source holds two)."""
    _keyless(pair)
    relaxed = _contracts(tmp_path, pair.source, "k", False, 1)
    pair.src_exec("insert into k values (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    strict = _contracts(tmp_path, pair.source, "k", True, 2)
    pair.src_exec("insert into k values (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pruned = prune_changelog(pair.land, pair.source, timedelta(0))
    assert pruned["k"]["deleted"] == 0 and "keyless" in pruned["k"]["kept_for"]
    relaxed = _contracts(tmp_path, pair.source, "k", False, 3)
    assert replay(pair.land, pair.source, contracts=relaxed) == {
        "applied": 1, "superseded": 0, "invalid": 0, "skipped": 0}
    assert_mirror_equals(pair, "k")
    assert nothing_lost(Where(pair.src, pair.land, pair.source, "k", None), settled=True) == []


def _settled(pair: Pair, counts: dict[str, int], expected: dict[str, int], *,
             oracle: bool = True) -> None:
    assert counts == {"applied": 0, "superseded": 0, "invalid": 0, "skipped": 0, **expected}
    assert_mirror_equals(pair, "k")
    if oracle:  # a changelog the old code wrote logged a removal that removed nothing
        assert nothing_lost(Where(pair.src, pair.land, pair.source, "k", None),
                            settled=True) == []


def test_rows_before_a_keyless_tables_last_truncate_are_pruned(pair: Pair, tmp_path: Path
                                                               ) -> None:
    """Its replay counts from the last truncate on: the rows before it still go, the ``t`` row
    and what follows stay."""
    _keyless(pair)
    relaxed = _contracts(tmp_path, pair.source, "k", False, 1)
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    pair.src_exec("insert into k values (9, 1, null), (9, 1, null)", "truncate k",
                  "insert into k values (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    strict = _contracts(tmp_path, pair.source, "k", True, 2)
    pair.src_exec("insert into k values (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert prune_changelog(pair.land, pair.source, timedelta(0))["k"]["deleted"] == 2
    relaxed = _contracts(tmp_path, pair.source, "k", False, 3)
    _settled(pair, replay(pair.land, pair.source, contracts=relaxed), {"applied": 1})


def test_letters_written_before_round_37_are_still_counted_after_a_prune(pair: Pair,
                                                                        tmp_path: Path) -> None:
    """Upgrade-shaped: a row lands, two equal bad rows are letters, the source deletes two
    copies. The first removal takes the mirror's copy; the second found none. Before round 37
    it was logged all the same (a ``d`` that removed no mirror row) and both letters waited; a
    replay superseded one by the count. The landing is made to look as the old code left it,
    then pruned and replayed: one letter superseded, one applied. The prune used to delete the
    landed row's ``c``: the count then superseded both, and the copy the source holds was lost.
    """
    _keyless(pair)
    relaxed = _contracts(tmp_path, pair.source, "k", False, 1)
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    pair.src_exec("insert into k values (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    strict = _contracts(tmp_path, pair.source, "k", True, 2)
    pair.src_exec("insert into k values (9, 1, null), (9, 1, null)")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    for _ in range(2):
        pair.src_exec("delete from k where ctid = (select min(ctid) from k)")
        catch_up(pair.src, pair.land, pair.source, contracts=strict)
    with psycopg.connect(pair.land) as conn:  # as the code before round 37 wrote it
        taken = conn.execute("update tidemark.dead_letters set replayed_at = null,"
                             " replay_result = null where replay_result = 'superseded'"
                             " returning id").fetchall()
        assert len(taken) == 1
        conn.execute(sql.SQL(
            "insert into {} (a, n, big, _op, _lsn, _commit_lsn, _seq, _commit_at)"
            " select 9, 1, null, 'd', max(_commit_lsn) + 16, max(_commit_lsn) + 32, 1, now()"
            " from {}").format(*[sql.Identifier("cdc", f"{pair.source}__k")] * 2))
    prune_changelog(pair.land, pair.source, timedelta(0))
    relaxed = _contracts(tmp_path, pair.source, "k", False, 3)
    _settled(pair, replay(pair.land, pair.source, contracts=relaxed),
             {"applied": 1, "superseded": 1}, oracle=False)


def test_a_keyless_tables_rows_that_cancel_out_are_pruned_beside_a_waiting_letter(
        pair: Pair, tmp_path: Path) -> None:
    """Round 39: a keyless table whose letter waits kept its whole changelog since its last
    reset, and with steady writes that grows for ever. Inserts and removals of equal rows,
    before the letter and after it, cancel out in its replay's count: they go (an equal row to
    the letter's among them), a copy the mirror still holds stays, and the replay still adds
    the letter's copy."""
    _keyless(pair)
    relaxed = _contracts(tmp_path, pair.source, "k", False, 1)
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    pair.src_exec("insert into k values (9, 1, null)", "delete from k where a = 9",
                  "insert into k values (1, 1, null), (1, 1, null)",
                  "delete from k where ctid = (select min(ctid) from k where a = 1)")
    catch_up(pair.src, pair.land, pair.source, contracts=relaxed)
    strict = _contracts(tmp_path, pair.source, "k", True, 2)
    pair.src_exec("insert into k values (9, 1, null)", "insert into k values (2, 1, null)",
                  "delete from k where a = 2")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pruned = prune_changelog(pair.land, pair.source, timedelta(0))["k"]
    assert pruned["deleted"] == 6 and "keyless" in pruned["kept_for"]
    with psycopg.connect(pair.land) as conn:
        assert conn.execute(sql.SQL("select a, _op from {}").format(
            sql.Identifier("cdc", f"{pair.source}__k"))).fetchall() == [(1, "c")]
    assert prune_changelog(pair.land, pair.source, timedelta(0))["k"]["deleted"] == 0
    relaxed = _contracts(tmp_path, pair.source, "k", False, 3)
    _settled(pair, replay(pair.land, pair.source, contracts=relaxed), {"applied": 1})
