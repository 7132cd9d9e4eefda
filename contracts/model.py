"""The loaded form of contracts: what ingestion, dbt and the checks read.

These are plain frozen dataclasses built by :mod:`contracts.loader` from the YAML files (whose
format is defined in :mod:`contracts.fileformat`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from contracts.errors import UnknownChangeKindError
from contracts.pgtypes import PgType

CHANGE_KINDS = ("add_nullable_column", "add_column_with_default", "add_required_column",
                "drop_column", "rename_column", "change_type", "widen_type")
"""The schema change kinds ingestion asks :meth:`TableContract.allows` about. ``widen_type`` is a
type change that keeps every value (``integer`` to ``bigint``, ``varchar(n)`` to ``text``...).
``add_column_with_default`` is a ``NOT NULL`` column added with a default (existing rows read
it, in landing as on the source); ``add_required_column`` one without."""

COMPATIBILITY_MODES = ("none", "backward", "full")
"""``none``: every change is breaking. ``backward``: adding a nullable column or a column with a
default, and widening a column's type are allowed. ``full``: those, and dropping a column the
contract declares nullable (readers of either shape keep working: a missing nullable column reads
as NULL). Renames, other type changes and new required columns without a default are breaking in
every mode."""


@dataclass(frozen=True)
class Freshness:
    """How fresh a table's data is expected to be (dbt source freshness uses the same figures).

    Attributes:
        warn_after: age of the newest row after which freshness warns.
        error_after: age after which freshness fails.
    """

    warn_after: timedelta
    error_after: timedelta


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a table contract.

    Attributes:
        name: the column name (same as in the source table).
        type: the PostgreSQL type name as in the schema (``integer``, ``numeric(12,2)``, ...).
        nullable: whether NULL is allowed.
        allowed_values: if set, the only values allowed (each array element, for arrays).
        min: inclusive lower bound (number columns).
        max: inclusive upper bound (number columns).
        pattern: a regular expression the whole text must match (``re.fullmatch``).
        description: free text, passed to dbt.
    """

    name: str
    type: str
    nullable: bool = False
    allowed_values: tuple[Any, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None
    pattern: str | None = None
    description: str | None = None
    pg_type: PgType | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RowRule:
    """A row-level rule: when every ``when`` column has one of its values, the ``require``
    columns must be non-NULL and the ``forbid`` columns must be NULL.

    Attributes:
        name: the rule's name, quoted in violations.
        when: column -> allowed values that trigger the rule (canonical Python values).
        require: columns that must not be NULL when the rule triggers.
        forbid: columns that must be NULL when the rule triggers.
        description: free text.
    """

    name: str
    when: Mapping[str, tuple[Any, ...]]
    require: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True)
class EventsSpec:
    """Which columns of an outbox table carry the event type and its payload."""

    type_column: str
    payload_column: str


