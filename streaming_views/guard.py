# ruff: noqa: S608 -- fixed SQL of the engine's own event trigger functions; no user input.
"""The DDL guard: event triggers that keep live views honest when their base tables change.

Installed by a superuser (event triggers need one): ``tidemark views deploy`` installs it when
it runs as one, the one-machine stack installs it when it creates the landing database
(:func:`install_guard`). After any DDL statement it finds the live views whose base tables —
or their partitions and inheritance children — the statement touched, and:

* a partition created or attached, or a child added, gets the view's triggers; one detached
  loses them; when rows came or went with it, the view is rebuilt when the transaction commits;
* a base table rewritten by ALTER TABLE (a stored generated column's ``SET EXPRESSION``, ``ALTER
  COLUMN ... TYPE ... USING``), whose rows changed without firing a trigger, is rebuilt when
  the transaction commits, unless the change breaks the view (below);
* anything else that stops the view following its tables — a base table dropped, renamed or
  moved to another schema, a column the view reads renamed, dropped or retyped, its triggers
  dropped — marks the view broken: its maintenance functions and triggers are dropped (so
  writes to the table never fail because of the view), the catalog says why, and reading
  ``live.<name>`` raises an error naming the view, the cause and ``tidemark views deploy``,
  which rebuilds it (after the view's file is fixed, if it must be).

The guard never makes the DDL fail: an error inside it becomes a WARNING, and ``deploy``,
``verify`` and ``list`` check the same things (``tidemark.live_problem``) without it.
"""

from __future__ import annotations

import psycopg

from streaming_views.runtime import GUARD_OFF
from streaming_views.session import set_clauses

DEPLOYING = GUARD_OFF
REWRITTEN = "tidemark.live_rewritten"  # the tables ALTER rewrote in this transaction: ' oid '
# Nothing to do before the first deploy, nor for the engine's own DDL.
SKIP = f"""  if to_regclass('tidemark.views') is null
     or coalesce(current_setting('{DEPLOYING}', true), '') = 'on' then
    return;
  end if;"""

def _event_function(name: str, declare: str, body: str) -> str:
    """An event trigger function that skips the engine's own DDL and never fails the DDL."""
    return f"""create or replace function tidemark.{name}() returns event_trigger
    language plpgsql security definer {set_clauses()} as $f$
declare {declare}
begin
{SKIP}
  begin
{body}
  exception when others then
    raise warning 'tidemark: checking live views after % failed: %', tg_tag, sqlerrm;
  end;
end $f$"""


GUARD_DDL = [
    _event_function("live_ddl_end", "v record; v_problem text;", f"""
    for v in
      with recursive touched(oid) as (
        select objid from pg_event_trigger_ddl_commands()
          where classid = 'pg_class'::regclass
        union select i.inhparent from pg_inherits i join touched t on t.oid = i.inhrelid)
      select distinct w.name, w.suffix, exists (
          select 1 from unnest(w.base_oids) b, tidemark.live_family(b) f
          where strpos(coalesce(current_setting('{REWRITTEN}', true), ''),
                       ' ' || f::oid || ' ') > 0) as rewritten
        from tidemark.views w join touched t on t.oid = any(w.base_oids)
        where w.target = 'embedded' and w.status = 'ok' order by 1
    loop
      perform tidemark.live_sync(v.name);
      v_problem := tidemark.live_problem(v.name, false);
      if v_problem is not null then
        perform tidemark.live_break(v.name, v_problem);
      elsif v.rewritten then  -- values changed with no trigger (SET EXPRESSION, TYPE ... USING)
        perform tidemark.live_rebuild_at_commit(v.suffix, v.name);
      end if;
    end loop;"""),
    _event_function("live_table_rewrite", "", f"""
    perform set_config('{REWRITTEN}', coalesce(current_setting('{REWRITTEN}', true), '')
                       || ' ' || pg_event_trigger_table_rewrite_oid() || ' ', true);"""),
    _event_function("live_sql_drop", "v record; v_problem text;", """
    for v in
      select w.name, w.suffix, bool_or(d.object_type = 'trigger') as triggers
        from tidemark.views w, pg_event_trigger_dropped_objects() d
        where w.target = 'embedded' and w.status = 'ok'
          and ((d.object_type in ('table', 'table column') and d.objid = any(w.base_oids))
               or (d.object_type in ('index', 'table constraint')  -- a key it relies on
                   and jsonb_path_exists(w.used_columns, '$[*][*].key'))
               or (d.object_type = 'trigger' and starts_with(
                     d.address_names[array_length(d.address_names, 1)],
                     'tm_' || w.suffix || '_')))
        group by w.name, w.suffix order by 1
    loop
      v_problem := tidemark.live_problem(v.name, false);
      if v_problem is not null then
        perform tidemark.live_break(v.name, v_problem);
      elsif v.triggers then  -- a partition or child table was dropped: its rows left the view
        perform tidemark.live_rebuild_at_commit(v.suffix, v.name);
      end if;
    end loop;"""),
    """do $f$ begin
  if not exists (select 1 from pg_event_trigger where evtname = 'tidemark_live_ddl_end') then
    create event trigger tidemark_live_ddl_end on ddl_command_end
      execute function tidemark.live_ddl_end();
  end if;
  if not exists (select 1 from pg_event_trigger where evtname = 'tidemark_live_sql_drop') then
    create event trigger tidemark_live_sql_drop on sql_drop
      execute function tidemark.live_sql_drop();
  end if;
  if not exists (select 1 from pg_event_trigger where evtname = 'tidemark_live_rewrite') then
    create event trigger tidemark_live_rewrite on table_rewrite
      execute function tidemark.live_table_rewrite();
  end if;
end $f$""",
]


def can_install(conn: psycopg.Connection) -> bool:
    """True when the connected role may create event triggers (a superuser)."""
    row = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
    return bool(row and row[0])


def installed(conn: psycopg.Connection) -> bool:
    """True when the event triggers of the guard exist and are enabled."""
    row = conn.execute("select count(*) from pg_event_trigger where evtname in "
                       "('tidemark_live_ddl_end', 'tidemark_live_sql_drop', "
                       "'tidemark_live_rewrite') and evtenabled <> 'D'").fetchone()
    return bool(row and row[0] == 3)


def install_guard(conn: psycopg.Connection) -> None:
    """Create (or update) the guard's functions and event triggers; needs a superuser.

    The functions it calls (``tidemark.live_*``) are created by the first deploy; until then the
    guard does nothing. Processes starting together (``tidemark up`` starts ingestion and the
    view ticker at once) take turns: concurrent ``create or replace`` of one function fails with
    "tuple concurrently updated", so the installation holds a transaction-level advisory lock.
    """
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext('tidemark.live_guard'))")
        cur.execute("create schema if not exists tidemark")
        for stmt in GUARD_DDL:
            cur.execute(stmt)  # type: ignore[arg-type]


def install_guard_at(dsn: str) -> None:
    """Install the guard in the database at ``dsn`` (a superuser connection)."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        install_guard(conn)
