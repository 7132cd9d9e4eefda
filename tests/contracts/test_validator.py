"""validate_row: good rows pass (Python and textual forms), each kind of violation is caught with
the right column and rule, payloads are checked with their JSON path, and rows generated within
the contracts never violate them (hypothesis)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import (
    ColumnSpec,
    ContractSet,
    EventContract,
    FieldSpec,
    TableContract,
    Violation,
    load_contracts,
    validate_row,
)
from contracts.pgtypes import INT_BOUNDS, TypeMismatch, parse_array_literal

# ---------------------------------------------------------------- the textual (CDC) form


def as_text(value: Any) -> str | None:
    """Render a Python value the way pgoutput's text format (and ``::text``) shows it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, list):
        items = []
        for item in value:
            text = as_text(item)
            assert text is not None
            items.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        return "{" + ",".join(items) + "}"
    return str(value)


def textual(row: dict[str, Any], json_columns: tuple[str, ...] = ("payload",)
            ) -> dict[str, str | None]:
    """The row as a CDC decoder hands it over: every value text, ``jsonb`` as JSON text."""
    return {name: json.dumps(value) if name in json_columns and value is not None
            else as_text(value) for name, value in row.items()}


def rules_of(violations: list[Violation]) -> list[tuple[str | None, str]]:
    return [(v.column, v.rule) for v in violations]


# ---------------------------------------------------------------- good rows


@pytest.mark.parametrize("table", ["stores", "customers", "products", "orders", "order_items",
                                   "payments", "deliveries", "app_events"])
def test_valid_row_passes_in_python_and_textual_form(shipped: ContractSet, valid_rows: Any,
                                                     table: str) -> None:
    contract = shipped.table("shop", table)
    row = valid_rows[table]
    assert validate_row(contract, row) == []
    assert validate_row(contract, textual(row)) == []
    assert validate_row(contract, row, shipped) == []


def test_textual_forms_as_a_cdc_decoder_produces_them(shipped: ContractSet) -> None:
    products = shipped.table("shop", "products")
    row = {"product_id": "11", "product_name": "Rye Bread", "category": "bakery",
           "unit_price": "12.50", "tags": '{organic,"gluten-free",local}', "is_active": "f"}
    assert validate_row(products, row) == []
    assert validate_row(products, {**row, "tags": "{}", "unit_price": "0"}) == []
    events = shipped.table("shop", "app_events")
    row = {"outbox_id": "9", "event_id": "8f0e2d1c-3b4a-4c5d-9e6f-7a8b9c0d1e2f",
           "event_type": "session_started", "event_time": "2026-05-04 12:30:15.25+00",
           "received_at": "2026-05-04 14:30:16+02", "customer_id": None, "session_id": None,
           "payload": '{"platform": "ios", "app_version": "4.12.0"}'}
    assert validate_row(events, row) == []


# ---------------------------------------------------------------- each kind of violation

ORDER_CASES = [
    # (change to the valid order row, column, rule, message fragment)
    ({"status": "shipped"}, "status", "allowed_values",
     "shop.orders.status: 'shipped' is not one of placed, paid, delivered, cancelled"),
    ({"status": None}, "status", "not_null", "shop.orders.status: NULL in a non-null column"),
    ({"order_id": "seven"}, "order_id", "type", "expected bigint, got 'seven'"),
    ({"order_id": True}, "order_id", "type", "expected bigint, got bool"),
    ({"store_id": 2**31}, "store_id", "type", "out of the integer range"),
    ({"customer_id": 0}, "customer_id", "min", "0 is below the minimum 1"),
    ({"total_amount": Decimal("-0.01")}, "total_amount", "min", "-0.01 is below the minimum 0"),
    ({"total_amount": Decimal("1.005")}, "total_amount", "type", "more than 2 decimal places"),
    ({"total_amount": Decimal("1e10")}, "total_amount", "type", "does not fit numeric(12,2)"),
    ({"total_amount": "NaN"}, "total_amount", "type", "expected a number, got 'NaN'"),
    ({"placed_at": datetime(2026, 5, 4, 12, 0)}, "placed_at", "type", "naive"),
    ({"placed_at": "yesterday"}, "placed_at", "type", "expected an ISO 8601 timestamp"),
    ({"delivery_notes": 5}, "delivery_notes", "type", "expected text, got int"),
]


