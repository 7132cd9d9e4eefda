# ruff: noqa: S608 -- fixed SQL of the engine's own functions; no user input is interpolated.
"""Objects the embedded engine keeps in the ``tidemark`` schema, shared by every view.

* ``tidemark.live_changes`` — one row per view: ``seq`` (the view's commits while someone
  subscribes, :mod:`streaming_views.sublog`) and ``changed_at`` (:mod:`streaming_views.changes`).
  It is no longer the view's lock (engine 26): that is a transaction-level advisory lock
  (:mod:`streaming_views.lockorder`); every transaction that changed a view's base tables takes
  it at commit, before it applies its changes, so commits of one view are applied one after the
  other (each seeing the others), and a transaction that changed several views takes their
  locks in key order first: no deadlock between writers, whatever order they wrote their tables
  in. A REPEATABLE READ writer whose snapshot predates another commit of the view gets a
  serialization failure instead of a wrong view (the view's holder sequence). ``views
  subscribe`` polls ``seq`` (maintenance sends no NOTIFY, so PREPARE TRANSACTION works).
* transaction-local settings ``tidemark.pending`` (the views and tables changed), ``.rebuild``
  and ``.big``, read by each view's commit-time ``apply`` (:mod:`streaming_views.triggers`).
* ``tidemark.live_attach_triggers`` — creates a view's statement-level triggers on a base table,
  partition or inheritance child (used by deploy and by the DDL guard).
* ``tidemark.live_problem`` — why a deployed view no longer follows its base tables (a table
  dropped or re-created, renamed, a column it reads renamed, dropped or retyped, triggers missing
  or disabled, a partition without triggers), or NULL.
* ``tidemark.live_sync`` / ``tidemark.live_break`` — what the DDL guard does (see
  :mod:`streaming_views.guard`): follow new and detached partitions; or mark a view broken.
"""

from __future__ import annotations

import hashlib
import time

import psycopg
from psycopg import sql

from streaming_views.changes import NOTE_CHANGES_DDL
from streaming_views.holders import SNAPSHOT_DDL
from streaming_views.lockorder import LOCK_TABLES_DDL, LOCK_VIEWS_DDL
from streaming_views.notnull import VALID_NOT_NULL
from streaming_views.readers import BREAK_READERS, INNER_PROBLEM, LIVE_READERS_DDL, NOTE_READERS
from streaming_views.session import set_clauses
from streaming_views.uniquekeys import UNIQUE_KEY_SQL

PENDING = "tidemark.pending"
REBUILD = "tidemark.rebuild"
BIG = "tidemark.big"
GUARD_OFF = "tidemark.deploying"  # set while the engine's own DDL runs: the guard stays out
# The healthy view p_name into v (else return), and the guard off for the DDL that follows.
OWN_DDL = f"""  select * into v from tidemark.views where name = p_name and target = 'embedded'
    and status = 'ok';
  if not found then return; end if;
  perform set_config('{GUARD_OFF}', 'on', true);  -- its own DDL is not the guard's business"""

