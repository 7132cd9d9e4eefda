"""Load contract files into a :class:`ContractSet`.

Layout under the root directory (default: this package's directory, which ships ``shop/``)::

    <source>/<table>.yml                 one table contract per source table
    <source>/events/<event_type>.yml     one event contract per outbox event type

Every problem is reported as a :class:`~contracts.errors.ContractError` naming the file and the
field, e.g. ``contracts/shop/orders.yml: columns.status.allowed_values: expected a list, got 'x'``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from contracts.errors import ContractError, ContractNotFoundError
from contracts.fileformat import EventFile, FieldFile, RuleFile, TableFile, first_error
from contracts.indexes import parse_indexes
from contracts.jsontypes import JSON_CONVERTERS
from contracts.model import (
    ColumnSpec,
    EventContract,
    EventsSpec,
    FieldSpec,
    Freshness,
    RowRule,
    TableContract,
)
from contracts.pgtypes import TypeMismatch, parse_type, scalar_converter

PACKAGE_ROOT = Path(__file__).resolve().parent
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")


class ContractSet:
    """All contracts loaded from one root directory.

    Iterating yields the table contracts (sorted by source, then table name).
    """

    def __init__(self, root: Path, tables: list[TableContract], events: list[EventContract]):
        self.root = root
        self._tables = {(t.source, t.name): t for t in sorted(tables, key=_table_key)}
        self._events = {(e.source, e.event_type): e
                        for e in sorted(events, key=lambda e: (e.source, e.event_type))}

    def sources(self) -> list[str]:
        """The sources that have contracts."""
        return sorted({source for source, _ in self._tables} | {s for s, _ in self._events})

    def table(self, source: str, table: str) -> TableContract:
        """The contract of ``source.table``.

        Raises:
            ContractNotFoundError: there is none; the message lists the known tables.
        """
        try:
            return self._tables[(source, table)]
        except KeyError:
            known = ", ".join(name for s, name in self._tables if s == source) or "none"
            raise ContractNotFoundError(
                f"no contract for table {source}.{table} under {self.root}; known tables of "
                f"{source!r}: {known}. Add {source}/{table}.yml there.") from None

    def tables(self, source: str) -> list[TableContract]:
        """The table contracts of ``source``, sorted by table name.

        Raises:
            ContractNotFoundError: no table contract exists for ``source``.
        """
        found = [t for (s, _), t in self._tables.items() if s == source]
        if not found:
            raise ContractNotFoundError(
                f"no table contracts for source {source!r} under {self.root}; known sources: "
                f"{', '.join(self.sources()) or 'none'}")
        return found

    def find_event(self, source: str, event_type: str) -> EventContract | None:
        """The contract of an event type, or None if there is none."""
        return self._events.get((source, event_type))

    def event(self, source: str, event_type: str) -> EventContract:
        """The contract of an outbox event type.

        Raises:
            ContractNotFoundError: there is none; the message lists the known event types.
        """
        found = self.find_event(source, event_type)
        if found is None:
            raise ContractNotFoundError(
                f"no contract for event type {event_type!r} of source {source!r} under "
                f"{self.root}; known: {', '.join(self.event_types(source)) or 'none'}. "
                f"Add {source}/events/{event_type}.yml there.")
        return found

    def event_types(self, source: str) -> list[str]:
        """The event types of ``source`` that have contracts, sorted."""
        return [name for s, name in self._events if s == source]

    def events(self, source: str) -> list[EventContract]:
        """The event contracts of ``source``, sorted by event type."""
        return [e for (s, _), e in self._events.items() if s == source]

    def __iter__(self) -> Iterator[TableContract]:
        return iter(self._tables.values())

    def __len__(self) -> int:
        return len(self._tables)


def _table_key(contract: TableContract) -> tuple[str, str]:
    return contract.source, contract.name


def load_contracts(root: Path | None = None) -> ContractSet:
    """Load every contract file under ``root``.

    Args:
        root: the directory holding ``<source>/<table>.yml`` and ``<source>/events/*.yml``;
            default the ``contracts`` package's own directory.

    Returns:
        The loaded contracts; each table contract with an ``events`` section carries the event
        contracts of its source.

    Raises:
        ContractError: a file is broken (the message names the file and the field).
    """
    root = Path(root) if root is not None else PACKAGE_ROOT
    if not root.is_dir():
        raise ContractError(root, "", "contracts directory does not exist")
    tables: list[TableContract] = []
    events: list[EventContract] = []
    paths = sorted(p for p in root.rglob("*") if p.suffix in {".yml", ".yaml"} and p.is_file())
    for path in paths:
        parts = path.relative_to(root).parts
        if len(parts) == 2:
            tables.append(_load_table(path, parts[0], path.stem))
        elif len(parts) == 3 and parts[1] == "events":
            events.append(_load_event(path, parts[0], path.stem))
        else:
            raise ContractError(path, "", "unexpected location; contracts live at "
                                "<source>/<table>.yml or <source>/events/<event_type>.yml")
    by_source: dict[str, dict[str, EventContract]] = {}
    for event in events:
        by_source.setdefault(event.source, {})[event.event_type] = event
    for contract in tables:
        if contract.events is not None:
            object.__setattr__(contract, "event_contracts", by_source.get(contract.source, {}))
    return ContractSet(root, tables, events)


def load_table_contracts(root: Path | None = None
                         ) -> tuple[list[TableContract], dict[tuple[str, str], ContractError]]:
    """Every table contract under ``root`` that loads on its own, and the error of each one that
    does not, by ``(source, table)`` — for readers that must go on while a file is being edited
    (the Dagster definitions); :func:`load_contracts` refuses the whole folder instead.

    Event contracts are not read (a table's ``event_contracts`` stay empty).
    """
    root = Path(root) if root is not None else PACKAGE_ROOT
    loaded: list[TableContract] = []
    broken: dict[tuple[str, str], ContractError] = {}
    for path in sorted(root.glob("*/*.y*ml")) if root.is_dir() else []:
        if path.suffix not in {".yml", ".yaml"} or not path.is_file():
            continue
        try:
            loaded.append(_load_table(path, path.parent.name, path.stem))
        except ContractError as exc:
            broken[(path.parent.name, path.stem)] = exc
    return loaded, broken