@pytest.mark.parametrize(("change", "column", "rule", "message"), ORDER_CASES,
                         ids=[f"{c[1]}-{c[2]}" for c in ORDER_CASES])
def test_order_violation(shipped: ContractSet, valid_rows: Any, change: dict[str, Any],
                         column: str, rule: str, message: str) -> None:
    row = {**valid_rows["orders"], **change}
    [violation] = validate_row(shipped.table("shop", "orders"), row)
    assert (violation.column, violation.rule) == (column, rule)
    assert message in violation.message
    assert violation.message.startswith(f"shop.orders.{column}: ")
    assert violation.value == change[column]


def test_missing_columns(shipped: ContractSet, valid_rows: Any) -> None:
    orders = shipped.table("shop", "orders")
    row = dict(valid_rows["orders"])
    del row["placed_at"], row["delivery_notes"]  # delivery_notes is nullable: may be absent
    assert rules_of(validate_row(orders, row)) == [("placed_at", "missing")]
    assert len(validate_row(orders, {})) == len(orders.columns) - 1


def test_several_violations_in_one_row_are_all_reported(shipped: ContractSet,
                                                        valid_rows: Any) -> None:
    row = {**valid_rows["orders"], "status": "lost", "order_id": -1, "updated_at": None,
           "extra_column": "ignored"}
    assert rules_of(validate_row(shipped.table("shop", "orders"), row)) == [
        ("order_id", "min"), ("status", "allowed_values"), ("updated_at", "not_null")]


def test_pattern_and_array_elements(shipped: ContractSet, valid_rows: Any) -> None:
    customers = shipped.table("shop", "customers")
    [bad_email] = validate_row(customers, {**valid_rows["customers"], "email": "anna at home"})
    assert (bad_email.column, bad_email.rule) == ("email", "pattern")
    assert "'anna at home' does not match the pattern" in bad_email.message
    products = shipped.table("shop", "products")
    [tag] = validate_row(products, {**valid_rows["products"], "tags": ["organic", "Vegan"]})
    assert (tag.column, tag.rule) == ("tags", "pattern")
    assert "element [1]: 'Vegan'" in tag.message
    [null_element] = validate_row(products, {**valid_rows["products"], "tags": '{vegan,NULL}'})
    assert (null_element.column, null_element.rule) == ("tags", "type")
    assert "element [1] is NULL" in null_element.message
    [not_array] = validate_row(products, {**valid_rows["products"], "tags": "vegan"})
    assert not_array.rule == "type" and "array literal" in not_array.message


def test_boolean_forms(shipped: ContractSet, valid_rows: Any) -> None:
    stores = shipped.table("shop", "stores")
    for good in (True, False, "t", "f", "true", "FALSE"):
        assert validate_row(stores, {**valid_rows["stores"], "is_active": good}) == []
    for bad in ("yes", 1, "1"):
        assert rules_of(validate_row(stores, {**valid_rows["stores"], "is_active": bad})) == [
            ("is_active", "type")]


def test_row_rule_card_payment_needs_fingerprint(shipped: ContractSet, valid_rows: Any) -> None:
    payments = shipped.table("shop", "payments")
    row = {**valid_rows["payments"], "card_fingerprint": None}
    [violation] = validate_row(payments, row)
    assert (violation.column, violation.rule) == ("card_fingerprint", "required_if")
    assert violation.message == ("shop.payments.card_fingerprint: must not be NULL when method "
                                 "= card (rule card_payment_has_fingerprint)")
    assert validate_row(payments, {**row, "method": "wallet"}) == []
    assert validate_row(payments, textual({**row, "method": "voucher"})) == []


