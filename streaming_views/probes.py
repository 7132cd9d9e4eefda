"""Temporary probe views: how PostgreSQL itself resolves a SELECT.

A probe is the SELECT created as a temporary view (``pg_temp."tidemark_probe"``) inside a
savepoint and dropped at once: its columns give the output types and collations, and its stored
rewrite tree (``pg_rewrite.ev_action``, parsed by :mod:`streaming_views.nodetree`) tells which
columns and functions the query reads. PostgreSQL's error, if it rejects the query, is reported
at the view file's ``line:column``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from streaming_views import nodetree
from streaming_views.astutil import line_col
from streaming_views.errors import ViewDefinitionError

PROBE = "tidemark_probe"
PROBE_PREFIX = f'create temp view "{PROBE}" as '


@dataclass(frozen=True)
class Typed:
    """A column of a probe: name, SQL type, collation (SQL name, or None) and its OID."""

    name: str
    type: str
    collation: str | None = None
    collation_oid: int = 0

    @property
    def collate(self) -> str:
        """`` COLLATE <collation>`` for DDL, or ``""``."""
        return f" COLLATE {self.collation}" if self.collation else ""


def _error(view_text: str | None, path: str, exc: psycopg.Error, prefix: str) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    position = getattr(exc.diag, "statement_position", None)
    if view_text is not None and position:
        chars = int(position) - 1 - len(prefix)
        if 0 <= chars <= len(view_text):
            line, col = line_col(view_text, len(view_text[:chars].encode("utf-8")))
            return f"{path}:{line}:{col}: {message}"
    return f"{path}: {message}"


def describe(conn: psycopg.Connection, select_text: str, *, path: str = "<view>",
             view_text: str | None = None) -> list[Typed]:
    """Return the columns of a SELECT as PostgreSQL resolves them (types and collations).

    Args:
        conn: a connection inside a transaction.
        select_text: the SELECT.
        path: the view file, for messages.
        view_text: when ``select_text`` is the view file's text: error positions become
            ``path:line:column``.

    Raises:
        ViewDefinitionError: PostgreSQL rejects the query.
    """
    return run_probe(conn, select_text, path=path, view_text=view_text)[0]


def run_probe(conn: psycopg.Connection, select_text: str, *, path: str = "<view>",
           view_text: str | None = None, tree: bool = False) -> tuple[list[Typed], Any]:
    statement = PROBE_PREFIX + select_text
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(statement)  # type: ignore[arg-type]
            rows = cur.execute(
                "select a.attname, format_type(a.atttypid, a.atttypmod), a.attcollation, "
                "case when a.attcollation <> 0 then quote_ident(n.nspname) || '.' || "
                "quote_ident(c.collname) end from pg_attribute a "
                "left join pg_collation c on c.oid = a.attcollation "
                "left join pg_namespace n on n.oid = c.collnamespace "
                "where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped "
                "order by a.attnum", (f'pg_temp."{PROBE}"',)).fetchall()
            parsed = None
            if tree:
                text = cur.execute("select ev_action::text from pg_rewrite where ev_class = "
                                   "%s::regclass", (f'pg_temp."{PROBE}"',)).fetchone()[0]
                parsed = nodetree.parse(text)
            cur.execute(f'drop view pg_temp."{PROBE}"')  # type: ignore[arg-type]
    except psycopg.errors.UndefinedTable as exc:
        raise ViewDefinitionError(
            f"{_error(view_text, path, exc, PROBE_PREFIX)}\nThe view's base tables must exist "
            "in this database first (for the landing mirror: start ingestion, e.g. 'tidemark "
            "ingest run').") from None
    except psycopg.Error as exc:
        raise ViewDefinitionError(_error(view_text, path, exc, PROBE_PREFIX)) from None
    return [Typed(str(n), str(t), c, int(o)) for n, t, o, c in rows], parsed



def result_columns(conn: psycopg.Connection, select_text: str) -> list[tuple[str, str]] | None:
    """(name, type name) of each column a SELECT returns, as a query (not a view: duplicate
    names and record columns are allowed there); None when PostgreSQL rejects the query (the
    probe then reports why)."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            query = f"select * from ({select_text}\n) as q limit 0"  # noqa: S608 -- the view's
            cur.execute(query)  # type: ignore[arg-type]  # own SELECT, as the probes run it
            oids = [c.type_code for c in cur.description or ()]
            names = [c.name for c in cur.description or ()]
            kinds = dict(cur.execute("select oid::int, case when typtype = 'p' then typname end"
                                     " from pg_type where oid = any(%s)", (oids,)).fetchall())
    except psycopg.Error:
        return None
    return [(n, kinds.get(o) or "") for n, o in zip(names, oids, strict=True)]
