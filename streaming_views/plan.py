"""Plan an analysed and resolved view: its group keys, aggregate rules and output expressions.

The plan is what the compiler turns into SQL: the state table's key columns (with their types
and collations), one :class:`streaming_views.rules.Rule` per aggregate call, and the output and
HAVING expressions rewritten over the state table (``s.<key>`` for group keys, the rules'
finalisers for aggregates).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pglast import ast

from streaming_views.analyzer import Analysis
from streaming_views.astutil import column_ref, deparse, line_col, location, q, substitute, walk
from streaming_views.errors import UnsupportedViewError
from streaming_views.resolve import Resolved, Typed
from streaming_views.rules import BoolRule, CountRule, ExtremeRule, Rule
from streaming_views.sums import INFINITE_INTERVALS, DistinctRule, SumRule

FLOAT_TYPES = {"real", "double precision"}


@dataclass
class Plan:
    """Keys (state column, type with collation), output columns (name, type), rules, and the
    output and HAVING expressions over the state table ``s``."""

    keys: list[tuple[str, str]]
    outputs: list[tuple[str, str]]
    rules: list[Rule]
    output_exprs: list[str]
    having_sql: str | None


def _refuse(an: Analysis, construct: str, node: ast.Node, reason: str,
            rewrite: str | None) -> UnsupportedViewError:
    line, col = line_col(an.view.text, location(node))
    return UnsupportedViewError(construct, reason, path=str(an.view.path), line=line, column=col,
                                rewrite=rewrite)


def plan_rules(an: Analysis, types: dict[str, Typed], server_version: int,
               notnull: frozenset[str] = frozenset(),
               matched: dict[str, int] | None = None) -> list[Rule]:
    """One rule per aggregate call (sum and avg of the same argument share columns).

    ``notnull``: the arguments (``x<i>``) that are never NULL (their rules count no NULLs).
    ``matched``: the arguments NULL exactly when their NULL-extended table (by index) did not
    match: the first rule of each table keeps the not-null count, the others read its column.

    Raises:
        UnsupportedViewError: a sum or avg the engine cannot keep exactly.
    """
    rules: list[Rule] = []
    sums: dict[tuple[str, str], int] = {}
    owners: dict[int, str] = {}
    for i, call in enumerate(an.aggs):
        result = types[f"r{i}"]
        arg = types.get(f"x{i}")
        arg_type = arg.type if arg else ""
        if call.func in {"sum", "avg"} and arg_type in FLOAT_TYPES:
            raise _refuse(an, f"{call.func}() over {arg_type}", call.node,
                          "floating-point sums depend on the order of additions, so an "
                          "incrementally kept sum would drift from the query's.",
                          f"{call.func}(({deparse(call.arg)})::numeric)")
        specials = ("numeric" if arg_type.startswith("numeric") else
                    "interval" if arg_type == "interval" and server_version >= INFINITE_INTERVALS
                    else "")
        value = _sum_type(call.func, arg_type, result.type)
        if call.distinct and call.func in {"count", "sum", "avg"}:
            if call.func != "count" and arg_type == "numeric":
                raise _refuse(an, f"{call.func}(DISTINCT) over unconstrained numeric",
                              call.node, "equal values with different display scales (1.0 "
                              "and 1.00) are one distinct value, and which of them PostgreSQL "
                              "adds is not defined, so the result's digits are not either.",
                              f"give the values a fixed scale: {call.func}(DISTINCT "
                              f"({deparse(call.arg)})::numeric(38, <scale>)) is the same "
                              "query when no value has more decimals than <scale>.")
            rule: Rule = DistinctRule(i, call, result.type, value, arg_type,
                                      arg.collate if arg else "",
                                      specials=specials if call.func != "count" else "")
        elif call.func == "count":  # count(x) of an x never NULL: count(*)
            share = (-1 if (call.arg is None or f"x{i}" in notnull) and call.filter is None
                     else None)
            rule = CountRule(i, call, result.type, share=share, notnull=f"x{i}" in notnull)
        elif call.func in {"sum", "avg"}:
            key = (deparse(call.arg), deparse(call.filter) if call.filter is not None else "")
            rule = SumRule(i, call, result.type, value, arg_type, share=sums.get(key),
                           specials=specials, scaled=arg_type == "numeric",
                           notnull=f"x{i}" in notnull)
            sums.setdefault(key, i)
        elif call.func in {"min", "max"}:
            rule = ExtremeRule(i, call, result.type, result.type, arg_type, result.collate)
        else:
            rule = BoolRule(i, call, result.type, notnull=f"x{i}" in notnull)
        _share_matched(rule, (matched or {}).get(f"x{i}"), owners)
        rules.append(rule)
    for i, rule in enumerate(rules):  # count(*) FILTER (WHERE <the table did not match>)
        table = (matched or {}).get(f"f{i}")
        if table is not None and table in owners:
            rule.nn_col, rule.unmatched = owners[table], True
    return rules


def _share_matched(rule: Rule, table: int | None, owners: dict[int, str]) -> None:
    """Point ``rule`` at the not-null counter of its NULL-extended ``table`` kept by an earlier
    rule, or make its own counter that table's (``owners``: table -> column)."""
    if table is None:
        return
    if table in owners:
        rule.nn_col = owners[table]
    else:
        owners[table] = f"{rule.p}_n" if rule.kind == "count" else f"{rule.p}_nn"


