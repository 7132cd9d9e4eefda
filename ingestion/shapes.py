"""The replicated tables of a source as contracts see them (for ``tidemark contracts init``)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from contracts.scaffold import ColumnShape, TableShape, contract_type
from ingestion.catalog import key_columns, sends_generated
from ingestion.names import landing_table_name
from ingestion.publication import Selection, selected_tables

_NUMBER_SPECIALS = ("{} :: text in ('NaN', 'Infinity', '-Infinity')", "NaN or infinite numbers")
_SPECIALS: dict[str, tuple[str, str]] = {
    # Values PostgreSQL stores in a column of the contract type that its validator refuses
    # (contracts.pgtypes: finite numbers, ISO dates and timestamps of the years 1 to 9999).
    "numeric": _NUMBER_SPECIALS,
    "real": _NUMBER_SPECIALS,
    "double precision": _NUMBER_SPECIALS,
    "date": ("not isfinite({0}) or {0} < date '0001-01-01' or {0} > date '9999-12-31'",
             "infinite dates or dates outside the years 1 to 9999"),
    "timestamptz": ("not isfinite({0}) or {0} < timestamptz '0001-01-02 00:00:00+00'"
                    " or {0} > timestamptz '9999-12-30 00:00:00+00'",
                    "infinite timestamps or timestamps outside the years 1 to 9999"),
}


def _refused_check(column: str, type_sql: str) -> tuple[sql.Composable, str] | None:
    """A condition true for a value of ``column`` its scaffolded contract type would refuse,
    and what such values are; None when the type accepts every value the column can hold."""
    ctype, exact = contract_type(type_sql)
    if not exact:
        return None
    element = ctype.removesuffix("[]")
    special = _SPECIALS.get("numeric" if element.startswith("numeric") else element)
    if not ctype.endswith("[]"):
        if special is None:
            return None
        return sql.SQL(special[0]).format(sql.Identifier(column)), special[1]
    what = "NULL elements or arrays of more than one dimension"
    inner = sql.SQL("e is null")
    if special is not None:
        inner = sql.SQL("{} or {}").format(inner, sql.SQL(special[0]).format(sql.SQL("e")))
        what += f" ({special[1]} among the elements)"
    return sql.SQL("array_ndims({0}) > 1 or exists (select from unnest({0}) as e where {1})"
                   ).format(sql.Identifier(column), inner), what


def _refused(conn: psycopg.Connection, schema: str, table: str,
             columns: list[tuple[str, str, bool]]) -> dict[str, str]:
    """Per column, the kinds of values the table holds now that its contract type would refuse
    (one scan of the table, only when a column's type has such values)."""
    checks = [(name, check) for name, type_sql, _ in columns
              if (check := _refused_check(name, type_sql)) is not None]
    if not checks:
        return {}
    row = conn.execute(sql.SQL("select {} from {}").format(
        sql.SQL(", ").join(sql.SQL("coalesce(bool_or({}), false)").format(c[0])
                           for _, c in checks),
        sql.Identifier(schema, table))).fetchone()
    return {name: check[1] for (name, check), found in zip(checks, row, strict=True) if found}


def table_shapes(conn: psycopg.Connection, selection: Selection, publication: str | None = None
                 ) -> tuple[list[TableShape], list[tuple[str, str]]]:
    """Shapes of the publishable tables a selection covers, and the tables left out (why).

    Args:
        conn: a source connection.
        selection: the source's schemas or tables.
        publication: the source's publication: of two tables with one landing name, the one it
            lists is the one that lands (and gets the contract), as in ingestion; and whether
            stored generated columns land (:func:`~ingestion.catalog.sends_generated`: on 12
            to 17 they never do, and a contract requiring one dead-lettered every change).
    """
    published = [r[0] for r in conn.execute(
        "select pr.prrelid::int from pg_publication_rel pr join pg_publication p"
        " on p.oid = pr.prpubid where p.pubname = %s", (publication,))] if publication else []
    tables, missing = selected_tables(conn, selection, keep=published)
    generated = sends_generated(conn, publication)
    shapes: list[TableShape] = []
    skipped = [(name, "does not exist") for name in missing]
    for table in tables:
        if not table.publishable:
            skipped.append((table.qualified, "not replicated: " + table.advice()))
            continue
        rows = conn.execute(  # the columns that land: no generated one the stream never sends;
            # a domain as its base type, NOT NULL when the domain is (`qty` over integer)
            "select a.attname, case when t.typtype = 'd' then format_type(t.typbasetype,"
            " t.typtypmod) else format_type(a.atttypid, a.atttypmod) end, a.attnotnull or"
            " (t.typtype = 'd' and t.typnotnull) from pg_attribute a join pg_type t on t.oid ="
            " a.atttypid where a.attrelid = %s and a.attnum > 0 and not a.attisdropped"
            " and (a.attgenerated = '' or %s) order by a.attnum",
            (table.oid, generated)).fetchall()
        refused = _refused(conn, table.schema, table.name, rows)
        columns = tuple(ColumnShape(r[0], r[1], r[2], refused.get(r[0], "")) for r in rows)
        shapes.append(TableShape(table.qualified, landing_table_name(table.schema, table.name),
                                 columns, tuple(key_columns(conn, table.oid))))
    return shapes, skipped
