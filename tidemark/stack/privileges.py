"""Least privilege on the landing database: dbt's own role, and what readers may not see.

* ``tidemark_dbt`` owns the schemas dbt writes (:data:`DBT_SCHEMAS`), reads what a reader reads
  (it is a member of ``tidemark_reader``: the sources' mirrors, landing), may create temporary
  tables, and nothing else: it cannot read Tidemark's internal tables nor create anywhere but
  in its own schemas. :func:`grant_dbt` hands existing dbt schemas and relations over from
  ``tidemark_app`` (a stack started by an earlier version, where dbt built as that role).
* Readers (``tidemark_reader``) read only ``tidemark.views`` and ``tidemark.live_changes`` of
  the internal ``tidemark`` schema and nothing of the engine's ``tidemark_state``;
  :func:`keep_private` takes back what earlier versions granted and installs the event trigger
  ``tidemark_keep_private``, which revokes the reader's rights on every relation created in
  those schemas later (the stack's default privileges grant SELECT on every new table, and
  PostgreSQL cannot take a global default privilege back for one schema).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tidemark.settings import APP_ROLE, DBT_ROLE, READER_ROLE

DBT_SCHEMAS = ("staging", "intermediate", "marts")
"""The schemas ``dbt_project`` builds into (``macros/generate_schema_name.sql``)."""

PRIVATE_SCHEMAS = ("tidemark", "tidemark_state")
"""Schemas of Tidemark's internal state, closed to readers but for :data:`READER_TABLES`."""

READER_TABLES = ("tidemark.views", "tidemark.live_changes")
"""The internal relations readers may read: the live views' catalog and ``live_changes`` (per
view ``seq``, the commits numbered while someone subscribes, and ``changed_at``, sampled: see
:mod:`streaming_views.changes`). Not the views' locks (advisory locks since engine 26) nor
``tidemark.live_samples`` (the sampler's bookkeeping)."""

# Server-side, so each name is quoted by PostgreSQL itself (%I, regclass, regprocedure). Event
# trigger functions stay their owner's (the superuser's: event triggers need one).
_HAND_OVER = """
do $hand_over$
declare
    item record;
    new_owner constant text := {role};
    schemas constant text[] := {schemas};
begin
    for item in select n.nspname from pg_namespace n join pg_roles r on r.oid = n.nspowner
                where {taken} and n.nspname = any (schemas) loop
        execute format('alter schema %I owner to %I', item.nspname, new_owner);
    end loop;
    for item in select c.oid::regclass as rel, c.relkind from pg_class c
                join pg_namespace n on n.oid = c.relnamespace
                join pg_roles r on r.oid = c.relowner
                where {taken} and n.nspname = any (schemas)
                  and c.relkind in ('r', 'p', 'v', 'm', 'f')
                order by c.relkind loop
        execute format('alter %s %s owner to %I', case item.relkind
            when 'v' then 'view' when 'm' then 'materialized view'
            when 'f' then 'foreign table' else 'table' end, item.rel, new_owner);
    end loop;
    for item in select c.oid::regclass as rel from pg_class c
                join pg_namespace n on n.oid = c.relnamespace
                join pg_roles r on r.oid = c.relowner
                where {taken} and n.nspname = any (schemas) and c.relkind = 'S'
                  and not exists (select from pg_depend d where d.classid = 'pg_class'::regclass
                                  and d.objid = c.oid and d.deptype in ('a', 'i')) loop
        execute format('alter sequence %s owner to %I', item.rel, new_owner);
    end loop;
    for item in select p.oid::regprocedure as fn from pg_proc p
                join pg_namespace n on n.oid = p.pronamespace
                join pg_roles r on r.oid = p.proowner
                where {taken} and n.nspname = any (schemas)
                  and not exists (select from pg_event_trigger e where e.evtfoid = p.oid) loop
        execute format('alter routine %s owner to %I', item.fn, new_owner);
    end loop;
    for item in select t.oid::regtype as typ from pg_type t
                join pg_namespace n on n.oid = t.typnamespace
                join pg_roles r on r.oid = t.typowner
                where {taken} and n.nspname = any (schemas) and t.typtype in ('c', 'd', 'e', 'r')
                  and (t.typrelid = 0 or exists (select from pg_class c where c.oid = t.typrelid
                                                 and c.relkind = 'c')) loop
        execute format('alter type %s owner to %I', item.typ, new_owner);
    end loop;
end
$hand_over$"""


_KEEP_PRIVATE_FUNCTION = """
create or replace function tidemark.keep_private() returns event_trigger
language plpgsql security definer set search_path = pg_catalog as $f$
declare
  item record;
begin
  for item in select distinct c.oid::regclass as rel from pg_event_trigger_ddl_commands() d
              join pg_class c on c.oid = d.objid
              join pg_namespace n on n.oid = c.relnamespace
              where d.classid = 'pg_class'::regclass and n.nspname = any ({schemas})
                and c.relkind in ('r', 'p', 'v', 'm', 'f')
                and c.oid::regclass::text <> all ({public}) loop
    execute format('revoke all on %s from %I', item.rel, {reader});
  end loop;
  if exists (select from pg_event_trigger_ddl_commands() d
             where d.classid = 'pg_namespace'::regclass and d.object_identity = 'tidemark_state')
  then
    execute format('revoke usage on schema tidemark_state from %I', {reader});
  end if;
exception when others then
  raise warning 'tidemark: keeping % private from readers failed: %', tg_tag, sqlerrm;
end $f$"""

