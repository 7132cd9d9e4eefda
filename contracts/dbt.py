"""Generate a dbt ``sources:`` structure from the contracts of one source.

Mapping (contract field -> dbt property), in dbt 1.10+ form (``config:`` and ``arguments:``):

=============================================  =============================================
contract                                       dbt
=============================================  =============================================
source name                                    ``sources[].name`` and ``schema`` (the mirror)
table file name / ``description``              ``tables[].name`` / ``description``
``freshness.warn_after`` / ``error_after``     ``config.freshness`` in ``{count, period}`` form
``freshness.loaded_at`` (default ``updated_at``
if present, else ``event_time``)               ``config.loaded_at_field``
no loaded-at column                            ``config.freshness: null`` (not checkable)
``version``, ``primary_key``, ``event_time``,
``idempotency_key``, ``compatibility``,
``allowed_lateness``                           ``config.meta.contract``
column name / ``type`` / ``description``       ``columns[].name`` / ``data_type`` / ``description``
``nullable: false``                            ``not_null`` test
single-column ``primary_key``                  ``unique`` test
``allowed_values``                             ``accepted_values`` test (``quote: false`` for
                                               non-text columns)
``min`` / ``max`` / ``pattern``                ``columns[].config.meta.contract`` (dbt core has
                                               no built-in test for them)
=============================================  =============================================

A composite primary key gets no uniqueness test (dbt core has none built in); it is listed in the
table's meta. A keyless table (``primary_key: []``, a bag) gets no uniqueness test at all: equal
rows are legitimate there; its columns get the other tests as any table's.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from contracts.loader import ContractSet
from contracts.model import ColumnSpec, TableContract


def dbt_period(duration: timedelta) -> dict[str, Any]:
    """Express a duration as dbt's ``{count, period}`` using the largest exact unit.

    Args:
        duration: a positive duration in whole minutes (the loader guarantees it).

    Returns:
        e.g. ``{"count": 2, "period": "hour"}`` for two hours.
    """
    seconds = int(duration.total_seconds())
    for period, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            return {"count": seconds // size, "period": period}
    raise ValueError(f"dbt freshness needs whole minutes, got {duration}")


def _plain(value: Any) -> Any:
    """A YAML/JSON-friendly form of a canonical contract value."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def _column(contract: TableContract, spec: ColumnSpec) -> dict[str, Any]:
    tests: list[Any] = []
    if not spec.nullable:
        tests.append("not_null")
    if contract.primary_key == [spec.name]:
        tests.append("unique")
    if spec.allowed_values is not None:
        arguments: dict[str, Any] = {"values": [_plain(v) for v in spec.allowed_values]}
        if not (spec.pg_type is not None and spec.pg_type.is_text):
            arguments["quote"] = False
        tests.append({"accepted_values": {"arguments": arguments}})
    column: dict[str, Any] = {"name": spec.name, "data_type": spec.type,
                              "description": spec.description or ""}
    if tests:
        column["data_tests"] = tests
    extra = {key: getattr(spec, key) for key in ("min", "max", "pattern")
             if getattr(spec, key) is not None}
    if extra:
        column["config"] = {"meta": {"contract": extra}}
    return column


def _table(contract: TableContract) -> dict[str, Any]:
    freshness = None
    if contract.loaded_at is not None:
        freshness = {"warn_after": dbt_period(contract.freshness.warn_after),
                     "error_after": dbt_period(contract.freshness.error_after)}
    config: dict[str, Any] = {
        "freshness": freshness,
        "meta": {"contract": {
            "version": contract.version,
            "primary_key": list(contract.primary_key),
            "event_time": contract.event_time,
            "idempotency_key": contract.idempotency_key,
            "compatibility": contract.compatibility,
            "allowed_lateness_seconds": int(contract.allowed_lateness.total_seconds()),
        }},
    }
    if contract.loaded_at is not None:
        config["loaded_at_field"] = contract.loaded_at
    return {
        "name": contract.name,
        "description": contract.description or "",
        "config": config,
        "columns": [_column(contract, spec) for spec in contract.columns.values()],
    }


def to_dbt_source_yaml(contract_set: ContractSet, source: str) -> dict[str, Any]:
    """Build the dbt sources file (as a dict, ready for ``yaml.safe_dump``) of one source.

    Args:
        contract_set: the loaded contracts.
        source: the source name; its landing mirror schema has the same name.

    Returns:
        ``{"version": 2, "sources": [{"name": source, "schema": source, "tables": [...]}]}``.

    Raises:
        ContractNotFoundError: the source has no table contracts.
    """
    tables = contract_set.tables(source)
    return {
        "version": 2,
        "sources": [{
            "name": source,
            "schema": source,
            "description": f"Landing mirror of the {source!r} source (current state of each "
                           "table, kept by Tidemark ingestion). Generated from contracts/"
                           f"{source}/*.yml.",
            "tables": [_table(contract) for contract in tables],
        }],
    }