# Every subscribed commit of a view updates its row (before engine 26 every commit did; a view
# without GROUP BY still updates its one state row at every commit, see state_ddl), a HOT
# update: a new version in the same page; and
# PostgreSQL prunes a page's dead versions only once its free space falls below the fillfactor's
# target (at least 10 % of the page): at 100 the view's row grew a chain of up to ~100 dead
# versions, which every apply's index lookup of the row walked (a chain 50 long on average).
# At 10 a page is pruned once it holds ~800 bytes, so the chain stays a few versions long:
# ivm_contention's transaction costs ~15k fewer instructions (bench/RESULTS.md, c34).
LOCK_ROW_FILLFACTOR = 10
RUNTIME_DDL = [
    """create table if not exists tidemark.live_changes (
        name text primary key, seq bigint not null default 0, changed_at timestamptz)""",
    # (also for a table created by an older runtime: no rewrite, a lock that applies pass)
    f"alter table tidemark.live_changes set (fillfactor = {LOCK_ROW_FILLFACTOR})",
    # engine 26: the state's write count last seen by tidemark.live_note_changes (changed_at);
    # a table of its own: ALTER TABLE live_changes would wait for readers idle in a transaction
    "create table if not exists tidemark.live_samples (name text primary key, writes bigint)",
    LOCK_VIEWS_DDL,
    NOTE_CHANGES_DDL,
    "revoke all on function tidemark.live_note_changes() from public",  # readers: read only
    f"""create or replace function tidemark.live_attach_triggers(p_suffix text, p_table int,
    p_rel regclass) returns void language plpgsql {set_clauses()} as $f$
declare v_tg text := 'tm_' || p_suffix || '_l' || p_table;
  v_fn text := p_suffix || '__l' || p_table;
begin
  execute format('create trigger %I after insert on %s referencing new table as __tm_new '
    'for each statement execute function %I.%I()', v_tg || '_ins', p_rel, 'tidemark_state',
    v_fn || '_ins');
  execute format('create trigger %I after update on %s referencing old table as __tm_old '
    'new table as __tm_new for each statement execute function %I.%I()', v_tg || '_upd', p_rel,
    'tidemark_state', v_fn || '_upd');
  execute format('create trigger %I after delete on %s referencing old table as __tm_old '
    'for each statement execute function %I.%I()', v_tg || '_del', p_rel, 'tidemark_state',
    v_fn || '_del');
  execute format('create trigger %I after truncate on %s for each statement execute '
    'function %I.%I()', v_tg || '_truncate', p_rel, 'tidemark_state', p_suffix || '__truncate');
end $f$""",
    f"""create or replace function tidemark.live_family(p_rel oid) returns setof oid
    language sql stable {set_clauses()} as $f$
  with recursive d(oid) as (select p_rel union select i.inhrelid from pg_inherits i
                            join d on i.inhparent = d.oid)
  select d.oid from d join pg_class c on c.oid = d.oid where c.relkind in ('r', 'p')
$f$""",
    LIVE_READERS_DDL,
    LOCK_TABLES_DDL,
    SNAPSHOT_DDL,
    f"""create or replace function tidemark.live_problem(p_name text, p_strict boolean default true)
    returns text language plpgsql stable {set_clauses()} as $f$
declare v record; v_oid oid; v_col jsonb; v_att record; v_rel oid; v_now text; v_j int;
  v_prefix text; v_iname text; v_iproblem text;
begin
  select * into v from tidemark.views where name = p_name and target = 'embedded';
  if not found then return null; end if;
  if v.status <> 'ok' then return coalesce(v.problem, v.status); end if;
  for v_j in 0 .. coalesce(array_length(v.base_tables, 1), 0) - 1 loop
    v_oid := v.base_oids[v_j + 1];
{INNER_PROBLEM}
    select n.nspname || '.' || c.relname into v_now from pg_class c
      join pg_namespace n on n.oid = c.relnamespace where c.oid = v_oid;
    if v_now is null then
      return format('base table %s was dropped or re-created: the view no longer follows '
                    'its writes', v.base_tables[v_j + 1]);
    elsif v_now <> v.base_tables[v_j + 1] then
      return format('base table %s was renamed to %s', v.base_tables[v_j + 1], v_now);
    end if;
    for v_col in select * from jsonb_array_elements(v.used_columns -> v_j) loop
      select attname, atttypid, atttypmod, attcollation, attisdropped into v_att
        from pg_attribute where attrelid = v_oid and attnum = (v_col ->> 'attnum')::int;
      if v_att is null or v_att.attisdropped then
        return format('column %s of %s was dropped', v_col ->> 'name', v_now);
      elsif v_att.attname <> v_col ->> 'name' then
        return format('column %s of %s was renamed to %s', v_col ->> 'name', v_now,
                      v_att.attname);
      elsif v_att.atttypid <> (v_col ->> 'type')::oid
            or v_att.atttypmod <> (v_col ->> 'typmod')::int
            or v_att.attcollation <> (v_col ->> 'collation')::oid then
        return format('column %s of %s changed its type or collation', v_att.attname, v_now);
      elsif (v_col ->> 'notnull')::boolean and not coalesce((select bool_and({VALID_NOT_NULL})
              from tidemark.live_family(v_oid) f join pg_attribute a on a.attrelid = f
              and a.attname = v_att.attname and not a.attisdropped), false) then
        return format('column %s of %s is no longer NOT NULL (the view relies on it: its '
                      'sums count no NULLs)', v_att.attname, v_now);
      elsif v_col ? 'key' and not ({UNIQUE_KEY_SQL}) then
        return format('column %s of %s is no longer in a unique key of it (the view relies on '
                      'one: each of its rows meets at most one row of %s)', v_att.attname,
                      v_now, v_now);
      end if;
    end loop;
    v_prefix := 'tm_' || v.suffix || '_l' || v_j || '_';
    for v_rel in select * from tidemark.live_family(v_oid) loop
      if (select count(*) from pg_trigger where tgrelid = v_rel
          and tgname like v_prefix || '%') < 4 then
        return format('the maintenance triggers of live view %s are missing on %s',
                      p_name, v_rel::regclass);
      elsif p_strict and exists (select 1 from pg_trigger where tgrelid = v_rel
            and tgname like v_prefix || '%' and tgenabled = 'D') then
        return format('the maintenance triggers of live view %s are disabled on %s',
                      p_name, v_rel::regclass);
      end if;
    end loop;
    for v_rel in select distinct tgrelid from pg_trigger where tgname like v_prefix || '%'
                 except select * from tidemark.live_family(v_oid) loop
      return format('%s left %s (detached or no longer a child): its rows left the view',
                    v_rel::regclass, v_now);
    end loop;
  end loop;
  return null;
end $f$""",
    f"""create or replace function tidemark.live_rebuild_at_commit(p_suffix text, p_name text)
    returns void language plpgsql {set_clauses()} as $f$
declare v_p text := coalesce(current_setting('{PENDING}', true), '');
  v_log text := format('%I.%I', 'tidemark_state', p_suffix || '__l0');
begin
  perform set_config('{REBUILD}', coalesce(current_setting('{REBUILD}', true), '')
                     || ' ' || p_name || ' ', true);
  if strpos(v_p, ' ' || p_name || '/') = 0 then  -- the marker that fires the view's apply
    perform set_config('{PENDING}', v_p || ' ' || p_name || '/0 ', true);
    if exists (select 1 from pg_attribute where attrelid = v_log::regclass
               and attname = '__tm_first' and not attisdropped) then
      execute format('insert into %s (__tm_tx, __tm_sign, __tm_first) '
                     'values (pg_current_xact_id(), 0, true)', v_log);
    else  -- the log of a view built by an engine before 7: its trigger fires on sign 0
      execute format('insert into %s (__tm_tx, __tm_sign) values (pg_current_xact_id(), 0)',
                     v_log);
    end if;
  end if;
{NOTE_READERS}
end $f$""",
    f"""create or replace function tidemark.live_sync(p_name text) returns void
    language plpgsql {set_clauses()} as $f$
declare v record; v_j int; v_rel oid; v_prefix text; v_rows boolean; v_rebuild boolean := false;
  v_flag text := coalesce(current_setting('{GUARD_OFF}', true), '');
begin
{OWN_DDL}
  for v_j in 0 .. coalesce(array_length(v.base_oids, 1), 0) - 1 loop
    continue when not exists (select 1 from pg_class where oid = v.base_oids[v_j + 1]);
    v_prefix := 'tm_' || v.suffix || '_l' || v_j || '_';
    for v_rel in select * from tidemark.live_family(v.base_oids[v_j + 1]) f
                 where not exists (select 1 from pg_trigger where tgrelid = f
                                   and tgname like v_prefix || '%') loop
      perform tidemark.live_attach_triggers(v.suffix, v_j, v_rel::regclass);
      execute format('select exists (select 1 from %s)', v_rel::regclass) into v_rows;
      v_rebuild := v_rebuild or v_rows;
    end loop;
    for v_rel in select distinct tgrelid from pg_trigger where tgname like v_prefix || '%'
                 except select * from tidemark.live_family(v.base_oids[v_j + 1]) loop
      execute format('drop trigger if exists %I on %s', v_prefix || 'ins', v_rel::regclass);
      execute format('drop trigger if exists %I on %s', v_prefix || 'upd', v_rel::regclass);
      execute format('drop trigger if exists %I on %s', v_prefix || 'del', v_rel::regclass);
      execute format('drop trigger if exists %I on %s', v_prefix || 'truncate',
                     v_rel::regclass);
      v_rebuild := true;
    end loop;
  end loop;
  if v_rebuild then
    perform tidemark.live_rebuild_at_commit(v.suffix, v.name);
  end if;
  perform set_config('{GUARD_OFF}', v_flag, true);
end $f$""",
    """create or replace function tidemark.live_view_broken(p_view text, p_reason text)
    returns boolean language plpgsql stable as $f$
begin
  raise exception 'live view % is broken: %', p_view, p_reason using errcode = '55000',
    hint = 'Fix the cause or the view''s file, then run ''tidemark views deploy'' to rebuild it.';
end $f$""",
    f"""create or replace function tidemark.live_break(p_name text, p_reason text) returns void
    language plpgsql {set_clauses()} as $f$
declare v record; v_fn text; v_def text; v_reader text;
  v_flag text := coalesce(current_setting('{GUARD_OFF}', true), '');
begin
{OWN_DDL}
  for v_fn in select p.oid::regprocedure::text from pg_proc p
              where p.pronamespace = 'tidemark_state'::regnamespace
                and starts_with(p.proname, v.suffix || '__') loop
    execute format('drop function %s cascade', v_fn);
  end loop;
  update tidemark.views set status = 'broken', problem = p_reason
    where name = p_name and target = 'embedded';
{BREAK_READERS}
  v_def := rtrim(pg_get_viewdef(format('%I.%I', 'live', p_name)::regclass), '; ' || chr(10));
  execute format('create or replace view %I.%I as select * from (%s) as v where '
                 'tidemark.live_view_broken(%L, %L)', 'live', p_name, v_def, p_name, p_reason);
  perform set_config('{GUARD_OFF}', v_flag, true);
  raise warning 'live view % is broken: %', p_name, p_reason
    using hint = 'Fix the cause or the view''s file, then run ''tidemark views deploy''.';
end $f$""",
]