_KEEP_PRIVATE_TAGS = ("CREATE SCHEMA", "CREATE TABLE", "CREATE TABLE AS", "SELECT INTO",
                      "CREATE VIEW", "CREATE MATERIALIZED VIEW", "CREATE FOREIGN TABLE",
                      "ALTER TABLE", "ALTER VIEW", "ALTER MATERIALIZED VIEW", "ALTER FOREIGN TABLE")
"""Commands that create a relation (or the engine's schema) or move one into a private schema
(``SET SCHEMA``)."""


def hand_over(conn: psycopg.Connection, role: str, schemas: tuple[str, ...],
              taken: sql.Composable) -> None:
    """Make ``role`` the owner of ``schemas`` and of the relations, sequences (but those owned
    by a column), routines (but event trigger functions) and types in them whose owner ``r``
    matches ``taken`` (a condition on ``pg_roles r``, e.g. ``r.rolsuper``).

    Args:
        conn: autocommit superuser connection to the landing database.
        role: the new owner.
        schemas: the schemas handed over, with what is in them.
        taken: which owners lose their objects.
    """
    conn.execute(sql.SQL(_HAND_OVER).format(role=sql.Literal(role), taken=taken,
                                            schemas=sql.Literal(list(schemas))))


def ensure_dbt_role(conn: psycopg.Connection) -> None:
    """Create ``tidemark_dbt`` (LOGIN, no other attribute) if it does not exist.

    Args:
        conn: autocommit superuser connection.
    """
    if not conn.execute("select 1 from pg_roles where rolname = %s", (DBT_ROLE,)).fetchone():
        conn.execute(sql.SQL("create role {} login nosuperuser nocreaterole nocreatedb "
                             "noreplication").format(sql.Identifier(DBT_ROLE)))


def grant_dbt(conn: psycopg.Connection) -> None:
    """Give ``tidemark_dbt`` the dbt schemas and nothing else (see the module docstring).

    Tables dbt builds are readable by readers and by ``tidemark_app`` (serving views and
    reconciliation read the marts).

    Args:
        conn: autocommit superuser connection to the landing database, after the dbt schemas
            and the roles exist.
    """
    dbt, app, reader = (sql.Identifier(r) for r in (DBT_ROLE, APP_ROLE, READER_ROLE))
    dbname = sql.Identifier(conn.info.dbname)
    conn.execute(sql.SQL("grant {} to {}").format(reader, dbt))
    conn.execute(sql.SQL("revoke create on database {} from {}").format(dbname, dbt))
    conn.execute(sql.SQL("grant connect, temporary on database {} to {}").format(dbname, dbt))
    hand_over(conn, DBT_ROLE, DBT_SCHEMAS, sql.SQL("r.rolname <> {}").format(
        sql.Literal(DBT_ROLE)))
    schemas = sql.SQL(", ").join(sql.Identifier(s) for s in DBT_SCHEMAS)
    conn.execute(sql.SQL("grant usage on schema {} to {}, {}").format(schemas, app, reader))
    conn.execute(sql.SQL("grant select on all tables in schema {} to {}, {}").format(
        schemas, app, reader))
    conn.execute(sql.SQL("alter default privileges for role {} grant select on tables "
                         "to {}, {}").format(dbt, app, reader))


def keep_private(conn: psycopg.Connection) -> None:
    """Close Tidemark's internal schemas to readers, now and for relations created later.

    Args:
        conn: autocommit superuser connection to the landing database (event triggers need a
            superuser), after the ``tidemark`` schema exists.
    """
    reader = sql.Identifier(READER_ROLE)
    for schema in PRIVATE_SCHEMAS:
        if conn.execute("select 1 from pg_namespace where nspname = %s", (schema,)).fetchone():
            conn.execute(sql.SQL("revoke all on all tables in schema {} from {}").format(
                sql.Identifier(schema), reader))
    if conn.execute("select 1 from pg_namespace where nspname = 'tidemark_state'").fetchone():
        conn.execute(sql.SQL("revoke usage on schema tidemark_state from {}").format(reader))
    for table in READER_TABLES:
        if conn.execute("select to_regclass(%s)", (table,)).fetchone()[0] is not None:
            conn.execute(sql.SQL("grant select on {} to {}").format(
                sql.Identifier(*table.split(".")), reader))
    conn.execute(sql.SQL(_KEEP_PRIVATE_FUNCTION).format(
        schemas=sql.Literal(list(PRIVATE_SCHEMAS)), public=sql.Literal(list(READER_TABLES)),
        reader=sql.Literal(READER_ROLE)))
    conn.execute("revoke all on function tidemark.keep_private() from public")
    row = conn.execute("select evttags from pg_event_trigger "
                       "where evtname = 'tidemark_keep_private'").fetchone()
    if row is not None and sorted(row[0] or ()) == sorted(_KEEP_PRIVATE_TAGS):
        return
    conn.execute("drop event trigger if exists tidemark_keep_private")
    conn.execute(sql.SQL("create event trigger tidemark_keep_private on ddl_command_end "
                         "when tag in ({}) execute function tidemark.keep_private()").format(
        sql.SQL(", ").join(sql.Literal(t) for t in _KEEP_PRIVATE_TAGS)))