def test_row_rule_forbid(shipped: ContractSet, valid_rows: Any) -> None:
    from contracts import RowRule

    payments = shipped.table("shop", "payments")
    strict = replace(payments, rules=(RowRule("wallet_has_no_card", {"method": ("wallet",)},
                                              forbid=("card_fingerprint",)),))
    [violation] = validate_row(strict, {**valid_rows["payments"], "method": "wallet"})
    assert (violation.column, violation.rule) == ("card_fingerprint", "null_if")


def test_deliveries_rules(shipped: ContractSet, valid_rows: Any) -> None:
    deliveries = shipped.table("shop", "deliveries")
    row = {**valid_rows["deliveries"], "status": "delivered"}
    assert rules_of(validate_row(deliveries, row)) == [("delivered_at", "required_if")]
    assert validate_row(deliveries, {**row, "delivered_at": row["updated_at"]}) == []


# ---------------------------------------------------------------- outbox payloads

PAYLOAD_CASES = [
    # (event_type, payload, column, rule, message fragment)
    ("cart_item_added", {"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": 3,
                         "quantity": 0}, "payload.quantity", "min", "0 is below the minimum 1"),
    ("cart_item_added", {"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": 3,
                         "quantity": 51}, "payload.quantity", "max", "above the maximum 50"),
    ("cart_item_added", {"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": 3,
                         "quantity": "three"}, "payload.quantity", "type",
     "expected an integer, got a string 'three'"),
    ("cart_item_added", {"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "product_id": 3,
                         "quantity": 2.0}, "payload.quantity", "type", "expected an integer"),
    ("cart_item_added", {"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "quantity": 1},
     "payload.product_id", "missing", "required field is missing"),
    ("cart_item_added", {"cart_id": "not-a-uuid", "product_id": 3, "quantity": 1},
     "payload.cart_id", "type", "expected a UUID string"),
    ("session_started", {"platform": "blackberry", "app_version": "1.0.0"}, "payload.platform",
     "allowed_values", "'blackberry' is not one of ios, android, web"),
    ("session_started", {"platform": "ios", "app_version": 4}, "payload.app_version", "type",
     "expected a string, got an integer"),
    ("session_started", {"platform": "ios", "app_version": "four"}, "payload.app_version",
     "pattern", "does not match"),
    ("session_started", {"platform": "ios", "app_version": "1.2.3", "debug": True},
     "payload.debug", "unknown_field", "not in the event contract"),
    ("session_started", {"platform": None, "app_version": "1.2.3"}, "payload.platform",
     "not_null", "null is not allowed"),
    ("checkout_started", {"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "item_count": 2,
                          "cart_value": "12.50"}, "payload.cart_value", "type",
     "expected a number, got a string"),
    ("checkout_started", {"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "item_count": 0,
                          "cart_value": 1.5}, "payload.item_count", "min", "below the minimum"),
    ("checkout_started", {"cart_id": "2b7c1f7e-9a55-4f63-8d0e-3c1b9e4d2a10", "item_count": 1,
                          "cart_value": -5}, "payload.cart_value", "min", "below the minimum 0"),
    ("checkout_started", ["not", "an", "object"], "payload", "type",
     "expected a JSON object, got an array"),
]


@pytest.mark.parametrize(("event_type", "payload", "column", "rule", "message"), PAYLOAD_CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in PAYLOAD_CASES])
@pytest.mark.parametrize("form", ["python", "text"])
def test_payload_violation(shipped: ContractSet, valid_rows: Any, event_type: str, payload: Any,
                           column: str, rule: str, message: str, form: str) -> None:
    row = {**valid_rows["app_events"], "event_type": event_type, "payload": payload}
    if form == "text":
        row = textual(row)
    [violation] = validate_row(shipped.table("shop", "app_events"), row)
    assert (violation.column, violation.rule) == (column, rule)
    assert message in violation.message
    assert violation.message.startswith(f"shop.app_events.{column} (event {event_type}): ")


