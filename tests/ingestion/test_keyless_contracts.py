"""A keyless table is a first-class table: pgbench's ``pgbench_history`` (no primary key,
``REPLICA IDENTITY FULL``) gets a contract from ``contracts init``, a dbt source (without a
uniqueness test: it is a bag), contract checks and dead letters, and a replay that lands it
exactly as the source has it.

Before, ``contracts init`` skipped it ("it has no primary key, which a contract needs"), the
loader refused ``primary_key: []``, so it had no dbt source (a model over ``source('mydb',
'pgbench_history')`` failed "depends on a source ... which was not found") and no checks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg

from contracts import load_contracts
from contracts.scaffold import write_contracts
from ingestion import catch_up
from ingestion.dead_letters import list_dead_letters, replay
from ingestion.publication import Selection
from ingestion.shapes import table_shapes
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog
from tidemark.stack.embedded import server_binary

PGBENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers"]


def _pgbench_source(pair: Pair) -> None:
    """``pgbench -i -s 1`` on the source, its history made ``REPLICA IDENTITY FULL``, and a few
    history rows (pgbench's own transactions write them)."""
    out = subprocess.run([str(server_binary("pgbench")), "-i", "-s", "1", "-q", pair.src],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    pair.src_exec("alter table pgbench_history replica identity full",
                  "insert into pgbench_history (tid, bid, aid, delta, mtime)"
                  " select g % 10 + 1, 1, g, g % 7 - 3, now() from generate_series(1, 20) g",
                  "insert into pgbench_history (tid, bid, aid, delta, mtime)"
                  " select 1, 1, 5, 2, '2026-12-01 10:00' from generate_series(1, 3)")


def _scaffold(pair: Pair, root: Path) -> list[str]:
    with psycopg.connect(pair.src) as conn:
        shapes, left_out = table_shapes(conn, Selection.of(["public"]))
    written, skipped = write_contracts(root, pair.source, shapes)
    assert left_out == [] and skipped == []
    return sorted(p.stem for p in written)


def test_contracts_init_scaffolds_a_keyless_table_and_dbt_sources_follow(pair: Pair,
                                                                         tmp_path: Path) -> None:
    import sys

    _pgbench_source(pair)
    root = tmp_path / "contracts"
    assert _scaffold(pair, root) == PGBENCH_TABLES
    text = (root / pair.source / "pgbench_history.yml").read_text()
    assert "\nprimary_key: []\n# No key:" in text
    contracts = load_contracts(root)
    history = contracts.table(pair.source, "pgbench_history")
    assert history.keyless and history.primary_key == []
    assert not contracts.table(pair.source, "pgbench_accounts").keyless

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dbt_project" / "scripts"))
    try:
        from generate_sources import build_sources
    finally:
        sys.path.pop(0)
    mirror, changes = build_sources(pair.source, contracts)["sources"]
    tables = {t["name"]: t for t in mirror["tables"]}
    assert sorted(tables) == PGBENCH_TABLES
    assert [t["name"] for t in changes["tables"]] == [f"{pair.source}__{t}"
                                                      for t in PGBENCH_TABLES]
    tests = [test for c in tables["pgbench_history"]["columns"]
             for test in c.get("data_tests", [])]
    assert "unique" not in tests and "data_tests" not in tables["pgbench_history"]
    assert tables["pgbench_history"]["config"]["meta"]["contract"]["primary_key"] == []
    # a keyed table's key is checked in the catalog (f35: primary_key_constraint), not by
    # unique / not_null scans of its key column
    assert tables["pgbench_accounts"]["data_tests"] == [
        {"primary_key_constraint": {"arguments": {"columns": ["aid"]}}}]
    aid = next(c for c in tables["pgbench_accounts"]["columns"] if c["name"] == "aid")
    assert not {"unique", "not_null"} & set(aid.get("data_tests", []))

    # The scaffolded contract accepts every row the table holds, through snapshot and stream;
    # the indexes a keyless contract declares are built on its mirror as on any other.
    path = root / pair.source / "pgbench_history.yml"
    path.write_text(path.read_text() + "indexes:\n- mtime\n- [bid, aid]\n")
    contracts = load_contracts(root)
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    with psycopg.connect(pair.land) as conn:
        indexes = [r[0] for r in conn.execute(
            "select indexname from pg_indexes where schemaname = %s and tablename ="
            " 'pgbench_history' order by 1", (pair.source,))]
    assert indexes == ["pgbench_history__bid__aid_idx", "pgbench_history__mtime_idx"]
    pair.src_exec("update pgbench_history set delta = delta + 1 where aid <= 4",
                  "delete from pgbench_history where ctid = (select ctid from pgbench_history"
                  " where aid = 5 limit 1)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert list_dead_letters(pair.land, pair.source) == []
    for table in PGBENCH_TABLES:
        assert_mirror_equals(pair, table)


def test_a_keyless_tables_contract_dead_letters_and_replays_exactly(pair: Pair,
                                                                    tmp_path: Path) -> None:
    # Rows of a bag break a contract like any row: an insert and the new row of an update are
    # dead-lettered (the update's old row leaves the mirror, as on the source); a replay under a
    # relaxed contract adds them, except a row the source removed meanwhile (superseded as the
    # removal lands).
    _pgbench_source(pair)
    strict = tmp_path / "strict"
    _scaffold(pair, strict)
    path = strict / pair.source / "pgbench_history.yml"
    delta = "  delta:\n    type: integer\n"
    path.write_text(path.read_text().replace("version: 1", "version: 2").replace(
        delta, delta + "    min: -10\n    max: 10\n"))
    contracts = load_contracts(strict)
    assert contracts.table(pair.source, "pgbench_history").columns["delta"].max == 10
    pair.src_exec("insert into pgbench_history (tid, bid, aid, delta) values (2, 1, 777, 99)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)  # the snapshot's letter
    pair.src_exec(
        "insert into pgbench_history (tid, bid, aid, delta) values (1, 1, 900, 500)",
        "insert into pgbench_history (tid, bid, aid, delta) values (1, 1, 901, 600)",
        "update pgbench_history set delta = 700 where ctid = (select ctid from pgbench_history"
        " where aid = 5 limit 1)",
        "delete from pgbench_history where aid = 901",
        "insert into pgbench_history (tid, bid, aid, delta) values (1, 1, 902, 1)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    letters = list_dead_letters(pair.land, pair.source)
    # the delete of 901 took its letter as it landed (round 37: a removal that changes no mirror
    # row is not in the changelog; the letter is superseded, not waiting)
    assert [(d["op"], d["raw_row"]["aid"], d["raw_row"]["delta"]) for d in letters] == [
        ("r", "777", "99"), ("c", "900", "500"), ("u", "5", "700")]
    assert [(d["raw_row"]["aid"], d["replay_result"]) for d in list_dead_letters(
        pair.land, pair.source, include_replayed=True) if d["replayed_at"]] == [
        ("901", "superseded")]
    assert letters[1]["contract_version"] == "2"
    with psycopg.connect(pair.land) as conn:
        landed = conn.execute(f"select count(*) from {pair.source}.pgbench_history where aid = 5"
                              ).fetchone()[0]
    assert landed == 3  # of four: the updated row left the bag, its new image is a letter

    assert replay(pair.land, pair.source, contracts=contracts) == {
        "applied": 0, "superseded": 0, "invalid": 3, "skipped": 1}
    relaxed = tmp_path / "relaxed"
    _scaffold(pair, relaxed)
    assert replay(pair.land, pair.source, contracts=load_contracts(relaxed)) == {
        "applied": 3, "superseded": 0, "invalid": 0, "skipped": 1}
    assert list_dead_letters(pair.land, pair.source) == []
    for table in PGBENCH_TABLES:
        assert_mirror_equals(pair, table)
    ops = [op for aid, op in changelog(pair.land, pair.source, "pgbench_history", "aid, _op")
           if aid == 5]
    assert ops.count("b") == 1 and ops.count("u") == 1  # the update's two lines, once each
