# ruff: noqa: S608 -- the rewrites offered in refusals are text for the user, not queries run.
"""Refusals of constructs a user writes that the engine does not keep, each with its construct,
position and an equivalent rewrite where one exists (:mod:`streaming_views.readtime` writes
the ones computed when the view is read).

Used by :mod:`streaming_views.analyzer`: FROM items that are not base tables (``LATERAL``,
``TABLESAMPLE``, table functions), aggregates without an incremental rule, locking clauses,
scalar subqueries, and files that hold more than one statement.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from pglast import ast, enums

from streaming_views.astutil import deparse, line_col, walk
from streaming_views.readtime import rewrite_text

Refuse = Callable[..., Exception]

# Aggregates that ignore the order of their input: an ORDER BY inside them changes nothing.
ORDER_FREE = {"count", "sum", "avg", "min", "max", "bool_and", "bool_or"}
KNOWN_AGGREGATES = {"string_agg", "array_agg", "json_agg", "jsonb_agg", "json_object_agg",
                    "jsonb_object_agg", "xmlagg", "stddev", "stddev_pop", "stddev_samp",
                    "variance", "var_pop", "var_samp", "percentile_cont", "percentile_disc",
                    "mode", "every", "bit_and", "bit_or", "bit_xor", "corr", "covar_pop",
                    "covar_samp", "regr_count", "any_value", "range_agg", "range_intersect_agg",
                    "json_agg_strict", "jsonb_agg_strict", "json_objectagg", "json_arrayagg",
                    "regr_avgx", "regr_avgy", "regr_intercept", "regr_r2", "regr_slope",
                    "regr_sxx", "regr_sxy", "regr_syy"}
TABLE_FUNCTIONS = {"RangeTableFunc": "XMLTABLE", "JsonTable": "JSON_TABLE"}
LOCKING = re.compile(r"\bfor\s+(no\s+key\s+update|key\s+share|update|share)\b", re.IGNORECASE)


def _offset(text: str, pattern: re.Pattern[str]) -> int | None:
    blanked = re.sub(r"--[^\n]*", lambda m: " " * len(m.group(0)), text)
    matches = list(pattern.finditer(blanked))  # the last one: the outer query's
    return len(text[:matches[-1].start()].encode("utf-8")) if matches else None


def locking(stmt: ast.SelectStmt, text: str, refuse: Refuse) -> Exception:
    """``FOR UPDATE``/``FOR SHARE``..., at its keyword."""
    return refuse("FOR UPDATE/SHARE", None, "a view does not lock rows.",
                  f"remove the locking clause: {deparse(_unlocked(stmt))}",
                  offset=_offset(text, LOCKING))


def _unlocked(stmt: ast.SelectStmt) -> ast.SelectStmt:
    out = copy.deepcopy(stmt)
    out.lockingClause = None
    return out


def from_item(item: Any, refuse: Refuse, text: str) -> Exception:
    """A FROM item that is not a base table, a join or a plain subquery."""
    if isinstance(item, ast.RangeTableSample):
        rel = item.relation
        return refuse("TABLESAMPLE", rel, "a sample is drawn at random when the query runs, "
                      "so no trigger can keep it equal to the query.",
                      f"deploy the view over {deparse(rel)} without TABLESAMPLE and sample "
                      "when you read it (a live view is a view: filter or LIMIT it then).")
    if isinstance(item, ast.RangeSubselect) and item.lateral:
        return refuse("LATERAL subquery", None, "a subquery evaluated per row of the tables "
                      "before it is not maintained.", "join the subquery's tables directly, "
                      "its correlation as the ON condition: 'from a join b on b.k = a.k' "
                      "instead of 'from a, lateral (select ... from b where b.k = a.k) x'; "
                      "an aggregate inside it becomes a view of its own, read with a join.",
                      offset=_keyword(text, "lateral"))
    if isinstance(item, ast.RangeFunction):
        return _function(item, refuse, text)
    name = TABLE_FUNCTIONS.get(type(item).__name__, type(item).__name__)
    return refuse(name, item, "only base tables are maintained in FROM.",
                  "store what it produces in a table and join that table.")


def _keyword(text: str, word: str) -> int | None:
    return _offset(text, re.compile(rf"\b{word}\b", re.IGNORECASE))


def _function(item: ast.RangeFunction, refuse: Refuse, text: str) -> Exception:
    calls = [f[0] for f in item.functions or () if f and f[0] is not None]
    single = (len(calls) == 1 and isinstance(calls[0], ast.FuncCall)
              and calls[0].funcname[-1].sval != "generate_series" and not item.ordinality
              and not item.is_rowsfrom and not item.coldeflist and item.alias is not None
              and not item.alias.colnames)
    if single and (item.lateral or any(isinstance(n, ast.ColumnRef) for n in walk(calls[0]))):
        alias = item.alias.aliasname
        rewrite = (f"call it in the SELECT list — select ..., {deparse(calls[0])} as {alias} "
                   "from <the other tables> — which returns the same rows (one per value, "
                   f"none for an empty set) and is maintained row by row; then {alias} is the "
                   "column of that name.")
    else:
        rewrite = ("join a table holding the values instead; for hopping windows, group by "
                   "date_bin of the hop with a temporal filter in WHERE.")
    return refuse("function in FROM", calls[0] if calls else item, "only base tables are "
                  "maintained (so is a hopping window over generate_series: not on the "
                  "embedded engine).", rewrite)


def aggregate(node: ast.FuncCall, name: str, refuse: Refuse, top: ast.SelectStmt | None,
              view: str) -> Exception:
    """An aggregate without an incremental rule, or ordered."""
    call = deparse(node)
    if name == "every":
        plain = ast.FuncCall(funcname=(ast.String(sval="bool_and"),), args=node.args,
                             agg_filter=node.agg_filter, agg_distinct=node.agg_distinct)
        return refuse(f"aggregate {name}()", node, "every() is not maintained under that "
                      "name.", f"{deparse(plain)}, the same aggregate.")
    if name in ORDER_FREE:  # ordered
        plain = ast.FuncCall(funcname=node.funcname, args=node.args, agg_star=node.agg_star,
                             agg_filter=node.agg_filter, agg_distinct=node.agg_distinct)
        return refuse(f"{name}() with ORDER BY", node, "an ORDER BY inside an aggregate is "
                      f"not maintained; {name}() does not depend on the order of its rows.",
                      f"{deparse(plain)}, which gives the same value.")
    how = ("an ordered-set aggregate needs all of its group's rows" if node.agg_within_group
           else "it has no incremental rule here")
    rewrite = rewrite_text(top, view, call) or (
        "deploy a view of the group keys and the aggregate's arguments (no GROUP BY) and "
        f"compute {call} when you read it.")
    suffix = " with ORDER BY" if node.agg_order and not node.agg_within_group else ""
    return refuse(f"aggregate {name}(){suffix}", node, f"{how}.", rewrite)


def arguments(node: ast.FuncCall, name: str, refuse: Refuse) -> Exception:
    """An aggregate called with several arguments (``count(distinct a, b)``)."""
    args = ", ".join(deparse(a) for a in node.args or ())
    if name == "count" and node.agg_distinct:
        rewrite = two_level_count(args)
    else:
        rewrite = f"call {name}() on one expression."
    return refuse(f"{name}() with {len(node.args or ())} arguments", node,
                  "aggregates take one argument here (PostgreSQL has no count of several "
                  "columns: count(distinct a, b) does not exist).", rewrite)


def two_level_count(fields: str) -> str:
    """The rewrite of a distinct count of several columns ``fields``: count the groups."""
    return ("for a distinct count of several columns, count the groups of a two-level "
            f"aggregation: select x.<keys>, count(*) as n from (select <keys>, {fields} from "
            f"... group by <keys>, {fields}) as x group by x.<keys>")


def scalar_subquery(node: ast.SubLink, refuse: Refuse, in_select: bool) -> Exception:
    """A subquery inside an expression."""
    if in_select and node.subLinkType == enums.SubLinkType.EXPR_SUBLINK:
        rewrite = ("when at most one row matches (a key), LEFT JOIN its table with the "
                   "correlation as ON and select the column: 'select t.id, d.name from s.t t "
                   "left join s.dim d on d.k = t.g' for '(select d.name from s.dim d where "
                   "d.k = t.g)' (NULL without a match, as the subquery); an aggregate in it "
                   "becomes a view of its own, read with a LEFT JOIN.")
    else:
        rewrite = ("write it as EXISTS/IN (subquery), or as a join with its tables; an "
                   "aggregate in it becomes a view of its own, joined when you read.")
    return refuse("subquery in an expression", node, "a subquery's result may change "
                  "without a write to this view's tables in FROM.", rewrite)


def statements(stmts: list[Any], text: str, path: str) -> str:
    """The message of a file that does not hold exactly one statement."""
    if not stmts:
        return (f"{path}: a view file holds exactly one SELECT; found 0 statements (the file "
                "has only comments or settings). Write the view's SELECT after them.")
    raw = text.encode("utf-8")
    offset = stmts[1].stmt_location
    while offset < len(raw) and raw[offset:offset + 1].isspace():
        offset += 1
    line, col = line_col(text, offset)
    return (f"{path}:{line}:{col}: a view file holds exactly one SELECT; found "
            f"{len(stmts)} statements (the second starts here). Rewrite: one view per file "
            "(<name>.sql each); keep only the SELECT in this one.")



FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
CLOCKS = {"now", "transaction_timestamp", "statement_timestamp", "clock_timestamp"}


def _is_clock(node: Any) -> bool:
    if isinstance(node, ast.FuncCall):
        return node.funcname[-1].sval.lower() in CLOCKS and not node.args
    return isinstance(node, ast.SQLValueFunction) and \
        node.op == enums.SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP


def _op(node: Any) -> str | None:
    if isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP \
            and len(node.name) == 1:
        return node.name[0].sval
    return None


def _clock_side(node: Any) -> tuple[str, Any] | None:
    """``now()`` -> ('', None); ``now() +/- x`` -> ('+'/'-', x); else None."""
    if _is_clock(node):
        return "", None
    if _op(node) in {"+", "-"} and _is_clock(node.lexpr) and not any(
            _is_clock(n) for n in walk(node.rexpr)):
        return _op(node), node.rexpr
    return None


def temporal_filter(where: Any, clock: Any) -> str | None:
    """The temporal filter equal to the comparison of WHERE that holds ``clock`` (``t.ts >
    now() - interval '1 day'`` -> ``mz_now() < t.ts + interval '1 day'``), or None."""
    for node in walk(where):
        op = _op(node)
        if op not in FLIP or not any(n is clock for n in walk(node)):
            continue
        for mine, other, flip in ((node.rexpr, node.lexpr, FLIP[op]),
                                  (node.lexpr, node.rexpr, op)):
            side = _clock_side(mine)
            if side is None or any(_is_clock(n) for n in walk(other)):
                continue
            sign, shift = side
            bound = other if shift is None else ast.A_Expr(
                kind=enums.A_Expr_Kind.AEXPR_OP, name=(ast.String(sval="-" if sign == "+"
                                                                  else "+"),),
                lexpr=other, rexpr=shift)
            cmp = ast.A_Expr(kind=enums.A_Expr_Kind.AEXPR_OP, name=(ast.String(sval=flip),),
                             lexpr=ast.FuncCall(funcname=(ast.String(sval="mz_now"),)),
                             rexpr=bound)
            return (f"a temporal filter, the same rows as of the clock's last tick (at most "
                    f"a second late) and maintained as time passes: write {deparse(cmp)} "
                    f"instead of {deparse(node)}")
    return None