def test_unknown_event_type(shipped: ContractSet, valid_rows: Any) -> None:
    events = shipped.table("shop", "app_events")
    # The table contract lists the known types too; without that list, the lookup reports it.
    loose = replace(events, columns={**events.columns,
                                     "event_type": ColumnSpec("event_type", "text",
                                                              pg_type=events.columns[
                                                                  "event_type"].pg_type)})
    row = {**valid_rows["app_events"], "event_type": "app_crashed"}
    [violation] = validate_row(loose, row)
    assert (violation.column, violation.rule) == ("event_type", "event_type")
    assert "unknown event type 'app_crashed'; known: cart_item_added" in violation.message
    assert rules_of(validate_row(events, row)) == [("event_type", "allowed_values"),
                                                   ("event_type", "event_type")]


def test_event_contracts_from_another_set(shipped: ContractSet, valid_rows: Any,
                                          contract_root: Any, shipped_yaml: Any) -> None:
    stricter = shipped_yaml("shop/events/cart_item_added.yml")
    stricter["payload"]["quantity"]["max"] = 1
    other = load_contracts(contract_root("shop/events/cart_item_added.yml", stricter))
    row = valid_rows["app_events"]  # quantity 2
    events = shipped.table("shop", "app_events")
    assert validate_row(events, row) == []
    assert rules_of(validate_row(events, row, other)) == [("payload.quantity", "max")]


def test_malformed_payload_json_text(shipped: ContractSet, valid_rows: Any) -> None:
    row = {**textual(valid_rows["app_events"]), "payload": '{"cart_id": '}
    [violation] = validate_row(shipped.table("shop", "app_events"), row)
    assert (violation.column, violation.rule) == ("payload", "type")
    assert "invalid JSON" in violation.message


def test_json_null_payload_is_a_violation(shipped: ContractSet, valid_rows: Any) -> None:
    """A payload that is JSON ``null`` (not SQL NULL) is not an object: it breaks the contract."""
    row = {**textual(valid_rows["app_events"]), "payload": "null"}
    [violation] = validate_row(shipped.table("shop", "app_events"), row)
    assert (violation.column, violation.rule) == ("payload", "type")
    assert "expected a JSON object, got null" in violation.message


def test_array_literal_parser() -> None:
    assert parse_array_literal('{a,"b c","q\\"x",NULL,"NULL"}') == ["a", "b c", 'q"x', None,
                                                                    "NULL"]
    assert parse_array_literal("{}") == []
    for bad in ("a,b", "{{1,2},{3,4}}", '{"a}', "{a,,b}"):
        with pytest.raises(TypeMismatch):
            parse_array_literal(bad)


# ---------------------------------------------------------------- property: in-spec rows pass

UTC_AND_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=2)),
                                   timezone(timedelta(hours=-5, minutes=-30))])


def _number_bounds(spec: ColumnSpec | FieldSpec, low: Any, high: Any) -> tuple[Any, Any]:
    if spec.min is not None:
        low = spec.min if low is None else max(low, spec.min)
    if spec.max is not None:
        high = spec.max if high is None else min(high, spec.max)
    return low, high


def scalar_strategy(spec: ColumnSpec) -> st.SearchStrategy[Any]:
    pg_type = spec.pg_type
    assert pg_type is not None
    if spec.allowed_values is not None:
        return st.sampled_from(spec.allowed_values)
    base = pg_type.base
    if base in INT_BOUNDS:
        return st.integers(*_number_bounds(spec, *INT_BOUNDS[base]))
    if base == "numeric":
        assert pg_type.precision is not None and pg_type.scale is not None
        limit = Decimal(10) ** (pg_type.precision - pg_type.scale) - Decimal(1).scaleb(
            -pg_type.scale)
        low, high = _number_bounds(spec, -limit, limit)
        return st.decimals(Decimal(str(low)), Decimal(str(high)), places=pg_type.scale,
                           allow_nan=False, allow_infinity=False)
    if base == "text":
        if spec.pattern is not None:
            return st.from_regex(spec.pattern, fullmatch=True)
        return st.text(max_size=30)
    if base == "boolean":
        return st.booleans()
    if base == "timestamptz":
        return st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1),
                            timezones=UTC_AND_OFFSETS)
    if base == "date":
        return st.dates(date(1970, 1, 1), date(2100, 1, 1))
    if base == "uuid":
        return st.uuids()
    if base == "jsonb":
        return st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
    raise AssertionError(f"no strategy for {pg_type.name}")


