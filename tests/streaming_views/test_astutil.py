"""Tests for streaming_views.astutil's tree walk."""

from __future__ import annotations

import pglast
from pglast import ast

from streaming_views.astutil import location, walk


def _select(text: str) -> ast.SelectStmt:
    return pglast.parse_sql(text)[0].stmt


def _columns(nodes) -> list[str]:
    return [".".join(f.sval for f in n.fields if isinstance(f, ast.String))
            for n in nodes if isinstance(n, ast.ColumnRef)]


def test_walk_yields_every_column_in_source_order() -> None:
    stmt = _select("select t.a + t.b, sum(t.c) from t where t.d > 0")
    assert _columns(walk(stmt)) == ["t.a", "t.b", "t.c", "t.d"]


def test_walk_can_stay_out_of_subqueries() -> None:
    stmt = _select("select t.a from t where exists (select 1 from u where u.b = t.a)")
    assert _columns(walk(stmt)) == ["t.a", "u.b", "t.a"]
    assert _columns(walk(stmt, into_subqueries=False)) == ["t.a"]


def test_walk_skips_a_node_and_everything_below_it() -> None:
    stmt = _select("select t.a / t.b, sum(t.c / t.d) from t")

    def is_sum(node: ast.Node) -> bool:
        return isinstance(node, ast.FuncCall) and node.funcname[-1].sval == "sum"

    assert _columns(walk(stmt, skip=is_sum)) == ["t.a", "t.b"]
    assert not any(isinstance(n, ast.FuncCall) for n in walk(stmt, skip=is_sum))


def test_walk_accepts_lists_and_location_finds_the_first_offset() -> None:
    stmt = _select("select t.a, t.b from t")
    assert _columns(walk(list(stmt.targetList))) == ["t.a", "t.b"]
    assert location(stmt.targetList[1]) == len("select t.a, ")
