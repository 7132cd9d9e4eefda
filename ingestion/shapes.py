"""The replicated tables of a source as contracts see them (for ``tidemark contracts init``)."""

from __future__ import annotations

import psycopg

from contracts.scaffold import ColumnShape, TableShape
from ingestion.catalog import key_columns
from ingestion.names import landing_table_name
from ingestion.publication import Selection, selected_tables


def table_shapes(conn: psycopg.Connection, selection: Selection
                 ) -> tuple[list[TableShape], list[tuple[str, str]]]:
    """Shapes of the publishable tables a selection covers, and the tables left out (why).

    Args:
        conn: a source connection.
        selection: the source's schemas or tables.
    """
    tables, missing = selected_tables(conn, selection)
    shapes: list[TableShape] = []
    skipped = [(name, "does not exist") for name in missing]
    for table in tables:
        if not table.publishable:
            skipped.append((table.qualified, "not replicated: " + table.advice()))
            continue
        columns = tuple(ColumnShape(r[0], r[1], r[2]) for r in conn.execute(
            "select attname, format_type(atttypid, atttypmod), attnotnull from pg_attribute"
            " where attrelid = %s and attnum > 0 and not attisdropped order by attnum",
            (table.oid,)))
        shapes.append(TableShape(table.qualified, landing_table_name(table.schema, table.name),
                                 columns, tuple(key_columns(conn, table.oid))))
    return shapes, skipped
