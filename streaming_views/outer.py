# ruff: noqa: S608 -- this module generates SQL from the view's deparsed syntax tree; identifiers
# are quoted with psycopg.sql.Identifier (q()).
"""Outer joins (LEFT, RIGHT, FULL) in a live view: check, and the delta of a transaction.

An outer join is not linear in its inputs: a payment inserted for an order removes the order's
NULL-extended row and adds the matched one, so the inclusion-exclusion of
:mod:`streaming_views.deltas` (a sum of joins of change logs) does not give its change.

**Design — partition by the join key.** The engine maintains a FROM that is one tree of joins
(inner and outer) in which every join's ``ON`` equates, between its two sides, the columns of a
common *join key* (``o.order_id = p.order_id``; several such classes make a composite key).
Then every row of the join — matched or NULL-extended — is made of base rows with one same key
value, and which rows a key value yields depends only on the base rows with that key value:
the query's rows are partitioned by the key. A transaction's change of the view is therefore

    Q(new tables restricted to V) - Q(old tables restricted to V)

where ``V`` is the set of key values of the transaction's logged rows (old and new versions).
The new tables are the tables as they are now; the old ones are reconstructed from them and the
change logs, restricted to ``V`` (an index probe per key, on the join-column indexes deploy
creates): ``now EXCEPT ALL net added rows UNION ALL net removed rows``, compared by value and
by text (so ``1.0``/``1.00`` or ``-0``/``0`` are told apart). Rows whose key is NULL never
match: each contributes alone, so only the changed ones are evaluated (their net added rows
count as new, their net removed rows as old). Both sides are evaluated by the view's own query
(its ON and WHERE untouched) and the difference — signed flat rows — goes through the
engine's ordinary grouped upsert, so every aggregate rule (count, sum, avg, min/max with its
recompute, DISTINCT aggregates), HAVING, SELECT DISTINCT and plain bag views work unchanged on
top of outer joins. The cost of a transaction is that of evaluating the query twice on the
affected key values, not on the whole tables.

**Fast path.** The query is linear in a table on no NULL-extended side (``orders`` in ``orders
LEFT JOIN payments``): each of its rows yields its matches, or itself NULL-extended, whatever
the other rows of that table are. A transaction that changed only such tables is therefore
applied like an inner join — its change logs joined to the other tables as they are, by the
inclusion-exclusion of :mod:`streaming_views.deltas` — with the outer joins left as written.

Refused with a reason and a rewrite: outer joins in a comma list or inside ``UNION ALL``,
``USING``/``NATURAL`` outer joins, and trees where some join does not equate the common key
between its two sides (e.g. ``a LEFT JOIN b ON a.x = b.x LEFT JOIN c ON c.y = b.y``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from pglast import ast, enums

from streaming_views.astutil import deparse, line_col, location, q, substitute, walk
from streaming_views.errors import UnsupportedViewError

OUTER = {enums.JoinType.JOIN_LEFT: "LEFT JOIN", enums.JoinType.JOIN_RIGHT: "RIGHT JOIN",
         enums.JoinType.JOIN_FULL: "FULL JOIN"}
REWRITE = ("write the FROM as one join tree whose every ON equates the same key between its "
           "two sides, e.g. 'from shop.orders o left join shop.payments p on p.order_id = "
           "o.order_id', or deploy the unmatched side as a view of its own.")


@dataclass(frozen=True)
class OuterJoin:
    """The partition key of a FROM with outer joins.

    Attributes:
        keys: per base table (index in :attr:`Analysis.tables`), its key column names, one per
            key class, in class order.
    """

    keys: dict[int, tuple[str, ...]]
    linear: frozenset[int] = frozenset()
    grouped: bool = False  # a two-level aggregation's inner key: NULL is a key like others

    def partitioned(self, changed: tuple[int, ...]) -> bool:
        """True when a transaction that changed ``changed`` needs the per-key evaluation: it
        changed a table on the NULL-extended side of some outer join."""
        return not set(changed) <= self.linear


def _refuse(view: Any, construct: str, node: Any, reason: str) -> UnsupportedViewError:
    line, col = line_col(view.text, location(node))
    return UnsupportedViewError(construct, reason, path=str(view.path), line=line, column=col,
                                rewrite=REWRITE)


def has_outer(from_clause: Any) -> Any | None:
    """The first outer ``JoinExpr`` in ``from_clause`` (syntax), or None."""
    return next((j for j in walk(from_clause, into_subqueries=False)
                 if isinstance(j, ast.JoinExpr) and j.jointype in OUTER), None)


def find(view: Any, from_clause: tuple[Any, ...], tables: list[Any],
         semis: list[Any] = ()) -> OuterJoin | None:  # type: ignore[assignment]
    """Check a FROM with outer joins (or a WHERE with semi- and anti-joins, see
    :mod:`streaming_views.semijoin`) and return its partition key (None: neither).

    Args:
        view: the view file (for positions).
        from_clause: the FROM items.
        tables: the base tables (:class:`streaming_views.analyzer.TableRef`), in FROM order,
            then the semi-joins' tables.
        semis: the semi- and anti-joins of WHERE.

    Raises:
        UnsupportedViewError: an outer join the engine cannot keep exactly.
    """
    first = has_outer(from_clause)
    if first is None and not semis:
        return None
    name = OUTER[first.jointype] if first is not None else semis[0].construct
    if len(from_clause) != 1:
        first = first if first is not None else semis[0].node
        raise _refuse(view, f"{name} in a comma-separated FROM", first.rarg, "the outer join's "
                      "partners must all be in one join tree.")
    index = {t.ref: j for j, t in enumerate(tables)}
    parent: dict[tuple[int, str], tuple[int, str]] = {}

    def root(x: tuple[int, str]) -> tuple[int, str]:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    joins: list[tuple[Any, set[int], set[int], list[tuple[tuple[int, str], ...]]]] = []

    def refs_of(node: Any) -> set[int]:
        return {index[n.relname if n.alias is None else n.alias.aliasname]
                for n in walk(node) if isinstance(n, ast.RangeVar)}

    for join in walk(from_clause, into_subqueries=False):
        if not isinstance(join, ast.JoinExpr):
            continue
        kind = OUTER.get(join.jointype, "JOIN")
        if join.usingClause or join.isNatural:
            raise _refuse(view, f"{kind} with USING/NATURAL", join.rarg, "in a view with outer "
                          "joins every join names its key columns in ON.")
        if join.quals is None:
            raise _refuse(view, "CROSS JOIN beside an outer join", join.rarg,
                          "every join of a view with outer joins equates a key.")
        left, right = refs_of(join.larg), refs_of(join.rarg)
        pairs = []
        for conj in conjuncts(join.quals):
            pair = _column_equality(conj, index)
            if pair is None:
                continue
            a, b = pair
            if (a[0] in left and b[0] in right) or (a[0] in right and b[0] in left):
                pairs.append((a, b))
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[ra] = rb
        joins.append((join, left, right, pairs))
    outer_tables = refs_of(from_clause)
    for semi in semis:
        pairs = [((index[a[0]], a[1]), (index[b[0]], b[1])) for a, b in semi.pairs]
        for a, b in pairs:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[ra] = rb
        joins.append((semi.node, outer_tables, {pairs[0][1][0]}, pairs))
    common: set[tuple[int, str]] | None = None
    for join, _, _, pairs in joins:
        classes = {root(a) for a, _ in pairs}
        common = classes if common is None else common & classes
        if not common:
            kind = (next(s.construct for s in semis if s.node is join)
                    if isinstance(join, ast.SubLink) else OUTER.get(join.jointype, "JOIN"))
            raise _refuse(view, f"{kind} on another key", getattr(join, "rarg", join),
                          "in a view with outer joins, every join must equate one same key "
                          "between its two sides (the engine keeps the view per key value).")
    classes = sorted(common or set())
    columns = {x for _, _, _, pairs in joins for pair in pairs for x in pair}
    keys: dict[int, tuple[str, ...]] = {}
    for j in range(len(tables)):
        cols = []
        for cls in classes:
            mine = sorted(c for t, c in columns if t == j and root((t, c)) == cls)
            if not mine:
                raise _refuse(view, f"{name} on another key", tables[j].node,
                              f"table {tables[j].ref} has no column of the join key.")
            cols.append(mine[0])
        keys[j] = tuple(cols)
    linear: set[int] = set()
    _preserved(from_clause[0], True, index, linear)  # semi-joins' tables: not linear
    return OuterJoin(keys, frozenset(linear))


def _preserved(node: Any, ok: bool, index: dict[str, int], out: set[int]) -> None:
    """Collect the tables on no NULL-extended side: the query is linear in each of them (each
    of their rows yields its matches, or itself NULL-extended, whatever the others do)."""
    if isinstance(node, ast.RangeVar):
        if ok:
            out.add(index[node.relname if node.alias is None else node.alias.aliasname])
        return
    kind = node.jointype
    _preserved(node.larg, ok and kind in (enums.JoinType.JOIN_INNER, enums.JoinType.JOIN_LEFT),
               index, out)
    _preserved(node.rarg, ok and kind in (enums.JoinType.JOIN_INNER,
                                          enums.JoinType.JOIN_RIGHT), index, out)


def conjuncts(node: Any) -> list[Any]:
    """The top-level AND-ed conditions of ``node`` (none for None)."""
    if isinstance(node, ast.BoolExpr) and node.boolop == enums.BoolExprType.AND_EXPR:
        return [c for arg in node.args for c in conjuncts(arg)]
    return [] if node is None else [node]


def _column_equality(node: Any, index: dict[str, int]) -> tuple[tuple[int, str], ...] | None:
    if not (isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP
            and [n.sval for n in node.name] == ["="]):
        return None
    sides = []
    for side in (node.lexpr, node.rexpr):
        if not (isinstance(side, ast.ColumnRef) and len(side.fields) == 2
                and all(isinstance(f, ast.String) for f in side.fields)
                and side.fields[0].sval in index):
            return None
        sides.append((index[side.fields[0].sval], side.fields[1].sval))
    return tuple(sides) if sides[0][0] != sides[1][0] else None


def check_types(conn: psycopg.Connection, cv: Any) -> None:
    """Refuse a column the old tables cannot be reconstructed with: no equality (json, xml).

    Raises:
        UnsupportedViewError: such a column is read by a view with outer joins.
    """
    if cv.analysis.outer is None:
        return
    _add_key_columns(conn, cv)
    oids = sorted({c.type_oid for t in cv.resolved.tables for c in t.columns})
    bad = {int(o): str(n) for o, n in conn.execute(
        "select t.oid, format_type(t.oid, null) from pg_type t where t.oid = any(%s) and "
        "not exists (select 1 from pg_opclass c join pg_am a on a.oid = c.opcmethod where "
        "a.amname = 'btree' and c.opcdefault and c.opcintype in (t.oid, t.typbasetype, "
        "case when t.typcategory = 'A' then 'anyarray'::regtype::oid end, "
        "case when t.typtype = 'e' then 'anyenum'::regtype::oid end))", (oids,)).fetchall()}
    for t in cv.resolved.tables:
        for c in t.columns:
            if c.type_oid in bad:
                table = cv.tables[t.index]
                raise _refuse(cv.analysis.view, f"column {table.ref}.{c.name} of type "
                              f"{bad[c.type_oid]} in a view with outer joins", table.node,
                              "the engine rebuilds the tables' previous rows by comparing "
                              "values, and this type has no equality. Cast it in the query "
                              "(e.g. ::jsonb) from a column of a comparable type.")


def _add_key_columns(conn: psycopg.Connection, cv: Any) -> None:
    """Log the key columns too: a correlated column read only inside an EXISTS subquery is
    not among the columns PostgreSQL reports the outer query reads."""
    from streaming_views.conversions import base_type
    from streaming_views.resolve import Column
    for info in cv.resolved.tables:
        have = {c.name for c in info.columns}
        for name in cv.analysis.outer.keys[info.index]:
            if name in have:
                continue
            r = conn.execute(
                "select a.attnum, format_type(a.atttypid, a.atttypmod), a.atttypid, "
                "a.atttypmod, case when a.attcollation <> 0 then quote_ident(n.nspname) || '.' "
                "|| quote_ident(c.collname) end, a.attcollation from pg_attribute a "
                "left join pg_collation c on c.oid = a.attcollation "
                "left join pg_namespace n on n.oid = c.collnamespace where a.attrelid = %s "
                "and a.attname = %s", (info.oid, name)).fetchone()
            if r is not None:
                info.columns.append(Column(int(r[0]), name, str(r[1]), int(r[2]), int(r[3]),
                                           r[4], int(r[5]), base_type(conn, str(r[1]))))
                info.columns.sort(key=lambda c: c.attnum)


# ------------------------------------------------------------------ the delta
def _cols(cv: Any, j: int) -> list[str]:
    return [q(c.name) for c in cv.resolved.tables[j].columns]


def identical(column: Any) -> bool:
    """True when equal values of the column cannot print differently (no text form needed):
    integers, dates, timestamps, numeric with a fixed scale, text under a deterministic
    collation of the C library (equality is then byte equality)."""
    from streaming_views.logwrites import IDENTICAL_BY_EQUALITY  # logwrites > compiler > outer
    typ = column.log_type
    if typ in IDENTICAL_BY_EQUALITY or re.fullmatch(r"numeric\(\d+,\d+\)", typ):
        return True
    return (typ in {"text", "character varying"} or typ.startswith("character varying(")) \
        and column.collation in (None, 'pg_catalog."default"', 'pg_catalog."C"',
                                 'pg_catalog."POSIX"')


def _forms(cv: Any, j: int, alias: str) -> list[str]:
    """The columns, then the text forms of those whose equality is not identity: what tells
    two rows apart exactly."""
    columns = cv.resolved.tables[j].columns
    return [f"{alias}.{q(c.name)}" for c in columns] + [
        f'({alias}.{q(c.name)})::text COLLATE "C"' for c in columns if not identical(c)]


def _keyed(cv: Any, j: int, alias: str) -> str:
    """Condition: the row's key has no NULL (for a grouped key: always true)."""
    if cv.analysis.outer.grouped:
        return "true"
    keys = cv.analysis.outer.keys[j]
    return " AND ".join(f"{alias}.{q(k)} IS NOT NULL" for k in keys)


