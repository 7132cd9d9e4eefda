"""The contract loader: the shipped files load, and every kind of broken file is reported with
the file and the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import (
    CHANGE_KINDS,
    ContractError,
    ContractNotFoundError,
    ContractSet,
    Freshness,
    UnknownChangeKindError,
    load_contracts,
)
from contracts.loader import PACKAGE_ROOT

DEMO_TABLES = {"stores", "customers", "products", "orders", "order_items", "payments",
               "deliveries", "app_events"}


def test_every_shipped_file_loads(shipped: ContractSet) -> None:
    shipped_files = sorted(PACKAGE_ROOT.glob("shop/**/*.yml"))
    # the demo's tables and events, and any a user added (README "Extending"): every file loads
    assert {t.name for t in shipped.tables("shop")} >= DEMO_TABLES
    assert set(shipped.event_types("shop")) >= {"cart_item_added", "checkout_started",
                                                "session_started"}
    assert len(shipped_files) == len(shipped.tables("shop")) + len(shipped.events("shop"))
    loaded = {t.path for t in shipped} | {e.path for e in shipped.events("shop")}
    assert loaded == set(shipped_files)
    for contract in shipped:
        assert contract.source == "shop"
        assert isinstance(contract.version, int) and contract.version >= 1
        assert contract.primary_key and set(contract.primary_key) <= set(contract.columns)
        assert contract.compatibility in {"none", "backward", "full"}
        assert contract.freshness.warn_after <= contract.freshness.error_after
    assert len({contract: contract.version for contract in shipped}) == len(shipped)


def test_app_events_contract(shipped: ContractSet) -> None:
    events = shipped.table("shop", "app_events")
    assert events.primary_key == ["outbox_id"]
    assert events.idempotency_key == "event_id"
    assert events.event_time == "event_time"
    assert events.allowed_lateness == timedelta(hours=6)
    assert events.loaded_at == "received_at"
    assert set(events.event_contracts) == {"session_started", "cart_item_added",
                                           "checkout_started"}
    quantity = shipped.event("shop", "cart_item_added").payload["quantity"]
    assert (quantity.type, quantity.min, quantity.max) == ("integer", 1, 50)
    orders = shipped.table("shop", "orders")
    assert orders.columns["total_amount"].type == "numeric(12,2)"
    assert orders.freshness == Freshness(timedelta(minutes=15), timedelta(hours=1))


def test_missing_contract_is_a_clear_key_error(shipped: ContractSet) -> None:
    with pytest.raises(ContractNotFoundError,
                       match=r"shop\.no_such_table.*known tables.*orders"):
        shipped.table("shop", "no_such_table")  # not "refunds": a user may add that one
    with pytest.raises(KeyError):
        shipped.table("crm", "orders")
    with pytest.raises(ContractNotFoundError, match="known: cart_item_added"):
        shipped.event("shop", "app_crashed")
    with pytest.raises(ContractNotFoundError, match="known sources: shop"):
        shipped.tables("crm")
    assert shipped.find_event("shop", "app_crashed") is None


@pytest.mark.parametrize(("mode", "expected"), [
    ("none", {}),
    ("backward", {"add_nullable_column", "add_column_with_default", "widen_type"}),
    ("full", {"add_nullable_column", "add_column_with_default", "widen_type",
              "drop_column:delivery_notes"}),
])
def test_compatibility_modes(shipped: ContractSet, mode: str, expected: set[str]) -> None:
    from dataclasses import replace

    contract = replace(shipped.table("shop", "orders"), compatibility=mode)
    allowed = {kind for kind in CHANGE_KINDS if contract.allows(kind)}
    allowed |= {f"drop_column:{col}" for col in contract.columns
                if contract.allows("drop_column", col)}
    assert allowed == set(expected)
    with pytest.raises(UnknownChangeKindError, match="known: add_nullable_column"):
        contract.allows("add_index")


def _broken(shipped_yaml: Any, relpath: str, change: Any) -> dict[str, Any]:
    data = shipped_yaml(relpath)
    change(data)
    return data


def _set(path: str, value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        data[last] = value
    return change


def _delete(path: str) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        del data[last]
    return change


BROKEN_TABLES = [
    # (description, change, expected field, expected problem)
    ("missing field", _delete("compatibility"), "compatibility", "required field is missing"),
    ("wrong type", _set("columns.status.allowed_values", "x"), "columns.status.allowed_values",
     "expected a list, got 'x'"),
    ("unknown compatibility mode", _set("compatibility", "sideways"), "compatibility",
     "expected one of 'none', 'backward' or 'full', got 'sideways'"),
    ("unknown column type", _set("columns.status.type", "varchar(20)"), "columns.status.type",
     "unknown column type 'varchar(20)'"),
    ("misspelt field", _set("columns.status.allowd_values", ["a"]),
     "columns.status.allowd_values", "unknown field"),
    ("version as text", _set("version", "1"), "version", "expected an integer, got '1'"),
    ("bad duration", _set("allowed_lateness", "two hours"), "allowed_lateness",
     "expected a duration like"),
    ("unknown key column", _set("primary_key", ["order_id", "order_no"]), "primary_key[1]",
     "unknown column 'order_no'"),
    ("nullable key column", _set("primary_key", ["delivery_notes"]), "primary_key[0]",
     "is nullable"),
    ("key column twice", _set("primary_key", ["order_id", "order_id"]), "primary_key[1]",
     "listed twice"),
    ("no key field", _delete("primary_key"), "primary_key", "required field is missing"),
    ("event time not a timestamp", _set("event_time", "status"), "event_time",
     "expected timestamptz"),
    ("allowed value of the wrong type", _set("columns.store_id.allowed_values", [1, "two"]),
     "columns.store_id.allowed_values[1]", "expected integer, got 'two'"),
    ("min on text", _set("columns.status.min", 3), "columns.status.min", "need a number type"),
    ("min above max", _set("columns.total_amount.max", -1), "columns.total_amount.max",
     "below min"),
    ("bad regex", _set("columns.delivery_notes.pattern", "[a-"), "columns.delivery_notes.pattern",
     "invalid regular expression"),
    ("warn after error", _set("freshness.warn_after", "2h"), "freshness.error_after",
     "must not be shorter than warn_after"),
    ("seconds in freshness", _set("freshness.warn_after", "90s"), "freshness.warn_after",
     "whole minutes"),
    ("rule on unknown column", _set("rules", [{"name": "r", "when": {"state": "paid"},
                                               "require": ["placed_at"]}]),
     "rules[0].when.state", "unknown column 'state'"),
    ("rule value of the wrong type", _set("rules", [{"name": "r", "when": {"store_id": "one"},
                                                     "require": ["delivery_notes"]}]),
     "rules[0].when.store_id[0]", "expected integer, got 'one'"),
]


@pytest.mark.parametrize(("change", "field", "problem"),
                         [case[1:] for case in BROKEN_TABLES],
                         ids=[case[0] for case in BROKEN_TABLES])
def test_broken_table_file_names_file_and_field(contract_root: Any, shipped_yaml: Any,
                                                change: Any, field: str, problem: str) -> None:
    root = contract_root("shop/orders.yml", _broken(shipped_yaml, "shop/orders.yml", change))
    with pytest.raises(ContractError) as caught:
        load_contracts(root)
    error = caught.value
    assert error.path == root / "shop" / "orders.yml"
    assert error.field == field
    assert problem in error.problem
    assert str(error).startswith(f"{root / 'shop' / 'orders.yml'}: {field}: ")


BROKEN_EVENTS = [
    ("unknown payload type", _set("payload.quantity.type", "int"), "payload.quantity.type",
     "expected one of 'string', 'uuid', 'integer', 'number' or 'boolean', got 'int'"),
    ("pattern on an integer", _set("payload.quantity.pattern", "[0-9]+"),
     "payload.quantity.pattern", "pattern needs a text type"),
    ("empty payload", _set("payload", {}), "payload", "must not be empty"),
    ("bool as bound", _set("payload.quantity.max", True), "payload.quantity.max",
     "expected an integer, got True"),
]


@pytest.mark.parametrize(("change", "field", "problem"),
                         [case[1:] for case in BROKEN_EVENTS],
                         ids=[case[0] for case in BROKEN_EVENTS])
def test_broken_event_file_names_file_and_field(contract_root: Any, shipped_yaml: Any,
                                                change: Any, field: str, problem: str) -> None:
    relpath = "shop/events/cart_item_added.yml"
    root = contract_root(relpath, _broken(shipped_yaml, relpath, change))
    with pytest.raises(ContractError) as caught:
        load_contracts(root)
    assert (caught.value.path, caught.value.field) == (root / relpath, field)
    assert problem in caught.value.problem


def test_bad_yaml_names_file_and_line(contract_root: Any) -> None:
    root = contract_root("shop/orders.yml", "version: 1\ncompatibility: full: yes\n")
    with pytest.raises(ContractError) as caught:
        load_contracts(root)
    assert caught.value.path == root / "shop" / "orders.yml"
    assert caught.value.field == ""
    assert str(caught.value).endswith("invalid YAML at line 2, column 20: mapping values are not "
                                      "allowed here")


@pytest.mark.parametrize(("relpath", "content", "problem"), [
    ("shop/orders.yml", "", "expected a mapping of contract fields, got None"),
    ("shop/orders.yml", "- 1\n- 2\n", "expected a mapping of contract fields"),
    ("orders.yml", "version: 1\n", "unexpected location"),
    ("shop/Orders.yml", "version: 1\n", "must be lower-case"),
])
def test_file_level_problems(contract_root: Any, relpath: str, content: str,
                             problem: str) -> None:
    root = contract_root(relpath, content)
    with pytest.raises(ContractError, match=problem) as caught:
        load_contracts(root)
    assert caught.value.path == root / relpath


def test_message_is_relative_to_the_working_directory(contract_root: Any, shipped_yaml: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = _broken(shipped_yaml, "shop/orders.yml", _set("columns.status.allowed_values", "x"))
    root = contract_root("shop/orders.yml", data)
    monkeypatch.chdir(root.parent)
    with pytest.raises(ContractError) as caught:
        load_contracts(root)
    assert str(caught.value) == ("contracts/shop/orders.yml: columns.status.allowed_values: "
                                 "expected a list, got 'x'")


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="does not exist"):
        load_contracts(tmp_path / "nowhere")


def test_a_second_source_loads_beside_the_first(contract_root: Any, shipped_yaml: Any) -> None:
    contract_root("crm/accounts.yml", {
        "version": 3, "primary_key": ["account_id"], "compatibility": "full",
        "allowed_lateness": "1h30m",
        "freshness": {"warn_after": "1d", "error_after": "2d"},
        "columns": {"account_id": {"type": "bigint"},
                    "score": {"type": "numeric", "nullable": True}}})
    root = contract_root("shop/orders.yml", shipped_yaml("shop/orders.yml"))
    loaded = load_contracts(root)
    assert loaded.sources() == ["crm", "shop"]
    accounts = loaded.table("crm", "accounts")
    assert accounts.version == 3
    assert accounts.allowed_lateness == timedelta(minutes=90)
    assert accounts.loaded_at is None
    assert [t.name for t in loaded] == ["accounts", "orders"]
