"""Scaffolded contracts: what each source type becomes, keyless tables, kept files."""

from __future__ import annotations

from pathlib import Path

from contracts import load_contracts, to_dbt_source_yaml
from contracts.scaffold import ColumnShape, TableShape, contract_type, write_contracts


def test_contract_types() -> None:
    assert contract_type("character varying(20)") == ("text", True)
    assert contract_type("numeric(12,2)") == ("numeric(12,2)", True)
    assert contract_type("timestamp with time zone") == ("timestamptz", True)
    assert contract_type("timestamp without time zone") == ("text", False)
    assert contract_type("integer[]") == ("integer[]", True)
    assert contract_type("interval[]") == ("text", False)
    assert contract_type("json") == ("jsonb", True)


KEYLESS = TableShape("public.pgbench_history", "pgbench_history", (
    ColumnShape("tid", "integer", False), ColumnShape("delta", "integer", False),
    ColumnShape("mtime", "timestamp without time zone", False),
    ColumnShape("filler", "character(22)", False)), ())


def test_a_keyless_table_gets_a_contract_that_loads_and_a_source_without_unique(
        tmp_path: Path) -> None:
    # `contracts init` skipped a table without a primary key ("which a contract needs"), and
    # the loader refused `primary_key: []`: pgbench_history had no contract, so no dbt source.
    written, skipped = write_contracts(tmp_path, "mydb", [KEYLESS])
    assert skipped == [] and [p.name for p in written] == ["pgbench_history.yml"]
    text = written[0].read_text()
    assert "\nprimary_key: []\n# No key: the source table has no primary key" in text
    contracts = load_contracts(tmp_path)
    history = contracts.table("mydb", "pgbench_history")
    assert history.keyless and history.primary_key == []
    assert all(spec.nullable for spec in history.columns.values())
    table = to_dbt_source_yaml(contracts, "mydb")["sources"][0]["tables"][0]
    assert table["config"]["meta"]["contract"]["primary_key"] == []
    assert all("unique" not in c.get("data_tests", []) for c in table["columns"])


def test_a_kept_contract_whose_key_the_source_changed_says_what_to_edit(tmp_path: Path) -> None:
    # Issue 10 item 4: a keyless table that later gets a primary key. Its contract is the
    # user's (tightened since): `contracts init` keeps it and says to set the key.
    write_contracts(tmp_path, "mydb", [KEYLESS])
    keyed = TableShape(KEYLESS.qualified, KEYLESS.name,
                       (ColumnShape("hid", "bigint", True), *KEYLESS.columns), ("hid",))
    written, skipped = write_contracts(tmp_path, "mydb", [keyed])
    assert written == []
    [(table, why)] = skipped
    assert table == "public.pgbench_history"
    assert "now has primary key (hid) but the contract says primary_key: []" in why
    assert "set primary_key: [hid] in it and bump its version" in why
    _, skipped = write_contracts(tmp_path, "mydb", [KEYLESS])
    assert skipped[0][1].endswith("exists (--force overwrites it)")
    written, _ = write_contracts(tmp_path, "mydb", [keyed], overwrite=True)
    assert load_contracts(tmp_path).table("mydb", "pgbench_history").primary_key == ["hid"]
