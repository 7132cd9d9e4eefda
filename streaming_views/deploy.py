"""Deploy view files to the embedded engine: create, blue/green replace, repair, leave alone,
prune.

Every view is deployed in its own transaction, under the pinned session settings, which first
locks the view's base tables in SHARE ROW EXCLUSIVE mode: writers wait (so no change falls
between the build and the triggers), readers of the base tables and of ``live.<name>`` go on.
Each table lock is awaited at most ``LOCK_WAIT`` (below PostgreSQL's deadlock_timeout): a deploy
that would close a lock cycle with writers gives way — it rolls back and tries again — so it is
never a writer that the deadlock detector cancels. A changed view is built beside the old one
(new state table, new triggers) and ``live.<name>`` is re-pointed and the old objects dropped in
that same transaction: a reader sees the old view until the commit, then the new one.

A view whose file is unchanged but that no longer follows its base tables (see
``tidemark.live_problem``: a table dropped or re-created, a column renamed, triggers missing or
disabled...) is rebuilt: action ``repaired``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from streaming_views import guard, sublog
from streaming_views.analyzer import analyze
from streaming_views.auxiliary import ensure_base_indexes, release_base_indexes
from streaming_views.catalog import CatalogEntry, ensure_catalog, forget, read_catalog, record
from streaming_views.compiler import LIVE_SCHEMA, STATE_SCHEMA, CompiledView, compile_view, q
from streaming_views.deltas import apply_statement, masks
from streaming_views.errors import DeployError, StreamingViewsError, ViewNotFoundError
from streaming_views.expiry import drop_inputs, install_inputs
from streaming_views.holders import Holder, Wait, holders, snapshot_guarded
from streaming_views.layers import upstream_tables, used_record
from streaming_views.lockorder import holder_name, lock_view
from streaming_views.result import DeployResult
from streaming_views.rights import check_rights
from streaming_views.runtime import problem, repack_lock_rows
from streaming_views.session import pin
from streaming_views.stacked import Graph
from streaming_views.triggers import function_name, functions, state_ddl
from streaming_views.versions import check_engine_version
from streaming_views.viewfile import ViewFile, load_views, parse_view_text

READER_ROLE = "tidemark_reader"
LOCK_WAIT = "200ms"       # per table lock (base tables; the old view and state, from its
#                           readers): below deadlock_timeout (1 s by default)
OTHER_WAIT = "5s"         # other locks of a deploy (rows of the catalog)
DEADLINE_S = 120.0        # give up (with a clear error) after this long (waiting for
#                           ingestion's transaction: this long after its last progress)
RETRYABLE = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected,
             psycopg.errors.SerializationFailure)


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
    """Deploy ``views`` to the embedded engine in the database at ``dsn``.

    Raises:
        StreamingViewsError: a view is invalid or unsupported, or the deploy fails (never a raw
            database error).
    """
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DeployError(f"cannot connect to the landing database: {exc}".strip()) from None
    with conn:
        check_engine_version(conn)
        try:
            return _deploy(conn, views, prune)
        except psycopg.Error as exc:
            raise DeployError(f"deploying live views failed: {str(exc).strip()}") from None


def _deploy(conn: psycopg.Connection, views: list[ViewFile], prune: bool) -> list[DeployResult]:
    results: list[DeployResult] = []
    _retrying(conn, "the catalog", lambda: _prepare(conn))
    repack_lock_rows(conn)  # an upgraded table's rows, packed at the old fillfactor
    deployed = {e.name: e for e in read_catalog(conn, target="embedded")}
    graph = Graph.build(views, deployed, prune)  # views over views: order, cycles, prune
    by_name, done = {v.name: v for v in views}, set()
    for view in [by_name[n] for n in graph.order() if n in by_name]:
        if view.name in done:
            continue  # rebuilt with a view it reads
        entry = deployed.get(view.name)
        action = "replaced" if entry else "created"
        if entry is not None and entry.definition_hash == view.definition_hash:
            if problem(conn, view.name) is None:
                _retrying(conn, f"live.{view.name}", lambda v=view, e=entry:
                          _add_missing_indexes(conn, v, e))
                results.append(DeployResult(view.name, "unchanged", "embedded",
                                            view.definition_hash))
                continue
            action = "repaired"
        check_rights(conn, view.name, str(view.path), [
            (t.schema, t.name) for t in analyze(view).tables if t.schema != LIVE_SCHEMA])
        chain = graph.readers(view.name) if entry is not None else []
        _retrying(conn, f"live.{view.name}", lambda v=view, c=chain: _install_chain(
            conn, graph, [v.name, *c]), _replaced(deployed, [view.name, *chain], [
                by_name[n] for n in [view.name, *chain] if n in by_name]))
        results.append(DeployResult(view.name, action, "embedded", view.definition_hash))
        results += [graph.result(n, deployed.get(n)) for n in chain]
        done.update(chain)
    if prune:
        names = {v.name for v in views}
        for entry in deployed.values():
            if entry.name not in names:
                _retrying(conn, f"live.{entry.name}", lambda e=entry: drop_view(conn, e),
                          _replaced(deployed, [entry.name], []))
                results.append(DeployResult(entry.name, "dropped", "embedded",
                                            entry.definition_hash))
    return results


def _install_chain(conn: psycopg.Connection, graph: Graph, names: list[str]) -> None:
    """Install ``names`` (a view, then the views reading it) in one transaction."""
    for name in names:
        old = read_catalog(conn, target="embedded", name=name)
        install(conn, graph.compiled(conn, name), old[0] if old else None)
    graph.refresh_inners(conn, names)


def _prepare(conn: psycopg.Connection) -> None:
    ensure_catalog(conn)
    if guard.can_install(conn):
        guard.install_guard(conn)


Waited = tuple[list[str], list[str], list[str]]  # see holders.holders: relations, idle, written


def _replaced(deployed: dict[str, CatalogEntry], names: list[str],
              files: list[ViewFile]) -> Waited:
    """The relations a deploy of ``names`` takes ACCESS EXCLUSIVE on: ``live.<name>`` and the
    deployed state table of each; and the base tables of the deployed ones (their old triggers
    are dropped); and with those, the base tables of the new ``files`` (SHARE ROW EXCLUSIVE:
    a long ingestion transaction on them is waited for too)."""
    old = [deployed[n] for n in names if n in deployed]
    idle = sorted({t for e in old for t in e.base_tables})
    return ([f"{LIVE_SCHEMA}.{n}" for n in names] + [f"{STATE_SCHEMA}.{e.suffix}" for e in old],
            idle, sorted({f"{t.schema}.{t.name}" for f in files for t in analyze(f).tables
                          if t.schema != LIVE_SCHEMA} | set(idle)))


def _retrying(conn: psycopg.Connection, what: str, work: Callable[[], None],
              replaced: Waited = ([], [], [])) -> None:
    """Run ``work`` in a transaction (deploy flag and pinned settings set), again after a lock
    timeout, deadlock or serialization failure, until :data:`DEADLINE_S`.

    Before each try, holding no lock, wait until no other session holds ``replaced`` (see
    :mod:`streaming_views.holders`): writers never queue behind a deploy that waits for a
    reader. Ingestion's transactions are waited for as long as they make progress
    (:class:`~streaming_views.holders.Wait`): one source transaction is one landing transaction,
    for minutes when the source's is large.

    Raises:
        DeployError: still locked at the deadline (naming the sessions that hold the view).
    """
    wait = Wait(what, DEADLINE_S)
    pause = 0.05
    while True:
        held = wait.until_free(conn, *replaced)
        if held:
            raise DeployError(_held_message(what, held))
        try:
            with conn.transaction():
                conn.execute("select set_config(%s, 'on', true)", (guard.DEPLOYING,))
                pin(conn)
                work()
            return
        except RETRYABLE as exc:
            # An ingestion transaction that began after the wait (or too short to be waited
            # for) holds a base table: progress of ingestion, so a retry, not a failure.
            wait.observe(holders(conn, *replaced, ingest_for="0s"))
            if wait.expired():
                held = holders(conn, *replaced)
                if held:
                    raise DeployError(_held_message(what, held)) from None
                raise DeployError(
                    f"could not deploy {what} within {DEADLINE_S:.0f} s: its base tables stay "
                    f"locked by writers ({str(exc).strip()}); retry when they are quieter."
                ) from None
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 1.0)


def _held_message(what: str, held: list[Holder]) -> str:
    stuck = (" An ingestion idle in its transaction that long is stuck: restart it (`tidemark "
             "ingest run`)." if any(h.stuck for h in held) else "")
    return (f"could not deploy {what} within {DEADLINE_S:.0f} s: other sessions keep it open "
            f"({'; '.join(h.describe() for h in held)}). Writers were not held up meanwhile. "
            f"End those transactions (commit, or pg_terminate_backend(pid)), or give the "
            f"readers' role an idle_in_transaction_session_timeout; then deploy again.{stuck}")


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


def _lock_tables(conn: psycopg.Connection, tables: list[str],
                 mode: str = "share row exclusive") -> None:
    """``mode`` (SHARE ROW EXCLUSIVE: base tables; ACCESS EXCLUSIVE: a view and state to
    replace) on each existing relation (and a table's partitions), waiting at most
    :data:`LOCK_WAIT` for each."""
    conn.execute("select set_config('lock_timeout', %s, true)", (LOCK_WAIT,))
    for table in sorted(set(tables)):
        schema, name = table.split(".", 1)
        rel = sql.Identifier(schema, name)
        if conn.execute("select to_regclass(%s)", (rel.as_string(None),)).fetchone()[0] is None:
            continue
        conn.execute(sql.SQL("lock table {} in {} mode").format(rel, sql.SQL(mode)))  # type: ignore[arg-type]
    conn.execute("select set_config('lock_timeout', %s, true)", (OTHER_WAIT,))


def install(conn: psycopg.Connection, cv: CompiledView, old: CatalogEntry | None) -> None:
    """Build ``cv`` and point ``live.<name>`` at it, replacing ``old``; inside a transaction."""
    tables = [f"{t.schema}.{t.name}" for t in cv.resolved.tables]  # live.<x>: its state
    _lock_tables(conn, upstream_tables(conn, cv.tables))  # under live.<x>: before its state
    _lock_tables(conn, tables + (old.base_tables if old else []))
    subscribed = sublog.before_redeploy(conn, cv.name) if old is not None else None
    try:
        if conn.execute("select to_regclass(%s)", (f"{STATE_SCHEMA}.{cv.suffix}",)).fetchone()[0]:
            _lock_tables(conn, [f"{STATE_SCHEMA}.{cv.suffix}", *tables], "access exclusive")
        with conn.cursor() as cur:
            _drop_objects(cur, cv.suffix, inputs=False)  # leftovers, or a repair
            install_inputs(conn, cv)
            for stmt in state_ddl(cv) + functions(cv).create:
                cur.execute(stmt)  # type: ignore[arg-type]
            for t in cv.resolved.tables:
                for rel in [t.qualified, *t.descendants]:
                    cur.execute("select tidemark.live_attach_triggers(%s, %s, %s::regclass)",
                                (cv.suffix, t.index, rel))
            cur.execute(f"select {function_name(cv, 'rebuild')}()")  # type: ignore[arg-type]
            indexes = ensure_base_indexes(conn, cv)
            _check_statements(cur, cv)
            for table in [cv.suffix, *(cv.aux_table(r) for r in cv.distinct_rules)]:
                cur.execute(sql.SQL("analyze {}.{}").format(sql.Identifier(STATE_SCHEMA),
                                                              sql.Identifier(table)))
            _lock_tables(conn, [f"{LIVE_SCHEMA}.{cv.name}", *(  # the old triggers: base tables
                [f"{STATE_SCHEMA}.{old.suffix}", *old.base_tables] if old is not None and
                old.suffix != cv.suffix else [])], "access exclusive")
            _swap_live_view(cur, cv, old)
            sublog.after_redeploy(conn, cv, subscribed)  # subscribers follow, or are ended
    except RETRYABLE:
        raise
    except psycopg.Error as exc:
        if (exc.sqlstate or "")[:2] == "22":  # data exception: the rows, not the engine
            raise DeployError(
                f"{cv.analysis.view.path}: deploying live.{cv.name} failed: its query cannot be "
                f"computed over the rows its tables hold now: {exc.diag.message_primary} "
                f"(SQLSTATE {exc.sqlstate}; the query alone raises it too). Fix those rows, or "
                f"the view's file (e.g. guard the cast or the division), then deploy again."
            ) from None
        raise DeployError(f"{cv.analysis.view.path}: deploying live.{cv.name} failed: "
                          f"{str(exc).strip()}") from None
    record(conn, CatalogEntry(
        name=cv.name, target="embedded", definition_hash=cv.hash, suffix=cv.suffix,
        definition=cv.analysis.view.text, path=str(cv.analysis.view.path), base_tables=tables,
        columns=[n for n, _ in cv.outputs], deployed_at=None,  # type: ignore[arg-type]
        aux_tables=[f"{STATE_SCHEMA}.{cv.aux_table(r)}" for r in cv.distinct_rules],
        base_indexes=indexes, base_oids=[t.oid for t in cv.resolved.tables],
        used_columns=[used_record(t) for t in cv.resolved.tables]))
    if old is not None:
        release_base_indexes(conn, old.base_indexes)


def _swap_live_view(cur: psycopg.Cursor, cv: CompiledView, old: CatalogEntry | None) -> None:
    """Point ``live.<name>`` at the new state (readers: the old view until commit)."""
    view = sql.Identifier(LIVE_SCHEMA, cv.name)
    xid = cur.execute("select pg_current_xact_id()::text").fetchone()[0]  # type: ignore[index]
    select = snapshot_guarded(cv.view_select(), cv.name, xid)
    try:
        with cur.connection.transaction():  # a savepoint: same columns (or more at the end)
            cur.execute(sql.SQL("create or replace view {} as {}").format(view, select))
    except psycopg.errors.InvalidTableDefinition:  # a column renamed, retyped or dropped
        _recreate_live_view(cur, view, select, cv.name)
    if old is not None and old.suffix != cv.suffix:
        _drop_objects(cur, old.suffix)
    _grant_view_owner(cur, cv)
    comment = cv.analysis.view.description or f"live view {cv.name}"
    cur.execute(sql.SQL("comment on view {} is {}").format(view, sql.Literal(
        f"{comment} (Tidemark live view, hash {cv.hash})")))
    lock_view(cur, cv.name, cv.suffix)  # the view's lock, then its counter (subscribers)
    cur.execute("insert into tidemark.live_changes (name, seq, changed_at) values (%s, 0, now()) "
                "on conflict (name) do update set seq = tidemark.live_changes.seq + 1, "
                "changed_at = now()", (cv.name,))
    if cur.execute("select 1 from pg_roles where rolname = %s", (READER_ROLE,)).fetchone():
        reader = sql.Identifier(READER_ROLE)
        cur.execute(sql.SQL("grant usage on schema {}, tidemark to {}").format(
            sql.Identifier(LIVE_SCHEMA), reader))
        cur.execute(sql.SQL("grant select on {}, tidemark.live_changes to {}").format(
            view, reader))
        # the engine's state and logs are not the reader's (live.<name> reads them with its
        # owner's rights): a BI tool's schema sync offers live.<name> only
        cur.execute(sql.SQL("revoke all on all tables in schema {s} from {r}; "
                            "revoke usage on schema {s} from {r}").format(
            s=sql.Identifier(STATE_SCHEMA), r=reader))


def _grant_view_owner(cur: psycopg.Cursor, cv: CompiledView) -> None:
    """``CREATE OR REPLACE VIEW`` keeps the view's owner, whose rights read the state: when
    another role deploys (``tidemark views deploy`` as the superuser over a view the stack built
    as tidemark_app), grant it the new state, or every reader gets ``permission denied``."""
    owner = cur.execute("select pg_get_userbyid(relowner) from pg_class where oid = %s::regclass"
                        " and relowner <> (select oid from pg_roles where rolname = current_user)",
                        (f"{LIVE_SCHEMA}.{cv.name}",)).fetchone()
    if owner is None:
        return
    cur.execute(sql.SQL("grant select on {} to {}").format(sql.SQL(", ").join(
        sql.Identifier(STATE_SCHEMA, t) for t in [cv.suffix, *(
            cv.aux_table(r) for r in cv.distinct_rules)]), sql.Identifier(owner[0])))


def _recreate_live_view(cur: psycopg.Cursor, view: sql.Identifier, select: sql.Composable,
                        name: str) -> None:
    """Drop and re-create ``live.<name>`` whose columns changed; other objects reading it (a
    BI view, Tidemark's ``serving`` views) would be dropped with it, so they are named instead.

    Raises:
        DeployError: other objects depend on ``live.<name>``.
    """
    readers = _drop_live_view(cur, name)
    if readers:
        raise DeployError(
            f"live.{name}: its columns changed, and {', '.join(readers)} read it: PostgreSQL "
            f"cannot change a view's columns under views that read it. Drop those first (a "
            f"serving.<pair> view is re-created by `tidemark up` or the reconciliation's "
            f"serving deploy), or keep the old columns and add new ones after them; then "
            f"deploy again.")
    cur.execute(sql.SQL("create view {} as {}").format(view, select))


def _drop_live_view(cur: psycopg.Cursor, name: str) -> list[str]:
    """Drop ``live.<name>`` unless other views (a BI tool's, Tidemark's ``serving`` views)
    read it; return those readers' names then (nothing is dropped), else ``[]``."""
    try:
        with cur.connection.transaction():
            cur.execute(sql.SQL("drop view if exists {}").format(
                sql.Identifier(LIVE_SCHEMA, name)))
        return []
    except psycopg.errors.DependentObjectsStillExist:
        return [r for (r,) in cur.execute(
            "select distinct c.oid::regclass::text from pg_depend d join pg_rewrite w on"
            " w.oid = d.objid join pg_class c on c.oid = w.ev_class where d.refobjid ="
            " %s::regclass and c.oid <> d.refobjid order by 1", (f"{LIVE_SCHEMA}.{name}",))]


def _check_statements(cur: psycopg.Cursor, cv: CompiledView) -> None:
    """Make PostgreSQL plan every generated statement now, at deploy, instead of failing the
    first real write: fire each log trigger with no rows, EXPLAIN each commit-time statement."""
    for t in cv.resolved.tables:
        rel = sql.SQL(t.qualified)
        rows = cur.execute(
            "select attname, attidentity from pg_attribute where attrelid = %s "
            "and attnum > 0 and not attisdropped and attgenerated = '' order by attnum",
            (t.oid,)).fetchall()
        cur.execute(sql.SQL("delete from {} where false").format(rel))
        if rows:
            cols = sql.SQL(", ").join(sql.Identifier(r[0]) for r in rows)
            cur.execute(sql.SQL("insert into {} ({}) overriding system value select {} from {} "
                                "where false").format(rel, cols, cols, rel))
        updatable = [sql.Identifier(r[0]) for r in rows if r[1] != "a"]
        if updatable:
            cur.execute(sql.SQL("update {} set {} = {} where false").format(
                rel, updatable[0], updatable[0]))
    for changed in masks(cv):
        cur.execute(f"explain {apply_statement(cv, changed, tx=repr('0') + '::xid8')}")  # type: ignore[arg-type]
    if cv.has_recompute:
        cur.execute(f"explain {cv.recompute_sql()}")  # type: ignore[arg-type]


def _drop_objects(cur: psycopg.Cursor, suffix: str, inputs: bool = True) -> None:
    """Drop the state table, its auxiliary tables and change logs, and its maintenance
    functions (and so its triggers, on every table) of ``suffix`` (and with ``inputs`` its
    temporal filter's tables, :mod:`streaming_views.expiry`)."""
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
                (STATE_SCHEMA, f"^{suffix}__[dl][0-9]+$"))
    for (table,) in cur.fetchall():
        cur.execute(sql.SQL("drop table {}.{}").format(sql.Identifier(STATE_SCHEMA),
                                                       sql.Identifier(table)))
    cur.execute(sql.SQL("drop sequence if exists {}").format(
        sql.Identifier(STATE_SCHEMA, holder_name(suffix))))
    if inputs:
        drop_inputs(cur, suffix)


def rebuild(dsn: str, name: str) -> None:
    """Rebuild the state of an embedded view from its base tables (writers wait meanwhile).

    For repairs: after writes made with the view's triggers disabled, or a failed ``verify``.

    Raises:
        ViewNotFoundError: the view is not deployed.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        entries = read_catalog(conn, target="embedded", name=name)
        if not entries:
            raise ViewNotFoundError(f"live view {name!r} is not deployed.")
        entry = entries[0]
        view = parse_view_text(name, entry.definition, Path(entry.path))

        def work() -> None:
            cv = compile_view(conn, view)
            if entry.status != "ok" or cv.suffix != entry.suffix:
                raise DeployError(f"live view {name!r} needs a deploy (broken, or deployed by "
                                  "another engine version); run 'tidemark views deploy'.")
            _lock_tables(conn, upstream_tables(conn, analyze(view).tables))  # under live.<x>
            _lock_tables(conn, entry.base_tables)
            lock_view(conn, name, entry.suffix)
            conn.execute("update tidemark.live_changes set seq = seq + 1, changed_at = now() "
                         "where name = %s", (name,))
            conn.execute(sql.SQL("select {}.{}()").format(
                sql.Identifier(STATE_SCHEMA), sql.Identifier(f"{entry.suffix}__rebuild")))
        try:
            _retrying(conn, f"live.{name}", work, ([], [], entry.base_tables))
        except psycopg.Error as exc:
            raise DeployError(f"rebuilding live.{name} failed: {str(exc).strip()}") from None


def drop_view(conn: psycopg.Connection, entry: CatalogEntry) -> None:
    """Drop a deployed view (``live.<name>``, state, logs, triggers) and its catalog row."""
    _lock_tables(conn, [f"{LIVE_SCHEMA}.{entry.name}", f"{STATE_SCHEMA}.{entry.suffix}",
                        *entry.base_tables], "access exclusive")  # its triggers are dropped
    with conn.cursor() as cur:
        readers = _drop_live_view(cur, entry.name)
        if readers:
            raise DeployError(
                f"live.{entry.name}: its file is gone, but {', '.join(readers)} read it, so it "
                f"is not dropped. A serving.<pair> view belongs to a pair of "
                f"dbt_project/reconciliation.yml: remove the pair there (the next serving run, "
                f"e.g. `tidemark up`, drops its view; or `tidemark db psql -c 'drop view "
                f"serving.<pair>'`); drop your own views "
                f"reading it; then deploy --prune again. Or put the file back.")
        _drop_objects(cur, entry.suffix)
    forget(conn, entry.name, entry.target)
    release_base_indexes(conn, entry.base_indexes)


__all__ = ["DeployResult", "StreamingViewsError", "deploy", "deploy_embedded", "drop_view",
           "install", "q", "rebuild"]
