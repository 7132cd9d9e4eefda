# ruff: noqa: S608 -- this module generates SQL: user expressions come deparsed from PostgreSQL's
# own parse tree (pglast), identifiers are quoted with psycopg.sql.Identifier (see q()).
"""Compile a view into the SQL of its state table: flat rows, grouping, upsert, build, recompute
and the ``live.<name>`` SELECT.

The state table ``tidemark_state.<name>__<hash8>`` holds one row per group (aggregate views) or
per distinct row with its multiplicity (views without aggregation): the group keys, ``__count``
(rows in the group), each rule's hidden columns (:mod:`streaming_views.rules`), ``__dirty`` and
``__changed_at``. ``live.<name>`` is a view over it with exactly the query's columns and types.

*Flat rows* are the query's rows before grouping: ``__sign`` (+1 added, -1 removed), ``__k<j>``
(group keys) and each rule's ``__x<i>``/``__f<i>``. A delta is a union of *terms*
(:class:`Term`): the query with some base tables read from their change logs (inclusion-
exclusion over the tables a transaction changed, see :mod:`streaming_views.deltas`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast, parse_sql

from streaming_views import bounds, outer, selfjoin, semijoin, temporal
from streaming_views.analyzer import Analysis, TableRef, analyze
from streaming_views.astutil import deparse, q, substitute
from streaming_views.expiry import ensure_inputs, inline_window
from streaming_views.layers import retarget
from streaming_views.plan import plan
from streaming_views.resolve import Resolved, describe, resolve
from streaming_views.rules import Rule
from streaming_views.session import pin
from streaming_views.viewfile import ViewFile

STATE_SCHEMA = "tidemark_state"
LIVE_SCHEMA = "live"
SIGN_MARK = "__tm_sign_mark"

__all__ = ["LIVE_SCHEMA", "STATE_SCHEMA", "CompiledView", "Term", "compile_view", "describe",
           "q"]

# What the statement applying a delta returns (one row): the row ids of the groups whose count
# fell to zero (NULL if none: they are deleted by id, so the state needs no index on __count
# and a group's update is HOT, see streaming_views.triggers.state_ddl) and whether some group
# is marked for recompute (else the recompute statement is not run).
SUMMARY = ("SELECT array_agg(__tid) FILTER (WHERE __count = 0) AS __zero, "
           "coalesce(bool_or(__dirty), false) AS __dirty FROM __u")


def with_upsert(ctes: list[str], upsert: str) -> str:
    """The statement of ``ctes`` then the state's ``upsert`` (as ``__u``), returning
    :data:`SUMMARY`."""
    upserted = f"__u AS ({upsert} RETURNING s.ctid AS __tid, s.__count, s.__dirty)"
    return f"WITH {', '.join([*ctes, upserted])} {SUMMARY}"


def looped(statement: str, dirty: bool) -> str:
    """A statement of :func:`with_upsert` as its upsert itself (the other CTEs its own WITH),
    returning the rows ``__u`` held: the row id and count of each group it touched (and with
    ``dirty``, its ``__dirty``), for a PL/pgSQL ``FOR`` loop. No CTE scan nor aggregate over
    them: a commit's few groups are looked at one by one (the ``apply`` of a small delta, see
    :func:`streaming_views.apply._apply_changed`). Rebuilt from the statement's syntax tree,
    so no text of a view's expressions can be taken for the statement's structure."""
    stmt = parse_sql(statement)[0].stmt
    *ctes, last = stmt.withClause.ctes
    upsert = last.ctequery
    if last.ctename != "__u" or not isinstance(upsert, ast.InsertStmt):
        raise ValueError("not a statement of with_upsert")
    returned = "s.ctid, s.__count" + (", s.__dirty" if dirty else "")
    clause = parse_sql(f"INSERT INTO t VALUES (1) RETURNING {returned}")[0].stmt.returningClause
    upsert.returningClause = clause
    upsert.withClause = ast.WithClause(ctes=tuple(ctes), recursive=False)
    return deparse(upsert)


@dataclass(frozen=True)
class Term:
    """One part of a delta: in branch ``branch`` (None: the whole FROM), the base tables in
    ``logs`` (table index -> relation name) read from their change logs, the others as they
    are now. Its rows carry ``(-1)^(len(logs)+1)`` times the product of the logs' signs."""

    branch: int | None
    logs: tuple[tuple[int, str], ...]

    def sign(self, refs: dict[int, str]) -> str:
        """The ``__sign`` expression of the term's rows."""
        if not self.logs:
            return "1"
        factors = [f"{q(refs[j])}.__tm_sign" for j, _ in self.logs]
        lead = "1" if len(self.logs) % 2 else "-1"
        return f"({lead} * {' * '.join(factors)})::integer"


