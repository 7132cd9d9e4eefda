"""Landing tables (:mod:`ingestion.tables`) as the stream's schema changes reach them."""

from __future__ import annotations

from pathlib import Path

from contracts import ContractSet, load_contracts
from ingestion import catch_up
from ingestion.dead_letters import replay
from tests.ingestion.conftest import Pair, assert_changelog_replays, assert_mirror_equals

_CONTRACT = ("version: {v}\nfreshness: {{warn_after: 15m, error_after: 1h}}\n"
             "compatibility: backward\nallowed_lateness: 1h\nprimary_key: {key}\ncolumns:\n"
             "{id}  f: {{type: {f}, nullable: true}}\n  c: {{type: text, nullable: true}}\n"
             "  s: {{type: text, {s}}}\n")


def _contracts(root: Path, source: str, version: int, strict: bool, f: str) -> ContractSet:
    folder = root / source
    folder.mkdir(parents=True, exist_ok=True)
    s = "allowed_values: [a]" if strict else "nullable: true"
    (folder / "p.yml").write_text(_CONTRACT.format(
        v=version, key="[id]", id="  id: {type: integer}\n", f=f, s=s))
    (folder / "k.yml").write_text(_CONTRACT.format(v=version, key="[]", id="", f=f, s=s))
    return load_contracts(root)


def test_a_widened_column_converts_the_waiting_letters_values(pair: Pair, tmp_path: Path
                                                              ) -> None:
    # A letter holds the source's text of the old type: real 0.1 is 0.10000000149011612 as
    # double precision, char(3) 'a  ' is 'a' as varchar; read as the new type, its replay put
    # 0.1 and 'a  ' in the mirror while the source held the converted values.
    pair.src_exec("create table p (id int primary key, f real, c char(3), s text)",
                  "create table k (f real, c char(3), s text)",
                  "alter table k replica identity full")
    strict = _contracts(tmp_path, pair.source, 1, True, "real")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    pair.src_exec("insert into p values (1, 0.1, 'a', 'x'), (2, 0.1, 'a', 'a')",
                  "insert into k values (0.1, 'a', 'x'), (0.1, 'a', 'a')")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)  # letters written
    # letters of the landing transaction that takes the change, not written yet
    pair.src_exec("insert into p values (3, 0.3, 'b', 'y')", "insert into k values (0.3, 'b', 'y')",
                  "alter table p alter f type float8, alter c type varchar(3)",
                  "alter table k alter f type float8, alter c type varchar(3)",
                  "insert into p values (4, 0.1, 'a', 'a')", "insert into k values (0.1, 'a', 'a')")
    strict = _contracts(tmp_path, pair.source, 2, True, "double precision")
    catch_up(pair.src, pair.land, pair.source, contracts=strict)
    relaxed = _contracts(tmp_path, pair.source, 3, False, "double precision")
    assert replay(pair.land, pair.source, contracts=relaxed)["applied"] == 4
    for table, key in (("p", ["id"]), ("k", None)):
        assert_mirror_equals(pair, table)
        assert_changelog_replays(pair, table, key)