# libyaml's loader when PyYAML has it (its wheels do): the same safe subset, several times faster.
# A file it rejects is parsed again by the pure-Python loader, whose error wording (line, column,
# problem) is what the messages below are built from.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.load(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ContractError(path, "", f"invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(path, "", f"cannot read the file: {exc}") from None
    if not isinstance(data, dict):
        raise ContractError(path, "", f"expected a mapping of contract fields, got {data!r}")
    return data


def _check_name(path: Path, kind: str, name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ContractError(path, "", f"{kind} name {name!r} (from the file name) must be "
                            "lower-case letters, digits and underscores")


def _load_table(path: Path, source: str, name: str) -> TableContract:
    _check_name(path, "source", source)
    _check_name(path, "table", name)
    try:
        spec = TableFile.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise ContractError(path, *first_error(exc)) from None
    columns: dict[str, ColumnSpec] = {}
    for col, cfile in spec.columns.items():
        where = f"columns.{col}"
        try:
            pg_type = parse_type(cfile.type)
        except ValueError as exc:
            raise ContractError(path, f"{where}.type", str(exc)) from None
        allowed = _allowed(path, where, cfile.allowed_values, scalar_converter(pg_type),
                           pg_type.base not in {"jsonb"})
        _check_bounds(path, where, cfile.min, cfile.max, cfile.pattern, pg_type.is_number,
                      pg_type.is_text, pg_type.name)
        columns[col] = ColumnSpec(col, pg_type.name, cfile.nullable, allowed, cfile.min,
                                  cfile.max, cfile.pattern, cfile.description, pg_type)

    def column(field: str, col: str | None, *, types: set[str] | None = None,
               not_null: bool = False) -> None:
        if col is None:
            return
        if col not in columns:
            raise ContractError(path, field, f"unknown column {col!r}; columns: "
                                f"{', '.join(columns)}")
        if types is not None and columns[col].type not in types:
            raise ContractError(path, field, f"column {col!r} is {columns[col].type}; expected "
                                f"{' or '.join(sorted(types))}")
        if not_null and columns[col].nullable:
            raise ContractError(path, field, f"column {col!r} is nullable; it must not be")

    for i, col in enumerate(spec.primary_key):  # [] declares a keyless table (a bag)
        column(f"primary_key[{i}]", col, not_null=True)
        if col in spec.primary_key[:i]:
            raise ContractError(path, f"primary_key[{i}]", f"column {col!r} is listed twice")
    column("event_time", spec.event_time, types={"timestamptz"})
    column("idempotency_key", spec.idempotency_key, not_null=True)
    fresh = spec.freshness
    column("freshness.loaded_at", fresh.loaded_at, types={"timestamptz"})
    _check_duration(path, "allowed_lateness", spec.allowed_lateness, allow_zero=True)
    _check_duration(path, "freshness.warn_after", fresh.warn_after, minutes=True)
    _check_duration(path, "freshness.error_after", fresh.error_after, minutes=True)
    if fresh.error_after < fresh.warn_after:
        raise ContractError(path, "freshness.error_after", "must not be shorter than warn_after")
    rules = tuple(_rule(path, i, r, columns, column) for i, r in enumerate(spec.rules))
    events = None
    if spec.events is not None:
        column("events.type_column", spec.events.type_column, types={"text"})
        column("events.payload_column", spec.events.payload_column, types={"jsonb"})
        events = EventsSpec(spec.events.type_column, spec.events.payload_column)
    loaded_at = fresh.loaded_at
    if loaded_at is None:
        if columns.get("updated_at") is not None and columns["updated_at"].type == "timestamptz":
            loaded_at = "updated_at"
        else:
            loaded_at = spec.event_time
    return TableContract(
        source=source, name=name, version=spec.version, primary_key=list(spec.primary_key),
        columns=columns, compatibility=spec.compatibility,
        allowed_lateness=spec.allowed_lateness,
        freshness=Freshness(fresh.warn_after, fresh.error_after), event_time=spec.event_time,
        idempotency_key=spec.idempotency_key, loaded_at=loaded_at, rules=rules, events=events,
        description=spec.description, path=path,
        indexes=parse_indexes(path, spec.indexes, columns, spec.primary_key))


def _rule(path: Path, index: int, rfile: RuleFile, columns: dict[str, ColumnSpec],
          column: Callable[[str, str], None]) -> RowRule:
    where = f"rules[{index}]"
    if not rfile.when:
        raise ContractError(path, f"{where}.when", "must name at least one column")
    if not rfile.require and not rfile.forbid:
        raise ContractError(path, where, "needs 'require' or 'forbid' (or both)")
    when: dict[str, tuple[Any, ...]] = {}
    for col, raw in rfile.when.items():
        column(f"{where}.when.{col}", col)
        spec = columns[col]
        assert spec.pg_type is not None
        options = raw if isinstance(raw, list) else [raw]
        allowed = _allowed(path, f"{where}.when.{col}", options, scalar_converter(spec.pg_type),
                           True, field="")
        when[col] = allowed or ()
    for key in ("require", "forbid"):
        for i, col in enumerate(getattr(rfile, key)):
            column(f"{where}.{key}[{i}]", col)
    return RowRule(rfile.name, when, tuple(rfile.require), tuple(rfile.forbid), rfile.description)


def _allowed(path: Path, where: str, values: list[Any] | None, convert: Callable[[Any], Any],
             supported: bool,
             field: str = ".allowed_values") -> tuple[Any, ...] | None:
    if values is None:
        return None
    if not supported:
        raise ContractError(path, f"{where}{field}", "allowed_values is not supported for this "
                            "type")
    if not values:
        raise ContractError(path, f"{where}{field}", "must list at least one value")
    result = []
    for i, value in enumerate(values):
        try:
            if value is None:
                raise TypeMismatch("null is not a value; use nullable instead")
            result.append(convert(value))
        except TypeMismatch as exc:
            raise ContractError(path, f"{where}{field}[{i}]", exc.args[0]) from None
    return tuple(result)


def _check_bounds(path: Path, where: str, low: Any, high: Any, pattern: str | None,
                  is_number: bool, is_text: bool, type_name: str) -> None:
    for key, value in (("min", low), ("max", high)):
        if value is not None and not is_number:
            raise ContractError(path, f"{where}.{key}", f"min/max need a number type, "
                                f"the type is {type_name}")
    if low is not None and high is not None and low > high:
        raise ContractError(path, f"{where}.max", f"{high} is below min {low}")
    if pattern is not None:
        if not is_text:
            raise ContractError(path, f"{where}.pattern", f"pattern needs a text type, the "
                                f"type is {type_name}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ContractError(path, f"{where}.pattern", f"invalid regular expression: {exc}"
                                ) from None


def _check_duration(path: Path, field: str, value: timedelta, *, allow_zero: bool = False,
                    minutes: bool = False) -> None:
    if value < timedelta(0) or (value == timedelta(0) and not allow_zero):
        raise ContractError(path, field, f"must be positive, got {value}")
    if minutes and value.total_seconds() % 60:
        raise ContractError(path, field, f"must be whole minutes (dbt freshness counts minutes, "
                            f"hours or days), got {value}")


def _load_event(path: Path, source: str, event_type: str) -> EventContract:
    _check_name(path, "source", source)
    _check_name(path, "event type", event_type)
    try:
        spec = EventFile.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise ContractError(path, *first_error(exc)) from None
    payload = {key: _field(path, key, ffile) for key, ffile in spec.payload.items()}
    return EventContract(source, event_type, spec.version, payload, spec.additional_properties,
                         spec.description, path)


def _field(path: Path, key: str, ffile: FieldFile) -> FieldSpec:
    where = f"payload.{key}"
    allowed = _allowed(path, where, ffile.allowed_values, JSON_CONVERTERS[ffile.type], True)
    _check_bounds(path, where, ffile.min, ffile.max, ffile.pattern,
                  ffile.type in {"integer", "number"}, ffile.type in {"string", "uuid"},
                  ffile.type)
    return FieldSpec(key, ffile.type, ffile.required, ffile.nullable, allowed, ffile.min,
                     ffile.max, ffile.pattern, ffile.description)