@dataclass
class CompiledView:
    """Everything needed to install one view on the embedded engine.

    Attributes:
        analysis: the analysed view.
        resolved: what PostgreSQL resolved (types, collations, base tables and used columns).
        keys: (state column, type with collation) of the group keys (``__g``: global).
        outputs: (name, type) of the view's columns, in order.
        rules: the aggregate rules.
        output_exprs: output expressions over the state table ``s``.
        having_sql: the HAVING condition over ``s``, or None.
        union_columns: the column names of a ``FROM (... UNION ALL ...)`` subquery.
    """

    analysis: Analysis
    resolved: Resolved
    keys: list[tuple[str, str]]
    outputs: list[tuple[str, str]]
    rules: list[Rule] = field(default_factory=list)
    output_exprs: list[str] = field(default_factory=list)
    having_sql: str | None = None
    union_columns: list[str] = field(default_factory=list)
    readers: tuple[str, ...] = ()  # the live views reading this one, transitively (layers.py)
    # streaming_views.netpair's analysis of each table, computed once (it parses the delta)
    net: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False, compare=False)

    # ----------------------------------------------------------------- names
    @property
    def name(self) -> str:
        """The view name."""
        return self.analysis.view.name

    @property
    def hash(self) -> str:
        """The view's definition hash."""
        return self.analysis.view.definition_hash

    @property
    def suffix(self) -> str:
        """``<name>__<hash8>``: the stem of the state table, logs, functions and triggers."""
        return f"{self.name}__{self.hash[:8]}"

    @property
    def state(self) -> str:
        """The quoted state table."""
        return f"{q(STATE_SCHEMA)}.{q(self.suffix)}"

    @property
    def tables(self) -> list[TableRef]:
        """The base tables."""
        return self.analysis.tables

    @property
    def has_recompute(self) -> bool:
        """True when some rule may mark a group for recompute (min/max, display scales)."""
        return any(r.recompute() for r in self.rules)

    @property
    def distinct_rules(self) -> list[Rule]:
        """The rules kept with an auxiliary multiplicity table."""
        return [r for r in self.rules if r.aux]

    def aux_table(self, rule: Rule) -> str:
        """The unquoted name of the auxiliary table of distinct rule ``rule``."""
        return f"{self.suffix}__d{rule.index}"

    # ---------------------------------------------------------- state columns
    def hidden_columns(self) -> list[tuple[str, str]]:
        """(name, type) of the bookkeeping columns after the keys."""
        cols = [("__count", "bigint")]
        for rule in self.rules:
            cols += rule.columns()
        return [*cols, ("__dirty", "boolean"), ("__changed_at", "timestamptz")]

    def state_columns(self) -> list[tuple[str, str]]:
        """All state columns: keys, then bookkeeping."""
        return self.keys + self.hidden_columns()

    # ------------------------------------------------------------- flat rows
    def refs(self) -> dict[int, str]:
        """The name each base table goes by in FROM (its alias)."""
        return {j: t.ref for j, t in enumerate(self.tables)}

    def _index(self, table: TableRef) -> int:
        for j, t in enumerate(self.tables):  # the role itself (a self-join has several)
            if t is table:
                return j
        return next(j for j, t in enumerate(self.tables)
                    if (t.schema, t.name) == (table.schema, table.name))

    def _swap(self, term: Term | None, tables: list[TableRef]):
        relations = dict(term.logs) if term else {}

        def swap(node: ast.Node) -> ast.Node | None:
            for table in tables:
                if node is table.node and self._index(table) in relations:
                    return ast.RangeVar(relname=relations[self._index(table)], inh=True,
                                        relpersistence="p", alias=ast.Alias(aliasname=table.ref))
            return None
        return swap

    def flat_columns(self) -> list[tuple[str, str]]:
        """(flat column, expression) of the keys and every rule's arguments and filters."""
        cols = [(f"__k{j}", deparse(k)) for j, k in enumerate(self.analysis.group)]
        for rule in self.rules:
            cols += rule.flat()
        return cols

    def flat_names(self) -> list[str]:
        """The column names of :meth:`flat_select`, in order."""
        return ["__sign", *(n for n, _ in self.flat_columns())]

    def flat_select(self, term: Term | None = None) -> str:
        """The flat rows of ``term`` (None: of the query over the base tables as they are)."""
        an = self.analysis
        cols = [f"{e} AS {n}" for n, e in self.flat_columns()]
        if an.branches:
            from_sql = self._union_from(term)
            sign = f"{q(an.union_alias or '')}.__tm_s" if term and term.logs else "1"
        else:
            swap = self._swap(term, list(self.tables))
            from_sql = ", ".join(deparse(substitute(item, swap)) for item in an.from_clause)
            from_sql = inline_window(from_sql, an.temporal)  # a temporal filter's timed table
            sign = term.sign(self.refs()) if term else "1"
        text = f"SELECT {', '.join([f'{sign} AS __sign', *cols])} FROM {from_sql}"
        if an.where is not None:
            text += f" WHERE {deparse(an.where)}"
        return text

    def _union_from(self, term: Term | None) -> str:
        """``(<branch> UNION ALL ...) AS alias(cols)``; for a term, only its branch, with the
        term's sign as one more column ``__tm_s``."""
        an = self.analysis
        parts = []
        for b, branch in enumerate(an.branches):
            if term is not None and term.branch != b:
                continue
            stmt = substitute(branch.stmt, self._swap(term, list(branch.tables)))
            if term is not None and term.logs:
                refs = {self._index(t): t.ref for t in branch.tables}
                stmt.targetList = (*stmt.targetList, ast.ResTarget(
                    name="__tm_s", val=ast.ColumnRef(fields=(ast.String(sval=SIGN_MARK),))))
                parts.append(deparse(stmt).replace(SIGN_MARK, term.sign(refs)))
            else:
                parts.append(deparse(stmt))
        cols = [q(c) for c in self.union_columns]
        if term is not None and term.logs:
            cols.append("__tm_s")
        return f"({' UNION ALL '.join(parts)}) AS {q(an.union_alias or '')}({', '.join(cols)})"

    def windowed(self, flat: str) -> str:
        """``flat`` with the per-group window columns the rules need (scale tracking)."""
        windows = [(n, e) for r in self.rules for n, e in r.windows()]
        if not windows:
            return flat
        part = ", ".join(f"__k{j}" for j in range(len(self.analysis.group)))
        over = f"(PARTITION BY {part})" if part else "()"
        cols = ", ".join(f"{e} OVER {over} AS {n}" for n, e in windows)
        return f"SELECT *, {cols} FROM ({flat}) AS __w"

    def key_names(self) -> list[str]:
        """The ``__k<j>`` columns of :meth:`flat_select`."""
        return [f"__k{j}" for j in range(len(self.analysis.group))]

    # --------------------------------------------------------- aggregation
    def aggregate_select(self, flat: str, *, delta: bool) -> str:
        """Group flat rows (``flat``) into state rows, in state column order."""
        keys = ["0"] if self.analysis.is_global else self.key_names()
        cols = [*keys, "coalesce(sum(__sign), 0)::bigint"]
        for rule in self.rules:
            cols += rule.exprs(delta)
        # A group new to the state whose delta also removed rows (added and removed in one
        # transaction) is recomputed: there is no state row to merge the delta with.
        dirty = [d for r in self.rules if (d := r.delta_dirty())] if delta else []
        cols += [" OR ".join(dirty) or "false", "now()"]
        text = f"SELECT {', '.join(cols)} FROM ({self.windowed(flat)}) AS __d"
        if self.analysis.group:
            keys_sql = ", ".join(self.key_names())
            text += f" GROUP BY {keys_sql} ORDER BY {keys_sql}"
        elif delta:
            text += " HAVING count(*) > 0"
        return text

    def upsert_sql(self, source: str) -> str:
        """INSERT ... ON CONFLICT DO UPDATE adding the grouped delta ``source`` to the state."""
        names = [n for n, _ in self.state_columns()]
        sets = ["__count = s.__count + excluded.__count"]
        dirty = ["s.__dirty"]
        for rule in self.rules:
            sets += rule.merge()
            if rule.dirty():
                dirty.append(rule.dirty() or "false")
        sets += [f"__dirty = {' OR '.join(dirty)}", "__changed_at = excluded.__changed_at"]
        keys = ", ".join(q(n) for n, _ in self.keys)
        return (f"INSERT INTO {self.state} AS s ({', '.join(q(n) for n in names)}) {source} "
                f"ON CONFLICT ({keys}) DO UPDATE SET {', '.join(sets)}")

    def build_sql(self) -> str:
        """INSERT of the full state from the base tables."""
        names = ", ".join(q(n) for n, _ in self.state_columns())
        return (f"INSERT INTO {self.state} ({names}) "
                f"{self.aggregate_select(self.flat_select(), delta=False)}")

    def recompute_sql(self) -> str:
        """UPDATE recomputing the rules' columns of the groups marked dirty.

        One statement; each dirty group's rows are found by an equality on the group key
        expressions (a NULL key by IS NOT DISTINCT FROM), which the base-table index created at
        deploy (:func:`streaming_views.auxiliary.base_indexes`) answers.
        """
        pairs = [pair for r in self.rules for pair in r.recompute()]
        cols = [c for c, _ in pairs] + ["__dirty"]
        exprs = [e for _, e in pairs] + ["false"]
        flat = self.flat_select()
        if self.analysis.group:
            eq = " AND ".join(f"__d.__k{j} = s.{q(n)}" for j, (n, _) in enumerate(self.keys))
            nulls = " OR ".join(f"s.{q(n)} IS NULL" for n, _ in self.keys)
            same = " AND ".join(f"__d.__k{j} IS NOT DISTINCT FROM s.{q(n)}"
                                for j, (n, _) in enumerate(self.keys))
            rows = (f"SELECT * FROM ({flat}) AS __d WHERE {eq} UNION ALL "
                    f"SELECT * FROM ({flat}) AS __d WHERE ({nulls}) AND {same}")
        else:
            rows = flat
        return (f"UPDATE {self.state} AS s SET ({', '.join(cols)}) = (SELECT "
                f"{', '.join(exprs)} FROM ({self.windowed(rows)}) AS __d) WHERE s.__dirty")

    def state_select(self) -> str:
        """The SELECT of ``live.<name>`` over the state table."""
        cols = ", ".join(f"({e})::{t} AS {q(n)}"
                         for e, (n, t) in zip(self.output_exprs, self.outputs, strict=True))
        an = self.analysis
        if an.kind == "bag":
            return (f"SELECT {cols} FROM {self.state} AS s "
                    f"CROSS JOIN LATERAL generate_series(1, s.__count) AS __m")
        raising = [(cond, r.finalize()) for r in self.rules if (cond := r.raises())]
        if raising:  # every group's aggregates are finalised (and may raise) before HAVING
            whens = "" if an.is_global else "WHEN s.__count <= 0 THEN false "
            whens += "".join(f"WHEN {c} THEN ({f}) IS NULL " for c, f in raising)
            return (f"SELECT {cols} FROM {self.state} AS s WHERE CASE {whens}"
                    f"ELSE {self.having_sql or 'true'} END")
        conds = [] if an.is_global else ["s.__count > 0"]
        if self.having_sql:
            conds.append(f"({self.having_sql})")
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        return f"SELECT {cols} FROM {self.state} AS s{where}"

    def view_select(self) -> str:
        """The SELECT of ``live.<name>`` over the state table (with a temporal filter, its own
        or an inner live view's: raising while the timed table holds rows whose bound cannot
        be computed)."""
        calls = bounds.check_calls(self)
        return bounds.check_sql(calls, self.state_select()) if calls else self.state_select()


