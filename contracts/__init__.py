"""Tidemark contracts: one YAML contract per source table and per outbox event type.

Public API::

    from contracts import load_contracts, validate_row

    contracts = load_contracts()                       # the shipped contracts/shop/**.yml
    orders = contracts.table("shop", "orders")         # TableContract
    violations = validate_row(orders, row)             # [] when the row is valid

See the README section "Contracts" for the file format and the compatibility modes.
"""

from __future__ import annotations

from contracts.dbt import to_dbt_source_yaml
from contracts.errors import (
    ContractError,
    ContractNotFoundError,
    ContractsError,
    UnknownChangeKindError,
)
from contracts.loader import ContractSet, load_contracts, load_table_contracts
from contracts.model import (
    CHANGE_KINDS,
    COMPATIBILITY_MODES,
    ColumnSpec,
    EventContract,
    EventsSpec,
    FieldSpec,
    Freshness,
    RowRule,
    TableContract,
    Violation,
)
from contracts.validator import validate_row

__all__ = [
    "CHANGE_KINDS",
    "COMPATIBILITY_MODES",
    "ColumnSpec",
    "ContractError",
    "ContractNotFoundError",
    "ContractSet",
    "ContractsError",
    "EventContract",
    "EventsSpec",
    "FieldSpec",
    "Freshness",
    "RowRule",
    "TableContract",
    "UnknownChangeKindError",
    "Violation",
    "load_contracts",
    "load_table_contracts",
    "to_dbt_source_yaml",
    "validate_row",
]
