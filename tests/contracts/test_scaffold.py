"""Scaffolded contract types: what each source type becomes in a contract."""

from __future__ import annotations

from contracts.scaffold import contract_type


def test_contract_types() -> None:
    assert contract_type("character varying(20)") == ("text", True)
    assert contract_type("numeric(12,2)") == ("numeric(12,2)", True)
    assert contract_type("timestamp with time zone") == ("timestamptz", True)
    assert contract_type("timestamp without time zone") == ("text", False)
    assert contract_type("integer[]") == ("integer[]", True)
    assert contract_type("interval[]") == ("text", False)
    assert contract_type("json") == ("jsonb", True)