def column_strategy(spec: ColumnSpec, *, nullable: bool | None = None) -> st.SearchStrategy[Any]:
    assert spec.pg_type is not None
    values = scalar_strategy(spec)
    if spec.pg_type.is_array:
        values = st.lists(values, max_size=4)
    if spec.nullable if nullable is None else nullable:
        values = st.none() | values
    return values


def field_strategy(spec: FieldSpec) -> st.SearchStrategy[Any]:
    if spec.allowed_values is not None:
        values: st.SearchStrategy[Any] = st.sampled_from(spec.allowed_values)
    elif spec.type == "integer":
        values = st.integers(*_number_bounds(spec, None, None))
    elif spec.type == "number":
        low, high = _number_bounds(spec, None, None)
        values = st.integers(low, high) | st.floats(low, high, allow_nan=False,
                                                    allow_infinity=False)
    elif spec.type == "uuid":
        values = st.uuids().map(str)
    elif spec.type == "boolean":
        values = st.booleans()
    else:
        values = st.from_regex(spec.pattern, fullmatch=True) if spec.pattern else st.text()
    return st.none() | values if spec.nullable else values


def payload_strategy(event: EventContract) -> st.SearchStrategy[dict[str, Any]]:
    required = {k: field_strategy(f) for k, f in event.payload.items() if f.required}
    optional = {k: field_strategy(f) for k, f in event.payload.items() if not f.required}
    return st.fixed_dictionaries(required, optional=optional)


@st.composite
def rows_within(draw: st.DrawFn, contract: TableContract) -> dict[str, Any]:
    """A row that satisfies ``contract``: every column in spec, rules and payload included."""
    row = {name: draw(column_strategy(spec)) for name, spec in contract.columns.items()}
    for rule in contract.rules:
        if all(row[col] in options for col, options in rule.when.items()):
            for col in rule.require:
                if row[col] is None:
                    row[col] = draw(column_strategy(contract.columns[col], nullable=False))
            for col in rule.forbid:
                row[col] = None
    if contract.events is not None:
        event_type = draw(st.sampled_from(sorted(contract.event_contracts)))
        row[contract.events.type_column] = event_type
        row[contract.events.payload_column] = draw(
            payload_strategy(contract.event_contracts[event_type]))
    return row


SHIPPED = load_contracts()


@pytest.mark.parametrize("table", [t.name for t in SHIPPED])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rows_generated_within_the_contract_never_violate(table: str, data: st.DataObject
                                                          ) -> None:
    contract = SHIPPED.table("shop", table)
    row = data.draw(rows_within(contract))
    assert validate_row(contract, row) == []
    assert validate_row(contract, textual(row)) == []


@settings(max_examples=60, deadline=None)
@given(st.integers(-(2**70), 2**70) | st.text(max_size=12) | st.booleans() | st.none())
def test_bigint_column_accepts_exactly_the_bigint_values(value: Any) -> None:
    spec = SHIPPED.table("shop", "app_events")
    violations = validate_row(spec, {"outbox_id": value})
    outbox = [v for v in violations if v.column == "outbox_id"]
    in_range = (isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**63) or (
        isinstance(value, str) and value.strip() == value and value.lstrip("+").isdigit()
        and value.isascii() and 1 <= int(value) < 2**63)
    assert (outbox == []) == in_range


def test_uuid_value_forms(shipped: ContractSet, valid_rows: Any) -> None:
    events = shipped.table("shop", "app_events")
    row = valid_rows["app_events"]
    for form in (row["event_id"], str(row["event_id"]), str(row["event_id"]).upper()):
        assert validate_row(events, {**row, "event_id": form}) == []
    assert rules_of(validate_row(events, {**row, "event_id": "8f0e2d1c"})) == [
        ("event_id", "type")]
    assert isinstance(row["session_id"], UUID)
