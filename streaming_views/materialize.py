"""The Materialize target: generate and apply sources, tables, materialized views and indexes.

Generated, in order (see :func:`generate_sql`):

1. ``upstream`` — run on the source PostgreSQL: ``REPLICA IDENTITY FULL`` on every referenced
   table and a publication over them;
2. ``setup`` — run on Materialize, idempotent: ``CREATE SECRET`` (the password comes from an
   environment variable when applied; generated SQL only names the variable),
   ``CREATE CONNECTION ... TO POSTGRES``, ``CREATE SOURCE ... FROM POSTGRES``, the schema
   ``<source>`` and ``CREATE TABLE <source>.<table> FROM SOURCE`` per referenced table;
3. ``build`` — blue/green: every view as ``CREATE MATERIALIZED VIEW live_deploy.<name> IN
   CLUSTER <cluster>`` (with the ``@retention`` temporal filter ``mz_now() <= col + interval``)
   and ``CREATE INDEX ... ON live_deploy.<name> (<@keys>)``;
4. after every object in ``live_deploy`` is hydrated (``mz_internal.mz_hydration_statuses``):
   ``ALTER SCHEMA live SWAP WITH live_deploy`` (atomic), then the old objects are dropped.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import pglast
import psycopg
from pglast import ast
from psycopg import sql

from streaming_views.analyzer import analyze
from streaming_views.astutil import column_ref, deparse, walk
from streaming_views.compiler import q
from streaming_views.errors import MaterializeError
from streaming_views.result import DeployResult
from streaming_views.stacked import dependency_order
from streaming_views.viewfile import ViewFile, parse_view_text

DEPLOY_SCHEMA = "live_deploy"
LIVE_SCHEMA = "live"
SECRET_MARK = "<secret from ${env}>"
PASSWORD_ENV = "TIDEMARK_MZ_SOURCE_PASSWORD"


@dataclass(frozen=True)
class MaterializeSource:
    """An upstream PostgreSQL database Materialize replicates from.

    Attributes:
        name: the source name; also the schema of its tables in views (``shop.orders``).
        host: host name as Materialize reaches it.
        port: port.
        user: a role with REPLICATION and SELECT on the tables.
        database: the upstream database.
        password_env: environment variable holding the password (never written anywhere).
        upstream_schema: schema of the tables upstream.
        publication: publication name upstream.
        cluster: Materialize cluster for the source.
    """

    name: str
    host: str
    port: int
    user: str
    database: str
    password_env: str = PASSWORD_ENV
    upstream_schema: str = "public"
    publication: str = ""
    cluster: str = "quickstart"

    @property
    def publication_name(self) -> str:
        """The publication, ``tidemark_mz_<name>`` unless set."""
        return self.publication or f"tidemark_mz_{self.name}"


@dataclass
class Statement:
    """One generated statement; ``secret_env`` names the variable its secret comes from."""

    text: str
    secret_env: str | None = None

    def render(self) -> str:
        """The statement for people and golden files (secret shown as its variable)."""
        return self.text


@dataclass
class MaterializePlan:
    """Generated SQL by phase (``upstream`` runs on the source PostgreSQL)."""

    upstream: list[Statement] = field(default_factory=list)
    setup: list[Statement] = field(default_factory=list)
    build: list[Statement] = field(default_factory=list)
    swap: list[Statement] = field(default_factory=list)

    def render(self) -> str:
        """All phases as one annotated SQL script (for golden files and dry runs)."""
        out = []
        for phase in ("upstream", "setup", "build", "swap"):
            out.append(f"-- phase: {phase}")
            out += [s.render() + ";" for s in getattr(self, phase)]
        return "\n".join(out) + "\n"


def view_query(view: ViewFile) -> str:
    """The view's SELECT for Materialize, with the ``@retention`` temporal filter added."""
    analyze(view)  # the same supported subset as the embedded engine
    stmt = pglast.parse_sql(view.text)[0].stmt
    for node in walk(stmt):  # a view over live views reads the new ones, built beside it
        if isinstance(node, ast.RangeVar) and node.schemaname == LIVE_SCHEMA:
            node.schemaname = DEPLOY_SCHEMA
    if view.retention is not None:
        col = column_ref(*view.retention.column.split("."))
        interval = ast.TypeCast(arg=ast.A_Const(val=ast.String(sval=view.retention.interval)),
                                typeName=ast.TypeName(names=(ast.String(sval="interval"),)))
        bound = ast.A_Expr(kind=0, name=(ast.String(sval="+"),), lexpr=col, rexpr=interval)
        temporal = ast.A_Expr(kind=0, name=(ast.String(sval="<="),),
                              lexpr=ast.FuncCall(funcname=(ast.String(sval="mz_now"),), args=()),
                              rexpr=bound)
        stmt.whereClause = temporal if stmt.whereClause is None else ast.BoolExpr(
            boolop=0, args=(stmt.whereClause, temporal))
    return re.sub(r"\bpg_catalog\.(?=\w+\()", "", deparse(stmt))


