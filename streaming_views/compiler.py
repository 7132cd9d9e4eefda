# ruff: noqa: S608 -- this module generates SQL: user expressions come deparsed from PostgreSQL's
# own parse tree (pglast), identifiers are quoted with psycopg.sql.Identifier (see q()).
"""Compile an analysed view into the SQL of its state table, build query and live view.

The state table ``tidemark_state.<name>__<hash8>`` holds one row per group (aggregate views) or
per distinct row with its multiplicity (views without aggregation). Hidden columns carry what the
delta rules need: ``__count`` (rows in the group), per aggregate its non-null count, sum, false/
true counts or current extreme. ``live.<name>`` is a view over the state table that exposes
exactly the query's columns, with the query's types. Trigger bodies are in :mod:`triggers`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg
from pglast import ast
from psycopg import sql

from streaming_views.analyzer import AggCall, Analysis, TableRef, analyze
from streaming_views.astutil import column_ref, deparse, line_col, location, substitute, walk
from streaming_views.errors import UnsupportedViewError, ViewDefinitionError
from streaming_views.viewfile import ViewFile

STATE_SCHEMA = "tidemark_state"
LIVE_SCHEMA = "live"
FLOAT_TYPES = {"real", "double precision"}
DISTINCT = "distinct"


def q(name: str) -> str:
    """Quote one identifier (psycopg's quoting)."""
    return sql.Identifier(name).as_string(None)


@dataclass(frozen=True)
class AggPlan:
    """How one aggregate call is kept: its hidden columns and its finalising expression."""

    index: int
    call: AggCall
    kind: str               # count | sum | avg | min | max | bool_and | bool_or | distinct
    result_type: str        # type of the call as written
    value_type: str         # type of the kept sum / extreme value
    shares: int | None = None  # reuse columns: -1 = __count (plain count(*)); i = sum/avg i
    arg_type: str = ""      # type of the argument (the values of a distinct aggregate)

    @property
    def aux(self) -> bool:
        """True for ``count/sum/avg(DISTINCT x)``: kept with a (group, value, multiplicity)
        table (see :mod:`streaming_views.auxiliary`)."""
        return self.kind == DISTINCT


@dataclass
class CompiledView:
    """Everything needed to install one view on the embedded engine.

    Attributes:
        analysis: the analysed view.
        keys: (state column, type) of the group keys (``__g`` for a global aggregate).
        outputs: (name, type) of the view's columns, in order.
        aggs: the aggregate plans.
    """

    analysis: Analysis
    keys: list[tuple[str, str]]
    outputs: list[tuple[str, str]]
    aggs: list[AggPlan] = field(default_factory=list)
    output_exprs: list[str] = field(default_factory=list)
    having_sql: str | None = None
    union_columns: list[str] = field(default_factory=list)

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
        """``<name>__<hash8>``: the stem of the state table, functions and triggers."""
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
    def lock_key(self) -> int:
        """Advisory-lock key serialising maintenance of a multi-table view."""
        return int(self.hash[:15], 16)

    @property
    def has_recompute(self) -> bool:
        """True when some aggregate needs a recompute of affected groups (min/max)."""
        return any(a.kind in {"min", "max"} for a in self.aggs)

    @property
    def distinct_aggs(self) -> list[AggPlan]:
        """The aggregates kept with an auxiliary multiplicity table."""
        return [a for a in self.aggs if a.aux]

    def aux_table(self, a: AggPlan) -> str:
        """The unquoted name of the auxiliary table of distinct aggregate ``a``."""
        return f"{self.suffix}__d{a.index}"

    # ---------------------------------------------------------- state columns
    def hidden_columns(self) -> list[tuple[str, str]]:
        """(name, type) of the bookkeeping columns after the keys."""
        cols = [("__count", "bigint")]
        for a in self.aggs:
            p = f"__a{a.index}"
            if a.shares is not None:
                continue
            if a.kind == "count":
                cols.append((f"{p}_n", "bigint"))
            elif a.kind in {"sum", "avg"}:
                cols += [(f"{p}_nn", "bigint"), (f"{p}_s", a.value_type)]
            elif a.kind in {"min", "max"}:
                cols += [(f"{p}_v", a.value_type), (f"{p}_d", a.value_type)]
            elif a.kind in {"bool_and", "bool_or"}:
                cols += [(f"{p}_nn", "bigint"), (f"{p}_nb", "bigint")]
            else:  # distinct: number of values with a positive multiplicity (and their sum)
                cols.append((f"{p}_n", "bigint"))
                if a.call.func in {"sum", "avg"}:
                    cols.append((f"{p}_s", a.value_type))
        return [*cols, ("__dirty", "boolean"), ("__changed_at", "timestamptz")]

    def state_columns(self) -> list[tuple[str, str]]:
        """All state columns: keys, then bookkeeping."""
        return self.keys + self.hidden_columns()

    # ------------------------------------------------------------- flat rows
    def flat_select(self, sign: int | str, replace: int | None = None,
                    relation: str = "") -> str:
        """The query's rows before grouping: ``__sign``, ``__k<j>``, ``__x<i>``, ``__f<i>``.

        Args:
            sign: +1 for added rows, -1 for removed rows.
            replace: index of the base table to read from ``relation`` instead (a transition
                table), or None to read every base table.
            relation: the transition table's name.
        """
        an = self.analysis
        target = an.tables[replace].node if replace is not None else None

        def swap(node: ast.Node) -> ast.Node | None:
            if target is not None and node is target:
                ref = an.tables[replace].ref
                return ast.RangeVar(relname=relation, inh=True, relpersistence="p",
                                    alias=ast.Alias(aliasname=ref))
            return None

        if an.branches:
            from_sql = self._union_from(replace, relation)
        else:
            from_sql = ", ".join(deparse(substitute(item, swap)) for item in an.from_clause)
        cols = [f"{sign} AS __sign"]
        cols += [f"{deparse(k)} AS __k{j}" for j, k in enumerate(an.group)]
        for a in self.aggs:
            if a.shares is not None:
                continue
            if a.call.arg is not None:
                cols.append(f"{deparse(a.call.arg)} AS __x{a.index}")
            if a.call.filter is not None:
                cols.append(f"({deparse(a.call.filter)}) AS __f{a.index}")
        text = f"SELECT {', '.join(cols)} FROM {from_sql}"
        if an.where is not None:
            text += f" WHERE {deparse(an.where)}"
        return text

    def flat_names(self) -> list[str]:
        """The column names of :meth:`flat_select`, in order."""
        names = ["__sign", *(f"__k{j}" for j in range(len(self.analysis.group)))]
        for a in self.aggs:
            if a.shares is not None:
                continue
            if a.call.arg is not None:
                names.append(f"__x{a.index}")
            if a.call.filter is not None:
                names.append(f"__f{a.index}")
        return names

    def delta_select(self, index: int, event: str) -> str:
        """Flat rows of one statement's change to base table ``index``: the transition tables
        (``__tm_new`` with ``__sign`` +1, ``__tm_old`` with -1) joined to the other tables once.

        Args:
            index: the base table changed.
            event: ``ins``, ``upd`` or ``del``.
        """
        branches = []
        if event in {"ins", "upd"}:
            branches.append("SELECT 1 AS __sign, * FROM __tm_new")
        if event in {"del", "upd"}:
            branches.append("SELECT -1 AS __sign, * FROM __tm_old")
        if self.analysis.branches:  # UNION ALL views: one flat select per sign
            return " UNION ALL ".join(
                self.flat_select(sign, index, rel) for sign, rel in
                (([1, "__tm_new"],) if event != "del" else ()) +
                (([-1, "__tm_old"],) if event != "ins" else ()))
        ref = self.analysis.tables[index].ref
        placeholder = deparse(ast.RangeVar(relname="__tm_delta", inh=True, relpersistence="p",
                                           alias=ast.Alias(aliasname=ref)))
        text = self.flat_select(f"{q(ref)}.__sign", index, "__tm_delta")
        return text.replace(placeholder, f"({' UNION ALL '.join(branches)}) AS {q(ref)}", 1)

    def _union_from(self, replace: int | None, relation: str) -> str:
        """``(<branch> UNION ALL ...) AS alias(cols)``; with ``replace`` only the branches
        reading that table, the table read from ``relation``."""
        an = self.analysis
        wanted = (an.tables[replace].schema, an.tables[replace].name) if replace is not None \
            else None
        parts = []
        for branch in an.branches:
            hit = [t for t in branch.tables if (t.schema, t.name) == wanted]
            if wanted is not None and not hit:
                continue

            def swap(node: ast.Node, hit: list[TableRef] = hit) -> ast.Node | None:
                for table in hit:
                    if node is table.node:
                        return ast.RangeVar(relname=relation, inh=True, relpersistence="p",
                                            alias=ast.Alias(aliasname=table.ref))
                return None
            parts.append(deparse(substitute(branch.stmt, swap)))
        cols = ", ".join(q(c) for c in self.union_columns)
        return f"({' UNION ALL '.join(parts)}) AS {q(an.union_alias or '')}({cols})"

    def key_names(self) -> list[str]:
        """The ``__k<j>`` columns of :meth:`flat_select`."""
        return [f"__k{j}" for j in range(len(self.keys))]

    # --------------------------------------------------------- aggregation
    def _cond(self, a: AggPlan, *, nonnull: bool) -> str | None:
        parts = []
        if a.call.filter is not None:
            parts.append(f"__f{a.index}")
        if nonnull and a.call.arg is not None:
            parts.append(f"__x{a.index} IS NOT NULL")
        return " AND ".join(parts) or None

    def _counted(self, cond: str | None) -> str:
        if cond is None:
            return "coalesce(sum(__sign), 0)::bigint"
        return f"coalesce(sum(CASE WHEN {cond} THEN __sign ELSE 0 END), 0)::bigint"

    def recompute_expr(self, a: AggPlan) -> str:
        """The aggregate over flat rows (for builds, and recomputes of min/max)."""
        distinct = "DISTINCT " if a.call.distinct else ""
        arg = "*" if a.call.arg is None else f"__x{a.index}"
        text = f"{a.call.func}({distinct}{arg})"
        if a.call.filter is not None:
            text += f" FILTER (WHERE __f{a.index})"
        return text

    def aggregate_select(self, flat: str, *, delta: bool) -> str:
        """Group flat rows (``flat``) into state rows, in state column order.

        With ``delta`` the values are changes to add; otherwise they are the full values.
        """
        keys = ["0"] if self.analysis.is_global else self.key_names()
        cols = [*keys, "coalesce(sum(__sign), 0)::bigint"]
        dirty: list[str] = []
        for a in self.aggs:
            i, t = a.index, a.value_type
            if a.shares is not None:
                continue
            if a.kind == "count":
                cols.append(self._counted(self._cond(a, nonnull=True)))
            elif a.kind in {"sum", "avg"}:
                cond = self._cond(a, nonnull=True)
                cols.append(self._counted(cond))
                val = f"(__x{i})::{t}"
                inner = f"__sign * {val}" if cond is None else \
                    f"CASE WHEN {cond} THEN __sign * {val} END"
                cols.append(f"coalesce(sum({inner}), '0'::{t})::{t}")
            elif a.kind in {"min", "max"}:
                cond = self._cond(a, nonnull=False)
                extra = f" AND {cond}" if cond else ""
                cols.append(f"{a.kind}(CASE WHEN __sign > 0{extra} THEN __x{i} END)")
                cols.append(f"{a.kind}(CASE WHEN __sign < 0{extra} THEN __x{i} END)")
                dirty.append(f"{a.kind}(CASE WHEN __sign < 0{extra} THEN __x{i} END) IS NOT NULL")
            elif a.kind in {"bool_and", "bool_or"}:
                cond = self._cond(a, nonnull=True)
                cols.append(self._counted(cond))
                test = f"NOT __x{i}" if a.kind == "bool_and" else f"__x{i}"
                cols.append(self._counted(f"{cond} AND {test}" if cond else test))
            elif delta:  # crossings of the auxiliary table (see auxiliary.delta_statement)
                cols.append(f"coalesce(sum(__dc{i}), 0)::bigint")
                if a.call.func in {"sum", "avg"}:
                    cols.append(f"coalesce(sum(__ds{i}), '0'::{t})::{t}")
            else:
                filt = f" FILTER (WHERE __f{i})" if a.call.filter is not None else ""
                cols.append(f"count(DISTINCT __x{i}){filt}")
                if a.call.func in {"sum", "avg"}:
                    cols.append(f"coalesce(sum(DISTINCT (__x{i})::{t}){filt}, '0'::{t})::{t}")
        cols.append(" OR ".join(dirty) if (delta and dirty) else "false")
        cols.append("now()")
        text = f"SELECT {', '.join(cols)} FROM ({flat}) AS __d"
        if self.analysis.group:
            keys = ", ".join(self.key_names())
            text += f" GROUP BY {keys}"
            text += f" ORDER BY {keys}"
        elif delta:
            text += " HAVING count(*) > 0"
        return text

    def upsert_sql(self, source: str) -> str:
        """INSERT ... ON CONFLICT DO UPDATE adding the grouped delta ``source`` to the state."""
        names = [n for n, _ in self.state_columns()]
        sets = ["__count = s.__count + excluded.__count"]
        dirty = ["s.__dirty"]
        for a in self.aggs:
            p = f"__a{a.index}"
            if a.shares is not None:
                continue
            if a.kind == "count":
                sets.append(f"{p}_n = s.{p}_n + excluded.{p}_n")
            elif a.kind in {"sum", "avg"}:
                sets += [f"{p}_nn = s.{p}_nn + excluded.{p}_nn",
                         f"{p}_s = s.{p}_s + excluded.{p}_s"]
            elif a.kind in {"bool_and", "bool_or"}:
                sets += [f"{p}_nn = s.{p}_nn + excluded.{p}_nn",
                         f"{p}_nb = s.{p}_nb + excluded.{p}_nb"]
            elif a.kind in {"min", "max"}:
                pick = "least" if a.kind == "min" else "greatest"
                cmp = "<=" if a.kind == "min" else ">="
                sets += [f"{p}_v = {pick}(s.{p}_v, excluded.{p}_v)", f"{p}_d = excluded.{p}_d"]
                dirty.append(f"(excluded.{p}_d IS NOT NULL AND (s.{p}_v IS NULL OR "
                             f"excluded.{p}_d {cmp} s.{p}_v))")
            else:
                sets.append(f"{p}_n = s.{p}_n + excluded.{p}_n")
                if a.call.func in {"sum", "avg"}:
                    sets.append(f"{p}_s = s.{p}_s + excluded.{p}_s")
        sets += [f"__dirty = {' OR '.join(dirty)}", "__changed_at = excluded.__changed_at"]
        keys = ", ".join(q(n) for n, _ in self.keys)
        return (f"INSERT INTO {self.state} AS s ({', '.join(q(n) for n in names)}) {source} "
                f"ON CONFLICT ({keys}) DO UPDATE SET {', '.join(sets)}")

    def build_sql(self) -> str:
        """INSERT of the full state from the base tables."""
        names = ", ".join(q(n) for n, _ in self.state_columns())
        return (f"INSERT INTO {self.state} ({names}) "
                f"{self.aggregate_select(self.flat_select(1), delta=False)}")

    def recompute_sql(self) -> str:
        """UPDATE recomputing the min/max aggregates of the groups marked dirty.

        One statement; each dirty group's rows are found by an equality on the group key
        expressions (a NULL key by IS NOT DISTINCT FROM), which the base-table index created at
        deploy
        (:func:`streaming_views.auxiliary.base_indexes`) answers.
        """
        targets = [a for a in self.aggs if a.kind in {"min", "max"}]
        cols = [f"__a{a.index}_v" for a in targets] + ["__dirty"]
        exprs = [self.recompute_expr(a) for a in targets] + ["false"]
        flat = self.flat_select(1)
        if self.analysis.group:
            # Equality finds a group's rows through an index; groups with a NULL key take the
            # second branch, which its one-time filter skips for every other group.
            eq = " AND ".join(f"__d.__k{j} = s.{q(n)}" for j, (n, _) in enumerate(self.keys))
            nulls = " OR ".join(f"s.{q(n)} IS NULL" for n, _ in self.keys)
            same = " AND ".join(f"__d.__k{j} IS NOT DISTINCT FROM s.{q(n)}"
                                for j, (n, _) in enumerate(self.keys))
            source = (f"(SELECT * FROM ({flat}) AS __d WHERE {eq} UNION ALL "
                      f"SELECT * FROM ({flat}) AS __d WHERE ({nulls}) AND {same}) AS __d")
        else:
            source = f"({flat}) AS __d"
        return (f"UPDATE {self.state} AS s SET ({', '.join(cols)}) = (SELECT "
                f"{', '.join(exprs)} FROM {source}) WHERE s.__dirty")

    def view_select(self) -> str:
        """The SELECT of ``live.<name>`` over the state table."""
        cols = ", ".join(f"({e})::{t} AS {q(n)}"
                         for e, (n, t) in zip(self.output_exprs, self.outputs, strict=True))
        an = self.analysis
        if an.kind == "bag":
            return (f"SELECT {cols} FROM {self.state} AS s "
                    f"CROSS JOIN LATERAL generate_series(1, s.__count) AS __m")
        conds = [] if an.is_global else ["s.__count > 0"]
        if self.having_sql:
            conds.append(f"({self.having_sql})")
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        return f"SELECT {cols} FROM {self.state} AS s{where}"


# ---------------------------------------------------------------------- compile
def describe(conn: psycopg.Connection, select_text: str) -> list[tuple[str, str]]:
    """Return (column, type) of a SELECT, as PostgreSQL resolves it.

    Raises:
        ViewDefinitionError: PostgreSQL rejects the query.
    """
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(sql.SQL("create temp view {} as {}").format(
                sql.Identifier("tidemark_probe"), sql.SQL(select_text)))  # type: ignore[arg-type]
            cur.execute(
                "select attname, format_type(atttypid, atttypmod) from pg_attribute "
                "where attrelid = 'pg_temp.tidemark_probe'::regclass and attnum > 0 "
                "and not attisdropped order by attnum")
            rows = [(str(n), str(t)) for n, t in cur.fetchall()]
            cur.execute("drop view pg_temp.tidemark_probe")
            return rows
    except psycopg.errors.UndefinedTable as exc:
        raise ViewDefinitionError(
            f"{str(exc).strip()}\nThe view's base tables must exist in this database first "
            "(for the landing mirror: start ingestion, e.g. 'tidemark ingest run').") from None
    except psycopg.Error as exc:
        raise ViewDefinitionError(str(exc).strip()) from None


def compile_view(conn: psycopg.Connection, view: ViewFile) -> CompiledView:
    """Analyse ``view`` and resolve its types against the database behind ``conn``.

    Raises:
        UnsupportedViewError: outside the supported subset.
        ViewDefinitionError: PostgreSQL rejects the query.
    """
    an = analyze(view)
    try:
        outputs = describe(conn, view.text.strip().rstrip(";"))
    except ViewDefinitionError as exc:
        raise ViewDefinitionError(f"{view.path}: {exc}") from None
    seen: set[str] = set()
    for (name, _), (_, node) in zip(outputs, an.outputs, strict=True):
        if name in seen or name.startswith("__") or name == "?column?":
            line, col = line_col(view.text, location(node))
            raise UnsupportedViewError(
                f"output column {name!r}", "every column of a live view needs a unique name "
                "(not starting with __).", path=str(view.path), line=line, column=col,
                rewrite="name it: <expression> AS <name>.")
        seen.add(name)
    _check_volatility(conn, an)
    aggs = _plan_aggs(conn, an)
    keys = _key_columns(conn, an, outputs)
    compiled = CompiledView(an, keys, outputs, aggs)
    if an.branches:
        compiled.union_columns = [n for n, _ in describe(conn, deparse(an.branches[0].stmt))]
    _output_expressions(compiled)
    return compiled


def _check_volatility(conn: psycopg.Connection, an: Analysis) -> None:
    """Refuse functions that have no immutable variant (their value may change on its own)."""
    calls = [n for n in walk([*(node for _, node in an.outputs), an.where, an.having,
                              *an.group, *an.from_clause]) if isinstance(n, ast.FuncCall)]
    for call in calls:
        name = call.funcname[-1].sval.lower()
        schema = call.funcname[0].sval.lower() if len(call.funcname) > 1 else None
        row = conn.execute(
            "select string_agg(distinct provolatile::text, ''), bool_or(prokind = 'a') "
            "from pg_proc p join pg_namespace n on n.oid = p.pronamespace "
            "where proname = %s and (%s::text is null or nspname = %s)",
            (name, schema, schema)).fetchone()
        kinds, is_agg = (row or (None, None))
        if not kinds or is_agg or "i" in kinds:
            continue
        what = "volatile" if "v" in kinds else "stable"
        line, col = line_col(an.view.text, location(call))
        raise UnsupportedViewError(
            f"{name}()", f"{name}() is {what}: its value can change without a write to the base "
            "tables (or depends on session settings), so the view could not stay equal to its "
            "query.", path=str(an.view.path), line=line, column=col,
            rewrite="compute the value into a column when the row is written, or use an "
                    "immutable function.")


def _plan_aggs(conn: psycopg.Connection, an: Analysis) -> list[AggPlan]:
    if not an.aggs:
        return []
    from_sql = ", ".join(deparse(i) for i in an.from_clause)
    probes = []
    for i, call in enumerate(an.aggs):
        probes.append(f"{deparse(call.node)} AS r{i}")
        if call.func in {"sum", "avg"}:
            probes.append(f"sum({deparse(call.arg)}) AS s{i}")
    text = f"SELECT {', '.join(probes)} FROM {from_sql}"
    if an.where is not None:
        text += f" WHERE {deparse(an.where)}"
    types = dict(describe(conn, text))
    distinct_args = [f"({deparse(c.arg)}) AS x{i}" for i, c in enumerate(an.aggs) if c.distinct]
    if distinct_args:
        arg_text = f"SELECT {', '.join(distinct_args)} FROM {from_sql}"
        types.update(describe(conn, arg_text))
    plans: list[AggPlan] = []
    sums: dict[tuple[str, str], int] = {}
    for i, call in enumerate(an.aggs):
        result = types[f"r{i}"]
        if call.func in {"sum", "avg"} and types[f"s{i}"] in FLOAT_TYPES:
            line, col = line_col(an.view.text, location(call.node))
            raise UnsupportedViewError(
                f"{call.func}() over {types[f's{i}']}", "floating-point sums depend on the "
                "order of additions, so an incrementally kept sum would drift from the query's.",
                path=str(an.view.path), line=line, column=col,
                rewrite=f"{call.func}(({deparse(call.arg)})::numeric)")
        if call.distinct and call.func in {"count", "sum", "avg"}:
            value = types[f"s{i}"] if call.func != "count" else result
            plans.append(AggPlan(i, call, DISTINCT, result, value, arg_type=types[f"x{i}"]))
        elif call.func == "count" and call.arg is None and call.filter is None:
            plans.append(AggPlan(i, call, "count", result, result, -1))
        elif call.func in {"sum", "avg"}:
            key = (deparse(call.arg), deparse(call.filter) if call.filter is not None else "")
            plans.append(AggPlan(i, call, call.func, result, types[f"s{i}"], sums.get(key)))
            sums.setdefault(key, i)
        else:
            plans.append(AggPlan(i, call, call.func, result, result))
    return plans


def _key_columns(conn: psycopg.Connection, an: Analysis,
                 outputs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if an.is_global:
        return [("__g", "integer")]
    if an.kind in {"bag", "distinct"}:
        return list(outputs)
    from_sql = ", ".join(deparse(i) for i in an.from_clause)
    text = f"SELECT {', '.join(f'{deparse(k)} AS k{j}' for j, k in enumerate(an.group))} " \
           f"FROM {from_sql}"
    types = [t for _, t in describe(conn, text)]
    named: dict[str, str] = {}
    for (name, _), (_, node) in zip(outputs, an.outputs, strict=True):
        named.setdefault(deparse(node), name)
    keys = []
    used: set[str] = set()
    for j, k in enumerate(an.group):
        name = named.get(deparse(k))
        if name is None or name in used:
            name = f"__key{j}"
        used.add(name)
        keys.append((name, types[j]))
    return keys


def _output_expressions(cv: CompiledView) -> None:
    an = cv.analysis
    if an.kind in {"bag", "distinct"}:
        cv.output_exprs = [f"s.{q(n)}" for n, _ in cv.keys]
        return
    key_text = {deparse(k): cv.keys[j][0] for j, k in enumerate(an.group)}
    agg_index = {a.call.text: a for a in cv.aggs}
    finals: dict[str, str] = {}

    def swap(node: ast.Node) -> ast.Node | None:
        text = deparse(node) if isinstance(node, ast.Node) and not isinstance(
            node, ast.String | ast.Integer | ast.Float | ast.Boolean) else None
        if text is None:
            return None
        if text in key_text:
            return column_ref("s", key_text[text])
        if isinstance(node, ast.FuncCall) and text in agg_index:
            placeholder = f"__fin{agg_index[text].index}"
            finals[placeholder] = _finalize(agg_index[text])
            return column_ref(placeholder)
        return None

    def render(node: ast.Node, what: str) -> str:
        new = substitute(node, swap)
        for ref in walk(new):
            if isinstance(ref, ast.ColumnRef):
                names = [f.sval for f in ref.fields if isinstance(f, ast.String)]
                if names and not (names[0] == "s" or names[0].startswith("__fin")):
                    line, col = line_col(an.view.text, location(node))
                    raise UnsupportedViewError(
                        f"column {'.'.join(names)} in {what}", "it is neither a GROUP BY "
                        "expression (written the same way) nor inside an aggregate.",
                        path=str(an.view.path), line=line, column=col,
                        rewrite="write the expression exactly as in GROUP BY, or use GROUP BY "
                                "<position>.")
        text = deparse(new)
        for placeholder, final in finals.items():
            text = re.sub(rf"\b{placeholder}\b", f"({final})", text)
        return text

    cv.output_exprs = [render(node, "SELECT") for _, node in an.outputs]
    if an.having is not None:
        cv.having_sql = render(an.having, "HAVING")


def _finalize(a: AggPlan) -> str:
    if a.shares == -1:
        return "s.__count"
    p = f"s.__a{a.index if a.shares is None else a.shares}"
    t = a.result_type
    if a.kind == "count" or (a.aux and a.call.func == "count"):
        return f"{p}_n"
    if a.aux:
        if a.call.func == "sum":
            return f"CASE WHEN {p}_n > 0 THEN {p}_s END::{t}"
        if t == "interval":
            return f"CASE WHEN {p}_n > 0 THEN {p}_s / {p}_n::float8 END"
        return f"CASE WHEN {p}_n > 0 THEN ({p}_s)::numeric / ({p}_n)::numeric END::{t}"
    if a.kind == "sum":
        return f"CASE WHEN {p}_nn > 0 THEN {p}_s END::{t}"
    if a.kind == "avg":
        if t == "interval":
            return f"CASE WHEN {p}_nn > 0 THEN {p}_s / {p}_nn::float8 END"
        return f"CASE WHEN {p}_nn > 0 THEN ({p}_s)::numeric / ({p}_nn)::numeric END::{t}"
    if a.kind == "bool_and":
        return f"CASE WHEN {p}_nn > 0 THEN {p}_nb = 0 END"
    if a.kind == "bool_or":
        return f"CASE WHEN {p}_nn > 0 THEN {p}_nb > 0 END"
    return f"{p}_v"
