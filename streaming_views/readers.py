# ruff: noqa: S608 -- fixed SQL of the engine's own runtime functions; no user input in it.
"""The readers of a live view inside the shared runtime: views over views at run time.

A view that reads ``live.<inner>`` (see :mod:`streaming_views.layers`) has the inner view's
state table ``tidemark_state.<suffix>`` among its catalog ``base_tables``; that is how the
runtime functions of :mod:`streaming_views.runtime` find an inner view's readers without the
view files:

* ``tidemark.live_readers(name)`` — every healthy view reading ``name``, transitively;
* a rebuild at commit (TRUNCATE of a base table, a partition attached or dropped) notes the
  readers in the transaction-local ``tidemark.readers``, as the log functions do for ordinary
  writes, so the first apply takes the locks of the view *and* its readers, all at once in key
  order (:mod:`streaming_views.lockorder`): a rebuild that would otherwise lock the inner view,
  then its reader, can no longer deadlock with a writer locking them in that order;
* a view the DDL guard marks broken breaks its readers too (their reason names both views and
  the redeploy order), and ``tidemark.live_problem`` of a reader reports its inner view's
  problem, so ``deploy``, ``verify`` and ``list`` see it without the guard.
"""

from __future__ import annotations

READERS = "tidemark.readers"  # transaction-local: the readers of the views pending
STATE_PREFIX = "tidemark_state."

LIVE_READERS_DDL = f"""create or replace function tidemark.live_readers(p_name text)
    returns setof text language sql stable as $f$
  with recursive r(name, suffix) as (
    select name, suffix from tidemark.views where name = p_name and target = 'embedded'
    union
    select w.name, w.suffix from tidemark.views w join r
      on ('{STATE_PREFIX}' || r.suffix) = any(w.base_tables)
      where w.target = 'embedded' and w.status = 'ok')
  select name from r where name <> p_name order by 1
$f$"""

# PL/pgSQL of tidemark.live_rebuild_at_commit(p_suffix, p_name): note the view's readers.
NOTE_READERS = f"""  perform set_config('{READERS}',
    coalesce(current_setting('{READERS}', true), '') || coalesce((select string_agg(
      ' ' || r || ' ', '') from tidemark.live_readers(p_name) r), ''), true);"""

# PL/pgSQL of tidemark.live_break(p_name, p_reason), after the view is marked broken (v: its
# catalog row; declares v_reader text): break the views reading it, naming both.
BREAK_READERS = f"""  for v_reader in select w.name from tidemark.views w
      where w.target = 'embedded' and w.status = 'ok'
        and ('{STATE_PREFIX}' || v.suffix) = any(w.base_tables) order by 1 loop
    perform tidemark.live_break(v_reader, format('it reads live view %s, which is broken (%s); '
      'redeploy order: fix %s (its base tables or its file), then ''tidemark views deploy'' '
      'rebuilds live.%s first and live.%s after it', p_name, p_reason, p_name, p_name,
      v_reader));
  end loop;"""

# PL/pgSQL of tidemark.live_problem(p_name, p_strict), for the base table v_j (v: the view's
# catalog row; declares v_iname text, v_iproblem text): the problem of an inner view it reads.
INNER_PROBLEM = f"""    if starts_with(v.base_tables[v_j + 1], '{STATE_PREFIX}') then
      select w.name, tidemark.live_problem(w.name, p_strict) into v_iname, v_iproblem
        from tidemark.views w where w.target = 'embedded'
          and '{STATE_PREFIX}' || w.suffix = v.base_tables[v_j + 1];
      if v_iproblem is not null then
        return format('it reads live view %s, which no longer follows its base tables (%s); '
                      'redeploy order: fix %s, then ''tidemark views deploy'' rebuilds live.%s '
                      'first and live.%s after it', v_iname, v_iproblem, v_iname, v_iname,
                      p_name);
      end if;
    end if;"""