def _in_v(cv: Any, j: int, alias: str) -> str:
    """The rows of table ``j`` whose key is in ``__ojv``: an index probe per key value on the
    first key column (an array, so even a large delta is probed, not hash-joined with a scan
    of the table), then the whole key; for a grouped key, NULL matches NULL."""
    keys = cv.analysis.outer.keys[j]
    probe = f"{alias}.{q(keys[0])} = ANY (ARRAY(SELECT __ojv.__k0 FROM __ojv))"
    if len(keys) > 1:
        cols = ", ".join(f"{alias}.{q(k)}" for k in keys)
        names = ", ".join(f"__ojv.__k{i}" for i in range(len(keys)))
        probe += f" AND ({cols}) IN (SELECT {names} FROM __ojv)"
    if not cv.analysis.outer.grouped:
        return probe
    nulls = " OR ".join(f"{alias}.{q(k)} IS NULL" for k in keys)
    same = " AND ".join(f"__ojv.__k{i} IS NOT DISTINCT FROM {alias}.{q(k)}"
                        for i, k in enumerate(keys))
    return f"(({probe}) OR (({nulls}) AND EXISTS (SELECT 1 FROM __ojv WHERE {same})))"


def delta(cv: Any, changed: tuple[int, ...], *, restrict: bool = True) -> tuple[list[str], str]:
    """CTEs (after the logs ``__l<j>``) and the flat rows of the view's change.

    ``__ojv``: the key values of the logged rows. Per table ``j``: ``__ojr<j>`` its rows now
    whose key is in ``__ojv``; if changed, ``__ojc<j>`` its net change (rows with their net
    multiplicity ``__s``, zero left out); new rows ``__ojr<j>`` plus the net added rows with a
    NULL key; old rows: the multiplicity now minus the net change, per distinct row, where
    positive.

    Args:
        cv: the compiled view (with outer joins).
        changed: the base tables whose logs hold this transaction's rows.
        restrict: on the fast path, restrict the unchanged tables to the logged keys first
            (for a large delta); without it (the plan for small deltas), the logs are joined
            to the tables as written, by index probes.
    """
    oj = cv.analysis.outer
    if not oj.partitioned(changed):
        return _linear(cv, changed, restrict)
    ctes = [_keys_cte(cv, changed)]
    new, old = {}, {}
    for j in range(len(cv.tables)):
        ctes.append(_restricted(cv, j))
        if j not in changed:
            new[j] = old[j] = f"__ojr{j}"
            continue
        plain = ", ".join(_cols(cv, j))
        forms = _forms(cv, j, "__x")
        n = len(cv.resolved.tables[j].columns)
        group = ", ".join(str(i + 1) for i in range(len(forms)))
        outs = ", ".join(f"{f} AS __f{i}" for i, f in enumerate(forms))
        picked = ", ".join(f"__f{i} AS {c}" for i, c in enumerate(_cols(cv, j)))
        fs = ", ".join(f"__f{i}" for i in range(len(forms)))
        named = ", ".join(f"{f} AS {c}" for f, c in zip(
            forms, [*_cols(cv, j), *(f"__f{i}" for i in range(n, len(forms)))], strict=True))
        ctes += [
            f"__ojc{j} AS MATERIALIZED (SELECT {named}, sum(__x.__tm_sign) AS __s "
            f"FROM __l{j} AS __x GROUP BY {group} HAVING sum(__x.__tm_sign) <> 0)",
            f"__ojn{j} AS (SELECT {plain} FROM __ojr{j} UNION ALL SELECT {plain} FROM "
            f"__ojc{j} AS __x CROSS JOIN generate_series(1, __x.__s) AS __g WHERE NOT "
            f"({_keyed(cv, j, '__x')}))",
            f"__ojo{j} AS (SELECT {picked} FROM (SELECT {fs}, sum(__s) AS __s FROM ("
            f"SELECT {outs}, 1 AS __s FROM __ojr{j} AS __x UNION ALL SELECT "
            + ", ".join(f"__x.__f{i}" if i >= n else f"__x.{c}"
                        for i, c in enumerate([*_cols(cv, j)] + [""] * (len(forms) - n)))
            + f", -__x.__s FROM __ojc{j} AS __x) AS __a GROUP BY {fs} HAVING sum(__s) > 0) "
            f"AS __e CROSS JOIN generate_series(1, __e.__s) AS __g)"]
        new[j], old[j] = f"__ojn{j}", f"__ojo{j}"
    flat = f"{_flat(cv, new, '1')} UNION ALL {_flat(cv, old, '-1')}"
    return ctes, flat


