"""The Materialize target: generate and apply sources, tables, materialized views and indexes.

Views are checked against what Materialize supports (:mod:`streaming_views.mzcheck`, sqlglot's
``materialize`` dialect), not against the embedded engine's subset. Generated, in order (see
:func:`generate_sql`):

1. ``upstream`` — run on the source PostgreSQL: ``REPLICA IDENTITY FULL`` on every referenced
   table and a publication over them;
2. ``setup`` — run on Materialize, idempotent: ``CREATE SECRET`` (the password comes from an
   environment variable when applied; generated SQL only names the variable),
   ``CREATE CONNECTION ... TO POSTGRES``, ``CREATE SOURCE ... FROM POSTGRES``, the schema
   ``<source>`` and ``CREATE TABLE <source>.<table> FROM SOURCE`` per referenced table;
3. ``init``, ``build``, ``await``, ``promote``, ``cleanup`` — blue/green as dbt-materialize does
   it (:mod:`streaming_views.mzdeploy`): deploy schema and clusters, the views built there (with
   the ``@retention`` temporal filter ``mz_now() <= col + interval``), a wait for hydration and
   low lag, ``ALTER SCHEMA/CLUSTER ... SWAP WITH`` in one transaction, the old ones dropped;
   nothing at all when no view changed;
4. ``catalog`` — ``tidemark.views`` rewritten with the deployed hashes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import psycopg
import sqlglot
from psycopg import sql
from sqlglot import exp

from streaming_views.compiler import q
from streaming_views.errors import MaterializeError
from streaming_views.mzcheck import DIALECT, MzAnalysis, check_materialize
from streaming_views.mzdeploy import (
    DEPLOY_SCHEMA,
    LIVE_SCHEMA,
    READINESS_SQL,
    BlueGreen,
    Environment,
    Statement,
    plan_blue_green,
    probe,
    read_environment,
    wait_ready,
)
from streaming_views.result import DeployResult
from streaming_views.viewfile import ViewFile, parse_view_text

CATALOG_INSERT = ("INSERT INTO tidemark.views VALUES (%s, 'materialize', %s, %s, now())")
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
class MaterializePlan:
    """Generated SQL by phase (``upstream`` runs on the source PostgreSQL)."""

    upstream: list[Statement] = field(default_factory=list)
    setup: list[Statement] = field(default_factory=list)
    deploy: BlueGreen = field(default_factory=BlueGreen)
    catalog: list[Statement] = field(default_factory=list)
    catalog_rows: list[tuple[str, str, str]] = field(default_factory=list)
    lag_threshold_s: float = 1.0

    @property
    def build(self) -> list[Statement]:
        """The deploy schema's views and indexes."""
        return self.deploy.build

    def render(self) -> str:
        """All phases as one annotated SQL script (for golden files and dry runs)."""
        out = []
        for phase in ("upstream", "setup"):
            out.append(f"-- phase: {phase}")
            out += [s.render() + ";" for s in getattr(self, phase)]
        actions = ", ".join(f"{n} {a}" for n, a in sorted(self.deploy.actions.items()))
        dropped = ", ".join(f"{n} dropped" for n in self.deploy.dropped)
        out.append(f"-- views: {', '.join(x for x in (actions, dropped) if x) or 'none'}")
        if not self.deploy.changed:
            out.append("-- nothing changed: no schema, cluster or view is touched")
            return "\n".join(out) + "\n"
        out.append("-- phase: init (swapped clusters: "
                   f"{', '.join(self.deploy.swapped_clusters) or 'none'})")
        out += [s.render() + ";" for s in self.deploy.init]
        out.append("-- phase: build")
        out += [s.render() + ";" for s in self.deploy.build]
        out.append(f"-- phase: await (every object hydrated, lag <= {self.lag_threshold_s:g}s; "
                   "polled with:)")
        out += ["-- " + line for line in READINESS_SQL.replace(
            "%(schema)s", f"'{DEPLOY_SCHEMA}'").splitlines()]
        for phase in ("promote", "cleanup"):
            out.append(f"-- phase: {phase}")
            out += [s.render() + ";" for s in getattr(self.deploy, phase)]
        out.append("-- phase: catalog (one row per view: " + ", ".join(
            f"{n} {h}" for n, h, _ in self.catalog_rows) + ")")
        out += [s.render() + ";" for s in self.catalog]
        return "\n".join(out) + "\n"