def compile_view(conn: psycopg.Connection, view: ViewFile) -> CompiledView:
    """Analyse ``view`` and resolve it against the database behind ``conn``.

    Runs in a transaction of its own (or a savepoint of the caller's), under the pinned session
    settings.

    Raises:
        UnsupportedViewError: outside the supported subset.
        ViewDefinitionError: PostgreSQL rejects the query.
    """
    an = analyze(view)
    with conn.transaction():
        pin(conn)
        guard, window = ensure_inputs(conn, an.temporal, str(view.path))
        with temporal.bounds_in_where(an):
            resolved = resolve(conn, an)
        temporal.read_through_window(an)
        resolved.tables = retarget(resolved.tables)  # live.<inner>: its state table
        selfjoin.share_columns(resolved)
        union_columns = ([c.name for c in describe(conn, deparse(an.branches[0].stmt))]
                         if an.branches else [])
    p = plan(an, resolved, conn.info.server_version)
    cv = CompiledView(an, resolved, p.keys, p.outputs, p.rules, p.output_exprs, p.having_sql,
                      union_columns)
    if an.temporal is not None:  # rows whose bound cannot be computed: streaming_views.bounds
        an.temporal = dataclasses.replace(an.temporal, guard=guard, owner=cv.suffix,
                                          columns=bounds.columns(an.temporal),
                                          window_range=window)
    outer.check_types(conn, cv)
    semijoin.check_not_in(conn, cv)
    return cv