def _keys_cte(cv: Any, changed: tuple[int, ...]) -> str:
    """``__ojv``: the distinct key values of the transaction's logged rows."""
    oj = cv.analysis.outer
    parts = []
    for j in changed:
        keys = ", ".join(f"__x.{q(k)}" for k in oj.keys[j])
        parts.append(f"SELECT {keys} FROM __l{j} AS __x WHERE {_keyed(cv, j, '__x')}")
    names = ", ".join(f"__k{i}" for i in range(len(oj.keys[0])))
    return (f"__ojv({names}) AS MATERIALIZED (SELECT DISTINCT * FROM "
            f"({' UNION ALL '.join(parts)}) AS __a)")


def _restricted(cv: Any, j: int) -> str:
    """``__ojr<j>``: the rows of table ``j`` now whose key is in ``__ojv`` (index probes)."""
    table = cv.resolved.tables[j]
    cols = ", ".join(f"__b.{c}" for c in _cols(cv, j))
    return (f"__ojr{j} AS MATERIALIZED (SELECT {cols} FROM {table.qualified} AS __b "
            f"WHERE {_in_v(cv, j, '__b')})")


def _linear(cv: Any, changed: tuple[int, ...], restrict: bool = True
            ) -> tuple[list[str], str]:
    """The fast path (only tables on no NULL-extended side changed): the inclusion-exclusion
    terms of :mod:`streaming_views.deltas`, the change logs joined to the other tables as they
    are now — with ``restrict``, restricted to the logged keys (every row of a term holds a
    logged row, whose matches share its key), so that a large delta probes the join-column
    index instead of hash-joining a scan of the whole table. The plan for small deltas
    (``restrict`` off) joins the logs to the tables as written: the planner, which estimates
    a transaction's log rows few, probes the same index per row, without the key list, its
    array and the materialised copies of the matching rows."""
    from streaming_views.deltas import terms
    ctes = [_keys_cte(cv, changed)] + [_restricted(cv, j) for j in range(len(cv.tables))]
    if not restrict:
        ctes = []
    refs = cv.refs()
    flats = []
    for term in terms(cv, changed):
        logs = dict(term.logs)
        relations = {j: logs.get(j, f"__ojr{j}") for j in range(len(cv.tables))
                     if restrict or j in logs}
        flats.append(_flat(cv, relations, term.sign(refs)))
    return ctes, " UNION ALL ".join(flats)


def _flat(cv: Any, relations: dict[int, str], sign: str) -> str:
    """The view's flat rows over ``relations`` (table index -> CTE), each with ``sign``."""
    an = cv.analysis

    def swap(node: ast.Node) -> ast.Node | None:
        for j, table in enumerate(cv.tables):
            if node is table.node and j in relations:  # else: the table as written
                return ast.RangeVar(relname=relations[j], inh=True, relpersistence="p",
                                    alias=ast.Alias(aliasname=table.ref))
        return None
    from_sql = ", ".join(deparse(substitute(item, swap)) for item in an.from_clause)
    cols = [f"{e} AS {n}" for n, e in cv.flat_columns()]
    text = f"SELECT {', '.join([f'{sign} AS __sign', *cols])} FROM {from_sql}"
    if an.where is not None:  # the semi-joins' tables are inside WHERE
        text += f" WHERE {deparse(substitute(an.where, swap))}"
    return text