def view_query(view: ViewFile, analysis: MzAnalysis | None = None) -> str:
    """The view's SELECT for Materialize: checked against what Materialize supports, with the
    ``@retention`` temporal filter added and ``live.<other>`` read from the deploy schema."""
    tree = (analysis or check_materialize(view)).tree.copy()
    if view.retention is not None:
        if not isinstance(tree, exp.Select):
            raise MaterializeError(f"{view.path}: @retention needs the view to be one SELECT "
                                   "(not a UNION at the top); write the temporal filter "
                                   "(mz_now() <= ts + interval ...) in each branch instead.")
        temporal = sqlglot.condition(
            f"mz_now() <= {view.retention.column} + interval '{view.retention.interval}'",
            dialect=DIALECT)
        tree = tree.where(temporal, append=True, copy=False)
    for table in tree.find_all(exp.Table):
        if table.db and table.db.lower() == LIVE_SCHEMA:
            table.set("db", exp.to_identifier(DEPLOY_SCHEMA))
    return tree.sql(dialect=DIALECT, comments=False)


def referenced_tables(views: list[ViewFile]) -> dict[str, list[str]]:
    """``{source: [table, ...]}`` of every base table the views read."""
    out: dict[str, set[str]] = {}
    for view in views:
        for schema, name in check_materialize(view).tables:
            out.setdefault(schema, set()).add(name)
    return {k: sorted(v) for k, v in sorted(out.items())}


def generate_sql(views: list[ViewFile], sources: list[MaterializeSource],
                 env: Environment | None = None, lag_threshold_s: float = 1.0,
                 ) -> MaterializePlan:
    """Generate the Materialize deployment of ``views`` (all of ``live``) reading ``sources``.

    Args:
        views: every view ``live`` holds after the deploy.
        sources: the upstream databases.
        env: what is deployed now (default: a fresh Materialize).
        lag_threshold_s: the lag under which the deploy schema is ready to swap.

    Raises:
        MaterializeError: a view reads a schema no source provides, or a live view not deployed.
        UnsupportedViewError: a view uses what Materialize does not support.
    """
    env = env or Environment()
    analyses = {v.name: check_materialize(v) for v in views}
    by_name = {s.name: s for s in sources}
    plan = MaterializePlan(lag_threshold_s=lag_threshold_s)
    for view in views:
        missing = [r for r in analyses[view.name].reads if r not in analyses]
        if missing:
            raise MaterializeError(f"{view.path}: reads live.{missing[0]}, which is neither "
                                   "deployed nor among the views; add its file.")
    for schema, tables in referenced_tables(views).items():
        src = by_name.get(schema)
        if src is None:
            raise MaterializeError(f"views read {schema}.* but no Materialize source named "
                                   f"{schema!r} is configured.")
        plan.upstream += _upstream(src, tables)
        plan.setup += _setup(schema, src, tables)
    plan.setup.append(Statement("CREATE SCHEMA IF NOT EXISTS tidemark"))
    plan.setup.append(Statement(
        "CREATE TABLE IF NOT EXISTS tidemark.views (name text NOT NULL, target text NOT NULL, "
        "definition_hash text NOT NULL, definition text NOT NULL, deployed_at timestamptz "
        "NOT NULL)"))
    plan.deploy = plan_blue_green(
        views, env, {v.name: view_query(v, analyses[v.name]) for v in views},
        {n: a.reads for n, a in analyses.items()}, {s.cluster for s in sources})
    if plan.deploy.changed:
        plan.catalog.append(Statement("DELETE FROM tidemark.views WHERE target = 'materialize'"))
        plan.catalog.append(Statement(CATALOG_INSERT))
        plan.catalog_rows = [(v.name, v.definition_hash, v.text)
                             for v in sorted(views, key=lambda v: v.name)]
    return plan


def _lit(value: str) -> str:
    return sql.Literal(value).as_string(None)


def _upstream(src: MaterializeSource, tables: list[str]) -> list[Statement]:
    upstream = ", ".join(f"{q(src.upstream_schema)}.{q(t)}" for t in tables)
    out = [Statement(f"ALTER TABLE {q(src.upstream_schema)}.{q(t)} REPLICA IDENTITY FULL")
           for t in tables]
    out.append(Statement(f"DROP PUBLICATION IF EXISTS {q(src.publication_name)}"))
    out.append(Statement(f"CREATE PUBLICATION {q(src.publication_name)} FOR TABLE {upstream}"))
    return out


