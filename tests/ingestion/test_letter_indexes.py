"""The waiting dead letters' key indexes (:mod:`ingestion.letter_indexes`) as a key widens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from contracts import ContractSet, load_contracts
from ingestion import catch_up, resync
from ingestion.dead_letters import replay
from tests.ingestion.conftest import Pair, assert_changelog_replays, assert_mirror_equals

_CONTRACT = ("version: {v}\nfreshness: {{warn_after: 15m, error_after: 1h}}\n"
             "compatibility: backward\nallowed_lateness: 1h\nprimary_key: [id]\ncolumns:\n"
             "  id: {{type: {t}}}\n  s: {{type: text, {s}}}\n")


def _contracts(root: Path, source: str, version: int, strict: bool) -> ContractSet:
    folder = root / source
    folder.mkdir(parents=True, exist_ok=True)
    s = "allowed_values: [a]" if strict else "nullable: true"
    for table, key_type in (("p", "bigint"), ("n", "numeric")):
        (folder / f"{table}.yml").write_text(_CONTRACT.format(v=version, t=key_type, s=s))
    return load_contracts(root)


def _letter_indexes(land: str) -> list[str]:
    """The key expressions of the valid letter indexes (a failed concurrent build leaves an
    invalid one)."""
    with psycopg.connect(land) as conn:
        return sorted(r[0].split(" USING btree ")[1].split(", commit_lsn")[0] for r in conn.execute(
            "select x.indexdef from pg_indexes x join pg_index i on i.indexrelid = format('%I.%I',"
            " x.schemaname, x.indexname)::regclass where x.schemaname = 'tidemark' and"
            " x.indexname like 'dead\\_letters\\_\\_%' and i.indisvalid"))


def test_a_widened_key_takes_letters_beyond_its_old_type(pair: Pair, tmp_path: Path) -> None:
    # The letter index cast the key to its old type: the first letter of a key beyond it
    # (3000000000 once integer is bigint, 1234567.5 once numeric(6,2) is numeric(12,2)) failed
    # that cast in the index, and every try of the landing transaction with it: the source
    # stopped for good ("value "3000000000" is out of range for type integer").
    pair.src_exec("create table p (id int primary key, s text)",
                  "create table n (id numeric(6,2) primary key, s text)",
                  "insert into p values (1, 'a'), (2, 'x')", "insert into n values (1, 'a')")
    strict = _contracts(tmp_path, pair.source, 1, True)
    catch_up(pair.src, pair.land, pair.source, contracts=strict)  # builds the letter indexes
    assert _letter_indexes(pair.land) == ["((((raw_row ->> 'id'::text))::integer)",
                                          "((((raw_row ->> 'id'::text))::numeric(6,2))"]
    pair.src_exec("begin; alter table p alter id type bigint;"
                  " insert into p values (3000000000, 'x'), (3000000001, 'a'); commit",
                  "begin; alter table n alter id type numeric(12,2);"
                  " insert into n values (1234567.5, 'x'), (2, 'x'); commit",
                  "insert into p values (3000000002, 'x')", "insert into n values (7654321, 'x')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert _letter_indexes(pair.land) == ["((((raw_row ->> 'id'::text))::bigint)",
                                          "((((raw_row ->> 'id'::text))::numeric(12,2))"]
    pair.src_exec("update p set s = 'b' where id = 3000000000", "delete from n where id = 2")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    relaxed = _contracts(tmp_path, pair.source, 2, False)
    assert replay(pair.land, pair.source, contracts=relaxed)["invalid"] == 0
    for table in ("p", "n"):
        assert_mirror_equals(pair, table)
        assert_changelog_replays(pair, table, ["id"])


def _p_contracts(root: Path, source: str) -> Callable[[int, str, bool], ContractSet]:
    """Contracts of table ``p`` alone, by version, key type and strictness (``s`` only 'a')."""
    (root / source).mkdir()

    def contracts(version: int, key_type: str, strict: bool) -> ContractSet:
        s = "allowed_values: [a]" if strict else "nullable: true"
        (root / source / "p.yml").write_text(_CONTRACT.format(v=version, t=key_type, s=s).replace(
            "compatibility: backward", "compatibility: none"))
        return load_contracts(root)
    return contracts


def test_a_resync_to_a_key_of_another_type_takes_its_letters(pair: Pair, tmp_path: Path
                                                             ) -> None:
    # `tidemark ingest resync`, the remedy the pause names, failed for good on its first
    # letter: "invalid input syntax for type integer: "abc"" (the old key's letter index).
    contracts = _p_contracts(tmp_path, pair.source)

    pair.src_exec("create table p (id int primary key, s text)",
                  "insert into p values (1, 'a'), (2, 'x')")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts(1, "integer", True))
    assert _letter_indexes(pair.land) == ["((((raw_row ->> 'id'::text))::integer)"]
    pair.write_and_land("alter table p alter id type text", "insert into p values ('abc', 'x')")
    strict = contracts(2, "text", True)
    resync(pair.src, pair.land, pair.source, "p", contracts=strict)  # paused: change_type
    pair.src_exec("insert into p values ('def', 'x')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert _letter_indexes(pair.land) == ["(((raw_row ->> 'id'::text))"]
    assert replay(pair.land, pair.source, contracts=contracts(3, "text", False))["invalid"] == 0
    assert_mirror_equals(pair, "p")
    assert_changelog_replays(pair, "p", ["id"], strict=False)


def test_a_void_letter_of_the_previous_key_type_leaves_the_letter_index_built(
        pair: Pair, tmp_path: Path) -> None:
    # A letter committed before a resync's snapshot (void: the snapshot holds its effect) and
    # still waiting, of key 'abc' after a resync to an integer key, failed the new letter
    # index's build for good ("invalid input syntax for type integer: "abc""): the table's
    # letter lookups went unindexed, and a removal's lookup failed its landing.
    contracts = _p_contracts(tmp_path, pair.source)

    pair.src_exec("create table p (id text primary key, s text)",
                  "insert into p values ('1', 'a'), ('abc', 'x'), ('2', 'x')")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts(1, "text", True))
    assert _letter_indexes(pair.land) == ["(((raw_row ->> 'id'::text))"]
    pair.write_and_land("alter table p alter id type integer using case id when 'abc' then 99"
                        " else id::integer end", "insert into p values (3, 'x')")
    strict = contracts(2, "integer", True)
    resync(pair.src, pair.land, pair.source, "p", contracts=strict)  # paused: change_type
    pair.src_exec("insert into p values (5, 'a')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    assert _letter_indexes(pair.land) == ["((((raw_row ->> 'id'::text))::integer)"]
    # A letter, then its removal: the mirror lacks the key, so the table's letters are looked
    # up by key. That failed every landing too, the source stopped for good (the same cast).
    pair.src_exec("insert into p values (4, 'x')", "delete from p where id = 4",
                  "update p set s = 'y' where id = 2")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    with psycopg.connect(pair.land) as conn:
        letters = conn.execute("select raw_row ->> 'id', replayed_at is null from"
                               " tidemark.dead_letters where table_name = 'p'"
                               " order by commit_lsn, seq").fetchall()
    assert ("abc", True) in letters  # kept, waiting
    assert replay(pair.land, pair.source, contracts=contracts(3, "integer", False))[
        "invalid"] == 0
    assert_mirror_equals(pair, "p")
