"""Which columns of its base tables a view reads, and the refusals that reading finds.

The columns come from the stored tree of the view's row probe (:mod:`streaming_views.nodetree`),
a join's columns followed to the base column they stand for; their types, typmods and
collations from the catalog. A whole-row reference, a system column and a virtual generated
column are refused here (each changes without a write a trigger sees, or has no value in a
transition table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from pglast import ast

from streaming_views import conversions, nodetree
from streaming_views.astutil import walk
from streaming_views.errors import UnsupportedViewError

if TYPE_CHECKING:
    from streaming_views.analyzer import Analysis
    from streaming_views.resolve import TableInfo

SYSTEM_COLUMNS = {-1: "ctid", -2: "xmin", -3: "cmin", -4: "xmax", -5: "cmax", -6: "tableoid"}

Refuse = Callable[..., UnsupportedViewError]


@dataclass(frozen=True)
class Column:
    """A base-table column the view reads, as the catalog had it at deploy."""

    attnum: int
    name: str
    type: str
    type_oid: int
    typmod: int
    collation: str | None
    collation_oid: int
    base_type: str = ""  # a domain's base type: what the change log keeps (no NOT NULL/CHECK)
    notnull: bool = False  # the view's state relies on its NOT NULL (no not-null counter)
    key: tuple[int, ...] = ()  # the unique key (attnums) it is part of that the apply relies
    # on: the join meets at most one row of this table (streaming_views.onegroup)

    @property
    def log_type(self) -> str:
        """The column's type in the change log: a domain's base type, since the log's marker
        rows are NULL in every column and its values were checked by the base table."""
        return self.base_type or self.type

    def record(self) -> dict[str, Any]:
        """What the catalog keeps to notice a later change of this column."""
        kept = {"attnum": self.attnum, "name": self.name, "type": self.type_oid,
                "typmod": self.typmod, "collation": self.collation_oid}
        if self.notnull:
            kept["notnull"] = True
        if self.key:
            kept["key"] = list(self.key)
        return kept


class ColumnReader:
    """Reads the base-table columns of one view (a part of :mod:`streaming_views.resolve`).

    Args:
        conn: the resolver's connection, inside its pinned transaction.
        an: the analysed view.
        refuse: the resolver's ``refuse(construct, node, reason, rewrite)``, which builds a
            ``file:line:column`` refusal.
    """

    def __init__(self, conn: psycopg.Connection, an: Analysis, refuse: Refuse) -> None:
        self.conn = conn
        self.an = an
        self.refuse = refuse

    def read(self, tree: Any, infos: list[TableInfo]) -> None:
        """Set each table's :attr:`TableInfo.columns` to the columns the view reads.

        Args:
            tree: the stored tree of the view's row probe (:mod:`streaming_views.nodetree`).
            infos: the view's base tables.

        Raises:
            UnsupportedViewError: a whole-row reference, a system column or a virtual
                generated column.
        """
        by_oid = {t.oid: t for t in infos}
        wanted: dict[int, set[int]] = {t.oid: set() for t in infos}
        for query in nodetree.queries(tree):
            rtable = query.get("rtable") or []
            skip = ("rtable",)
            for node in nodetree.walk({k: v for k, v in query.items() if k != "rtable"},
                                      skip=skip):
                if node["_"] != "VAR" or node.get("varlevelsup") not in ("0", None):
                    continue
                self._var(node, rtable, wanted)
        for oid, attnums in wanted.items():
            info = by_oid[oid]
            self._refuse_virtual(info, attnums)
            rows = self.conn.execute(
                "select a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid, "
                "a.atttypmod, case when a.attcollation <> 0 then quote_ident(n.nspname) || '.' "
                "|| quote_ident(c.collname) end, a.attcollation from pg_attribute a "
                "left join pg_collation c on c.oid = a.attcollation left join pg_namespace n "
                "on n.oid = c.collnamespace where a.attrelid = %s and a.attnum > 0 and not "
                "a.attisdropped and (a.attnum = any(%s) or 0 = any(%s)) order by a.attnum",
                (oid, sorted(attnums), sorted(attnums))).fetchall()
            info.columns = [Column(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), r[5],
                                   int(r[6]), conversions.base_type(self.conn, str(r[2])))
                            for r in rows]

    def _refuse_virtual(self, info: TableInfo, attnums: set[int]) -> None:
        """A virtual generated column (PostgreSQL 18) has no value in a trigger's transition
        table: every write to the table would fail in the view's trigger ("unexpected virtual
        generated column reference"). Its expression, written in the view, is the same value."""
        row = self.conn.execute(
            "select a.attname, pg_get_expr(d.adbin, d.adrelid) from pg_attribute a join "
            "pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum where a.attrelid = %s"
            " and a.attgenerated = 'v' and (a.attnum = any(%s) or 0 = any(%s)) order by a.attnum",
            (info.oid, sorted(attnums), sorted(attnums))).fetchone()
        if row is None:
            return
        name, expression = str(row[0]), str(row[1])
        node = next((n for n in walk(self.an.roots()) if isinstance(n, ast.ColumnRef)
                     and getattr(n.fields[-1], "sval", None) == name), None)
        raise self.refuse(f"virtual generated column {info.schema}.{info.name}.{name}", node,
                          "PostgreSQL computes it when it is read, and a trigger's transition "
                          "table does not: every write to the table would fail in the view's "
                          "trigger.", f"write its expression, {expression}, in its place (its "
                          "columns qualified by the table's alias) — the same value — or make "
                          "the column STORED.")

    def _var(self, var: dict[str, Any], rtable: list[Any], wanted: dict[int, set[int]]) -> None:
        index, attnum = int(var["varno"]), int(var["varattno"])
        if not 1 <= index <= len(rtable):
            return
        rte = rtable[index - 1]
        kind = rte.get("rtekind")
        if attnum == 0:
            raise self._whole_row(rte)
        if kind == "0" and int(rte["relid"]) in wanted:
            if attnum < 0:
                name = SYSTEM_COLUMNS.get(attnum, "a system column")
                node = next((n for n in walk(self.an.roots())
                             if isinstance(n, ast.ColumnRef)
                             and getattr(n.fields[-1], "sval", None) == name), None)
                raise self.refuse(f"system column {name}", node, "system columns change with "
                                  "every update or vacuum and are not part of the row's value.",
                                  "use a key column of the table.")
            wanted[int(rte["relid"])].add(attnum)
        elif kind == "2" and attnum > 0:  # a join's column: follow it to the base column
            aliases = rte.get("joinaliasvars") or []
            if attnum <= len(aliases):
                for node in nodetree.walk(aliases[attnum - 1]):
                    if node["_"] == "VAR":
                        self._var(node, rtable, wanted)
        elif kind == "2":
            for alias in rte.get("joinaliasvars") or []:
                for node in nodetree.walk(alias):
                    if node["_"] == "VAR":
                        self._var(node, rtable, wanted)

    def _whole_row(self, rte: dict[str, Any]) -> UnsupportedViewError:
        """A whole-row reference (``t``, ``t.*`` in an expression, ``row_to_json(t)``): the
        row's value changes with every column added to or dropped from the table, which no
        trigger sees, so it is refused; the rewrite names the columns."""
        aliases = {t.ref for t in self.an.tables} | {self.an.union_alias} - {None}
        node = next((n for n in walk(self.an.roots()) if isinstance(n, ast.ColumnRef) and (
            (len(n.fields) == 1 and getattr(n.fields[0], "sval", None) in aliases)
            or (len(n.fields) > 1 and isinstance(n.fields[-1], ast.A_Star)))), None)
        ref = ".".join(getattr(f, "sval", "*") for f in node.fields) if node else "the row"
        alias = ref.removesuffix(".*")
        columns, pairs = "...", "..."
        if rte.get("rtekind") == "0":
            names = self.conn.execute(
                "select quote_ident(attname), quote_literal(attname) from pg_attribute where "
                "attrelid = %s and attnum > 0 and not attisdropped order by attnum",
                (int(rte["relid"]),)).fetchall()
            columns = ", ".join(f"{alias}.{n}" for n, _ in names)
            pairs = ", ".join(f"{lit}, {alias}.{n}" for n, lit in names)
        return self.refuse(f"whole-row reference {ref}", node, "a row value (a composite of "
                           "every column of the table) changes when a column is added or "
                           "dropped, without a write the view could follow.",
                           f"name the columns: row({columns}) in place of {ref} (the same "
                           f"text and comparisons for the table's current columns), or "
                           f"jsonb_build_object({pairs}) in place of to_jsonb({alias}).")
