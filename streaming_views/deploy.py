"""Deploy view files to the embedded engine: create, blue/green replace, leave alone, prune.

Every view is deployed in its own transaction, which first locks the view's base tables in
SHARE ROW EXCLUSIVE mode: writers wait (so no change falls between the build and the triggers),
readers of the base tables and of ``live.<name>`` go on. A changed view is built beside the old
one (new state table, new triggers) and ``live.<name>`` is re-pointed, and the old objects are
dropped, in that same transaction: a reader sees the old view until the commit, then the new one,
never an empty or half-built one.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from streaming_views.auxiliary import (
    aux_build_sql,
    aux_clear_sql,
    ensure_base_indexes,
    release_base_indexes,
)
from streaming_views.catalog import CatalogEntry, ensure_catalog, forget, read_catalog, record
from streaming_views.compiler import LIVE_SCHEMA, STATE_SCHEMA, CompiledView, compile_view, q
from streaming_views.errors import DeployError, StreamingViewsError, ViewNotFoundError
from streaming_views.result import DeployResult
from streaming_views.triggers import state_ddl, trigger_set
from streaming_views.viewfile import ViewFile, load_views, parse_view_text

READER_ROLE = "tidemark_reader"


def deploy(dsn: str, views_dir: Path | None = None, target: str = "embedded",
           prune: bool = False) -> list[DeployResult]:
    """Deploy every view file of ``views_dir`` (default: the shipped views) to ``target``.

    Args:
        dsn: the landing database (embedded) or Materialize (``materialize``).
        views_dir: directory of ``<name>.sql`` files.
        target: ``embedded`` or ``materialize``.
        prune: drop deployed views whose file is gone.

    Raises:
        StreamingViewsError: a view is invalid or unsupported, or the target fails.
    """
    views = load_views(views_dir)
    if target == "materialize":
        from streaming_views.materialize import deploy_materialize
        return deploy_materialize(dsn, views, prune=prune)
    if target != "embedded":
        raise DeployError(f"unknown target {target!r}; use embedded or materialize.")
    return deploy_embedded(dsn, views, prune=prune)


def deploy_embedded(dsn: str, views: list[ViewFile], prune: bool = False) -> list[DeployResult]:
    """Deploy ``views`` to the embedded engine in the database at ``dsn``."""
    results: list[DeployResult] = []
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DeployError(f"cannot connect to the landing database: {exc}".strip()) from None
    with conn:
        with conn.transaction():
            ensure_catalog(conn)
        deployed = {e.name: e for e in read_catalog(conn, target="embedded")}
        for view in views:
            entry = deployed.get(view.name)
            if entry is not None and entry.definition_hash == view.definition_hash:
                _add_missing_indexes(conn, view, entry)
                results.append(DeployResult(view.name, "unchanged", "embedded",
                                            view.definition_hash))
                continue
            with conn.transaction():
                cv = compile_view(conn, view)
                install(conn, cv, entry)
            results.append(DeployResult(view.name, "replaced" if entry else "created",
                                        "embedded", view.definition_hash))
        if prune:
            names = {v.name for v in views}
            for entry in deployed.values():
                if entry.name not in names:
                    with conn.transaction():
                        drop_view(conn, entry)
                    results.append(DeployResult(entry.name, "dropped", "embedded",
                                                entry.definition_hash))
    return results


def _add_missing_indexes(conn: psycopg.Connection, view: ViewFile, entry: CatalogEntry) -> None:
    """Give an unchanged view the base-table indexes it was deployed without (the join-column
    indexes came later), listed in its catalog entry so that dropping the view drops them.

    Only an optimisation: a view that no longer compiles is left as it is (its own deploy
    reports that when its file changes)."""
    try:
        with conn.transaction():
            made = [i for i in ensure_base_indexes(conn, compile_view(conn, view))
                    if i not in entry.base_indexes]
            if made:
                conn.execute("update tidemark.views set base_indexes = base_indexes || %s "
                              "where name = %s and target = 'embedded'", (made, entry.name))
    except (StreamingViewsError, psycopg.Error):
        return


def _lock_tables(conn: psycopg.Connection, tables: list[str]) -> None:
    for table in sorted(set(tables)):
        schema, name = table.split(".", 1)
        if conn.execute("select to_regclass(%s)", (f"{sql.Identifier(schema).as_string(None)}."
                                                  f"{sql.Identifier(name).as_string(None)}",)
                        ).fetchone()[0] is None:
            continue
        conn.execute(sql.SQL("lock table {}.{} in share row exclusive mode").format(
            sql.Identifier(schema), sql.Identifier(name)))


def install(conn: psycopg.Connection, cv: CompiledView, old: CatalogEntry | None) -> None:
    """Build ``cv`` and point ``live.<name>`` at it, replacing ``old``; inside a transaction."""
    tables = [f"{t.schema}.{t.name}" for t in cv.tables]
    _lock_tables(conn, tables + (old.base_tables if old else []))
    try:
        with conn.cursor() as cur:
            _drop_objects(cur, cv.suffix)  # leftovers of an interrupted deploy of this hash
            for stmt in state_ddl(cv):
                cur.execute(stmt)  # type: ignore[arg-type]
            for stmt in trigger_set(cv).create:
                cur.execute(stmt)  # type: ignore[arg-type]
            for stmt in [cv.build_sql(), *aux_build_sql(cv)]:
                cur.execute(stmt)  # type: ignore[arg-type]
            indexes = ensure_base_indexes(conn, cv)
            _exercise_triggers(cur, cv)
            for table in [cv.suffix, *(cv.aux_table(a) for a in cv.distinct_aggs)]:
                cur.execute(sql.SQL("analyze {}.{}").format(sql.Identifier(STATE_SCHEMA),
                                                              sql.Identifier(table)))
            # Lock order as readers take it: live view first, then the state behind it.
            view = sql.Identifier(LIVE_SCHEMA, cv.name)
            cur.execute(sql.SQL("drop view if exists {}").format(view))
            if old is not None:
                _drop_objects(cur, old.suffix)
            cur.execute(sql.SQL("create view {} as {}").format(view, sql.SQL(cv.view_select())))  # type: ignore[arg-type]
            comment = cv.analysis.view.description or f"live view {cv.name}"
            cur.execute(sql.SQL("comment on view {} is {}").format(view, sql.Literal(
                f"{comment} (Tidemark live view, hash {cv.hash})")))
            role = cur.execute("select 1 from pg_roles where rolname = %s",
                               (READER_ROLE,)).fetchone()
            if role:
                cur.execute(sql.SQL("grant usage on schema {} to {}").format(
                    sql.Identifier(LIVE_SCHEMA), sql.Identifier(READER_ROLE)))
                cur.execute(sql.SQL("grant select on {} to {}").format(
                    view, sql.Identifier(READER_ROLE)))
    except psycopg.Error as exc:
        raise DeployError(f"{cv.analysis.view.path}: deploying live.{cv.name} failed: "
                          f"{str(exc).strip()}") from None
    record(conn, CatalogEntry(
        name=cv.name, target="embedded", definition_hash=cv.hash, suffix=cv.suffix,
        definition=cv.analysis.view.text, path=str(cv.analysis.view.path), base_tables=tables,
        columns=[n for n, _ in cv.outputs], deployed_at=None,  # type: ignore[arg-type]
        aux_tables=[f"{STATE_SCHEMA}.{cv.aux_table(a)}" for a in cv.distinct_aggs],
        base_indexes=indexes))
    if old is not None:
        release_base_indexes(conn, old.base_indexes)


def _exercise_triggers(cur: psycopg.Cursor, cv: CompiledView) -> None:
    """Fire every maintenance trigger once with empty transition tables.

    PL/pgSQL plans a statement when it first runs, so this makes PostgreSQL check every
    generated statement now, at deploy time, instead of failing the first real write.
    """
    for table in cv.tables:
        rel = sql.Identifier(table.schema, table.name)
        rows = cur.execute(
            "select attname, attidentity from pg_attribute where attrelid = %s::regclass "
            "and attnum > 0 and not attisdropped and attgenerated = '' order by attnum",
            (f"{q(table.schema)}.{q(table.name)}",)).fetchall()
        cur.execute(sql.SQL("delete from {} where false").format(rel))
        if rows:
            cols = sql.SQL(", ").join(sql.Identifier(r[0]) for r in rows)
            cur.execute(sql.SQL("insert into {} ({}) overriding system value select {} from {} "
                                "where false").format(rel, cols, cols, rel))
        updatable = [sql.Identifier(r[0]) for r in rows if r[1] != "a"]
        if updatable:
            cur.execute(sql.SQL("update {} set {} = {} where false").format(
                rel, updatable[0], updatable[0]))


def _drop_objects(cur: psycopg.Cursor, suffix: str) -> None:
    """Drop the state table, its auxiliary tables and maintenance functions (and so triggers)
    of ``suffix``."""
    cur.execute(
        "select p.oid::regprocedure::text from pg_proc p join pg_namespace n on "
        "n.oid = p.pronamespace where n.nspname = %s and starts_with(p.proname, %s)",
        (STATE_SCHEMA, f"{suffix}__"))
    for (proc,) in cur.fetchall():
        cur.execute(sql.SQL("drop function {} cascade").format(sql.SQL(proc)))  # type: ignore[arg-type]
    cur.execute(sql.SQL("drop table if exists {}.{} cascade").format(
        sql.Identifier(STATE_SCHEMA), sql.Identifier(suffix)))
    cur.execute("select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = %s and c.relkind = 'r' and c.relname ~ %s",
                (STATE_SCHEMA, f"^{suffix}__d[0-9]+$"))
    for (table,) in cur.fetchall():
        cur.execute(sql.SQL("drop table {}.{}").format(sql.Identifier(STATE_SCHEMA),
                                                       sql.Identifier(table)))


def rebuild(dsn: str, name: str) -> None:
    """Rebuild the state of an embedded view from its base tables (writers wait meanwhile).

    For repairs: after writes made with the view's triggers disabled, or a failed ``verify``.

    Raises:
        ViewNotFoundError: the view is not deployed.
    """
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        entries = read_catalog(conn, target="embedded", name=name)
        if not entries:
            raise ViewNotFoundError(f"live view {name!r} is not deployed.")
        entry = entries[0]
        cv = compile_view(conn, parse_view_text(name, entry.definition, Path(entry.path)))
        if cv.suffix != entry.suffix:
            raise DeployError(f"live view {name!r} was deployed by another engine version; "
                              "run 'tidemark views deploy' to rebuild it.")
        _lock_tables(conn, entry.base_tables)
        conn.execute(sql.SQL("delete from {}.{}").format(sql.Identifier(STATE_SCHEMA),
                                                        sql.Identifier(cv.suffix)))
        for stmt in [cv.build_sql(), *aux_clear_sql(cv), *aux_build_sql(cv)]:
            conn.execute(stmt)  # type: ignore[arg-type]


def drop_view(conn: psycopg.Connection, entry: CatalogEntry) -> None:
    """Drop a deployed view (``live.<name>``, state, triggers) and its catalog row."""
    _lock_tables(conn, entry.base_tables)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("drop view if exists {}").format(
            sql.Identifier(LIVE_SCHEMA, entry.name)))
        _drop_objects(cur, entry.suffix)
    forget(conn, entry.name, entry.target)
    release_base_indexes(conn, entry.base_indexes)


__all__ = ["DeployResult", "StreamingViewsError", "deploy", "deploy_embedded", "drop_view",
           "install", "rebuild"]
