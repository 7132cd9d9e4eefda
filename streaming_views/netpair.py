"""A lone one-row UPDATE that changed only aggregated columns: applied as ONE net row, with
no Agg where the row meets at most one row of the join.

An UPDATE logs a pair: the old row (sign -1) and the new row (+1). When none of the columns that
decide the row's group, join or WHERE changed (compared by what the view can tell apart,
:func:`streaming_views.logwrites._same`), both rows meet the same rows of the other tables and
each flat row of the new one lands in the group of its twin from the old one: the pair's delta
of each ``sum(E)`` is ``E`` over the new rows plus ``E`` over the old ones. The UPDATE's trigger
(:func:`streaming_views.logwrites.log_update_single`) then also writes the old values of the
*aggregated-only* columns (:func:`net_columns`) into the new row's extra log columns
``__tm_v<k>`` and notes the transaction `` name/j~ `` (:func:`net_text`). The pair stays in the
log, so any other path (a second write, another view, a large delta) reads it as before; only
the apply of that lone token reads the new row alone, each flat column reading an
aggregated-only column with its twin over the old values (``__x<i>__o``, :func:`net_flat`).

Only sums (count, sum, avg and bool counts are sums of signed terms, odd in the sign):
``coalesce(sum(E), D)`` over the pair is ``coalesce(E1, D) - coalesce(E1', D)`` (``E1``: ``E``
at sign 1; ``E1'`` over the twins), which keeps sum's NULL rule and a numeric's scale
(floating-point sums, where ``0 - 0.0`` would not be sum's ``-0``, are refused at deploy:
:mod:`streaming_views.plan`); a sum that reads no twin is ``D`` (each flat row cancels its
twin). Where the lone row meets at most one row of the join
(:func:`streaming_views.onegroup.one_per_group`, a temporal filter allowed: both rows pass the
window alike) the upsert has no GROUP BY, Agg nor Sort; else (a fan-out, the preserved side of
an outer join) it keeps them, over half the rows and with the sums that read no twin folded to
constants (:func:`net_select`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pglast import ast, parse_sql
from psycopg import sql

from streaming_views.astutil import deparse, substitute, walk
from streaming_views.layers import is_live
from streaming_views.onegroup import one_per_group, ungrouped

if TYPE_CHECKING:
    from streaming_views.compiler import CompiledView

NET_KINDS = {"count", "sum", "bool"}  # rules whose columns are sums of signed terms
AGGREGATE_NAMES = {"sum", "count", "max", "min", "avg", "bool_and", "bool_or", "every",
                   "array_agg", "string_agg", "greatest", "least"}
TWIN = "__o"  # suffix of a flat column's twin over the old row
T = TypeVar("T")


def net_text(cv: CompiledView, j: int) -> str:
    """The token `` name/j~ ``: the view's first log in the transaction was a one-row UPDATE of
    table ``j`` that changed aggregated-only columns (any later log notes `` name/j ``)."""
    return f" {cv.name}/{j}~ "


def net_token(cv: CompiledView, j: int) -> str:
    """:func:`net_text` as an SQL literal."""
    return sql.Literal(net_text(cv, j)).as_string(None)


def net_bit(cv: CompiledView) -> int:
    """The bit of ``v_m`` telling a net pair (:func:`net_token`), above the one-row bit's."""
    return 1 << (len(cv.tables) + 2)


def old_column(k: int) -> str:
    """The log column holding the old value of table column ``k`` (on the new row of a pair)."""
    return f"__tm_v{k}"


def _refs(node: ast.Node, ref: str, names: dict[str, int], single: bool) -> set[int]:
    """Indexes of table columns ``names`` read by ``node`` through ``ref`` (or unqualified in a
    single-table view)."""
    out = set()
    for n in walk(node):
        if not isinstance(n, ast.ColumnRef):
            continue
        fields = [getattr(f, "sval", None) for f in n.fields]
        if len(fields) == 2 and fields[0] == ref and fields[1] in names:
            out.add(names[fields[1]])
        elif len(fields) == 1 and single and fields[0] in names:
            out.add(names[fields[0]])
    return out


def _flat(cv: CompiledView, j: int) -> ast.SelectStmt:
    from streaming_views.compiler import Term
    return parse_sql(cv.flat_select(Term(None, ((j, f"__l{j}"),))))[0].stmt


def _once(cv: CompiledView, what: str, j: int, compute: Callable[[CompiledView, int], T]) -> T:
    """``compute(cv, j)``, computed once per view and table (kept in ``cv.net``)."""
    if (what, j) not in cv.net:
        cv.net[what, j] = compute(cv, j)
    return cv.net[what, j]


def _analysed(cv: CompiledView, j: int) -> tuple[list[int], list[str]]:
    """(aggregated-only columns of table ``j``, flat columns reading them)."""
    return _once(cv, "analysed", j, _analyse)


