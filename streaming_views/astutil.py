"""Small helpers over pglast syntax trees: walking, copying with substitution, deparsing."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from typing import Any

import pglast
from pglast import ast
from pglast.stream import RawStream
from psycopg import sql


def q(name: str) -> str:
    """Quote one identifier (psycopg's quoting)."""
    return sql.Identifier(name).as_string(None)


def deparse(node: Any) -> str:
    """Return the SQL text of a syntax-tree node."""
    return RawStream()(node)


def children(node: ast.Node) -> Iterator[ast.Node]:
    """Yield the direct child nodes of ``node`` (nested lists flattened)."""
    for name in type(node).__slots__:
        yield from _nodes(getattr(node, name, None))


def _nodes(value: Any) -> Iterator[ast.Node]:
    if isinstance(value, ast.Node):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _nodes(item)


def walk(node: Any, *, into_subqueries: bool = True,
         skip: Callable[[ast.Node], bool] | None = None) -> Iterator[ast.Node]:
    """Yield ``node`` and every node below it, depth first, in source order.

    Args:
        node: a node, or a list or tuple of nodes.
        into_subqueries: whether to descend into sublinks and FROM subqueries.
        skip: a node for which it returns True is neither yielded nor descended into.
    """
    if isinstance(node, list | tuple):
        for item in node:
            yield from walk(item, into_subqueries=into_subqueries, skip=skip)
        return
    if not isinstance(node, ast.Node) or (skip is not None and skip(node)):
        return
    yield node
    if not into_subqueries and isinstance(node, ast.SubLink | ast.RangeSubselect):
        return
    for child in children(node):
        yield from walk(child, into_subqueries=into_subqueries, skip=skip)


def location(node: Any) -> int | None:
    """Return the first non-negative ``location`` in ``node``'s subtree, or None."""
    for item in walk(node):
        loc = getattr(item, "location", None)
        if isinstance(loc, int) and loc >= 0:
            return loc
    return None


def substitute(node: Any, replace: Callable[[ast.Node], ast.Node | None]) -> Any:
    """Return a deep copy of ``node`` where ``replace(n)`` (when not None) stands for ``n``.

    Replacement is tried top-down; a replaced node's subtree is not visited.
    """
    if isinstance(node, list | tuple):
        return type(node)(substitute(item, replace) for item in node)
    if not isinstance(node, ast.Node):
        return node
    new = replace(node)
    if new is not None:
        return new
    result = copy.copy(node)
    for name in type(node).__slots__:
        value = getattr(node, name, None)
        if isinstance(value, ast.Node | list | tuple):
            setattr(result, name, substitute(value, replace))
    return result


def column_ref(*names: str) -> ast.ColumnRef:
    """Build a column reference ``a.b`` from names."""
    return ast.ColumnRef(fields=tuple(ast.String(sval=n) for n in names))


def raw_sql(text: str) -> ast.ColumnRef:
    """A node that deparses as an already quoted identifier path; used for state columns."""
    return column_ref(*text.split("."))


def keyword_offset(text: str, word: str) -> int | None:
    """Byte offset of the first ``word`` (case-insensitive, whole word) outside ``--`` comments."""
    blanked = re.sub(r"--[^\n]*", lambda m: " " * len(m.group(0)), text)
    match = re.search(rf"\b{re.escape(word)}\b", blanked, flags=re.IGNORECASE)
    return len(text[:match.start()].encode("utf-8")) if match else None


def literal_offset(text: str, value: str) -> int | None:
    """Byte offset of the first string literal ``'value'`` outside ``--`` comments (pglast does
    not keep the position of constants)."""
    blanked = re.sub(r"--[^\n]*", lambda m: " " * len(m.group(0)), text)
    quoted = "'" + value.replace("'", "''") + "'"
    match = re.search(re.escape(quoted), blanked, flags=re.IGNORECASE)
    return len(text[:match.start()].encode("utf-8")) if match else None


def line_col(text: str, offset: int | None) -> tuple[int | None, int | None]:
    """Convert a byte offset into ``text`` (UTF-8) to a 1-based (line, column)."""
    if offset is None:
        return None, None
    prefix = text.encode("utf-8")[:offset].decode("utf-8", errors="ignore")
    line = prefix.count("\n") + 1
    column = len(prefix) - (prefix.rfind("\n") + 1) + 1
    return line, column


def query_text(definition: str) -> str:
    """The view file's SELECT without a trailing semicolon (nor the comments after it), ending
    in a newline so that a trailing ``--`` comment cannot swallow what a caller appends (the
    closing parenthesis of a subquery)."""
    try:
        stmt = pglast.parse_sql(definition)[0]
    except pglast.parser.ParseError:
        return definition.rstrip().rstrip(";") + "\n"
    raw = definition.encode("utf-8")
    end = stmt.stmt_location + stmt.stmt_len if stmt.stmt_len else len(raw)
    return raw[:end].decode("utf-8").rstrip().rstrip(";") + "\n"
