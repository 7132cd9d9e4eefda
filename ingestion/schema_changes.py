"""Schema changes: what differs between a table's registered shape and a new Relation message, and
which of those landing can follow by itself.

Safe type changes (:func:`is_widening`) keep every value and its text form: smallint → integer →
bigint, real → double precision, numeric(p,s) → numeric with at least as many integer digits and
as large a scale (or unconstrained), varchar(n) → varchar(m ≥ n), varchar or text, char(n) →
char(m ≥ n), varchar(m ≥ n), varchar or text, and a larger (or no) precision of timestamp,
timestamptz, time and interval. Landing converts its copy with the same cast the source used,
so both end with the same values (char to varchar drops trailing blanks on both sides).

Logical decoding does not show how the source converted: a ``USING`` expression that changes
values is invisible. Landing assumes the plain cast; after a ``USING`` conversion, resync the
table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ingestion.tables import ColumnInfo

INT2, INT4, INT8, FLOAT4, FLOAT8, NUMERIC = 21, 23, 20, 700, 701, 1700
TEXT, VARCHAR, BPCHAR = 25, 1043, 1042
TIMESTAMP, TIMESTAMPTZ, TIME, INTERVAL = 1114, 1184, 1083, 1186

_WIDER_INTEGER = {INT2: {INT4, INT8}, INT4: {INT8}, FLOAT4: {FLOAT8}}
_PRECISION_TYPES = {TIMESTAMP, TIMESTAMPTZ, TIME}
_VARHDRSZ = 4

FOLLOWABLE = ("add_nullable_column", "add_column_with_default", "add_required_column",
              "widen_type", "drop_column")
"""Change kinds landing can apply without a resync (if the table's contract allows them)."""


@dataclass
class SchemaChange:
    """One difference between the registered columns and a new Relation message.

    Attributes:
        kind: add_nullable_column, add_column_with_default (:func:`with_defaults`),
            add_required_column, drop_column, rename_column, change_type (breaking),
            widen_type (safe) or readd_column (:func:`readded_columns`: the table is copied
            again).
        column: the column concerned (the old name for renames and drops).
        detail: a sentence saying what changed.
        new_column: the column as it is now (adds and type changes).
    """

    kind: str
    column: str
    detail: str
    new_column: ColumnInfo | None = None

    @property
    def followable(self) -> bool:
        """Whether landing can follow the change by itself (the contract may still refuse)."""
        return self.kind in FOLLOWABLE


def _numeric(typmod: int) -> tuple[int, int] | None:
    if typmod < _VARHDRSZ:
        return None
    value = typmod - _VARHDRSZ
    return (value >> 16) & 0xFFFF, value & 0xFFFF


def is_widening(old: ColumnInfo, new: ColumnInfo) -> bool:
    """Whether changing ``old``'s type to ``new``'s keeps every value (see module docstring)."""
    if (old.type_oid, old.typmod) == (new.type_oid, new.typmod):
        return True
    if new.type_oid in _WIDER_INTEGER.get(old.type_oid, ()):
        return True
    if old.type_oid == NUMERIC and new.type_oid == NUMERIC:
        was, now = _numeric(old.typmod), _numeric(new.typmod)
        if now is None:
            return True
        if was is None:
            return False
        return now[1] >= was[1] and now[0] - now[1] >= was[0] - was[1]
    if old.type_oid in (VARCHAR, BPCHAR) and new.type_oid == TEXT:
        return True
    if old.type_oid in (VARCHAR, BPCHAR) and new.type_oid in (VARCHAR, BPCHAR) and \
            not (old.type_oid == VARCHAR and new.type_oid == BPCHAR):
        return new.typmod < 0 or (old.typmod >= 0 and new.typmod >= old.typmod)
    if old.type_oid == new.type_oid and old.type_oid in _PRECISION_TYPES | {INTERVAL}:
        if old.type_oid == INTERVAL:
            # interval typmods carry a field mask too: only "no modifier" is surely wider.
            return new.typmod < 0
        return new.typmod < 0 or (old.typmod >= 0 and new.typmod >= old.typmod)
    return False


def readded_columns(old: list[str], new: list[str]) -> list[str]:
    """The columns of ``old`` that ``new`` has at another place among the columns both have.

    PostgreSQL never reorders a table's columns: ``ADD COLUMN`` appends. A name of ``old`` that
    comes later in ``new`` than names that followed it was dropped and added again (the same
    name, maybe the same type: a Relation message shows nothing else), and the stream's rows
    now carry its values at the new place.

    Returns:
        Those columns in their new order, empty when the common columns kept their order.
    """
    known = set(old)
    common = [name for name in new if name in known]
    kept = set(common)
    old_common = [name for name in old if name in kept]
    for cut in range(len(common), -1, -1):
        tail = set(common[cut:])
        if common[:cut] == [name for name in old_common if name not in tail]:
            return common[cut:]
    return common  # pragma: no cover - cut 0 always matches


def renumbered_columns(old: list[ColumnInfo], new: list[ColumnInfo]) -> list[str]:
    """What says that columns of ``old`` have another ``attnum`` in ``new``: dropped and added
    again under their names with nothing streamed in between (the last column: the Relation
    message shows the same shape)."""
    nums = {c.name: c.attnum for c in new if c.attnum is not None}
    return [f"column {c.name!r} was dropped and added again on the source (attnum {c.attnum} "
            f"is now {nums[c.name]}), so its existing values are no longer the ones landing "
            f"holds" for c in old if c.attnum is not None and nums.get(c.name, c.attnum)
            != c.attnum]


def diff_columns(old: list[ColumnInfo], new: list[ColumnInfo], not_null: set[str],
                 retired: list[ColumnInfo] | None = None) -> list[SchemaChange]:
    """Compare registered columns with a Relation message's columns.

    Args:
        old: the registered columns (those the stream sent so far).
        new: the columns of the Relation message (type names filled in).
        not_null: names of source columns that are NOT NULL now (for added columns).
        retired: columns landing keeps after a drop; one coming back with its old type is an
            add again.

    Returns:
        The changes, empty when the shapes are equal; only ``readd_column`` changes when a
        column came back at another place (:func:`readded_columns`).
    """
    old_names = {c.name for c in old}
    new_by_name = {c.name: c for c in new}
    moved = readded_columns([c.name for c in old], [c.name for c in new])
    if moved:
        return [SchemaChange("readd_column", name,
                             f"column {name!r} was dropped and added again on the source (it "
                             f"moved to position {[c.name for c in new].index(name) + 1}), so "
                             f"its existing values are no longer the ones landing holds")
                for name in moved]
    retired_by_name = {c.name: c for c in retired or []}
    renamed_to: set[str] = set()
    changes: list[SchemaChange] = []
    for pos, oc in enumerate(old):
        nc = new_by_name.get(oc.name)
        if nc is None:
            cand = new[pos] if pos < len(new) else None
            if cand is not None and cand.name not in old_names and \
                    (cand.type_oid, cand.typmod) == (oc.type_oid, oc.typmod):
                renamed_to.add(cand.name)
                changes.append(SchemaChange("rename_column", oc.name,
                                            f"column {oc.name!r} was renamed to {cand.name!r}"))
            else:
                changes.append(SchemaChange("drop_column", oc.name,
                                            f"column {oc.name!r} was dropped"))
        elif (nc.type_oid, nc.typmod) != (oc.type_oid, oc.typmod):
            kind = "widen_type" if is_widening(oc, nc) else "change_type"
            changes.append(SchemaChange(
                kind, oc.name, f"column {oc.name!r} changed type from {oc.type_sql} to "
                               f"{nc.type_sql}", nc))
    for nc in new:
        if nc.name in old_names or nc.name in renamed_to:
            continue
        back = retired_by_name.get(nc.name)
        if back is not None and (back.type_oid, back.typmod) != (nc.type_oid, nc.typmod):
            changes.append(SchemaChange("change_type", nc.name,
                                        f"dropped column {nc.name!r} came back as {nc.type_sql}"
                                        f" (it was {back.type_sql})", nc))
            continue
        required = nc.name in not_null
        kind = "add_required_column" if required else "add_nullable_column"
        changes.append(SchemaChange(kind, nc.name, f"column {nc.name!r} {nc.type_sql} was added"
                                    + (" (NOT NULL)" if required else ""), nc))
    return changes


def with_defaults(changes: list[SchemaChange], defaults: dict[str, Any]) -> list[SchemaChange]:
    """``changes`` with each ``NOT NULL`` column added with a default (``defaults``: the
    source's, :func:`ingestion.catalog.column_defaults`) as ``add_column_with_default``: the
    existing rows read the default, and landing gives them the same value (a constant, or a copy
    of the table when the default is evaluated per row), so a ``backward`` contract allows it."""
    out = []
    for change in changes:
        default = defaults.get(change.column)
        if change.kind == "add_required_column" and default is not None and (
                default.missing is not None or default.expression is not None
                or default.identity):
            change = replace(change, kind="add_column_with_default",
                             detail=f"{change.detail} with a default")
        out.append(change)
    return out


_INT_RANK = {"smallint": 0, "integer": 1, "bigint": 2}


def contract_lags_widening(declared: str, source_type: str) -> bool:
    """Whether a contract's column type refuses values the source column holds once widened.

    A contract allowing ``widen_type`` lets landing follow ``numeric(12,2)`` → ``numeric(14,2)``,
    but keeps checking each row against its own ``numeric(12,2)``: the first value beyond it is
    dead-lettered. Only number types are judged (a contract's ``text`` takes any text).

    Args:
        declared: the contract's type name (``numeric(12,2)``, ``integer``...).
        source_type: the source column's type as ``format_type`` shows it.

    Returns:
        True when some value of ``source_type`` does not fit ``declared``.
    """
    from contracts.pgtypes import parse_type

    try:
        old, new = parse_type(declared), parse_type(source_type)
    except ValueError:  # a type contracts have no name for: not judged
        return False
    if old.is_array != new.is_array:
        return False
    if old.base in _INT_RANK and new.base in _INT_RANK:
        return _INT_RANK[new.base] > _INT_RANK[old.base]
    if old.base in _INT_RANK and new.base == "numeric":
        return True
    if old.base != "numeric" or new.base != "numeric" or old.precision is None:
        return False
    if new.precision is None:
        return True
    new_scale, old_scale = new.scale or 0, old.scale or 0
    return new.precision - new_scale > old.precision - old_scale or new_scale > old_scale


def contract_lag_warning(contract: Any, change: SchemaChange) -> str | None:
    """What to say when a ``widen_type`` landing applies leaves the table's contract behind
    (:func:`contract_lags_widening`), or None.

    Args:
        contract: the table's ``contracts.TableContract``, or None.
        change: the applied change (``column`` set, ``new_column`` the new type).
    """
    if contract is None or change.kind != "widen_type" or change.new_column is None:
        return None
    spec = contract.columns.get(change.column)
    new_type = change.new_column.type_sql
    if spec is None or not contract_lags_widening(spec.type, new_type):
        return None
    return (f"column {change.column!r} is {new_type} on the source now, but its contract "
            f"{contract.path} still declares {spec.type}: a row with a value beyond "
            f"{spec.type} goes to the dead letters. Declare type {new_type} there and bump "
            f"`version` (then `tidemark dlq replay` for the letters written meanwhile)")