def _analyse(cv: CompiledView, j: int) -> tuple[list[int], list[str]]:
    from streaming_views.changelog import pushed_filter
    stmt = _flat(cv, j)
    ref = cv.tables[j].ref
    names = {c.name: k for k, c in enumerate(cv.resolved.tables[j].columns)}
    single = len(cv.tables) == 1
    deciding = _refs([stmt.fromClause, stmt.whereClause], ref, names, single)
    read: dict[str, set[int]] = {}
    for target in stmt.targetList:
        cols = _refs(target.val, ref, names, single)
        if target.name.startswith("__k") or target.name == "__sign":
            deciding |= cols
        else:
            read[target.name] = cols
    for sign in ("1", "-1"):
        pushed = pushed_filter(cv, j, sign)
        if pushed is not None:
            deciding |= _refs(parse_sql(f"SELECT {pushed}")[0].stmt, ref, names, single)
    agg = sorted(set().union(*read.values()) - deciding) if read else []
    return agg, [n for n, cols in read.items() if cols & set(agg)]


def net_columns(cv: CompiledView, j: int) -> list[int]:
    """The columns of table ``j`` read only by aggregate arguments and filters (none: no net
    pair for ``j``). Empty unless every rule is a sum of signed terms (no window: an
    unconstrained numeric's scales), the table is a plain table, the view has no UNION ALL nor
    semi-join and its outer joins (if any) preserve table ``j`` (:func:`_linear`), and
    :func:`net_select` can rewrite the delta."""
    return _once(cv, "columns", j, _net_columns)


def _net_columns(cv: CompiledView, j: int) -> list[int]:
    an = cv.analysis
    if (is_live(cv.resolved.tables[j]) or an.branches or an.semijoins
            or (an.outer is not None and not _linear(cv, j))
            or any(r.kind not in NET_KINDS or r.windows() for r in cv.rules)
            or any(t.ref.lower() in ("new", "old") for t in cv.tables)):
        return []
    agg, _ = _analysed(cv, j)
    if not agg or net_select(cv, j) is None:
        return []
    return agg


def _linear(cv: CompiledView, j: int) -> bool:
    """Whether an outer join's delta for table ``j`` alone is its log joined to the other
    tables as they are (:func:`streaming_views.outer.delta` without CTEs: a preserved side)."""
    from streaming_views.outer import delta  # deltas imports outer and this module
    more, flat = delta(cv, (j,), restrict=False)
    return not more and deparse(parse_sql(flat)[0].stmt) == deparse(_flat(cv, j))


def net_flat(cv: CompiledView, j: int) -> str:
    """The flat select of table ``j``'s log (its new row), with a twin ``<name>__o`` of each
    flat column reading an aggregated-only column, over the old values (``__tm_v<k>``)."""
    agg, twins = _analysed(cv, j)
    stmt = _flat(cv, j)
    ref = cv.tables[j].ref
    names = {c.name: k for k, c in enumerate(cv.resolved.tables[j].columns)}
    olds = {c.name: old_column(k) for c, k in ((c, names[c.name])
                                               for c in cv.resolved.tables[j].columns)
            if k in agg}
    single = len(cv.tables) == 1

    def old(n: ast.Node) -> ast.Node | None:
        if not isinstance(n, ast.ColumnRef):
            return None
        fields = [getattr(f, "sval", None) for f in n.fields]
        if len(fields) == 2 and fields[0] == ref and fields[1] in olds:
            return ast.ColumnRef(fields=(ast.String(sval=ref), ast.String(sval=olds[fields[1]])))
        if len(fields) == 1 and single and fields[0] in olds:
            return ast.ColumnRef(fields=(ast.String(sval=olds[fields[0]]),))
        return None

    extra = [ast.ResTarget(name=t.name + TWIN, val=substitute(t.val, old))
             for t in stmt.targetList if t.name in twins]
    stmt.targetList = (*stmt.targetList, *extra)
    return deparse(stmt)


class _NotNet(Exception):
    """An aggregate select :func:`net_select` cannot rewrite."""


def _is_sign(node: ast.Node) -> bool:
    return isinstance(node, ast.ColumnRef) and [f.sval for f in node.fields] == ["__sign"]