def referenced_tables(views: list[ViewFile]) -> dict[str, list[str]]:
    """``{source: [table, ...]}`` of every base table the views read."""
    out: dict[str, set[str]] = {}
    for view in views:
        for table in analyze(view).source_tables:
            if table.schema != LIVE_SCHEMA:  # live.<view>: another view, not a source
                out.setdefault(table.schema, set()).add(table.name)
    return {k: sorted(v) for k, v in sorted(out.items())}


def generate_sql(views: list[ViewFile], sources: list[MaterializeSource]) -> MaterializePlan:
    """Generate the Materialize deployment of ``views`` reading ``sources``.

    Raises:
        MaterializeError: a view reads a schema no source provides.
        UnsupportedViewError: a view is outside the supported subset.
    """
    by_name = {s.name: s for s in sources}
    plan = MaterializePlan()
    for schema, tables in referenced_tables(views).items():
        src = by_name.get(schema)
        if src is None:
            raise MaterializeError(f"views read {schema}.* but no Materialize source named "
                                   f"{schema!r} is configured.")
        upstream = ", ".join(f"{q(src.upstream_schema)}.{q(t)}" for t in tables)
        plan.upstream += [Statement(f"ALTER TABLE {q(src.upstream_schema)}.{q(t)} "
                                    "REPLICA IDENTITY FULL") for t in tables]
        plan.upstream.append(Statement(f"DROP PUBLICATION IF EXISTS {q(src.publication_name)}"))
        plan.upstream.append(Statement(f"CREATE PUBLICATION {q(src.publication_name)} FOR "
                                       f"TABLE {upstream}"))
        secret, conn_name, source_name = (f"{schema}_pgpass", f"{schema}_pg",
                                          f"{schema}_source")
        plan.setup += [
            Statement(f"CREATE SECRET IF NOT EXISTS {q(secret)} AS "
                      f"{SECRET_MARK.format(env=src.password_env)}", src.password_env),
            Statement(f"CREATE CONNECTION IF NOT EXISTS {q(conn_name)} TO POSTGRES ("
                      f"HOST {sql.Literal(src.host).as_string(None)}, PORT {int(src.port)}, "
                      f"USER {sql.Literal(src.user).as_string(None)}, PASSWORD SECRET "
                      f"{q(secret)}, DATABASE {sql.Literal(src.database).as_string(None)})"),
            Statement(f"CREATE SOURCE IF NOT EXISTS {q(source_name)} IN CLUSTER "
                      f"{q(src.cluster)} FROM POSTGRES CONNECTION {q(conn_name)} (PUBLICATION "
                      f"{sql.Literal(src.publication_name).as_string(None)})"),
            Statement(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}"),
        ]
        plan.setup += [Statement(f"CREATE TABLE IF NOT EXISTS {q(schema)}.{q(t)} FROM SOURCE "
                                 f"{q(source_name)} (REFERENCE {q(src.upstream_schema)}.{q(t)})")
                       for t in tables]
    plan.setup.append(Statement("CREATE SCHEMA IF NOT EXISTS tidemark"))
    plan.setup.append(Statement(
        "CREATE TABLE IF NOT EXISTS tidemark.views (name text NOT NULL, target text NOT NULL, "
        "definition_hash text NOT NULL, definition text NOT NULL, deployed_at timestamptz "
        "NOT NULL)"))
    plan.build.append(Statement(f"DROP SCHEMA IF EXISTS {q(DEPLOY_SCHEMA)} CASCADE"))
    plan.build.append(Statement(f"CREATE SCHEMA {q(DEPLOY_SCHEMA)}"))
    for view in dependency_order(views):
        rel = f"{q(DEPLOY_SCHEMA)}.{q(view.name)}"
        plan.build.append(Statement(f"CREATE MATERIALIZED VIEW {rel} IN CLUSTER "
                                    f"{q(view.cluster)} AS {view_query(view)}"))
        if view.keys:
            plan.build.append(Statement(
                f"CREATE INDEX {q(view.name + '_keys_idx')} IN CLUSTER {q(view.cluster)} ON "
                f"{rel} ({', '.join(q(k) for k in view.keys)})"))
    plan.swap.append(Statement(f"ALTER SCHEMA {q(LIVE_SCHEMA)} SWAP WITH {q(DEPLOY_SCHEMA)}"))
    plan.swap.append(Statement(f"DROP SCHEMA {q(DEPLOY_SCHEMA)} CASCADE"))
    return plan