def _setup(schema: str, src: MaterializeSource, tables: list[str]) -> list[Statement]:
    secret, conn_name, source_name = f"{schema}_pgpass", f"{schema}_pg", f"{schema}_source"
    out = [
        Statement(f"CREATE SECRET IF NOT EXISTS {q(secret)} AS "
                  f"{SECRET_MARK.format(env=src.password_env)}", src.password_env),
        Statement(f"CREATE CONNECTION IF NOT EXISTS {q(conn_name)} TO POSTGRES ("
                  f"HOST {_lit(src.host)}, PORT {int(src.port)}, USER {_lit(src.user)}, "
                  f"PASSWORD SECRET {q(secret)}, DATABASE {_lit(src.database)})"),
        Statement(f"CREATE SOURCE IF NOT EXISTS {q(source_name)} IN CLUSTER {q(src.cluster)} "
                  f"FROM POSTGRES CONNECTION {q(conn_name)} (PUBLICATION "
                  f"{_lit(src.publication_name)})"),
        Statement(f"CREATE SCHEMA IF NOT EXISTS {q(schema)}"),
    ]
    out += [Statement(f"CREATE TABLE IF NOT EXISTS {q(schema)}.{q(t)} FROM SOURCE "
                      f"{q(source_name)} (REFERENCE {q(src.upstream_schema)}.{q(t)})")
            for t in tables]
    return out


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


def deploy_materialize(dsn: str, views: list[ViewFile], prune: bool = False,
                       sources: list[MaterializeSource] | None = None,
                       source_dsn: str | None = None, lag_threshold_s: float = 1.0,
                       timeout_s: float = 600.0) -> list:
    """Apply the generated SQL to Materialize at ``dsn``, blue/green (see the module docstring).

    Views deployed earlier whose file is gone are kept (rebuilt from the catalog) unless
    ``prune``. Unchanged views leave everything as it is. ``source_dsn``, when given, receives
    the ``upstream`` statements.

    Raises:
        UnsupportedViewError: a view uses what Materialize does not support (nothing applied).
        MaterializeError: misconfiguration, or the deploy schema did not get ready in time.
    """
    for view in views:
        check_materialize(view)  # refuse before anything is applied
    sources = sources or sources_from_env(list(referenced_tables(views)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        plan = generate_sql(views, sources)
        if source_dsn is not None:
            with psycopg.connect(source_dsn, autocommit=True) as up:
                for stmt in plan.upstream:
                    _execute(up, stmt)
        for stmt in plan.setup:
            _execute(conn, stmt)
        env = read_environment(conn)
        old = {r[0]: r[1] for r in conn.execute(
            "select name, definition from tidemark.views where target = 'materialize'")}
        names = {v.name for v in views}
        kept = [] if prune else [parse_view_text(n, d) for n, d in old.items() if n not in names]
        plan = generate_sql(views + kept, sources, env, lag_threshold_s)
        bg = plan.deploy
        if bg.changed:
            for stmt in bg.init + bg.build:
                try:
                    _execute(conn, stmt)
                except psycopg.Error as exc:
                    raise MaterializeError(
                        f"Materialize refused `{stmt.text[:120]}...`: {exc}; nothing was "
                        f"swapped, live views are as they were ({DEPLOY_SCHEMA} is kept for "
                        "inspection; the next deploy drops it).") from None
            wait_ready(lambda: probe(conn, bg.swapped_clusters), lag_threshold_s, timeout_s)
            try:
                for stmt in bg.promote:
                    _execute(conn, stmt)
            except psycopg.Error as exc:
                conn.execute("ROLLBACK")
                raise MaterializeError(f"the swap of {LIVE_SCHEMA} and {DEPLOY_SCHEMA} failed "
                                       f"({exc}); it was rolled back and live views are as they "
                                       "were. Check that the deploying role owns the schema and "
                                       "the clusters, then deploy again.") from None
            for stmt in bg.cleanup:
                _execute(conn, stmt)
            conn.execute(plan.catalog[0].text)
            with conn.cursor() as cur:
                cur.executemany(CATALOG_INSERT, plan.catalog_rows)
        results = [DeployResult(v.name, bg.actions[v.name], "materialize", v.definition_hash)
                   for v in views]
        results += [DeployResult(n, "dropped", "materialize", env.deployed[n])
                    for n in bg.dropped]
        return results
