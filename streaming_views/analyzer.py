"""Parse a view file with pglast and check it against the supported subset.

The result, :class:`Analysis`, is the view taken apart into what the compiler needs: base tables,
the FROM/WHERE part, group keys, aggregate calls, output expressions and HAVING. Anything outside
the subset raises :class:`UnsupportedViewError` with the construct, its line and column in the
file, and the nearest supported rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pglast
from pglast import ast, enums

from streaming_views import inline, raising, refusals, semijoin, twolevel
from streaming_views import outer as outer_joins
from streaming_views.astutil import deparse, keyword_offset, line_col, location, walk
from streaming_views.errors import UnsupportedViewError, ViewFileError
from streaming_views.readtime import rewrite_text
from streaming_views.temporal import Temporal, extract, is_mz_now
from streaming_views.viewfile import ViewFile

AGGREGATES = {"count", "sum", "avg", "min", "max", "bool_and", "bool_or"}
# Functions whose value changes without any write to the base tables.
NON_DETERMINISTIC = {
    "now", "random", "random_normal", "clock_timestamp", "statement_timestamp",
    "transaction_timestamp", "timeofday", "setseed", "nextval", "currval", "lastval",
    "gen_random_uuid", "uuidv4", "uuidv7", "uuid_generate_v4", "pg_backend_pid",
    "txid_current", "pg_current_xact_id", "current_setting",
}
NOW_REWRITE = ("group by the event time instead (date_bin('1 day', placed_at, "
               "'2000-01-01') or (placed_at at time zone 'UTC')::date) and pick today's "
               "row when you read the view; to keep only recent rows add a temporal "
               "filter (where mz_now() <= placed_at + interval '1 day') or '-- @retention: "
               "<column> <n> days'.")


@dataclass(frozen=True)
class TableRef:
    """A base table in FROM: ``schema.name [AS alias]``; ``ref`` is the name columns use."""

    schema: str
    name: str
    ref: str
    node: ast.RangeVar


@dataclass(frozen=True)
class AggCall:
    """One aggregate call: ``func([DISTINCT] arg) [FILTER (WHERE filter)]``."""

    func: str
    arg: Any | None
    distinct: bool
    filter: Any | None
    node: ast.FuncCall

    @property
    def text(self) -> str:
        """The call as SQL, used to recognise the same call in SELECT and HAVING."""
        return deparse(self.node)


@dataclass(frozen=True)
class Branch:
    """One SELECT of a ``FROM (... UNION ALL ...) AS alias`` subquery, with its tables."""

    stmt: ast.SelectStmt
    tables: tuple[TableRef, ...]


@dataclass
class Analysis:
    """A view taken apart for the compiler.

    Attributes:
        view: the view file.
        tables: the base tables, in FROM order (each at most once).
        from_clause: the FROM list (syntax nodes).
        where: the WHERE condition, or None.
        kind: ``aggregate`` (GROUP BY or aggregates), ``distinct`` (SELECT DISTINCT) or ``bag``.
        group: group key expressions (for ``distinct``/``bag``: every output expression).
        aggs: distinct aggregate calls of SELECT and HAVING.
        outputs: (explicit name or None, expression) per output column.
        having: the HAVING condition, or None.
    """

    view: ViewFile
    tables: list[TableRef]
    from_clause: tuple[Any, ...]
    where: Any | None
    kind: str
    group: list[Any]
    aggs: list[AggCall] = field(default_factory=list)
    outputs: list[tuple[str | None, Any]] = field(default_factory=list)
    having: Any | None = None
    union_alias: str | None = None
    branches: list[Branch] = field(default_factory=list)
    outer: outer_joins.OuterJoin | None = None  # FROM with outer joins: its partition key
    semijoins: list[semijoin.SemiJoin] = field(default_factory=list)  # [NOT] EXISTS / IN
    temporal: Temporal | None = None

    @property
    def source_tables(self) -> list[TableRef]:
        """The base tables as written (a temporal filter's timed table among them: the engine
        reads it through its window, see :mod:`streaming_views.temporal`)."""
        return list(self.tables)

    @property
    def is_global(self) -> bool:
        """True for an aggregate without GROUP BY: always exactly one row."""
        return self.kind == "aggregate" and not self.group

    def roots(self) -> list[Any]:
        """Every syntax tree of the statement (outputs, FROM, WHERE, GROUP BY, HAVING)."""
        nodes = [n for _, n in self.outputs] + [*self.from_clause, *self.group]
        return nodes + [n for n in (self.where, self.having) if n is not None]


class _Checker:
    """Raises refusals with positions in the view file."""

    def __init__(self, view: ViewFile) -> None:
        self.view = view
        self.top: ast.SelectStmt | None = None  # the outer query (rewrites split it)

    def later(self, stmt: ast.SelectStmt, what: str, fallback: str, sort: bool = False) -> str:
        """An equivalent rewrite computing ``what`` when the view is read (outer query only)."""
        text = rewrite_text(stmt, self.view.name, what, sort) if stmt is self.top else None
        return text or fallback

    def refuse(self, construct: str, node: Any, reason: str, rewrite: str | None = None,
               offset: int | None = None, keyword: str | None = None) -> UnsupportedViewError:
        if offset is None and node is not None:
            offset = location(node)
        if offset is None and keyword is not None:
            offset = keyword_offset(self.view.text, keyword)
        line, column = line_col(self.view.text, offset)
        return UnsupportedViewError(construct, reason, path=str(self.view.path), line=line,
                                    column=column, rewrite=rewrite)


def parse_select(view: ViewFile) -> ast.SelectStmt:
    """Parse the file; return its one SELECT statement.

    Raises:
        ViewFileError: a syntax error or not exactly one statement.
        UnsupportedViewError: the statement is not a SELECT.
    """
    try:
        stmts = pglast.parse_sql(view.text)
    except pglast.parser.ParseError as exc:
        line, column = line_col(view.text, len(view.text[:exc.args[1]].encode("utf-8")))
        raise ViewFileError(f"{view.path}:{line}:{column}: syntax error: {exc.args[0]}") from None
    if len(stmts) != 1:
        raise ViewFileError(refusals.statements(stmts, view.text, str(view.path)))
    stmt = stmts[0].stmt
    if not isinstance(stmt, ast.SelectStmt):
        raise _Checker(view).refuse(type(stmt).__name__, None,
                                    "a view file holds one SELECT statement.",
                                    offset=stmts[0].stmt_location)
    return stmt


def analyze(view: ViewFile) -> Analysis:
    """Parse and check ``view``; return its :class:`Analysis`.

    Raises:
        UnsupportedViewError: the view uses a construct outside the supported subset.
        ViewFileError: the file does not parse.
    """
    chk = _Checker(view)
    stmt = inline.rewrite(parse_select(view), chk.refuse)  # WITH, FROM subqueries
    chk.top = stmt
    _check_statement_shape(stmt, chk)
    tables: list[TableRef] = []
    branches: list[Branch] = []
    union_alias = None
    from_items = stmt.fromClause or ()
    grouped = None  # a two-level aggregation: its inner group key
    if len(from_items) == 1 and twolevel.is_grouped(from_items[0]):
        tables, grouped = twolevel.analyze_inner(from_items[0], chk, _collect_tables,
                                                 _check_statement_shape, _check_expressions,
                                                 _collect_aggs)
    elif len(from_items) == 1 and isinstance(from_items[0], ast.RangeSubselect):
        union_alias, branches = _subquery_branches(from_items[0], chk)
        for branch in branches:
            for table in branch.tables:
                if all((t.schema, t.name) != (table.schema, table.name) for t in tables):
                    tables.append(table)
    else:
        for item in from_items:
            _collect_tables(item, tables, chk)
    semis = [] if branches or grouped else semijoin.collect(view, stmt.whereClause,
                                                            {t.ref for t in tables})
    for semi in semis:
        _collect_tables(semi.table, tables, chk)
    outer = grouped or (None if branches else
                        outer_joins.find(view, tuple(from_items), tables, semis))
    if not tables:
        raise chk.refuse("SELECT without FROM", stmt, "a live view needs base tables to follow.",
                         "select from at least one <source>.<table>.")
    _check_expressions(stmt, chk, {id(s.node) for s in semis})
    outputs = [(t.name, t.val) for t in stmt.targetList]
    aggs = _collect_aggs(stmt, chk)
    if stmt.distinctClause is not None:
        if aggs or stmt.groupClause:
            raise chk.refuse("DISTINCT with GROUP BY", None,
                             "an aggregate view has one row per group already.",
                             "drop DISTINCT, or drop GROUP BY.", keyword="distinct")
        kind, group = "distinct", [val for _, val in outputs]
    elif aggs or stmt.groupClause:
        kind, group = "aggregate", _group_keys(stmt, chk)
    else:
        kind, group = "bag", [val for _, val in outputs]
    if stmt.havingClause is not None and kind != "aggregate":
        raise chk.refuse("HAVING without aggregates", stmt.havingClause,
                         "HAVING filters groups.", "use WHERE.")
    raising.refuse_row_divisions(stmt, kind, group, aggs, chk.refuse)
    where, tables, from_clause, temporal = extract(view, stmt, tables, chk)
    live = [(t.schema, t.name) for t in tables if t.schema == "live"]
    if live and (outer is not None or semis or temporal is not None or len(set(live)) < len(live)):
        raise chk.refuse("a live view read with an outer join, EXISTS/IN, two-level aggregation, "
                         "a temporal filter or in several roles", None, "these are not maintained "
                         "over another live view yet.", "read the inner view's base tables "
                         "instead, or keep the inner view in plain joins.", keyword="from")
    if temporal is not None and (outer is not None or semis):
        raise chk.refuse("temporal filter with an outer join, EXISTS/IN or two-level "
                         "aggregation", None, "the two are not maintained together yet.",
                         "keep the time window in a view of its own over the table.",
                         keyword="where")
    return Analysis(view=view, tables=tables, from_clause=from_clause,
                    where=where, kind=kind, group=group, aggs=aggs,
                    outputs=outputs, having=stmt.havingClause, union_alias=union_alias,
                    branches=branches, outer=outer, semijoins=semis, temporal=temporal)


def _subquery_branches(item: ast.RangeSubselect, chk: _Checker) -> tuple[str, list[Branch]]:
    """Check ``FROM (<select> [UNION ALL <select> ...]) AS alias``; return alias and branches."""
    if item.lateral or item.alias is None or item.alias.colnames:
        raise chk.refuse("subquery in FROM", item, "only '(<select> [UNION ALL <select>]) AS "
                         "<alias>' without LATERAL or column aliases is maintained.",
                         "name the columns inside the subquery.")
    selects: list[ast.SelectStmt] = []

    def flatten(node: ast.SelectStmt) -> None:
        if node.op == enums.SetOperation.SETOP_UNION and node.all and not node.sortClause \
                and node.limitCount is None and node.withClause is None:
            flatten(node.larg)
            flatten(node.rarg)
        elif node.op == enums.SetOperation.SETOP_NONE:
            selects.append(node)
        else:
            _check_statement_shape(node, chk)
    flatten(item.subquery)
    branches = []
    for sub in selects:
        _check_statement_shape(sub, chk)
        if sub.groupClause or sub.havingClause or sub.distinctClause is not None or any(
                isinstance(n, ast.FuncCall) and _is_aggregate(n)
                for t in sub.targetList for n in walk(t.val)):
            raise chk.refuse("aggregation inside a subquery", sub.targetList[0],
                             "only the outer query may group (a two-level aggregation, e.g. a "
                             "distribution of per-customer counts, is not maintained).",
                             "aggregate in the outer query; keep the subquery row by row. For "
                             "two levels, deploy the inner aggregate as its own live view and "
                             "aggregate live.<inner> when you read it.")
        tables: list[TableRef] = []
        for from_item in sub.fromClause or ():
            if isinstance(from_item, ast.RangeSubselect):
                raise chk.refuse("nested subquery in FROM", from_item, "one level only.",
                                 "join the base tables directly.")
            _collect_tables(from_item, tables, chk)
        names = [(t.schema, t.name) for t in tables]
        if len(set(names)) < len(names):
            twice = next(t for i, t in enumerate(tables) if (t.schema, t.name) in names[:i])
            raise chk.refuse(f"table {twice.schema}.{twice.name} used twice in a UNION ALL "
                             "branch", twice.node, "self-joins are maintained in the main FROM "
                             "only.", "move the self-join into the outer query's FROM.")
        if (join := outer_joins.has_outer(sub.fromClause)) is not None:
            raise chk.refuse(outer_joins.OUTER[join.jointype] + " inside UNION ALL", join,
                             "outer joins are maintained in the main FROM only.",
                             "put the outer join in the outer query's FROM.")
        if not tables:
            raise chk.refuse("SELECT without FROM", sub, "every branch needs base tables.")
        _check_expressions(sub, chk)
        branches.append(Branch(sub, tuple(tables)))
    return item.alias.aliasname, branches


def _check_statement_shape(stmt: ast.SelectStmt, chk: _Checker) -> None:
    if stmt.op != enums.SetOperation.SETOP_NONE:
        op = {enums.SetOperation.SETOP_UNION: "UNION",
              enums.SetOperation.SETOP_INTERSECT: "INTERSECT",
              enums.SetOperation.SETOP_EXCEPT: "EXCEPT"}[stmt.op]
        op += " ALL" if stmt.all else ""
        if op == "UNION ALL":
            rewrite = ("move it into FROM: select u.<columns> from (<select> union all "
                       "<select>) as u.")
        elif op == "UNION":
            rewrite = ("use UNION ALL inside FROM and SELECT DISTINCT (or GROUP BY) in the "
                       "outer query.")
        else:
            rewrite = "deploy one view per branch and combine them when you read."
        raise chk.refuse(op, stmt.rarg, "only UNION ALL inside a subquery in FROM is "
                         "maintained.", rewrite)
    if stmt.valuesLists:
        raise chk.refuse("VALUES", stmt, "a live view must read base tables.")
    if stmt.withClause is not None:
        raise chk.refuse("WITH (common table expression)", stmt.withClause,
                         "the engine maintains one query block.",
                         "join the base tables directly in FROM.")
    if stmt.distinctClause and stmt.distinctClause[0] is not None:
        raise chk.refuse("DISTINCT ON", stmt.distinctClause[0],
                         "which row survives depends on ordering.", chk.later(
                             stmt, "DISTINCT ON", "use GROUP BY with min()/max() of the "
                             "columns you want."))
    if stmt.sortClause:
        raise chk.refuse("ORDER BY", stmt.sortClause[0],
                         "a view is a set of rows; order is not maintained.", chk.later(
                             stmt, "the ORDER BY", "sort when you read: select ... from "
                             "live.<name> order by ...", sort=True))
    if stmt.limitCount is not None or stmt.limitOffset is not None:
        raise chk.refuse("LIMIT/OFFSET", None, "which rows are kept depends on ordering.",
                         chk.later(stmt, "the LIMIT", "apply LIMIT when you read: select ... "
                                   "from live.<name> limit n", sort=True),
                         keyword="limit" if stmt.limitCount is not None else "offset")
    if stmt.lockingClause:
        raise refusals.locking(stmt, chk.view.text, chk.refuse)
    if stmt.intoClause is not None:
        raise chk.refuse("SELECT INTO", stmt.intoClause, "a view does not create tables.",
                         "remove INTO.")
    if stmt.windowClause:
        raise chk.refuse("WINDOW clause", stmt.windowClause[0],
                         "window functions have no incremental rule here.",
                         chk.later(stmt, "the window", "aggregate with GROUP BY instead."))
    for target in stmt.targetList:
        if any(isinstance(n, ast.A_Star) for n in walk(target.val)):
            raise chk.refuse("SELECT *", target, "the view's columns must be explicit so a new "
                             "base-table column does not change the view.",
                             "list the columns you need.")


def _collect_tables(item: Any, out: list[TableRef], chk: _Checker) -> None:
    if isinstance(item, ast.RangeVar):
        if not item.schemaname:
            raise chk.refuse(f"unqualified table {item.relname}", item,
                             "base tables are named <source>.<table>.",
                             f"write <schema>.{item.relname}, e.g. shop.{item.relname}.")
        if item.catalogname:
            raise chk.refuse("database-qualified table", item,
                             "a view reads tables of its own database.",
                             f"write {item.schemaname}.{item.relname}.")
        if not item.inh:
            raise chk.refuse("ONLY", item, "inheritance control is not supported.",
                             f"write {item.schemaname}.{item.relname}.")
        ref = item.alias.aliasname if item.alias is not None else item.relname
        if item.alias is not None and item.alias.colnames:
            raise chk.refuse("column aliases on a table", item,
                             "renaming columns in FROM is not supported.",
                             "alias the columns in the SELECT list.")
        for other in out:  # a self-join: each role is a table of its own (see selfjoin.py)
            if (other.schema, other.name, other.ref) == (item.schemaname, item.relname, ref):
                raise chk.refuse(f"table {item.schemaname}.{item.relname} used twice", item,
                                 "each role of a table joined to itself needs its own alias.",
                                 f"alias each: {item.schemaname}.{item.relname} AS a ... JOIN "
                                 f"{item.schemaname}.{item.relname} AS b ON ...")
        out.append(TableRef(item.schemaname, item.relname, ref, item))
    elif isinstance(item, ast.JoinExpr):
        if item.jointype not in (enums.JoinType.JOIN_INNER, *outer_joins.OUTER):
            name = {enums.JoinType.JOIN_LEFT: "LEFT JOIN", enums.JoinType.JOIN_RIGHT:
                    "RIGHT JOIN", enums.JoinType.JOIN_FULL: "FULL JOIN"}.get(
                        item.jointype, str(item.jointype))
            raise chk.refuse(name, item.rarg, "only inner joins are maintained.",
                             "use an inner JOIN (rows without a match are then left out), "
                             "or keep the unmatched side in a view of its own.")
        if item.alias is not None:
            raise chk.refuse("alias on a join", item.larg, "not supported.",
                             "alias the tables instead.")
        _collect_tables(item.larg, out, chk)
        _collect_tables(item.rarg, out, chk)
    elif isinstance(item, ast.RangeSubselect) and not item.lateral:
        raise chk.refuse("subquery in FROM", item, "only base tables are maintained.",
                         "join the base tables directly, or deploy the subquery as its own "
                         "view and read both.")
    else:
        raise refusals.from_item(item, chk.refuse, chk.view.text)


def _check_expressions(stmt: ast.SelectStmt, chk: _Checker,
                       allowed: set[int] | frozenset[int] = frozenset()) -> None:
    roots: list[Any] = [t.val for t in stmt.targetList]
    roots += [stmt.whereClause, stmt.havingClause, *(stmt.groupClause or ())]
    roots += [i.quals for i in walk(stmt.fromClause) if isinstance(i, ast.JoinExpr)]
    selected = {id(n) for t in stmt.targetList for n in walk(t.val)}
    for node in walk([r for r in roots if r is not None]):
        if isinstance(node, ast.SubLink) and id(node) not in allowed:
            raise refusals.scalar_subquery(node, chk.refuse, id(node) in selected)
        if isinstance(node, ast.SQLValueFunction):
            name = node.op.name.removeprefix("SVFOP_").lower()
            raise chk.refuse(name, node, f"{name} is non-deterministic: its value changes "
                             "without any write to the base tables, so no trigger can keep "
                             "the view equal to its query.",
                             refusals.temporal_filter(stmt.whereClause, node) or NOW_REWRITE)
        if isinstance(node, ast.ColumnRef) and len(node.fields) > 2:
            raise chk.refuse(deparse(node), node, "three-part column names are not "
                             "supported.", "alias the table and write alias.column.")
        if isinstance(node, ast.GroupingSet | ast.GroupingFunc):
            raise chk.refuse("GROUPING SETS/ROLLUP/CUBE", node,
                             "only plain GROUP BY is maintained.", chk.later(
                                 stmt, "the grouping sets", "deploy one view per grouping."))
        if isinstance(node, ast.FuncCall):
            _check_function(node, chk, stmt)


def _check_function(node: ast.FuncCall, chk: _Checker, stmt: ast.SelectStmt) -> None:
    name = node.funcname[-1].sval.lower()
    if node.over is not None:
        raise chk.refuse(f"window function {name}() OVER", node,
                         "window functions have no incremental rule here.", chk.later(
                             stmt, "the window", "aggregate with GROUP BY, or compute the "
                             "window when you read."))
    if is_mz_now(node):
        return  # a temporal filter: checked by streaming_views.temporal.extract
    if name in NON_DETERMINISTIC:
        reason = (f"{name}() is non-deterministic: its value changes without any write to the "
                  "base tables, so no trigger can keep the view equal to its query.")
        raise chk.refuse(f"{name}()", node, reason, (refusals.temporal_filter(
            stmt.whereClause, node) or NOW_REWRITE) if name in refusals.CLOCKS
                         else "compute the value when you write the row, into a column.")
    if node.agg_order or node.agg_within_group:
        raise refusals.aggregate(node, name, chk.refuse, chk.top if stmt is chk.top else None,
                                 chk.view.name)


def _is_aggregate(node: ast.FuncCall) -> bool:
    names = [s.sval.lower() for s in node.funcname]
    return names[-1] in AGGREGATES and (len(names) == 1 or names[0] == "pg_catalog")


def _collect_aggs(stmt: ast.SelectStmt, chk: _Checker) -> list[AggCall]:
    found: dict[str, AggCall] = {}
    roots = [t.val for t in stmt.targetList] + [stmt.havingClause]
    for node in walk([r for r in roots if r is not None]):
        if not isinstance(node, ast.FuncCall):
            continue
        name = node.funcname[-1].sval.lower()
        if name in refusals.KNOWN_AGGREGATES:
            raise refusals.aggregate(node, name, chk.refuse,
                                     chk.top if stmt is chk.top else None, chk.view.name)
        if not _is_aggregate(node):
            continue
        if node.agg_star and name != "count":
            raise chk.refuse(f"{name}(*)", node, "only count takes *.")
        arg = None if node.agg_star else node.args[0] if node.args else None
        if not node.agg_star and (not node.args or len(node.args) != 1):
            raise refusals.arguments(node, name, chk.refuse)
        if arg is not None and any(isinstance(n, ast.FuncCall) and _is_aggregate(n)
                                   for n in walk(arg)):
            raise chk.refuse("nested aggregate", node, "aggregates cannot be nested.")
        call = AggCall(name, arg, bool(node.agg_distinct), node.agg_filter, node)
        found.setdefault(call.text, call)
    where_aggs = [n for n in walk(stmt.whereClause) if isinstance(n, ast.FuncCall)
                  and _is_aggregate(n)]
    if where_aggs:
        raise chk.refuse("aggregate in WHERE", where_aggs[0], "WHERE filters rows.",
                         "use HAVING.")
    return list(found.values())


def _group_keys(stmt: ast.SelectStmt, chk: _Checker) -> list[Any]:
    if stmt.groupDistinct:
        raise chk.refuse("GROUP BY DISTINCT", stmt.groupClause[0], "not supported.",
                         "use plain GROUP BY.")
    aliases = {t.name: t.val for t in stmt.targetList if t.name}
    keys: list[Any] = []
    for item in stmt.groupClause or ():
        if isinstance(item, ast.A_Const) and isinstance(item.val, ast.Integer):
            position = item.val.ival
            if not 1 <= position <= len(stmt.targetList):
                raise chk.refuse(f"GROUP BY {position}", item, "no such output column.")
            keys.append(stmt.targetList[position - 1].val)
        elif (isinstance(item, ast.ColumnRef) and len(item.fields) == 1
              and isinstance(item.fields[0], ast.String) and item.fields[0].sval in aliases):
            keys.append(aliases[item.fields[0].sval])
        else:
            keys.append(item)
    texts = [deparse(k) for k in keys]
    return [k for i, k in enumerate(keys) if texts[i] not in texts[:i]]
