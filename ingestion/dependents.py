"""Objects built on a landing table that stop it changing shape, and how to clear them.

A view (a dbt staging model, a person's own view) that reads a mirror column forbids dropping or
retyping that column. The error PostgreSQL raises names the first such view only; a person needs
every one of them, the exact statement that removes each, and where to run it.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

_DEPENDENT_VIEWS = """
with recursive dep(oid, depth) as (
    select r.ev_class, 1
    from pg_depend d
    join pg_rewrite r on r.oid = d.objid
    where d.classid = 'pg_rewrite'::regclass and d.refclassid = 'pg_class'::regclass
      and d.refobjid = %(table)s::regclass and r.ev_class <> d.refobjid
      and (%(columns)s::text[] is null or d.refobjsubid in (
          select attnum from pg_attribute
          where attrelid = %(table)s::regclass and attname = any(%(columns)s::text[])))
    union
    select r.ev_class, dep.depth + 1
    from dep
    join pg_depend d on d.refobjid = dep.oid and d.refclassid = 'pg_class'::regclass
    join pg_rewrite r on r.oid = d.objid and d.classid = 'pg_rewrite'::regclass
    where r.ev_class <> dep.oid
)
select c.relkind, n.nspname, c.relname
from dep
join pg_class c on c.oid = dep.oid
join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('v', 'm')
group by c.relkind, n.nspname, c.relname
order by max(dep.depth) desc, n.nspname, c.relname
"""


def drop_statements(conn: psycopg.Connection, table: sql.Identifier,
                    columns: list[str] | None = None) -> list[str]:
    """The statements that drop every view (and materialized view) reading ``table``.

    Views reading those views come first, so the statements run in the order given.

    Args:
        conn: a connection to the landing database.
        table: the landing table (schema-qualified identifier).
        columns: only views reading these columns (and the views over them); None: any column.

    Returns:
        One ``drop view "schema"."name";`` (or ``drop materialized view``) per object; empty
        when no view reads the table.
    """
    rows = conn.execute(_DEPENDENT_VIEWS, {"table": table.as_string(conn),
                                           "columns": columns}).fetchall()
    kinds = {"v": "drop view", "m": "drop materialized view"}
    return [f"{kinds[kind]} {sql.Identifier(schema, name).as_string(conn)};"
            for kind, schema, name in rows]


def drop_advice(statements: list[str]) -> str:
    """Tell a person how to run ``statements`` (from :func:`drop_statements`) on landing.

    Args:
        statements: drop statements, in order; not empty.

    Returns:
        A sentence naming the statements and the command that opens landing as superuser.
    """
    listing = "\n".join(f"    {s}" for s in statements)
    which = "it" if len(statements) == 1 else "them in this order"
    return (f"Drop {which} on the landing database as superuser (`tidemark db psql` opens "
            f"it):\n{listing}\n")
