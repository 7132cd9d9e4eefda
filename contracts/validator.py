"""Row validation against a contract: :func:`validate_row`.

Each contract is compiled once (on first use, cached on the contract) into a tuple of per-column
converters and checks with their regular expressions precompiled, so validating a row is a tight
loop over its columns. Row values may be Python values (as psycopg returns them) or the textual
forms a CDC decoder produces — see :mod:`contracts.pgtypes`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from contracts.jsontypes import JSON_CONVERTERS, json_kind
from contracts.model import ColumnSpec, EventContract, FieldSpec, TableContract, Violation
from contracts.pgtypes import Converter, TypeMismatch, converter


class EventLookup(Protocol):
    """Where event contracts are looked up (a ``ContractSet``)."""

    def find_event(self, source: str, event_type: str) -> EventContract | None:
        """The contract of ``event_type`` of ``source``, or None."""

    def event_types(self, source: str) -> list[str]:
        """The event types of ``source``."""

Check = tuple[str, Callable[[Any], bool], Callable[[Any], str]]
_MISSING = object()


def _show(values: tuple[Any, ...]) -> str:
    return ", ".join(str(v) for v in values)


def compile_checks(allowed: tuple[Any, ...] | None, low: Any, high: Any,
                   pattern: str | None) -> tuple[Check, ...]:
    """Build the value checks of one column or payload field, in the order they are tried.

    Args:
        allowed: the allowed values (canonical Python values), or None.
        low: inclusive minimum, or None.
        high: inclusive maximum, or None.
        pattern: a regular expression the whole text must match, or None.

    Returns:
        ``(rule, passes, describe)`` triples; ``describe(value)`` says what is wrong.
    """
    checks: list[Check] = []
    if allowed is not None:
        allowed_set = frozenset(allowed)
        shown = _show(allowed)
        checks.append(("allowed_values", allowed_set.__contains__,
                       lambda v: f"{v!r} is not one of {shown}"))
    if low is not None:
        checks.append(("min", lambda v: v >= low, lambda v: f"{v} is below the minimum {low}"))
    if high is not None:
        checks.append(("max", lambda v: v <= high, lambda v: f"{v} is above the maximum {high}"))
    if pattern is not None:
        matcher = re.compile(pattern).fullmatch
        checks.append(("pattern", lambda v: matcher(v) is not None,
                       lambda v: f"{v!r} does not match the pattern {pattern!r}"))
    return tuple(checks)


class CompiledTable:
    """A table contract compiled for fast row validation. Build via :func:`compiled_table`."""

    def __init__(self, contract: TableContract) -> None:
        self.contract = contract
        self.prefix = contract.qualified_name
        self.columns = tuple(self._compile_column(spec) for spec in contract.columns.values())
        self.rules = contract.rules
        self.events = contract.events

    @staticmethod
    def _compile_column(spec: ColumnSpec) -> tuple[str, Converter, bool, tuple[Check, ...], bool]:
        assert spec.pg_type is not None, "column specs are built by the loader"
        low, high = spec.min, spec.max
        if spec.pg_type.base == "numeric":
            # Compare Decimals with Decimals: 0.01 as a float is not the decimal 0.01.
            low = None if low is None else Decimal(repr(low))
            high = None if high is None else Decimal(repr(high))
        checks = compile_checks(spec.allowed_values, low, high, spec.pattern)
        return spec.name, converter(spec.pg_type), spec.nullable, checks, spec.pg_type.is_array

    def validate(self, row: Mapping[str, Any], events: EventLookup | None = None
                 ) -> list[Violation]:
        """Validate one row; see :func:`validate_row`."""
        out: list[Violation] = []
        values: dict[str, Any] = {}
        prefix = self.prefix
        for name, convert, nullable, checks, is_array in self.columns:
            raw = row.get(name, _MISSING)
            if raw is None or raw is _MISSING:
                values[name] = None
                if not nullable:
                    if raw is _MISSING:
                        out.append(Violation(name, "missing",
                                             f"{prefix}.{name}: required column is missing", None))
                    else:
                        out.append(Violation(name, "not_null",
                                             f"{prefix}.{name}: NULL in a non-null column", None))
                continue
            try:
                value = convert(raw)
            except TypeMismatch as exc:
                out.append(Violation(name, "type", f"{prefix}.{name}: {exc.args[0]}", raw))
                continue
            values[name] = value
            if checks:
                failure = _run_checks(checks, value, is_array)
                if failure is not None:
                    rule, problem = failure
                    out.append(Violation(name, rule, f"{prefix}.{name}: {problem}", raw))
        if self.rules:
            self._check_rules(row, values, out)
        if self.events is not None:
            self._check_event(values, events, out)
        return out

    def _check_rules(self, row: Mapping[str, Any], values: dict[str, Any],
                     out: list[Violation]) -> None:
        reported = {v.column for v in out}
        for rule in self.rules:
            if not all(values.get(col) in options for col, options in rule.when.items()):
                continue
            condition = " and ".join(f"{col} = {values[col]}" for col in rule.when)
            for col in rule.require:
                if values.get(col) is None and col not in reported:
                    out.append(Violation(col, "required_if",
                                         f"{self.prefix}.{col}: must not be NULL when {condition} "
                                         f"(rule {rule.name})", row.get(col)))
            for col in rule.forbid:
                if values.get(col) is not None and col not in reported:
                    out.append(Violation(col, "null_if",
                                         f"{self.prefix}.{col}: must be NULL when {condition} "
                                         f"(rule {rule.name})", row.get(col)))

    def _check_event(self, values: dict[str, Any], events: EventLookup | None,
                     out: list[Violation]) -> None:
        spec = self.events
        assert spec is not None
        event_type = values.get(spec.type_column)
        if not isinstance(event_type, str) or spec.payload_column not in values:
            return  # already reported as a column violation
        # JSON null (not SQL NULL) is a value: the event contract refuses it as a non-object.
        payload = values[spec.payload_column]
        if events is not None:
            event = events.find_event(self.contract.source, event_type)
            known = events.event_types(self.contract.source)
        else:
            event = self.contract.event_contracts.get(event_type)
            known = sorted(self.contract.event_contracts)
        if event is None:
            out.append(Violation(spec.type_column, "event_type",
                                 f"{self.prefix}.{spec.type_column}: unknown event type "
                                 f"{event_type!r}; known: {', '.join(known) or 'none'}",
                                 event_type))
            return
        compiled_event(event).validate(payload, f"{self.prefix}.{spec.payload_column}",
                                spec.payload_column, out)


def _run_checks(checks: tuple[Check, ...], value: Any, is_array: bool) -> tuple[str, str] | None:
    if is_array:
        for index, item in enumerate(value):
            for rule, passes, describe in checks:
                if not passes(item):
                    return rule, f"element [{index}]: {describe(item)}"
        return None
    for rule, passes, describe in checks:
        if not passes(value):
            return rule, describe(value)
    return None


class CompiledEvent:
    """An event contract compiled for fast payload validation. Build via :func:`compiled_event`."""

    def __init__(self, contract: EventContract) -> None:
        self.contract = contract
        self.fields = tuple(self._compile_field(spec) for spec in contract.payload.values())
        self.known = frozenset(contract.payload)
        self.additional = contract.additional_properties

    @staticmethod
    def _compile_field(spec: FieldSpec) -> tuple[str, Converter, bool, bool, tuple[Check, ...]]:
        checks = compile_checks(spec.allowed_values, spec.min, spec.max, spec.pattern)
        return spec.name, JSON_CONVERTERS[spec.type], spec.required, spec.nullable, checks

    def validate(self, payload: Any, prefix: str, column: str, out: list[Violation]) -> None:
        """Append the payload's violations to ``out``.

        Args:
            payload: the parsed payload.
            prefix: message prefix, e.g. ``shop.app_events.payload``.
            column: the payload column's name; violations name ``<column>.<key>``.
            out: the list to append to.
        """
        tag = f" (event {self.contract.event_type})"
        if not isinstance(payload, dict):
            out.append(Violation(column, "type", f"{prefix}{tag}: expected a JSON object, got "
                                 f"{json_kind(payload)}", payload))
            return
        for key, convert, required, nullable, checks in self.fields:
            path = f"{column}.{key}"
            raw = payload.get(key, _MISSING)
            if raw is _MISSING:
                if required:
                    out.append(Violation(path, "missing",
                                         f"{prefix}.{key}{tag}: required field is missing", None))
                continue
            if raw is None:
                if not nullable:
                    out.append(Violation(path, "not_null",
                                         f"{prefix}.{key}{tag}: null is not allowed", None))
                continue
            try:
                value = convert(raw)
            except TypeMismatch as exc:
                out.append(Violation(path, "type", f"{prefix}.{key}{tag}: {exc.args[0]}", raw))
                continue
            failure = _run_checks(checks, value, False) if checks else None
            if failure is not None:
                out.append(Violation(path, failure[0], f"{prefix}.{key}{tag}: {failure[1]}", raw))
        if not self.additional:
            for key in payload:
                if key not in self.known:
                    out.append(Violation(f"{column}.{key}", "unknown_field",
                                         f"{prefix}.{key}{tag}: field is not in the event contract "
                                         f"(known: {', '.join(sorted(self.known))})",
                                         payload[key]))


def validate_row(contract: TableContract, row: Mapping[str, Any],
                 events: EventLookup | None = None) -> list[Violation]:
    """Validate one row against its table contract.

    Checks, per column: present (unless nullable), not NULL (unless nullable), of the declared
    type (Python or textual form), then allowed values, min, max and pattern (for arrays, on each
    element); then the contract's row rules; then, for an outbox table, the payload against the
    contract of the row's event type (an unknown event type is a violation). Columns of the row
    that the contract does not list are ignored: schema drift is ingestion's business, decided
    with :meth:`TableContract.allows`.

    Args:
        contract: the table contract.
        row: column name -> value (Python values or textual CDC forms).
        events: where to look up event contracts; default the set the contract was loaded with.

    Returns:
        The violations, empty when the row is valid. At most one per column or payload field.
    """
    return compiled_table(contract).validate(row, events)


def compiled_table(contract: TableContract) -> CompiledTable:
    """The contract's precompiled row validator (built once, on first use, kept on it)."""
    compiled = contract.__dict__.get("_compiled")
    if compiled is None:
        compiled = contract.__dict__["_compiled"] = CompiledTable(contract)
    return compiled


def compiled_event(contract: EventContract) -> CompiledEvent:
    """The contract's precompiled payload validator (built once, on first use, kept on it)."""
    compiled = contract.__dict__.get("_compiled")
    if compiled is None:
        compiled = contract.__dict__["_compiled"] = CompiledEvent(contract)
    return compiled