def _signed(node: ast.Node) -> ast.Node:
    """A sum's argument ``E`` at ``__sign`` = 1, when ``E`` is odd in ``__sign`` (``E(-1) =
    -E(1)``): ``__sign``, ``__sign * X`` or ``CASE WHEN c THEN`` either ``[ELSE 0] END``, with
    ``__sign`` nowhere else; a ``CASE WHEN true THEN X END`` is ``X``. Raises :class:`_NotNet`
    for any other form."""
    if _is_sign(node):
        return ast.A_Const(val=ast.Integer(ival=1))
    if (isinstance(node, ast.A_Expr) and node.kind == 0 and len(node.name) == 1
            and node.name[0].sval == "*" and node.lexpr is not None and _is_sign(node.lexpr)
            and not any(_is_sign(n) for n in walk(node.rexpr))):
        return node.rexpr
    if isinstance(node, ast.CaseExpr) and node.arg is None and len(node.args) == 1:
        when = node.args[0]
        default = node.defresult
        zero = default is None or (isinstance(default, ast.A_Const)
                                   and getattr(default.val, "ival", None) == 0)
        if zero and not any(_is_sign(n) for n in walk(when.expr)):
            value = _signed(when.result)
            if deparse(when.expr).lower() == "true" and default is None:
                return value
            return ast.CaseExpr(args=(ast.CaseWhen(expr=when.expr, result=value),),
                                defresult=default)
    raise _NotNet("not odd in __sign")


def _combined(node: ast.Node, twins: set[str], *, grouped: bool = False) -> ast.Node | None:
    """``coalesce(sum(E), D)`` (D a zero) over the new row (sign 1) and the old one (sign -1)
    as ``coalesce(E1, D) - coalesce(E1', D)`` (``E1``: :func:`_signed`; ``E1'`` over the old
    row's twins), ``0`` for ``sum(__sign)``: both rows count; raises :class:`_NotNet` at any
    other aggregate."""
    if isinstance(node, ast.SubLink):
        raise _NotNet("subquery")
    if isinstance(node, ast.FuncCall):
        if node.over is not None or node.funcname[-1].sval in AGGREGATE_NAMES:
            raise _NotNet(node.funcname[-1].sval)
        return None
    if not isinstance(node, ast.CoalesceExpr) or len(node.args) != 2:
        return None
    call, default = node.args
    if not (isinstance(call, ast.FuncCall) and call.funcname[-1].sval == "sum"):
        return None
    if (call.agg_star or call.agg_distinct or call.agg_filter or call.agg_order or call.over
            or call.agg_within_group or not call.args or len(call.args) != 1
            or not _zero(default)):
        raise _NotNet("sum")
    arg = call.args[0]
    for n in walk(arg):
        if isinstance(n, ast.SubLink) or (isinstance(n, ast.FuncCall) and (
                n.funcname[-1].sval in AGGREGATE_NAMES or n.over is not None)):
            raise _NotNet("nested")
    new = _signed(arg)
    if not any(isinstance(n, ast.ColumnRef) and len(n.fields) == 1
               and n.fields[0].sval in twins for n in walk(new)):
        return default  # each flat row's old twin cancels it (sum(__sign): both rows count)

    def old(n: ast.Node) -> ast.Node | None:
        if isinstance(n, ast.ColumnRef) and len(n.fields) == 1 and n.fields[0].sval in twins:
            return ast.ColumnRef(fields=(ast.String(sval=n.fields[0].sval + TWIN),))
        return None

    net = ast.A_Expr(kind=0, name=(ast.String(sval="-"),),
                     lexpr=ast.CoalesceExpr(args=(new, default)),
                     rexpr=ast.CoalesceExpr(args=(substitute(new, old), default)))
    if grouped:  # several flat rows a group: summed (each with its twin)
        return ast.CoalesceExpr(args=(ast.FuncCall(funcname=call.funcname, args=(net,)),
                                      default))
    return net


def _zero(node: ast.Node) -> bool:
    """Whether ``node`` is ``0`` or ``'0'::t``."""
    if isinstance(node, ast.TypeCast):
        node = node.arg
    if not isinstance(node, ast.A_Const) or node.isnull:
        return False
    return getattr(node.val, "ival", None) == 0 or getattr(node.val, "sval", None) == "0"


def net_select(cv: CompiledView, j: int) -> str | None:
    """:func:`_net_select`, computed once per view and table."""
    return _once(cv, "select", j, _net_select)


def _net_select(cv: CompiledView, j: int) -> str | None:
    """The delta's aggregate select over :func:`net_flat` with every ``coalesce(sum(E), D)``
    combined over the new and old halves (:func:`_combined`): without GROUP BY, ORDER BY,
    HAVING nor aggregate when the new row meets at most one row of the join, else grouped
    with a sum of each combination reading a twin. None when it reads another aggregate."""
    _, twins = _analysed(cv, j)
    stmt = parse_sql(cv.aggregate_select(net_flat(cv, j), delta=True))[0].stmt
    grouped = not one_per_group(cv, j, timed=True)
    try:
        stmt.targetList = substitute(stmt.targetList,
                                     lambda n: _combined(n, set(twins), grouped=grouped))
    except _NotNet:
        return None
    return deparse(stmt) if grouped else ungrouped(stmt)
