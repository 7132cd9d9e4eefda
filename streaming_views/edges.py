# ruff: noqa: S608 -- generated SQL: identifiers quoted with psycopg.sql / q(), user expressions
# come deparsed from PostgreSQL's own parse tree (pglast).
"""Temporal-filter bounds inverted to a range of an index (the *expiry index*).

A tick (:mod:`streaming_views.expiry`) looks for the rows whose bound lies between the clock's
old and new time, and the window states every bound as a one-sided range at the clock's time;
both take a B-tree index when the bound is inverted here (:class:`Edge`):

* ``col``, ``col::timestamptz``, ``col::timestamp``, ``col::date`` (a cast between time types:
  monotone under the pinned TimeZone UTC, within a day of ``col``), ``date_trunc('<unit>',
  col)`` (monotone, within a unit below ``col``): a range of ``col``, widened by the rounding
  (a day when a date is involved, a unit), answered by an index on ``col`` (an existing one is
  used);
* ``col AT TIME ZONE '<constant zone>'`` (timestamp -> timestamptz or timestamptz -> timestamp):
  local -> UTC is not monotone around DST changes (a gap and a fold), so no range of ``col``
  is exact without the zone's transitions. The range is taken of the expression itself
  instead, through an expression index on it (``timezone()`` of a constant zone is immutable):
  exact whatever the zone does. ``col`` is clamped into the years 1000..200000 in the indexed
  expression, ``tidemark.live_zone_time(zone, col)`` (beyond, ``timezone()`` can overflow, and
  the index would make the write raise; a function per time type, so that retyping the column
  rebuilds the index);
  a range reaching the clamped years is opened (every row a candidate), which only a clock
  outside those years does;
* each with ``+`` or ``-`` a constant interval (or days, for a date), turned back on the range.

The exact bound predicate is then applied to the candidates. Any other bound is not inverted:
a tick scans the timed table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg
from pglast import ast
from psycopg import sql

from streaming_views.astutil import deparse, q, walk

TIME_TYPES = {1184: "timestamptz", 1114: "timestamp", 1082: "date"}
INDEX_PREFIX = "tidemark_expiry__"
CAST_TYPES = {"timestamptz", "timestamp", "date"}
# date_trunc's units (singular, lower case): how far below its argument it moves a time
TRUNC_UNITS = {"microsecond": "1 microsecond", "millisecond": "1 millisecond",
               "second": "1 second", "minute": "1 minute", "hour": "1 hour", "day": "1 day",
               "week": "7 days", "month": "1 month", "quarter": "3 months", "year": "1 year",
               "decade": "10 years", "century": "100 years", "millennium": "1000 years"}
# the clamp of a zone conversion's column, and the values of the converted expression inside
# which a range is taken as it is (a day inside: a zone's offset is less than a day)
CLAMP = ("1000-01-01", "200000-01-01")
INSIDE = ("1000-01-03", "199999-12-29")


def zone_functions() -> list[str]:
    """``tidemark.live_zone_time(zone, col)``: ``col AT TIME ZONE zone`` with ``col`` clamped
    into :data:`CLAMP` (immutable: the expression indexes' value), one per time type — so that
    retyping the column between time types rebuilds the index instead of failing the ALTER
    (a typed constant in the index would leave a stable cast in it)."""
    types = {"timestamp": "timestamptz", "timestamptz": "timestamp", "date": "timestamptz"}
    stmts = []
    for arg, result in types.items():
        col = "p_t::pg_catalog.timestamp" if arg == "date" else "p_t"
        typ = "timestamp" if arg == "date" else arg
        lo, hi = (_literal(typ, v).replace(f"{typ} ", "", 1) + f"::pg_catalog.{typ}"
                  for v in CLAMP)
        stmts.append(f"create or replace function tidemark.live_zone_time(p_zone text, p_t "
                     f"{arg}) returns {result} language sql immutable parallel safe as "
                     f"$f$ select pg_catalog.timezone(p_zone, least(greatest({col}, {lo}), "
                     f"{hi})) $f$")
    return stmts


def _literal(typ: str, day: str) -> str:
    """A constant of time type ``typ`` at midnight (UTC) of ``day``."""
    return f"{typ} '{day} 00:00:00{'+00' if typ == 'timestamptz' else ''}'"


@dataclass(frozen=True)
class Edge:
    """A bound inverted to a range of an indexed value.

    Attributes:
        column: the timed table's column the bound reads.
        typ: the indexed value's type (timestamptz, timestamp or date).
        inverse: SQL turning a bound value ``{}`` (timestamptz) back into the indexed value's.
        slack: widening of the range: strict bounds, day rounding, months of unequal length.
        zone: the constant zone of ``col AT TIME ZONE zone`` (the indexed value is that
            expression, with ``col`` clamped); None: the indexed value is ``col``.
        col_typ: with ``zone``, the type of ``col`` (its clamp's constants).
    """

    column: str
    typ: str
    inverse: str
    slack: str
    zone: str | None = None
    col_typ: str = ""

    def value(self, ref: str | None) -> str:
        """The indexed value over the table aliased ``ref`` (None: unqualified, as in the
        index's definition)."""
        col = f"{ref}.{q(self.column)}" if ref else q(self.column)
        if self.zone is None:
            return col
        return f"tidemark.live_zone_time({sql.Literal(self.zone).as_string(None)}::text, {col})"

    def opened(self, value: str, ends: tuple[str, ...], infinite: str) -> str:
        """``value`` (a range end, of :attr:`typ`), or ``infinite`` when one of ``ends`` (the
        range's ends) reaches the years the zone conversion's clamp changes."""
        if self.zone is None:
            return value
        lo, hi = (_literal(self.typ, v)
                  for v in INSIDE)
        inside = " AND ".join(f"({e}) > {lo} AND ({e}) < {hi}" for e in ends)
        return f"(CASE WHEN {inside} THEN {value} ELSE {infinite}::{self.typ} END)"


def _column(t: Any, node: Any) -> str | None:
    """The column a ColumnRef of the timed table names, else None."""
    if not isinstance(node, ast.ColumnRef):
        return None
    names = [f.sval for f in node.fields if isinstance(f, ast.String)]
    if len(names) != len(node.fields) or (len(names) == 2 and names[0] != t.ref):
        return None
    return names[-1]


def _call(node: Any, name: str) -> tuple[str, Any] | None:
    """(the constant, the argument) of ``<name>('<constant>', arg)``."""
    names = [n.sval for n in node.funcname] if isinstance(node, ast.FuncCall) else []
    if names in ([name], ["pg_catalog", name]) and len(node.args or ()) == 2 \
            and isinstance(node.args[0], ast.A_Const) \
            and isinstance(node.args[0].val, ast.String):
        return node.args[0].val.sval, node.args[1]
    return None


def zone_of(node: Any) -> tuple[str, Any] | None:
    """(zone, argument) of ``arg AT TIME ZONE '<constant>'`` (``timezone('<zone>', arg)``)."""
    return _call(node, "timezone")


def trunc_of(node: Any) -> tuple[str, Any] | None:
    """(unit, argument) of ``date_trunc('<constant unit>', arg)`` (two arguments)."""
    return _call(node, "date_trunc")


def _known(conn: psycopg.Connection, function: str, constant: str) -> bool:
    """Whether ``<function>(constant, now())`` runs (a zone or unit PostgreSQL knows)."""
    try:
        with conn.transaction():
            conn.execute(sql.SQL("select {}(%s::text, now())").format(sql.Identifier(function)),
                         (constant,))
    except psycopg.Error:
        return False
    return True


def valid_zone(conn: psycopg.Connection, zone: str) -> bool:
    """Whether PostgreSQL knows time zone ``zone``."""
    return _known(conn, "timezone", zone)


def valid_unit(conn: psycopg.Connection, unit: str) -> bool:
    """Whether ``date_trunc`` knows unit ``unit``."""
    return _known(conn, "date_trunc", unit)


def _base(conn: psycopg.Connection, t: Any, expr: Any
          ) -> tuple[str, str, str | None, str, str] | None:
    """(column, its type, zone, the indexed value's type, extra slack) of a bound without its
    offset."""
    zone, cast, extra = None, None, ""
    found, trunc = zone_of(expr), trunc_of(expr)
    if found is not None:
        zone, expr = found
        if not valid_zone(conn, zone):
            return None
    elif trunc is not None:  # date_trunc(unit, col): col's range widened by a unit
        unit = TRUNC_UNITS.get(trunc[0].lower().rstrip("s"))
        if unit is None or not valid_unit(conn, trunc[0]):
            return None
        cast, extra, expr = "timestamptz", f" + interval '{unit}'", trunc[1]
    elif isinstance(expr, ast.TypeCast) and expr.typeName.arrayBounds is None:
        cast = expr.typeName.names[-1].sval
        if cast not in CAST_TYPES:
            return None
        expr = expr.arg
    column = _column(t, expr)
    if column is None:
        return None
    row = conn.execute(
        "select atttypid from pg_attribute where attrelid = %s::regclass and attname = %s "
        "and not attisdropped", (sql.Identifier(t.schema, t.name).as_string(None), column)
    ).fetchone()
    if row is None or row[0] not in TIME_TYPES:
        return None
    typ = TIME_TYPES[row[0]]
    if zone is not None:
        if typ == "date":
            return None  # date AT TIME ZONE: through the session's TimeZone, not immutable
        return column, typ, zone, "timestamp" if typ == "timestamptz" else "timestamptz", ""
    return column, typ, None, cast or typ, extra


def edge(conn: psycopg.Connection, t: Any, bound: Any) -> Edge | None:
    """The bound as an :class:`Edge`, or None when its expression is not invertible."""
    expr, offset, sign = bound.expr, None, "+"
    if isinstance(expr, ast.A_Expr) and expr.name[-1].sval in {"+", "-"} and expr.lexpr is not None:
        sign = expr.name[-1].sval
        expr, offset = expr.lexpr, expr.rexpr
        if any(isinstance(n, ast.ColumnRef | ast.FuncCall | ast.SubLink) for n in walk(offset)):
            return None
    base = _base(conn, t, expr)
    if base is None:
        return None
    column, col_typ, zone, value_typ, extra = base
    # the range is of the column (a cast: of the column's type), or of the zone's expression
    typ = value_typ if zone is not None else col_typ
    slack = "interval '1 second'" + extra
    if "date" in {col_typ, value_typ}:
        slack += " + interval '1 day'"
    inverse = "({})"
    if offset is not None:
        text = deparse(offset)
        kind = conn.execute(f"select pg_typeof({text})::text").fetchone()[0]  # type: ignore[arg-type]
        if kind in {"integer", "smallint", "bigint"} and value_typ == "date":
            step = f"(({text}) * interval '1 day')"
        elif kind == "interval":
            step = f"({text})::interval"
            months = conn.execute(f"select extract(year from {step}) * 12 + "  # type: ignore[arg-type]
                                  f"extract(month from {step})").fetchone()[0]
            if months:  # x + 1 month is within 3 days of (x - 1 month) + 1 month...
                slack += " + interval '4 days'"
        else:
            return None
        inverse = f"(({{}}) {'-' if sign == '+' else '+'} {step})"
    return Edge(column, typ, inverse, slack, zone, col_typ if zone is not None else "")


def as_value(e: Edge, value: str) -> str:
    """A timestamptz ``value`` as the indexed value's type (timestamp: UTC wall-clock time)."""
    if e.typ == "timestamptz":
        return value
    local = f"(({value}) AT TIME ZONE 'UTC')"
    return local if e.typ == "timestamp" else f"({local})::date"


def tick_range(edges: list[Edge | None], ref: str, lo: str, hi: str) -> str | None:
    """Condition on the indexed values holding every row whose bound (one of ``edges``) lies
    in ``[lo, hi]``; None when some bound is not invertible (then every row is checked)."""
    if not edges or any(e is None for e in edges):
        return None
    parts = []
    for e in edges:
        assert e is not None
        low = as_value(e, f"{e.inverse.format(lo)} - ({e.slack})")
        high = as_value(e, f"{e.inverse.format(hi)} + ({e.slack})")
        value = e.value(ref)
        first = e.opened(low, (low, high), "'-infinity'")
        last = e.opened(high, (low, high), "'infinity'")
        parts.append(f"({value} >= {first} AND {value} <= {last})")
    return f"({' OR '.join(parts)})"


def window_range(conn: psycopg.Connection, t: Any, clock: str) -> str | None:
    """A condition on the indexed values every row valid at the clock's time (``clock``) meets:
    each invertible bound (:class:`Edge`) turned into a one-sided range — an ``until`` bound
    ``col + k`` gives ``col >= clock - k``, a ``from`` bound ``col - k`` gives
    ``col <= clock + k``, each widened by the edge's slack. The window adds it to the exact
    validity test, so a group's recompute or a join's read of the timed table takes the
    expiry index to the rows near the window instead of reading the group's (or the join
    key's) whole history; None when no bound is invertible."""
    parts = []
    for bound in t.bounds:
        e = edge(conn, t, bound)
        if e is None:
            continue
        op, widen, infinite = ((">=", "-", "'-infinity'") if bound.kind == "until"
                               else ("<=", "+", "'infinity'"))
        limit = as_value(e, f"{e.inverse.format(clock)} {widen} ({e.slack})")
        parts.append(f"{e.value(q(t.ref))} {op} {e.opened(limit, (limit,), infinite)}")
    return f"({' AND '.join(parts)})" if parts else None


def _index_name(t: Any, column: str) -> str:
    stem = f"{INDEX_PREFIX}{t.name}__{column}"
    if len(stem) <= 63:
        return stem
    digest = hashlib.sha256(stem.encode()).hexdigest()[:8]
    return f"{stem[:54]}_{digest}"


def expiry_indexes(conn: psycopg.Connection, t: Any, edges: list[Edge]) -> list[str]:
    """Make sure each bound's indexed value leads a B-tree index of the timed table (created
    when none does: a column's existing index is used); return the qualified names of the
    engine's own ones this view relies on."""
    mine = []
    rel = sql.Identifier(t.schema, t.name).as_string(None)
    for column in sorted({e.column for e in edges if e.zone is None}):
        found = conn.execute(
            "select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid "
            "join pg_am a on a.oid = c.relam join pg_attribute t on t.attrelid = i.indrelid "
            "and t.attnum = i.indkey[0] where i.indrelid = %s::regclass and t.attname = %s "
            "and a.amname = 'btree' and i.indpred is null and i.indexprs is null "
            "order by starts_with(c.relname, %s) limit 1",
            (rel, column, INDEX_PREFIX)).fetchone()
        name = found[0] if found else _index_name(t, column)
        if found is None:
            conn.execute(sql.SQL("create index {} on {} ({})").format(
                sql.Identifier(name), sql.Identifier(t.schema, t.name), sql.Identifier(column)))
        if name.startswith(INDEX_PREFIX):
            mine.append(sql.Identifier(t.schema, name).as_string(None))
    for value in sorted({e.value(None) for e in edges if e.zone is not None}):
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        column = next(e.column for e in edges if e.zone is not None and e.value(None) == value)
        name = _index_name(t, f"{column}__tz_{digest}")
        if conn.execute("select to_regclass(%s)", (sql.Identifier(t.schema, name).as_string(
                None),)).fetchone()[0] is None:
            conn.execute(sql.SQL("create index {} on {} (({}))").format(
                sql.Identifier(name), sql.Identifier(t.schema, t.name), sql.SQL(value)))
        mine.append(sql.Identifier(t.schema, name).as_string(None))
    return mine
