# ruff: noqa: S608 -- generated SQL: table names are quoted identifiers (TableInfo.qualified).
"""The lock order of a commit's sweep: base tables first, then rows of ``tidemark.live_changes``.

Every transaction that changed a live view's base tables takes, at commit, the view's row of
``tidemark.live_changes`` (and those of the other views pending and their readers, in name
order), then applies its changes, which read the view's other base tables. A DDL statement that
locks a base table when it runs and rebuilds the view at commit — ``TRUNCATE`` (of a table or a
partition), ``ALTER TABLE ... DETACH PARTITION``, ``DROP TABLE`` of a partition — takes its
table lock *before* those rows: a writer already holding the view's row and waiting to read
that table, and the DDL's commit waiting for the row, used to deadlock (40P01).

So the sweep takes its table locks first: ``LOCK TABLE ... IN ACCESS SHARE MODE`` on every base
table the applies of the swept views read (partitions and inheritance children included: LOCK
TABLE recurses), sorted by OID, before any row. A writer then waits for the DDL's table lock
holding no view row, and the DDL's commit finds the row free. ACCESS SHARE conflicts only with
ACCESS EXCLUSIVE, so writers do not wait for one another here; a lock the transaction already
holds (the tables it wrote) is found in its local lock table. A ``BEFORE TRUNCATE`` trigger
cannot take the sweep earlier instead: PostgreSQL locks the tables before it fires it.

* one view pending (the common case): the list is compiled into its ``apply`` at deploy;
* several views, or readers of them: ``tidemark.live_lock_tables(names)`` builds the list from
  the catalog's ``base_oids`` (a reader's include the inner view's state table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streaming_views.session import set_clauses

if TYPE_CHECKING:  # a type only: compiler imports bounds, which imports guard -> runtime -> here
    from streaming_views.compiler import CompiledView

LOCK_TABLES_DDL = f"""create or replace function tidemark.live_lock_tables(p_names text[])
    returns void language plpgsql {set_clauses()} as $f$
declare v_list text;
begin
  select string_agg(c.oid::regclass::text, ', ' order by c.oid) into v_list
    from pg_class c where c.oid in (select unnest(v.base_oids) from tidemark.views v
                                    where v.name = any(p_names) and v.target = 'embedded'
                                      and v.status = 'ok');
  if v_list is not null then
    execute 'lock table ' || v_list || ' in access share mode';
  end if;
end $f$"""


def lock_tables_sql(cv: CompiledView) -> str:
    """``LOCK TABLE`` of the view's base tables (each once, by OID) in ACCESS SHARE mode."""
    tables = {t.oid: t.qualified for t in cv.resolved.tables}
    return f"LOCK TABLE {', '.join(tables[oid] for oid in sorted(tables))} IN ACCESS SHARE MODE"
