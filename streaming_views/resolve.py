"""Resolve an analysed view against the database, the way PostgreSQL itself resolves it.

Everything the syntax tree cannot tell is asked of PostgreSQL, under the pinned session
settings (:mod:`streaming_views.session`): the relations in FROM (tables, partitioned tables —
views and foreign tables are refused), the types and collations of the output columns, group
keys and aggregate arguments, and — read from the stored tree of temporary probe views
(:mod:`streaming_views.nodetree`) — which columns of which base table the view reads and which
functions its expressions run, behind operators and casts included
(:mod:`streaming_views.volatility`, :mod:`streaming_views.used_columns`); the probes themselves:
:mod:`streaming_views.probes`.
Refusals keep the ``file:line:column`` form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from pglast import ast
from psycopg import sql

from streaming_views import (
    conversions,
    expiry,
    nodetree,
    notnull,
    reads,
    refusals,
    temporal,
    uniquekeys,
    volatility,
)
from streaming_views.analyzer import Analysis, TableRef
from streaming_views.astutil import (
    deparse,
    line_col,
    literal_offset,
    location,
    q,
    query_text,
    substitute,
    walk,
)
from streaming_views.errors import UnsupportedViewError, ViewFileError
from streaming_views.probes import Typed, describe, result_columns, run_probe
from streaming_views.used_columns import Column, ColumnReader

SYSTEM_SCHEMAS = {"pg_catalog", "information_schema", "pg_toast"}
RELKINDS = {"v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence",
            "c": "composite type", "i": "index", "I": "partitioned index"}
CLOCK_WORDS = {"now", "today", "tomorrow", "yesterday"}
DATETIME_OIDS = {1082, 1083, 1114, 1184, 1266}  # date, time, timestamp, timestamptz, timetz


@dataclass
class TableInfo:
    """A base table: its index in :attr:`Analysis.tables`, OID, kind, used columns, and the
    partitions and inheritance children (qualified names) whose writes it must follow."""

    index: int
    schema: str
    name: str
    oid: int
    relkind: str
    columns: list[Column] = field(default_factory=list)
    descendants: list[str] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        """``"schema"."name"``."""
        return sql.Identifier(self.schema, self.name).as_string(None)


@dataclass
class Resolved:
    """What PostgreSQL resolved: output columns, probe columns by name, base tables."""

    outputs: list[Typed]
    types: dict[str, Typed]
    tables: list[TableInfo]
    settings: frozenset[str] = reads.ALL  # the pinned settings maintenance reads (reads.py)
    notnull: frozenset[str] = frozenset()  # probe columns (x<i>) that are never NULL
    # probe columns NULL exactly when their NULL-extended table did not match -> its index
    matched: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------ resolve
class _Resolver:
    def __init__(self, conn: psycopg.Connection, an: Analysis) -> None:
        self.conn = conn
        self.an = an
        self.path = str(an.view.path)
        self.text = an.view.text

    def refuse(self, construct: str, node: Any, reason: str, rewrite: str | None,
               offset: int | None = None) -> UnsupportedViewError:
        if offset is None:
            offset = location(node) if node is not None else None
        line, col = line_col(self.text, offset)
        return UnsupportedViewError(construct, reason, path=self.path, line=line, column=col,
                                    rewrite=rewrite)

    # -------------------------------------------------------------- relations
    def relations(self) -> list[TableInfo]:
        from streaming_views import layers  # it extends TableInfo: imported once both exist
        infos = []
        for index, table in enumerate(self.an.tables):
            if table.schema in SYSTEM_SCHEMAS:
                raise self.refuse(f"system catalog {table.schema}.{table.name}", table.node,
                                  "PostgreSQL fires no triggers on its catalogs, so no live view "
                                  "can follow them.", "read your own tables; to watch catalog "
                                  "state, query it when you read (it is always current).")
            row = self.conn.execute(
                "select c.oid, c.relkind from pg_class c join pg_namespace n on "
                "n.oid = c.relnamespace where n.nspname = %s and c.relname = %s",
                (table.schema, table.name)).fetchone()
            if row is None:
                continue  # describe() reports the missing table with PostgreSQL's words
            oid, relkind = int(row[0]), str(row[1])
            live = layers.live_table(self.conn, index, table, oid, relkind, self.refuse)
            if relkind not in {"r", "p"} and live is None:
                self._refuse_relation(table, relkind, oid)
            infos.append(live or TableInfo(index, table.schema, table.name, oid, relkind,
                                           descendants=self._descendants(oid)))
        return infos

    def _refuse_relation(self, table: TableRef, relkind: str, oid: int) -> None:
        kind = RELKINDS.get(relkind, "relation that is not a table")
        name = f"{table.schema}.{table.name}"
        if relkind in {"v", "m"}:
            body = self.conn.execute("select pg_get_viewdef(%s::oid)", (oid,)).fetchone()[0]
            body = " ".join(str(body or "").split()).rstrip(";")
            rewrite = (f"inline the query of {name} into this one (its FROM, joins and WHERE), "
                       f"so the live view reads base tables: ({body}) AS {table.ref} is "
                       + ("its query (what REFRESH would store)" if relkind == "m" else
                          "the same rows") + " as a FROM subquery, which is maintained when "
                       "it does not aggregate.")
        else:
            rewrite = None
        raise self.refuse(f"{name} is a {kind}", table.node, "a live view follows writes to "
                          "base tables through triggers, which a " + kind + " does not have.",
                          rewrite)

    def _descendants(self, oid: int) -> list[str]:
        rows = self.conn.execute(
            "with recursive d(oid) as (select inhrelid from pg_inherits where inhparent = %s "
            "union select i.inhrelid from pg_inherits i join d on i.inhparent = d.oid) "
            "select d.oid::regclass::text from d join pg_class c on c.oid = d.oid "
            "where c.relkind in ('r', 'p') order by 1", (oid,)).fetchall()
        return [str(r[0]) for r in rows]

    # -------------------------------------------------------------- probes
    def from_where(self) -> str:
        text = " FROM " + ", ".join(deparse(i) for i in self.an.from_clause)
        if self.an.where is not None:
            text += f" WHERE {deparse(self.an.where)}"
        return text

    def row_exprs(self) -> list[tuple[str, Any]]:
        """(probe column, syntax node) of everything evaluated when the view is maintained."""
        an = self.an
        if an.kind != "aggregate":
            return [(f"o{i}", node) for i, (_, node) in enumerate(an.outputs)]
        exprs = [(f"k{j}", k) for j, k in enumerate(an.group)]
        for i, call in enumerate(an.aggs):
            if call.arg is not None:
                exprs.append((f"x{i}", call.arg))
            if call.filter is not None:
                exprs.append((f"f{i}", call.filter))
        return exprs

    def final_text(self, types: dict[str, Typed]) -> str | None:
        """A probe of the expressions computed when the view is read: aggregates and group
        keys replaced by typed NULLs."""
        an = self.an
        if an.kind != "aggregate":
            return None
        keys = {deparse(k): types[f"k{j}"].type for j, k in enumerate(an.group)}
        aggs = {c.text: types[f"r{i}"].type for i, c in enumerate(an.aggs)}
        holders: dict[str, str] = {}

        def swap(node: ast.Node) -> ast.Node | None:
            if isinstance(node, ast.String | ast.Integer | ast.Float | ast.Boolean):
                return None
            text = deparse(node)
            typ = aggs.get(text) if isinstance(node, ast.FuncCall) else keys.get(text)
            if typ is None:
                return None
            name = f"__p{len(holders)}"
            holders[name] = f"(NULL::{typ})"
            return ast.ColumnRef(fields=(ast.String(sval=name),))

        trees = [substitute(node, swap) for _, node in an.outputs]
        if an.having is not None:
            trees.append(substitute(an.having, swap))
        for ref in walk(trees):
            if isinstance(ref, ast.ColumnRef) and not str(
                    getattr(ref.fields[0], "sval", "")).startswith("__p"):
                return None  # not a key nor an aggregate: the compiler refuses it, clearly
        parts = [deparse(t) for t in trees]
        text = "SELECT " + ", ".join(f"{p} AS c{i}" for i, p in enumerate(parts))
        for name, value in holders.items():
            text = re.sub(rf"\b{name}\b", value, text)
        return text

    # -------------------------------------------------------------- checks
    def check_columns(self, select_text: str, nodes: list[Any], what: str) -> None:
        """Refuse, at the expression, two outputs of one name and a column of a pseudo-type
        (``row(a, b)``: a live view stores typed columns) — which PostgreSQL reports only when
        the view is created, without a position."""
        columns = result_columns(self.conn, select_text)
        for i, (name, pseudo) in enumerate(columns or ()):
            node = nodes[i] if i < len(nodes) else None
            if pseudo:
                fields = ", ".join(deparse(a) for a in getattr(node, "args", None) or ())
                rewrite = f"one column per field ({fields or '...'})"
                if name.startswith("x"):  # an aggregate's argument
                    rewrite = refusals.two_level_count(fields or "a, b")
                raise self.refuse(f"{what} of type {pseudo}", node, "a live view keeps typed "
                                  "columns; an anonymous row has no column type.", rewrite)
            if what == "output column" and [n for n, _ in columns or ()][:i].count(name):
                raise self.refuse(f"output column {name!r} twice", node, "every column of a "
                                  "live view needs a unique name.", f"name it: "
                                  f"{deparse(node)} AS {name}_2")

    def check_tree(self, tree: Any, *, final: bool) -> None:
        """Check every function the tree runs (see :mod:`streaming_views.volatility`)."""
        calls: list[tuple[int, bool, int | None]] = []  # (function, is a cast, argument type)
        opnos: set[int] = set()
        io: list[tuple[int | None, int]] = []  # I/O conversions: (from type, to type)
        printed: list[tuple[int, list[int | None]]] = []  # (function, its argument types)
        for node in nodetree.walk(tree):
            kind = node["_"]
            if kind == "FUNCEXPR":
                args = node.get("args") or [None]
                calls.append((int(node["funcid"]), node.get("funcformat") in ("1", "2"),
                              nodetree.expr_type(args[0])))
                printed.append((int(node["funcid"]), [nodetree.expr_type(a) for a in args]))
            elif kind in {"OPEXPR", "DISTINCTEXPR", "NULLIFEXPR", "SCALARARRAYOPEXPR"}:
                opnos.add(int(node["opno"]))
                if node.get("opfuncid") not in (None, "0"):
                    printed.append((int(node["opfuncid"]),
                                    [nodetree.expr_type(a) for a in node.get("args") or []]))
            elif kind == "ROWCOMPAREEXPR":
                opnos.update(int(o) for o in node.get("opnos") or [])
            elif kind == "COERCEVIAIO":
                io.append((nodetree.expr_type(node.get("arg")), int(node["resulttype"])))
            elif kind == "NEXTVALUEEXPR":
                raise self.refuse("nextval()", None, "a sequence's next value changes with "
                                  "every call.", "compute the value when the row is written.")
        types = conversions.type_names(self.conn, {t for _, _, t in calls if t is not None}
                                 | {t for pair in io for t in pair if t is not None})
        checks: list[tuple[int, str, str, str]] = []  # (function, what, search kind, name)
        named = volatility.procs(self.conn, {oid for oid, _, _ in calls})
        for oid, is_cast, src in calls:
            proc = named.get(oid)
            if proc is None:
                continue
            if is_cast:
                checks.append((oid, f"cast from {types.get(src or 0, 'its argument')} to "
                               f"{conversions.result_type(self.conn, oid)}", "cast", ""))
            else:
                checks.append((oid, proc.qualified, "func", proc.name))
        if opnos:
            for name, code in self.conn.execute(
                    "select oprname, oprcode::oid from pg_operator where oid = any(%s)",
                    (sorted(opnos),)).fetchall():
                checks.append((int(code), f"operator {name}", "op", str(name)))
        for src, dst in io:
            for oid in conversions.io_functions(self.conn, src, dst):
                checks.append((oid, f"cast from {types.get(src or 0, 'a value')} to "
                               f"{types.get(dst)}", "cast", ""))
        checks += conversions.printing_checks(self.conn, printed)
        info = volatility.procs(self.conn, {c[0] for c in checks})
        for oid, what, kind, name in checks:
            proc = info.get(oid)
            if proc is None:
                continue
            verdict = volatility.judge(proc, what, final=final, view=self.an.view.name)
            if verdict is not None:
                raise self.refuse(what, self._locate(kind, name, final), verdict.reason,
                                  verdict.rewrite)

    def _locate(self, kind: str, name: str, final: bool) -> Any:
        """The syntax node the check is about, for its position: the first call of ``name``,
        operator ``name`` or cast in the part of the view concerned."""
        an = self.an
        roots: list[Any] = [n for _, n in an.outputs]
        if final:
            roots += [an.having]
        else:
            roots += [an.where, *an.group, *an.from_clause, an.having]
        nodes = list(walk([r for r in roots if r is not None]))
        for node in nodes:
            if kind == "func" and isinstance(node, ast.FuncCall) \
                    and node.funcname[-1].sval.lower() == name:
                return node
            if kind == "op" and isinstance(node, ast.A_Expr) and node.name \
                    and getattr(node.name[-1], "sval", None) == name:
                return node
            if kind == "cast" and isinstance(node, ast.TypeCast):
                return node
        return roots[0] if roots else None

    def settings(self, row_tree: Any) -> frozenset[str]:
        """The pinned settings the maintenance's expressions read (:mod:`streaming_views.reads`):
        the view's (``row_tree``) and its temporal filter's bounds compared to the clock."""
        strings = [n.val.sval for n in walk(self.an.roots())
                   if isinstance(n, ast.A_Const) and isinstance(n.val, ast.String)]
        found = reads.settings_read(self.conn, row_tree, strings)
        t = self.an.temporal
        if t is not None and found != reads.ALL:
            strings += [n.val.sval for n in walk([b.expr for b in t.bounds])
                        if isinstance(n, ast.A_Const) and isinstance(n.val, ast.String)]
            _, tree = run_probe(self.conn, f"SELECT {expiry.valid_sql(t, 'now()', safe=False)} "  # noqa: S608
                                f"AS c FROM {sql.Identifier(t.schema, t.name).as_string(None)} "
                                f"AS {q(t.ref)}", path=self.path, tree=True)
            found |= reads.settings_read(self.conn, tree, strings, ignore=frozenset({"now"}))
        return found

    def check_literals(self, tree: Any) -> None:
        """Refuse 'now', 'today'... read as a date/time: the deploy would fix it once."""
        if not any(n["_"] == "CONST" and int(n.get("consttype") or 0) in DATETIME_OIDS
                   for n in nodetree.walk(tree)):
            return
        for node in walk(self.an.roots()):
            if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String) \
                    and node.val.sval.strip().lower() in CLOCK_WORDS:
                raise self.refuse(f"'{node.val.sval}'", None, "a date/time literal that reads "
                                  "the clock is fixed when the view is deployed but means the "
                                  "time of reading in the query, so they would drift "
                                  "apart (the time of a write is not the time of a read).",
                                  "write the date or time itself, or group by the event time "
                                  "and pick the current row when you read the view.",
                                  offset=literal_offset(self.text, node.val.sval))

    def check_collations(self, typed: list[Typed], nodes: list[Any]) -> None:
        oids = {t.collation_oid for t in typed if t.collation_oid}
        if not oids:
            return
        bad = {int(o) for (o,) in self.conn.execute(
            "select oid from pg_collation where oid = any(%s) and not collisdeterministic",
            (sorted(oids),)).fetchall()}
        for t, node in zip(typed, nodes, strict=True):
            if t.collation_oid in bad:
                raise self.refuse(f"nondeterministic collation {t.collation}", node,
                                  "values equal under it (e.g. 'a' and 'A') may differ in "
                                  "text, and which one a group, DISTINCT, min or max shows "
                                  "is not defined, so the view could not equal its query.",
                                  f"apply a deterministic collation to the expression: "
                                  f"({deparse(node)}) COLLATE \"C\" (or lower() it), if that "
                                  "is what the view should compare by.")


def resolve(conn: psycopg.Connection, an: Analysis) -> Resolved:
    """Resolve ``an`` against the database behind ``conn`` (inside a pinned transaction).

    Raises:
        UnsupportedViewError: a relation, function, cast, literal or collation the engine
            cannot maintain exactly.
        ViewDefinitionError: PostgreSQL rejects the query.
    """
    r = _Resolver(conn, an)
    tables = r.relations()
    text = query_text(temporal.probe_text(an.view.text))
    r.check_columns(text, [node for _, node in an.outputs], "output column")
    outputs = describe(conn, text, path=r.path, view_text=an.view.text)
    unknown = [k for k in an.view.keys if k not in {o.name for o in outputs}]
    if unknown:
        raise ViewFileError(f"{r.path}: @keys names {unknown[0]}, which is not a column of the "
                            f"view (its columns: {', '.join(o.name for o in outputs)}).")
    exprs = r.row_exprs()
    select = ", ".join(f"{deparse(node)} AS {name}" for name, node in exprs) or "1 AS c"
    r.check_columns(f"SELECT {select}{r.from_where()}", [n for _, n in exprs], "expression")
    row_cols, row_tree = run_probe(conn, f"SELECT {select}{r.from_where()}", path=r.path,
                                tree=True)
    types = {c.name: c for c in row_cols}
    if an.aggs:
        probe = ", ".join(f"{c.text} AS r{i}" for i, c in enumerate(an.aggs))
        types.update({c.name: c for c in describe(conn, f"SELECT {probe}{r.from_where()}",
                                                  path=r.path)})
    for i in range(len(an.aggs)):  # aggregates work on a domain's base type (sums go negative)
        if (arg := types.get(f"x{i}")) is not None:
            types[f"x{i}"] = replace(arg, type=conversions.base_type(conn, arg.type))
    r.check_tree(row_tree, final=False)
    r.check_literals(row_tree)
    final = r.final_text(types)
    if final is not None:
        _, final_tree = run_probe(conn, final, path=r.path, tree=True)
        r.check_tree(final_tree, final=True)
        r.check_literals(final_tree)
    ColumnReader(conn, an, r.refuse).read(row_tree, tables)
    kept = [(types[name], node) for name, node in exprs if name[0] in "ko"]
    kept += [(types[f"x{i}"], c.arg) for i, c in enumerate(an.aggs)
             if c.arg is not None and (c.distinct or c.func in {"min", "max"})]
    r.check_collations([t for t, _ in kept], [n for _, n in kept])
    never, matched = notnull.never_null(conn, an, row_tree, tables)
    uniquekeys.mark_keys(conn, an, tables)
    return Resolved(outputs, types, tables, r.settings(row_tree), never, matched)
