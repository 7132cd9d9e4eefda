# ruff: noqa: S608 -- this module generates SQL: user expressions come deparsed from PostgreSQL's
# own parse tree (pglast), identifiers are quoted with psycopg.sql.Identifier (see q()).
"""Auxiliary state of a view: distinct-value multiplicities and base-table key indexes.

``count/sum/avg(DISTINCT x) [FILTER (WHERE ...)]`` keeps, per aggregate, a hidden table
``tidemark_state.<name>__<hash8>__d<i>`` of (group keys, ``__v`` value, ``__m`` multiplicity,
``__d`` the last change of ``__m``) — the arrangement Materialize keeps for a distinct aggregate.
A transaction's delta updates the multiplicities set-based (one ``INSERT ... ON CONFLICT DO
UPDATE`` per aggregate, in a CTE of the maintenance statement) whose ``RETURNING`` gives the new
multiplicity and the change just added, hence which values crossed between zero and a positive
multiplicity (plain ``RETURNING``: PostgreSQL 15 and later); the group's distinct count (and sum)
changes by exactly those. Nothing reads the base tables. Rows whose multiplicity fell to zero are
deleted by the next statement (a partial index holds exactly them).

min/max keep their delta rule (``least``/``greatest`` on insert); only a delete or update that
removes a group's current extreme marks the group dirty, and the dirty groups are recomputed in
one statement that finds each group's rows by equality on the group key expressions. For a
single-table view, deploy creates (if missing) a btree index on those expressions on the base
table — ``<schema>.tidemark_live_<hash>``, recorded in the catalog and dropped when no deployed
view needs it any more — so a recompute is an index lookup instead of a table scan.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg
from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind
from psycopg import sql

from streaming_views.astutil import column_ref, deparse, q, substitute, walk
from streaming_views.compiler import STATE_SCHEMA, CompiledView, with_upsert
from streaming_views.rules import Rule

INDEX_PREFIX = "tidemark_live_"
A_EXPR_OP = A_Expr_Kind.AEXPR_OP


# ------------------------------------------------------------------ distinct aggregates
def _aux(cv: CompiledView, rule: Rule) -> str:
    return f"{q(STATE_SCHEMA)}.{q(cv.aux_table(rule))}"


def _aux_keys(cv: CompiledView) -> list[tuple[str, str]]:
    """(column, type) of the group keys in an auxiliary table (none for a global aggregate)."""
    return [] if cv.analysis.is_global else list(cv.keys)


def aux_ddl(cv: CompiledView) -> list[str]:
    """CREATE TABLE and indexes of every auxiliary table of ``cv``."""
    stmts = []
    for rule in cv.distinct_rules:
        name = cv.aux_table(rule)
        cols = [f"{q(n)} {t}" for n, t in _aux_keys(cv)]
        cols += [f"__v {rule.arg_type}{rule.collate} NOT NULL", "__m bigint NOT NULL",
                 "__d bigint NOT NULL DEFAULT 0"]
        unique = ", ".join([*(q(n) for n, _ in _aux_keys(cv)), "__v"])
        stmts += [f"CREATE TABLE {_aux(cv, rule)} ({', '.join(cols)})",
                  f"CREATE UNIQUE INDEX {q(name + '__keys')} ON {_aux(cv, rule)} ({unique}) "
                  f"NULLS NOT DISTINCT",
                  f"CREATE INDEX {q(name + '__zero')} ON {_aux(cv, rule)} (__m) WHERE __m = 0"]
    return stmts


def aux_build_sql(cv: CompiledView) -> list[str]:
    """INSERTs filling every auxiliary table from the base tables."""
    stmts = []
    keys = [] if cv.analysis.is_global else cv.key_names()
    for rule in cv.distinct_rules:
        cols = ", ".join([*(q(n) for n, _ in _aux_keys(cv)), "__v", "__m"])
        group = ", ".join([*keys, rule.x])
        stmts.append(f"INSERT INTO {_aux(cv, rule)} ({cols}) SELECT {group}, count(*) "
                     f"FROM ({cv.flat_select()}) AS __d WHERE {rule.cond()} GROUP BY {group}")
    return stmts


def aux_clear_sql(cv: CompiledView) -> list[str]:
    """DELETEs emptying every auxiliary table (before a rebuild)."""
    return [f"DELETE FROM {_aux(cv, rule)}" for rule in cv.distinct_rules]


def aux_zero_sql(cv: CompiledView) -> list[str]:
    """DELETEs of the values whose multiplicity fell to zero (partial index: only those)."""
    return [f"DELETE FROM {_aux(cv, rule)} WHERE __m = 0" for rule in cv.distinct_rules]


def delta_statement(cv: CompiledView, flat: str, ctes: list[str]) -> str:
    """The one statement adding a delta (flat rows ``flat``) to the state.

    Args:
        cv: the view.
        flat: the delta's flat rows.
        ctes: CTEs ``flat`` reads (the change logs).

    Without distinct aggregates: the grouped upsert. With them, one CTE per distinct aggregate
    first updates its multiplicities and returns the crossings (+1: the value appeared in the
    group, -1: it left it), which the grouped upsert adds to the group's distinct count. The
    statement returns :data:`streaming_views.compiler.SUMMARY`.
    """
    if not cv.distinct_rules:
        return with_upsert(ctes, cv.upsert_sql(cv.aggregate_select(flat, delta=True)))
    keys = [] if cv.analysis.is_global else cv.key_names()
    aux_keys = [q(n) for n, _ in _aux_keys(cv)]
    names = cv.flat_names()
    crossings = {r.index: r.crossings() for r in cv.distinct_rules}  # type: ignore[attr-defined]
    ctes = [*ctes, f"__delta AS MATERIALIZED ({flat})"]
    branches = ["SELECT " + ", ".join(
        names + [f"NULL::{t} AS {c}" for cols in crossings.values() for c, t, _ in cols])
        + " FROM __delta"]
    for rule in cv.distinct_rules:
        i = rule.index
        group = ", ".join([*keys, rule.x])
        conflict = ", ".join([*aux_keys, "__v"])
        returning = ", ".join([*(f"t.{k}" for k in aux_keys), "t.__v"])
        ctes.append(
            f"__c{i} AS (INSERT INTO {_aux(cv, rule)} AS t ({conflict}, __m, __d) "
            f"SELECT {group}, sum(__sign), sum(__sign) FROM __delta WHERE {rule.cond()} "
            f"GROUP BY {group} HAVING sum(__sign) <> 0 ORDER BY {group} "
            f"ON CONFLICT ({conflict}) DO UPDATE SET __m = t.__m + excluded.__m, "
            f"__d = excluded.__d RETURNING {returning}, "
            f"CASE WHEN t.__m - t.__d > 0 THEN (CASE WHEN t.__m > 0 THEN 0 ELSE -1 END) "
            f"ELSE (CASE WHEN t.__m > 0 THEN 1 ELSE 0 END) END AS __c)")
        cols = ["0", *aux_keys] + ["NULL"] * (len(names) - 1 - len(keys))
        for j, pairs in crossings.items():
            cols += [expr if j == i else "NULL" for _, _, expr in pairs]
        branches.append(f"SELECT {', '.join(cols)} FROM __c{i}")
    upsert = cv.upsert_sql(cv.aggregate_select(" UNION ALL ".join(branches), delta=True))
    return with_upsert(ctes, upsert)


# ------------------------------------------------------------------ base-table key indexes
@dataclass(frozen=True)
class BaseIndex:
    """An index on a base table: the group key expressions of recomputed groups, or an
    equality-join column each batch probes."""

    schema: str
    table: str
    name: str
    expressions: tuple[str, ...]

    @property
    def qualified(self) -> str:
        """``schema.name`` (unquoted), as the catalog records it."""
        return f"{self.schema}.{self.name}"

    def create_sql(self) -> sql.Composed:
        """CREATE INDEX IF NOT EXISTS of this index."""
        exprs = ", ".join(f"({e})" for e in self.expressions)
        return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(self.name), sql.Identifier(self.schema, self.table),
            sql.SQL(exprs))  # type: ignore[arg-type]


def base_indexes(cv: CompiledView) -> list[BaseIndex]:
    """The base-table indexes ``cv``'s maintenance needs: the group keys of a single-table
    view with min/max (its recompute), and the equality-join columns of a view over several
    tables (each batch joins its changed rows with the other tables on them)."""
    found = _recompute_indexes(cv) + join_indexes(cv) + _partition_indexes(cv)
    return list({i.qualified: i for i in found if i.schema != "live"}.values())


def _partition_indexes(cv: CompiledView) -> list[BaseIndex]:
    """The first key column of each table of a view kept per key (streaming_views.outer:
    outer joins, semi-joins, two-level aggregation): each transaction probes it."""
    oj = cv.analysis.outer
    if oj is None:
        return []
    found = []
    for j, table in enumerate(cv.tables):
        expr = deparse(column_ref(oj.keys[j][0]))
        digest = hashlib.sha256(
            "\n".join([table.schema, table.name, expr]).encode()).hexdigest()[:16]
        found.append(BaseIndex(table.schema, table.name, f"{INDEX_PREFIX}{digest}", (expr,)))
    return list({i.name: i for i in found}.values())


def join_indexes(cv: CompiledView) -> list[BaseIndex]:
    """One single-column index per column of an equality join between two base tables
    (``o.order_id = p.order_id`` in ``ON`` or ``WHERE``), in every SELECT of the view.

    Without it, the delta of one table is hash-joined with a full scan of the other on every
    batch (live.daily_store_revenue at 30 days x 20,000 orders: a 0.4 s scan of payments for
    each batch of orders; with the index, 0.05 ms).
    """
    an = cv.analysis
    selects = ([(b.stmt.fromClause, b.stmt.whereClause, b.tables) for b in an.branches]
               or [(an.from_clause, an.where, tuple(an.tables))])
    found: dict[tuple[str, str, str], BaseIndex] = {}
    for from_clause, where, tables in selects:
        if len(tables) < 2:
            continue
        refs = {t.ref: t for t in tables}
        roots = [j.quals for j in walk(from_clause) if isinstance(j, ast.JoinExpr)] + [where]
        for node in walk([r for r in roots if r is not None]):
            if not (isinstance(node, ast.A_Expr) and node.kind == A_EXPR_OP
                    and [n.sval for n in node.name] == ["="]):
                continue
            sides = [_table_column(refs, side) for side in (node.lexpr, node.rexpr)]
            if None in sides or sides[0][0] is sides[1][0]:  # type: ignore[index]
                continue
            for table, column in sides:  # type: ignore[misc]
                expr = deparse(column_ref(column))
                digest = hashlib.sha256(
                    "\n".join([table.schema, table.name, expr]).encode()).hexdigest()[:16]
                found.setdefault((table.schema, table.name, expr), BaseIndex(
                    table.schema, table.name, f"{INDEX_PREFIX}{digest}", (expr,)))
    return list(found.values())


def _table_column(refs: dict, node: object) -> tuple | None:
    """(table, column) of ``alias.column`` naming a base table of ``refs``, else None."""
    if not (isinstance(node, ast.ColumnRef) and len(node.fields) == 2
            and all(isinstance(f, ast.String) for f in node.fields)):
        return None
    table = refs.get(node.fields[0].sval)
    return None if table is None else (table, node.fields[1].sval)


def _recompute_indexes(cv: CompiledView) -> list[BaseIndex]:
    """The index the min/max recompute of a single-table view needs (its group keys); for a
    view over one live view, on the inner view's state table (the keys' expressions over it)."""
    an = cv.analysis
    if not any(r.kind == "extreme" for r in cv.rules) or an.is_global or an.branches \
            or len(an.tables) != 1:
        return []
    table: Any = an.tables[0]
    inner = getattr(cv.resolved.tables[0], "column_exprs", None)  # a live view read as a table
    exprs = []
    for key in an.group:
        refs = [n for n in walk(key) if isinstance(n, ast.ColumnRef)]
        if not refs or (inner is not None and any(
                getattr(r.fields[-1], "sval", None) not in inner for r in refs)):
            return []

        def strip(node: ast.Node) -> ast.Node | None:
            if isinstance(node, ast.ColumnRef) and inner is not None:
                # a column of live.<inner>: its expression over the inner view's state
                expr = inner[node.fields[-1].sval]
                return parse_sql(f"SELECT {expr}")[0].stmt.targetList[0].val
            if isinstance(node, ast.ColumnRef) and len(node.fields) == 2:
                return column_ref(node.fields[1].sval)
            return None
        exprs.append(deparse(substitute(key, strip)))
    if inner is not None:  # the index goes on the inner view's state table
        table = cv.resolved.tables[0]
    digest = hashlib.sha256(
        "\n".join([table.schema, table.name, *exprs]).encode()).hexdigest()[:16]
    return [BaseIndex(table.schema, table.name, f"{INDEX_PREFIX}{digest}", tuple(exprs))]


def ensure_base_indexes(conn: psycopg.Connection, cv: CompiledView) -> list[str]:
    """Create the base-table indexes of ``cv`` that are missing; return their qualified names.

    An index whose expressions the table's existing indexes already lead with (e.g. a primary
    key on the group column) is not created. One PostgreSQL cannot create (no btree operator
    class for the type, or a deploying role that does not own the table) is skipped: the
    recompute stays correct, only slower.
    """
    made = []
    for index in base_indexes(cv):
        if len(index.expressions) == 1 and _leading_column_indexed(conn, index):
            continue
        try:
            with conn.transaction():
                conn.execute(index.create_sql())
        except (psycopg.errors.UndefinedObject, psycopg.errors.InsufficientPrivilege,
                psycopg.errors.InvalidObjectDefinition):
            # no btree operator class, a role that does not own the table, or a key that is
            # not immutable (pinned session settings do not apply to an index)
            continue
        made.append(index.qualified)
    return made


def _leading_column_indexed(conn: psycopg.Connection, index: BaseIndex) -> bool:
    row = conn.execute(
        "select exists (select 1 from pg_index i join pg_attribute a on a.attrelid = "
        "i.indrelid and a.attnum = i.indkey[0] where i.indrelid = %s::regclass and "
        "i.indpred is null and a.attname = %s and not i.indexrelid::regclass::text "
        "like %s)",
        (f"{q(index.schema)}.{q(index.table)}", index.expressions[0].strip('"'),
         f"%{INDEX_PREFIX}%")).fetchone()
    return bool(row and row[0])


def release_base_indexes(conn: psycopg.Connection, candidates: list[str]) -> None:
    """Drop the engine's base-table indexes among ``candidates`` no catalog entry lists."""
    for qualified in sorted(set(candidates)):
        schema, name = qualified.split(".", 1)
        if not name.startswith(INDEX_PREFIX):
            continue
        used = conn.execute("select exists (select 1 from tidemark.views where %s = any("
                            "base_indexes))", (qualified,)).fetchone()
        if used and used[0]:
            continue
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(schema, name)))