VERSION = hashlib.sha256("\n".join(RUNTIME_DDL).encode()).hexdigest()[:16]
MARK = f"tidemark live runtime {VERSION}"
MARKED = "tidemark.live_attach_triggers(text, integer, regclass)"  # carries MARK


def ensure_runtime(conn: psycopg.Connection) -> None:
    """Create or update the shared runtime objects (inside the caller's transaction).

    Nothing is done when they are current (their version is in the commit hook's comment): a
    later deploy by another role than the one that created them does not need to own them.
    """
    row = conn.execute("select obj_description(to_regprocedure(%s), 'pg_proc')",
                       (MARKED,)).fetchone()
    if row and row[0] == MARK:
        return
    with conn.cursor() as cur:
        for stmt in RUNTIME_DDL:
            cur.execute(stmt)  # type: ignore[arg-type]
        cur.execute(sql.SQL("comment on function {} is {}").format(sql.SQL(MARKED),
                                                                    sql.Literal(MARK)))


# A table rewrite of the lock rows waits this long for its lock, then gives up (the next deploy
# tries again): writers queue behind the waiting rewrite for no longer than that.
REPACK_LOCK_TIMEOUT = "200ms"
REPACK_TRIES = 3
# The most rows one page of ``live_changes`` holds, and that number over the rows a page takes
# at LOCK_ROW_FILLFACTOR (a row's width plus its 4-byte line pointer).
_PACKING = f"""select coalesce(max(n), 0),
    coalesce(max(n) / greatest(1, floor(current_setting('block_size')::int
                                        * {LOCK_ROW_FILLFACTOR} / 100.0 / (max(w) + 4))), 0)
  from (select count(*) as n, avg(pg_column_size(c.*)) as w from tidemark.live_changes c
        group by (c.ctid::text::point)[0]) p"""


