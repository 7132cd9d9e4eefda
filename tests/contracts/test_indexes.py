"""The ``indexes:`` list of a table contract: the shipped ones, the accepted forms, and every kind
of broken entry reported with the file, the line and the entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from contracts import ContractError, ContractSet, load_contracts

ORDERS = """\
version: 1
primary_key: [order_id]
event_time: placed_at
compatibility: backward
allowed_lateness: 1h
freshness:
  warn_after: 15m
  error_after: 1h
columns:
  order_id: {type: bigint}
  store_id: {type: integer}
  placed_at: {type: timestamptz}
indexes:
{entries}
"""


def test_the_demo_declares_the_indexes_its_one_day_builds_read(shipped: ContractSet) -> None:
    declared = {t.name: t.indexes for t in shipped if t.indexes}
    assert declared["payments"] == (("created_at",), ("order_id",))
    assert declared["orders"] == (("placed_at",),)
    assert declared["deliveries"] == (("promised_at",),)
    assert declared["app_events"] == (("event_time",),)
    assert shipped.table("shop", "stores").indexes == ()


def test_a_name_or_a_list_of_names(contract_root: Callable[..., Path]) -> None:
    root = contract_root("shop/orders.yml", ORDERS.replace("{entries}",
        "  - placed_at\n  - [store_id, placed_at]\n  - [order_id, store_id]"))
    assert load_contracts(root).table("shop", "orders").indexes == (
        ("placed_at",), ("store_id", "placed_at"), ("order_id", "store_id"))


BROKEN = [
    # (description, entries, field, line, problem)
    ("unknown column", "  - placed_at\n  - placed", "indexes[1]", 15,
     "unknown column 'placed'; columns: order_id, store_id, placed_at"),
    ("unknown column in a list", "  - [store_id,\n     placd_at]", "indexes[0][1]", 15,
     "unknown column 'placd_at'"),
    ("empty list", "  - []", "indexes[0]", 14, "at least one column"),
    ("column twice", "  - [store_id, store_id]", "indexes[0][1]", 14, "listed twice in one"),
    ("index twice", "  - placed_at\n  - [placed_at]", "indexes[1]", 15,
     "(placed_at) is listed twice"),
    ("served by the key", "  - order_id", "indexes[0]", 14, "redundant: the primary key"),
]


@pytest.mark.parametrize(("entries", "field", "line", "problem"),
                         [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_a_broken_entry_names_file_line_and_entry(contract_root: Callable[..., Path],
                                                  entries: str, field: str, line: int,
                                                  problem: str) -> None:
    root = contract_root("shop/orders.yml", ORDERS.replace("{entries}", entries))
    with pytest.raises(ContractError) as caught:
        load_contracts(root)
    error = caught.value
    assert (error.path, error.field, error.line) == (root / "shop" / "orders.yml", field, line)
    assert problem in error.problem
    assert str(error).startswith(f"{root / 'shop' / 'orders.yml'}:{line}: {field}: ")


def test_not_a_list(contract_root: Callable[..., Path]) -> None:
    root = contract_root("shop/orders.yml", ORDERS.replace("{entries}", "  placed_at: 1"))
    with pytest.raises(ContractError, match="indexes: expected a list"):
        load_contracts(root)