@dataclass(frozen=True)
class FieldSpec:
    """One payload field of an event contract.

    Attributes:
        name: the JSON key.
        type: ``string``, ``uuid`` (a string holding a UUID), ``integer``, ``number``, ``boolean``.
        required: whether the key must be present.
        nullable: whether JSON null is allowed.
        allowed_values, min, max, pattern, description: as for :class:`ColumnSpec`.
    """

    name: str
    type: str
    required: bool = True
    nullable: bool = False
    allowed_values: tuple[Any, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None
    pattern: str | None = None
    description: str | None = None


@dataclass(frozen=True, eq=False)
class EventContract:
    """The contract of one outbox event type: the shape of its payload.

    Compared and hashed by identity (it holds dicts), so it can key a cache.

    Attributes:
        source: the source name (``shop``).
        event_type: the event type, as in the outbox's type column.
        version: the contract's version (from the file).
        payload: key -> field spec.
        additional_properties: whether keys not listed in ``payload`` are allowed.
        description: free text.
        path: the contract file.
    """

    source: str
    event_type: str
    version: int
    payload: Mapping[str, FieldSpec]
    additional_properties: bool = False
    description: str | None = None
    path: Path = Path()

    @property
    def name(self) -> str:
        """The event type (same as ``event_type``)."""
        return self.event_type



@dataclass(frozen=True, eq=False)
class TableContract:
    """The contract of one source table.

    Compared and hashed by identity (it holds dicts), so it can key a cache; compare ``version``
    to tell whether a contract changed.

    Attributes:
        source: the source name (``shop``); the landing mirror lives in schema ``<source>``.
        name: the table name.
        version: the contract's version (from the file; ingestion records it in dead letters).
        primary_key: the key columns, in order; empty for a keyless table (see
            :attr:`keyless`).
        event_time: the column holding when the business event happened (or None).
        idempotency_key: the column whose value identifies a duplicate delivery (or None).
        columns: column name -> spec, in the file's order.
        compatibility: ``none``, ``backward`` or ``full`` (see :data:`COMPATIBILITY_MODES`).
        allowed_lateness: how late (in event time) a row may arrive and still count in its day.
        freshness: expected freshness of the landed table.
        loaded_at: the column dbt source freshness measures (or None: freshness not checkable).
        rules: row-level rules.
        events: for an outbox table, which columns hold the event type and the payload.
        description: free text, passed to dbt.
        path: the contract file.
        event_contracts: event type -> contract, for the outbox's payloads (set by the loader).
        indexes: the B-tree indexes ingestion creates on the landing mirror, each the columns
            of one index in order (``(("order_id",), ("created_at",))``), so the day-bounded
            reads of dbt and live views are served by an index.
    """

    source: str
    name: str
    version: int
    primary_key: list[str]
    columns: dict[str, ColumnSpec]
    compatibility: str = "backward"
    allowed_lateness: timedelta = timedelta(0)
    freshness: Freshness = Freshness(timedelta(hours=1), timedelta(hours=24))
    event_time: str | None = None
    idempotency_key: str | None = None
    loaded_at: str | None = None
    rules: tuple[RowRule, ...] = ()
    events: EventsSpec | None = None
    description: str | None = None
    path: Path = Path()
    event_contracts: Mapping[str, EventContract] = field(default_factory=dict, repr=False,
                                                         compare=False)
    indexes: tuple[tuple[str, ...], ...] = ()

    @property
    def qualified_name(self) -> str:
        """``<source>.<table>``, as in messages and the landing mirror."""
        return f"{self.source}.{self.name}"

    @property
    def keyless(self) -> bool:
        """Whether the table has no key (``primary_key: []``): a source table with ``REPLICA
        IDENTITY FULL`` and no primary key, such as ``pgbench_history``. Its mirror is a bag
        (equal rows kept apart; a delete removes one equal row), so its rows are checked like
        any other's (types, not null, allowed values, ranges, patterns, rules) but nothing
        checks that they are unique."""
        return not self.primary_key

    def allows(self, change_kind: str, column: str | None = None) -> bool:
        """Whether this contract's compatibility mode accepts a schema change.

        Args:
            change_kind: one of :data:`CHANGE_KINDS`.
            column: the column concerned; needed for ``drop_column`` under ``full`` (only a column
                the contract declares nullable may be dropped).

        Returns:
            True when ingestion may apply the change automatically, False when it is breaking.

        Raises:
            UnknownChangeKindError: ``change_kind`` is not one of :data:`CHANGE_KINDS`.
        """
        if change_kind not in CHANGE_KINDS:
            raise UnknownChangeKindError(
                f"unknown schema change kind {change_kind!r}; known: {', '.join(CHANGE_KINDS)}")
        if self.compatibility == "none":
            return False
        if change_kind in ("add_nullable_column", "add_column_with_default", "widen_type"):
            return True
        if change_kind == "drop_column" and self.compatibility == "full":
            spec = self.columns.get(column) if column is not None else None
            return spec is not None and spec.nullable
        return False



@dataclass(frozen=True)
class Violation:
    """One way a row breaks its contract.

    Attributes:
        column: the column (``payload.quantity`` for a payload field), or None for the row.
        rule: which rule: ``missing``, ``not_null``, ``type``, ``allowed_values``, ``min``,
            ``max``, ``pattern``, ``required_if``, ``null_if``, ``unknown_field``, ``event_type``.
        message: what is wrong and where, e.g.
            ``shop.orders.status: 'shipped' is not one of placed, paid, delivered, cancelled``.
        value: the offending value as given (None when missing).
    """

    column: str | None
    rule: str
    message: str
    value: Any = None