def repack_lock_rows(conn: psycopg.Connection) -> bool:
    """Rewrite ``tidemark.live_changes`` at :data:`LOCK_ROW_FILLFACTOR` when its rows are packed.

    A table made by an engine before round 34 (fillfactor 100) keeps its rows in one page after
    ``alter table ... set (fillfactor)``, which changes only later inserts; with many views
    that page is pruned at nearly every commit (+11k instructions a commit at ~50 views,
    bench/RESULTS.md c34). ``VACUUM FULL`` rewrites it at the fillfactor: a table of one row per
    view, done in milliseconds, under ACCESS EXCLUSIVE taken with a short ``lock_timeout`` (a
    busy table is left for the next deploy). Nothing is done when no page holds more than twice
    the rows the fillfactor leaves room for, or when the role does not own the table.

    Args:
        conn: an autocommit connection, outside a transaction (``VACUUM`` runs in none).

    Returns:
        True when the table was rewritten.
    """
    if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    owned = conn.execute("select pg_has_role(relowner, 'USAGE') from pg_class where oid = "
                         "to_regclass('tidemark.live_changes')").fetchone()
    if not (owned and owned[0]):
        return False
    rows, ratio = conn.execute(_PACKING).fetchone()  # type: ignore[misc]
    if rows <= 1 or ratio <= 2:
        return False
    previous = conn.execute("select current_setting('lock_timeout')").fetchone()[0]  # type: ignore[index]
    conn.execute("select set_config('lock_timeout', %s, false)", (REPACK_LOCK_TIMEOUT,))
    try:
        for attempt in range(REPACK_TRIES):
            try:
                conn.execute("vacuum full tidemark.live_changes")
                return True
            except psycopg.errors.LockNotAvailable:
                time.sleep(0.2 * (attempt + 1))
        return False
    finally:
        conn.execute("select set_config('lock_timeout', %s, false)", (previous,))


def problem(conn: psycopg.Connection, name: str, *, strict: bool = True) -> str | None:
    """Why the deployed view ``name`` no longer follows its base tables, or None."""
    row = conn.execute("select tidemark.live_problem(%s, %s)", (name, strict)).fetchone()
    return row[0] if row else None
