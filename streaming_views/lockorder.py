# ruff: noqa: S608 -- generated SQL: table names are quoted identifiers (TableInfo.qualified).
"""The lock order of a commit's sweep: base tables first, then the views' locks.

**The view's lock** is a transaction-level advisory lock (it writes no tuple):
``pg_advisory_xact_lock(VIEW_LOCK_CLASS, hashtext(<view name>))`` — the two-key form, whose first
key :data:`VIEW_LOCK_CLASS` is Tidemark's class id for live views (applications sharing the
database should not use that first key; the README says so). Several views are locked in the
order of their keys (``tidemark.live_lock_views``), each key once: two names whose hashes
collide share a lock (more waiting, never a deadlock, never a wrong view).

Engines before 25 updated the view's row of ``tidemark.live_changes`` instead (43-58k
instructions a commit; bench/RESULTS.md, lk39). The row stays, as the subscription counter
(:mod:`streaming_views.sublog`): whoever writes it (a subscribed commit, a deploy, a rebuild)
holds the view's lock first, so the order is always lock, then row. The lock leaves nothing a
REPEATABLE READ snapshot could see, so each view also has a holder sequence
(``tidemark_state.<suffix>__holder``, :func:`holder_sql`): the transaction id of the last
transaction that took the lock, checked by the applies of REPEATABLE READ and SERIALIZABLE
writers.

Every transaction that changed a live view's base tables takes, at commit, the view's lock
(and those of the other views pending and their readers, all at once, in key order), then
applies its changes, which read the view's other base tables. A DDL statement that
locks a base table when it runs and rebuilds the view at commit — ``TRUNCATE`` (of a table or a
partition), ``ALTER TABLE ... DETACH PARTITION``, ``DROP TABLE`` of a partition — takes its
table lock *before* those locks: a writer already holding the view's lock and waiting to read
that table, and the DDL's commit waiting for the lock, used to deadlock (40P01).

So the sweep takes its table locks first: ``LOCK TABLE ... IN ACCESS SHARE MODE`` on every base
table the applies of the swept views read (partitions and inheritance children included: LOCK
TABLE recurses), sorted by OID, before any view's lock. A writer then waits for the DDL's
table lock holding no view's lock, and the DDL's commit finds the lock free. ACCESS SHARE
conflicts only with ACCESS EXCLUSIVE, so writers do not wait for one another here; a lock the
transaction already holds (the tables it wrote) is found in its local lock table. A
``BEFORE TRUNCATE`` trigger cannot take the sweep earlier instead: PostgreSQL locks the tables
before it fires it.

* one view pending (the common case): the list is compiled into its ``apply`` at deploy;
* several views, or readers of them: ``tidemark.live_lock_tables(names)`` builds the list from
  the catalog's ``base_oids`` (a reader's include the inner view's state table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from streaming_views.session import set_clauses

STATE_SCHEMA = "tidemark_state"  # (compiler.STATE_SCHEMA: compiler imports this module's importers)

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


VIEW_LOCK_CLASS = 7_411_302
"""The first key of every view's advisory lock (Tidemark's class id for live views)."""

LOCK_VIEWS_DDL = f"""create or replace function tidemark.live_lock_views(p_names text[])
    returns void language plpgsql {set_clauses()} as $f$
declare v_k int;
begin
  for v_k in select distinct hashtext(n) from unnest(p_names) as n order by 1 loop
    perform pg_advisory_xact_lock({VIEW_LOCK_CLASS}, v_k);
  end loop;
end $f$"""


def view_lock_sql(name: str) -> str:
    """The SQL expression taking view ``name``'s lock (``void``; a constant key: the planner
    folds ``hashtext`` of the literal)."""
    literal = sql.Literal(name).as_string(None)
    return f"pg_advisory_xact_lock({VIEW_LOCK_CLASS}, hashtext({literal}))"


def holder_name(suffix: str) -> str:
    """The view's holder sequence (unquoted, in the state schema): see :func:`holder_sql`."""
    return f"{suffix}__holder"


def holder_ddl(holder: str) -> str:
    """CREATE the view's holder sequence ``holder`` (quoted): UNLOGGED (PostgreSQL 15+, the
    engine's oldest), so ``setval`` writes no WAL. A crash resets it (no holder): no snapshot
    survives a crash either."""
    return f"CREATE UNLOGGED SEQUENCE {holder}"


def holder_sql(holder: str, lock: str, *, checked: bool) -> str:
    """PL/pgSQL taking the view's lock (``lock``, an expression) and recording this transaction
    as the view's holder in its sequence ``holder`` (quoted). With ``checked`` (any isolation
    level), a REPEATABLE READ or SERIALIZABLE transaction whose snapshot predates the end of the
    last holder fails with 40001; without (READ COMMITTED only: the apply's common path) it is
    one assignment of three function calls — each function of an expression costs its set-up
    (and an EXECUTE check) in every transaction.

    The lock writes no tuple, so nothing a snapshot could see tells that another commit of the
    view ended after it; the sequence (not transactional: no MVCC) keeps the transaction id of
    the last transaction that took the lock. Holders end in lock order, so when the last one
    ended before the snapshot (``txid_visible_in_snapshot``) every earlier one did too (one that
    rolled back fails the check as well: rare, and the retry passes). READ COMMITTED applies
    take a new snapshot per statement, after the lock: they need no check."""
    literal = sql.Literal(holder).as_string(None)
    if not checked:
        return f"v_r := setval({literal}, CASE WHEN {lock} IS NOT NULL THEN txid_current() END);\n"
    last = f"pg_sequence_last_value({literal})"
    return (f"v_r := setval({literal}, CASE WHEN {lock} IS NOT NULL AND "
            "current_setting('transaction_isolation') = 'read committed' THEN txid_current() "
            "END);\nIF v_r IS NULL THEN  -- REPEATABLE READ or SERIALIZABLE: the lock is held\n"
            f"  IF NOT coalesce({last} = txid_current() OR txid_visible_in_snapshot({last}, "
            "txid_current_snapshot()), true) THEN\n"
            "    RAISE EXCEPTION 'another commit of this live view ended after this "
            "transaction''s snapshot' USING ERRCODE = 'serialization_failure', HINT = 'Retry "
            "the transaction.';\n  END IF;\n"
            f"  v_r := setval({literal}, txid_current());\nEND IF;\n")


def lock_view(cur: psycopg.Cursor | psycopg.Connection, name: str, suffix: str) -> None:
    """Inside a deploy's or rebuild's transaction: take view ``name``'s lock (where engines
    before 25 locked its row of ``tidemark.live_changes``) and record the transaction as its
    holder (``suffix``: the state the transaction leaves in place)."""
    holder = sql.Identifier(STATE_SCHEMA, holder_name(suffix)).as_string(None)
    cur.execute(f"select {view_lock_sql(name)}, "  # type: ignore[call-overload]
                "setval(%s::regclass, txid_current())", (holder,))


def lock_tables_sql(cv: CompiledView) -> str:
    """``LOCK TABLE`` of the view's base tables (each once, by OID) in ACCESS SHARE mode."""
    tables = {t.oid: t.qualified for t in cv.resolved.tables}
    return f"LOCK TABLE {', '.join(tables[oid] for oid in sorted(tables))} IN ACCESS SHARE MODE"
