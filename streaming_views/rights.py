"""The rights a deploying role needs on a view's base tables, checked before a deploy.

The embedded engine reads each base table and maintains the view with triggers on it; at
deploy it fires those triggers once with no rows (``delete``/``insert``/``update ... where
false``) and locks the table. So the deploying role must own each base table or hold
``SELECT, INSERT, UPDATE, DELETE, TRIGGER`` on it and ``USAGE`` on its schema. The landing
mirror (``<source>.<table>``) is owned by the landing's owner role (``tidemark_app`` on the
embedded server); a table of the user's own (e.g. in ``public``, created as a superuser) is
not, and PostgreSQL's bare "permission denied for table x" named neither the view nor a way
forward. :func:`check_rights` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from streaming_views.errors import DeployError

TABLE_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRIGGER")


@dataclass(frozen=True)
class Missing:
    """What the current role lacks on one base table.

    Attributes:
        schema: the table's schema.
        table: the table's name.
        schema_usage: True when ``USAGE`` on the schema is missing.
        rights: the table rights (of :data:`TABLE_RIGHTS`) missing, in that order.
    """

    schema: str
    table: str
    schema_usage: bool
    rights: tuple[str, ...]

    def qualified(self) -> str:
        """The table's name, quoted as SQL needs it."""
        return sql.Identifier(self.schema, self.table).as_string(None)


def missing_rights(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> list[Missing]:
    """The base tables (``(schema, name)``) the current role may not deploy a view over.

    A table that does not exist is left out (the view's probe reports it); so is one the role
    owns or may use fully. Reads only the catalogs, which every role may read.
    """
    out = []
    for schema, name in sorted(set(tables)):
        row = conn.execute(
            "select not has_schema_privilege(n.oid, 'USAGE'), "
            "array(select p from unnest(%s::text[]) with ordinality as r(p, i) "
            "      where not has_table_privilege(c.oid, p) order by i) "
            "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = %s and c.relname = %s",
            (list(TABLE_RIGHTS), schema, name)).fetchone()
        if row is not None and (row[0] or row[1]):
            out.append(Missing(schema, name, bool(row[0]), tuple(row[1])))
    return out


def check_rights(conn: psycopg.Connection, view: str, path: str,
                 tables: list[tuple[str, str]]) -> None:
    """Refuse to deploy ``live.<view>`` (file ``path``) over ``tables`` the current role may
    not use, saying which rights are missing where and the statements that grant them.

    Raises:
        DeployError: a base table lacks a right (or its schema ``USAGE``).
    """
    missing = missing_rights(conn, tables)
    if not missing:
        return
    role = conn.execute("select current_user").fetchone()[0]  # type: ignore[index]
    grantee = sql.Identifier(role).as_string(None)
    lacks, grants = [], []
    for m in missing:
        what = []
        if m.schema_usage:
            what.append(f"USAGE on schema {sql.Identifier(m.schema).as_string(None)}")
            grants.append(f"grant usage on schema {sql.Identifier(m.schema).as_string(None)} "
                          f"to {grantee};")
        if m.rights:
            what.append(f"{', '.join(m.rights)} on {m.qualified()}")
            grants.append(f"grant {', '.join(TABLE_RIGHTS).lower()} on {m.qualified()} "
                          f"to {grantee};")
        lacks.append(" and ".join(what))
    raise DeployError(
        f"{path}: cannot deploy live.{view}: role {role} lacks {'; '.join(lacks)}. The engine "
        f"reads each base table and maintains the view with triggers on it (its write rights "
        f"only fire those triggers once with no rows at deploy), so the deploying role must "
        f"own the table or hold SELECT, INSERT, UPDATE, DELETE and TRIGGER on it. The landing "
        f"mirror (<source>.<table>) is the landing owner's (tidemark_app on the embedded "
        f"server); for a table of your own, run as its owner or a superuser (`tidemark db "
        f"psql`): {' '.join(grants)} Then deploy again.")
