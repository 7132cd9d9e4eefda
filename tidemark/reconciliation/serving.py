"""``serving.<pair>``: truth for reconciled days, live numbers otherwise, with a ``status``.

One view per reconciliation pair, named after the pair: the mart's rows for days
``tidemark.reconciled_days`` marks reconciled (``status = 'final'``, or ``'corrected'`` once a
correction — late data or drift — re-ran the day and it reconciled again), the live view's rows
for every other day (``'provisional'``: days not closed by the watermarks yet, drifting days,
days not checked yet, and reconciled days late rows landed for since their last check — until
the correction re-reconciles them). Only closed days are ever reconciled (``finality``). The
view reads ``reconciled_days`` and ``late_events`` when queried, so it follows every
reconciliation and every late row without a redeploy.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from tidemark.reconciliation.days import DAYS_TABLE, STATE_SCHEMA, ensure_days_table
from tidemark.reconciliation.late import ensure_late_table, stale_final_sql
from tidemark.reconciliation.pairs import Pair

SCHEMA = "serving"
log = logging.getLogger("tidemark.reconciliation")


def view_sql(pair: Pair, tables: list[tuple[str, str]] | None = None) -> sql.Composed:
    """``create view serving.<pair>`` for ``pair`` (keys, measures, status).

    Args:
        pair: the pair.
        tables: the event-time ``(source, table)`` its mart reads (late rows of them landed
            after a day's last check make it provisional again).
    """
    day = sql.Identifier(pair.day_column)
    days = sql.Identifier(STATE_SCHEMA, DAYS_TABLE)
    stale = stale_final_sql(tables or [], sql.Identifier("r"))

    def reconciled(alias: str) -> sql.Composable:
        return sql.SQL(
            "exists (select from {days} r where r.pair = {name} and r.day = {alias}.{day} and "
            "r.status = 'reconciled' and not {stale})").format(
            days=days, name=sql.Literal(pair.name), alias=sql.Identifier(alias), day=day,
            stale=stale)

    def columns(alias: str, live: bool) -> sql.Composable:
        cols = [sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(k))
                for k in pair.keys]
        cols += [sql.SQL("{}.{} as {}").format(
            sql.Identifier(alias), sql.Identifier(m.live_column if live else m.mart_column),
            sql.Identifier(m.name)) for m in pair.measures]
        return sql.SQL(", ").join(cols)

    return sql.SQL(
        "create view {view} as select {mcols}, case when (select r.corrected_at from {days} r"
        " where r.pair = {name} and r.day = m.{day}) is not null then 'corrected' else 'final'"
        " end::text as status from {mart} m where {mok}"
        " union all select {lcols}, 'provisional'::text as status from {live} l where not {lok}"
    ).format(
        view=sql.Identifier(SCHEMA, pair.name), mcols=columns("m", False),
        lcols=columns("l", True), mart=sql.Identifier("marts", pair.mart), days=days,
        name=sql.Literal(pair.name), day=day,
        live=sql.Identifier("live", pair.live_view),
        mok=reconciled("m"), lok=reconciled("l"))


def deploy_serving(landing_dsn: str, pair: Pair,
                   tables: list[tuple[str, str]] | None = None) -> int:
    """(Re)create ``serving.<pair>`` in one transaction; return its row count.

    Args:
        landing_dsn: landing URL.
        pair: the pair.
        tables: the event-time tables its mart reads (``finality.mart_event_tables``).
    """
    with psycopg.connect(landing_dsn) as conn:
        ensure_days_table(conn)
        ensure_late_table(conn)
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("drop view if exists {}").format(sql.Identifier(SCHEMA, pair.name)))
        conn.execute(view_sql(pair, tables))
        return conn.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier(SCHEMA, pair.name))).fetchone()[0]


def drop_orphans(landing_dsn: str, pairs: set[str]) -> tuple[list[str], list[str]]:
    """Drop the ``serving.<pair>`` views of pairs no longer in ``reconciliation.yml``.

    A serving view is Tidemark's when it reads ``tidemark.reconciled_days`` (every one
    :func:`view_sql` makes does); a user's own view in the schema is left alone, and so is a
    serving view other views read (named, with how to drop it).

    Args:
        landing_dsn: landing URL.
        pairs: the names of the current pairs.

    Returns:
        (the views dropped, messages for those kept because other views read them).
    """
    dropped: list[str] = []
    kept: list[str] = []
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        orphans = [name for (name,) in conn.execute(
            "select distinct v.relname from pg_class v"
            " join pg_namespace n on n.oid = v.relnamespace"
            " join pg_rewrite w on w.ev_class = v.oid"
            " join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = w.oid"
            " where v.relkind = 'v' and n.nspname = %s"
            " and d.refobjid = to_regclass(%s) and not (v.relname = any(%s)) order by 1",
            (SCHEMA, f"{STATE_SCHEMA}.{DAYS_TABLE}", sorted(pairs))).fetchall()]
        for name in orphans:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("drop view {}").format(sql.Identifier(SCHEMA, name)))
                dropped.append(name)
            except psycopg.errors.DependentObjectsStillExist:
                readers = ", ".join(r for (r,) in conn.execute(
                    "select distinct format('%%I.%%I', n.nspname, c.relname) from pg_depend d"
                    " join pg_rewrite w on w.oid = d.objid join pg_class c on c.oid = w.ev_class"
                    " join pg_namespace n on n.oid = c.relnamespace where d.classid ="
                    " 'pg_rewrite'::regclass and d.refobjid = %s::regclass"
                    " and w.ev_class <> d.refobjid order by 1",
                    (f"{SCHEMA}.{name}",)).fetchall())
                kept.append(f"{SCHEMA}.{name} (its pair is no longer in reconciliation.yml) is "
                            f"kept: other views read it ({readers}). Drop them, or run "
                            f"`tidemark db psql -c 'drop view {SCHEMA}.{name} cascade'`.")
    for message in kept:
        log.warning(message)
    return dropped, kept