def _sum_type(func: str, arg_type: str, result_type: str) -> str:
    """The type of a kept sum: the sum's own type (numeric for avg over integers)."""
    if func not in {"sum", "avg"}:
        return result_type
    if arg_type in {"smallint", "integer"}:
        return "bigint"
    if arg_type == "bigint" or arg_type.startswith("numeric"):
        return "numeric"
    return arg_type if arg_type else result_type


def key_columns(an: Analysis, resolved: Resolved) -> list[tuple[str, str]]:
    """(state column, type with collation) of the group keys (``__g`` for a global aggregate,
    every output column for views without aggregation)."""
    if an.is_global:
        return [("__g", "integer")]
    if an.kind in {"bag", "distinct"}:
        return [(o.name, f"{o.type}{resolved.types[f'o{i}'].collate}")
                for i, o in enumerate(resolved.outputs)]
    named: dict[str, str] = {}
    for out, (_, node) in zip(resolved.outputs, an.outputs, strict=True):
        named.setdefault(deparse(node), out.name)
    keys, used = [], set()
    for j, k in enumerate(an.group):
        name = named.get(deparse(k))
        if name is None or name in used:
            name = f"__key{j}"
        used.add(name)
        typed = resolved.types[f"k{j}"]
        keys.append((name, f"{typed.type}{typed.collate}"))
    return keys


def output_expressions(an: Analysis, keys: list[tuple[str, str]],
                       rules: list[Rule]) -> tuple[list[str], str | None]:
    """The output and HAVING expressions over the state table ``s``.

    Raises:
        UnsupportedViewError: a column neither grouped (written as in GROUP BY) nor aggregated.
    """
    if an.kind in {"bag", "distinct"}:
        return [f"s.{q(n)}" for n, _ in keys], None
    key_text = {deparse(k): keys[j][0] for j, k in enumerate(an.group)}
    by_text = {r.call.text: r for r in rules}
    finals: dict[str, str] = {}

    def swap(node: ast.Node) -> ast.Node | None:
        if isinstance(node, ast.String | ast.Integer | ast.Float | ast.Boolean):
            return None
        text = deparse(node)
        if text in key_text:
            return column_ref("s", key_text[text])
        if isinstance(node, ast.FuncCall) and text in by_text:
            placeholder = f"__fin{by_text[text].index}"
            finals[placeholder] = by_text[text].finalize()
            return column_ref(placeholder)
        return None

    def render(node: ast.Node, what: str) -> str:
        new = substitute(node, swap)
        for ref in walk(new):
            if isinstance(ref, ast.ColumnRef):
                names = [f.sval for f in ref.fields if isinstance(f, ast.String)]
                if names and not (names[0] == "s" or names[0].startswith("__fin")):
                    raise _refuse(an, f"column {'.'.join(names)} in {what}", node,
                                  "it is neither a GROUP BY expression (written the same way) "
                                  "nor inside an aggregate.", "write the expression exactly as "
                                  "in GROUP BY, or use GROUP BY <position>.")
        text = deparse(new)
        for placeholder, final in finals.items():
            text = re.sub(rf"\b{placeholder}\b", f"({final})", text)
        return text

    outputs = [render(node, "SELECT") for _, node in an.outputs]
    having = render(an.having, "HAVING") if an.having is not None else None
    return outputs, having


def plan(an: Analysis, resolved: Resolved, server_version: int) -> Plan:
    """Plan ``an`` as resolved by the database.

    Raises:
        UnsupportedViewError: outside what the engine keeps exactly.
    """
    for out, (_, node) in zip(resolved.outputs, an.outputs, strict=True):
        if out.name.startswith("__") or out.name == "?column?" or sum(
                o.name == out.name for o in resolved.outputs) > 1:
            plain = out.name.lstrip("_") or "value"
            raise _refuse(an, f"output column {out.name!r}", node, "every column of a live view "
                          "needs a unique name (not starting with __).",
                          f"name it: {deparse(node)} AS "
                          f"{plain if out.name.startswith('__') else '<name>'}")
    rules = plan_rules(an, resolved.types, server_version, resolved.notnull, resolved.matched)
    keys = key_columns(an, resolved)
    outputs = [(o.name, o.type) for o in resolved.outputs]
    exprs, having = output_expressions(an, keys, rules)
    return Plan(keys, outputs, rules, exprs, having)