def sources_from_env(names: list[str]) -> list[MaterializeSource]:
    """Sources from the environment: ``TIDEMARK_MZ_SOURCE_URL`` (else ``TIDEMARK_SOURCE_URL``)
    gives host, port, user and database for every source name; the password is read from
    ``TIDEMARK_MZ_SOURCE_PASSWORD`` when applied."""
    url = os.environ.get("TIDEMARK_MZ_SOURCE_URL") or os.environ.get("TIDEMARK_SOURCE_URL")
    if not url:
        raise MaterializeError("set TIDEMARK_MZ_SOURCE_URL (host, port, user and database of "
                               "the source PostgreSQL as Materialize reaches it) and "
                               f"{PASSWORD_ENV}.")
    parts = urlsplit(url)
    return [MaterializeSource(name=n, host=parts.hostname or "localhost", port=parts.port or 5432,
                              user=unquote(parts.username or "postgres"),
                              database=(parts.path or "/").lstrip("/") or n) for n in names]


def _execute(conn: psycopg.Connection, stmt: Statement) -> None:
    text = stmt.text
    if stmt.secret_env is not None:
        secret = os.environ.get(stmt.secret_env)
        if not secret:
            raise MaterializeError(f"environment variable {stmt.secret_env} (the source "
                                   "password) is not set.")
        text = text.replace(SECRET_MARK.format(env=stmt.secret_env),
                            sql.Literal(secret).as_string(conn))
    conn.execute(text)  # type: ignore[arg-type]


def wait_hydrated(conn: psycopg.Connection, timeout_s: float = 600.0) -> None:
    """Wait until every object of the deploy schema is hydrated on all its replicas."""
    deadline = time.monotonic() + timeout_s
    while True:
        pending = conn.execute(
            "select count(*) from mz_internal.mz_hydration_statuses h join mz_catalog.mz_objects o"
            " on o.id = h.object_id join mz_catalog.mz_schemas s on s.id = o.schema_id "
            "where s.name = %s and not h.hydrated", (DEPLOY_SCHEMA,)).fetchone()[0]
        if pending == 0:
            return
        if time.monotonic() > deadline:
            raise MaterializeError(f"{pending} objects in {DEPLOY_SCHEMA} are not hydrated after "
                                   f"{timeout_s:.0f}s; live views were left as they were.")
        time.sleep(1.0)


def deploy_materialize(dsn: str, views: list[ViewFile], prune: bool = False,
                       sources: list[MaterializeSource] | None = None,
                       source_dsn: str | None = None) -> list:
    """Apply the generated SQL to Materialize at ``dsn`` (blue/green through live_deploy).

    Views deployed earlier whose file is gone are kept (rebuilt from the catalog) unless
    ``prune``. ``source_dsn``, when given, receives the ``upstream`` statements.
    """
    sources = sources or sources_from_env(list(referenced_tables(views)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        plan = generate_sql(views, sources)
        if source_dsn is not None:
            with psycopg.connect(source_dsn, autocommit=True) as up:
                for stmt in plan.upstream:
                    _execute(up, stmt)
        for stmt in plan.setup:
            _execute(conn, stmt)
        old = {r[0]: r[1:] for r in conn.execute(
            "select name, definition_hash, definition from tidemark.views").fetchall()}
        names = {v.name for v in views}
        kept = [] if prune else [parse_view_text(n, d) for n, (_, d) in old.items()
                                 if n not in names]
        actions = {v.name: ("unchanged" if old.get(v.name, ("",))[0] == v.definition_hash
                            else "replaced" if v.name in old else "created") for v in views}
        if any(a != "unchanged" for a in actions.values()) or (prune and set(old) - names):
            plan = generate_sql(views + kept, sources)
            for stmt in plan.build:
                _execute(conn, stmt)
            wait_hydrated(conn)
            has_live = conn.execute("select count(*) from mz_catalog.mz_schemas where name = %s",
                                    (LIVE_SCHEMA,)).fetchone()[0]
            if has_live:
                for stmt in plan.swap:
                    _execute(conn, stmt)
            else:
                conn.execute(sql.SQL("alter schema {} rename to {}").format(
                    sql.Identifier(DEPLOY_SCHEMA), sql.Identifier(LIVE_SCHEMA)))
            conn.execute("delete from tidemark.views")
            for v in views + kept:
                conn.execute("insert into tidemark.views values (%s, 'materialize', %s, %s, "
                             "now())", (v.name, v.definition_hash, v.text))
        results = [DeployResult(v.name, actions[v.name], "materialize", v.definition_hash)
                   for v in views]
        if prune:
            results += [DeployResult(n, "dropped", "materialize", h) for n, (h, _) in old.items()
                        if n not in names]
        return results
