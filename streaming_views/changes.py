# ruff: noqa: S608 -- fixed SQL of the engine's own runtime function; no user input in it.
"""``changed_at`` of ``tidemark.live_changes``: when a view last changed, sampled, not written
by commits.

Engines before 25 set ``changed_at = now()`` in every commit (the view's lock was its row). Now
no commit writes the row unless someone subscribes, so ``tidemark.live_note_changes()`` samples
instead: for each embedded view it reads the write count of its state table from the
cumulative statistics (``pg_stat_get_tuples_inserted + _updated + _deleted``, which every
commit that changes the view moves) and, where it differs from the count it saw last
(``tidemark.live_samples``), sets ``changed_at = now()`` (the first sample of a view keeps the
deploy's time). Rows locked at that moment (a subscribed commit,
a deploy) are skipped (``SKIP LOCKED``, no wait, no deadlock) and sampled next time.

**How coarse:** the running stack's tick (``tidemark views tick --every 1``, started by
``tidemark up``) samples every second, and ``tidemark views list``/``status`` sample before
they read; a backend reports its statistics at most once a second while busy and within ~10 s
once idle, so ``changed_at`` is the first sample after the change was reported: at most ~11 s
late with the stack running. A write that rolled back after the view's apply counts as a
change; a commit that changed nothing in the state does not. A subscribed commit and a deploy
still set it exactly (they write the row anyway).
"""

from __future__ import annotations

import psycopg

from streaming_views.session import set_clauses

NOTE_CHANGES_DDL = f"""create or replace function tidemark.live_note_changes() returns bigint
    language sql security definer {set_clauses()} as $f$
  with w as (
    select v.name, coalesce(pg_stat_get_tuples_inserted(s.rel) + pg_stat_get_tuples_updated(s.rel)
                            + pg_stat_get_tuples_deleted(s.rel), 0) as n
      from tidemark.views v
      cross join lateral (select to_regclass(format('%I.%I', 'tidemark_state', v.suffix)) as rel) s
      where v.target = 'embedded' and s.rel is not null),
  l as (select c.name, w.n, p.writes is null as first from tidemark.live_changes c
          join w on w.name = c.name left join tidemark.live_samples p on p.name = c.name
          where p.writes is distinct from w.n for no key update of c skip locked),
  s as (insert into tidemark.live_samples as p (name, writes) select name, n from l
          on conflict (name) do update set writes = excluded.writes),
  u as (update tidemark.live_changes c set changed_at = now() from l
        where c.name = l.name and not l.first returning 1)
  select count(*) from u
$f$"""


def note_changes(conn: psycopg.Connection) -> int | None:
    """Sample the views' write counts into ``changed_at`` (see the module docstring); the views
    whose count moved, or None when the runtime predates engine 26 or the role may not."""
    try:
        with conn.transaction():
            row = conn.execute("select tidemark.live_note_changes()").fetchone()
    except (psycopg.errors.UndefinedFunction, psycopg.errors.InsufficientPrivilege,
            psycopg.errors.InvalidSchemaName):
        return None
    return int(row[0]) if row else None
