"""Read PostgreSQL's stored query trees (``pg_node_tree`` text, e.g. ``pg_rewrite.ev_action``).

The engine asks PostgreSQL itself how a view resolves — which overload of a function, which
operator, which cast, which columns of which table — by creating a temporary view and reading
its stored tree. The text format is PostgreSQL's ``outfuncs.c``: ``{NODE :field value ...}``,
lists in ``(...)``, typed lists ``(i 1 2)``/``(o 23)``/``(b 1 2)``, ``<>`` for NULL, datums as
``<len> [ b0 b1 ... ]``; tokens escape whitespace and ``(){}\\`` with a backslash.

Nodes become dicts with the node name under ``"_"``; numbers stay strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

STRUCTURAL = set("(){}")

# Node type -> field giving its result type (exprType() of PostgreSQL, the common cases).
TYPE_FIELDS = {
    "VAR": "vartype", "CONST": "consttype", "PARAM": "paramtype", "AGGREF": "aggtype",
    "WINDOWFUNC": "wintype", "FUNCEXPR": "funcresulttype", "OPEXPR": "opresulttype",
    "NULLIFEXPR": "opresulttype", "RELABELTYPE": "resulttype", "COERCEVIAIO": "resulttype",
    "ARRAYCOERCEEXPR": "resulttype", "CONVERTROWTYPEEXPR": "resulttype",
    "FIELDSELECT": "resulttype", "COERCETODOMAIN": "resulttype", "CASEEXPR": "casetype",
    "CASETESTEXPR": "typeId", "COALESCEEXPR": "coalescetype", "MINMAXEXPR": "minmaxtype",
    "ARRAYEXPR": "array_typeid", "ROWEXPR": "row_typeid", "SUBSCRIPTINGREF": "refrestype",
    "SQLVALUEFUNCTION": "type", "COERCETODOMAINVALUE": "typeId",
}
BOOL_NODES = {"BOOLEXPR", "NULLTEST", "BOOLEANTEST", "DISTINCTEXPR", "SCALARARRAYOPEXPR",
              "ROWCOMPAREEXPR"}
BOOL_OID = 16


def _tokens(text: str) -> Iterator[str]:
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in STRUCTURAL:
            yield ch
            i += 1
            continue
        out = []
        while i < n and not text[i].isspace() and text[i] not in STRUCTURAL:
            if text[i] == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            out.append(text[i])
            i += 1
        yield "".join(out)


class _Reader:
    def __init__(self, text: str) -> None:
        self.tokens = list(_tokens(text))
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def value(self) -> Any:
        token = self.take()
        if token == "{":
            return self.node()
        if token == "(":
            return self.list()
        if token == "<>":
            return None
        if len(token) >= 2 and token[0] == '"' and token[-1] == '"':
            return token[1:-1]
        return token

    def node(self) -> dict[str, Any]:
        node: dict[str, Any] = {"_": self.take()}
        while self.peek() not in ("}", None):
            field = self.take()
            if not field.startswith(":"):  # a bare value (e.g. an Integer node's number)
                node.setdefault("_values", []).append(field)
                continue
            name = field[1:]
            if self.peek() in ("}", None) or (self.peek() or "").startswith(":"):
                node[name] = None
                continue
            if name == "constvalue" and self.peek() not in ("<>",):
                length = self.take()
                datum = []
                if self.peek() == "[":
                    self.take()
                    while self.peek() not in ("]", None):
                        datum.append(self.take())
                    self.take()
                node[name] = (length, datum)
                continue
            node[name] = self.value()
        if self.peek() == "}":
            self.take()
        return node

    def list(self) -> list[Any]:
        items: list[Any] = []
        if self.peek() in ("i", "o", "b", "x"):
            self.take()
            while self.peek() != ")":
                items.append(self.take())
            self.take()
            return items
        while self.peek() not in (")", None):
            items.append(self.value())
        if self.peek() == ")":
            self.take()
        return items


def parse(text: str) -> Any:
    """Parse ``pg_node_tree`` text into dicts and lists."""
    return _Reader(text).value()


def walk(node: Any, *, skip: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Yield every node dict under ``node`` (itself included), depth first.

    Args:
        node: a parsed tree.
        skip: field names not to descend into (e.g. ``("rtable",)``).
    """
    if isinstance(node, list):
        for item in node:
            yield from walk(item, skip=skip)
    elif isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key != "_" and key not in skip and isinstance(value, dict | list):
                yield from walk(value, skip=skip)


def expr_type(node: Any) -> int | None:
    """The result type OID of an expression node, or None when it cannot be told."""
    if not isinstance(node, dict):
        return None
    kind = node["_"]
    if kind in BOOL_NODES:
        return BOOL_OID
    if kind == "COLLATEEXPR":
        return expr_type(node.get("arg"))
    field = TYPE_FIELDS.get(kind)
    if field is None or node.get(field) is None:
        return None
    return int(node[field])


def queries(tree: Any) -> Iterator[dict[str, Any]]:
    """Yield every QUERY node of ``tree`` (the top one and those of subqueries in FROM)."""
    for node in walk(tree):
        if node["_"] == "QUERY":
            yield node
