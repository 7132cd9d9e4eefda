# ruff: noqa: S608 -- this module generates SQL from the view's deparsed syntax tree; identifiers
# are quoted with psycopg.sql.Identifier (q()).
"""A change of an outer join's NULL-extended table that keeps what the ON reads: no recount.

:mod:`streaming_views.outer` applies a transaction that changed a table on the NULL-extended
side of an outer join (``payments`` in ``orders LEFT JOIN payments``) by evaluating the query
twice over the logged key values — as it is now, and as it was — because a payment that
arrives or leaves can make an order's NULL-extended row leave or come back. That recount is the
price of every such transaction, also of the commonest one: an UPDATE of a payment's amount,
which changes no match.

**When no recount is needed.** Take a FROM that is one outer join of two base tables ``A`` and
``J`` (``J`` NULL-extended), and a transaction that changed only ``J``. Whether a row ``a`` of
``A`` matches a row ``j`` depends on ``j`` only through the columns of ``J`` the ON reads (its
*ON projection*). If the multiset of ``J``'s ON projections is the same after the transaction
as before, every row of ``A`` matches as many rows of ``J`` as before, so ``A``'s NULL-extended
rows are the same. The rest of the query is linear in ``J``: the matched rows are bilinear in
``A`` and ``J``, and (for a FULL join) each row of ``J`` is NULL-extended or not by itself and
``A``. The view's change is then the query with ``J`` replaced by its signed change log and the
join made inner on ``A``'s side: ``A JOIN ΔJ`` for LEFT and RIGHT joins, ``A RIGHT JOIN ΔJ``
(``ΔJ`` preserved) for a FULL one.

The apply tests the condition at commit on the transaction's log, grouped by the ON projection
compared by identity (values, and the text of those whose equality is not identity): the net
count of each projection is zero. That test is one more statement, so it runs only when an
UPDATE of ``J`` logged rows in the transaction (it sets the transaction-local :data:`HINT`; a
transaction of INSERTs and DELETEs only, which can hardly pass it, takes the recount at no
extra cost). The hint only saves the test: the delta is chosen by the test alone, so a hint
left by an earlier apply of the same transaction or lost with a savepoint costs a test or a
recount, never exactness.

Only for the shape above: two base tables (no views over views), no semi-joins, no UNION ALL,
no temporal filter, no two-level aggregation, ON columns written ``alias.column``. Anything else
keeps :mod:`streaming_views.outer`'s recount.
"""

from __future__ import annotations

from typing import Any

from pglast import ast, enums

from streaming_views.astutil import deparse, q, substitute, walk
from streaming_views.layers import is_live
from streaming_views.outer import OUTER, identical

HINT = "tidemark.kept"  # 'on' once an UPDATE of such a table logged rows in the transaction
# the join type of ``A ⋈ ΔJ``, by the outer join's type and whether ``J`` is its right side
_KEPT = {(enums.JoinType.JOIN_LEFT, True): enums.JoinType.JOIN_INNER,
         (enums.JoinType.JOIN_RIGHT, False): enums.JoinType.JOIN_INNER,
         (enums.JoinType.JOIN_FULL, True): enums.JoinType.JOIN_RIGHT,
         (enums.JoinType.JOIN_FULL, False): enums.JoinType.JOIN_LEFT}


def _join(cv: Any) -> ast.JoinExpr | None:
    """The view's one outer join of two base tables, when the view has the shape handled."""
    an = cv.analysis
    oj = an.outer
    if (oj is None or oj.grouped or an.semijoins or an.branches or an.temporal is not None
            or len(an.from_clause) != 1 or len(cv.tables) != 2
            or any(is_live(t) for t in cv.resolved.tables)):
        return None
    join = an.from_clause[0]
    if not (isinstance(join, ast.JoinExpr) and join.jointype in OUTER
            and isinstance(join.larg, ast.RangeVar) and isinstance(join.rarg, ast.RangeVar)):
        return None
    return join


def on_columns(cv: Any, j: int) -> list[Any] | None:
    """The columns (:class:`streaming_views.resolve.Column`) of table ``j`` the ON reads, or
    None when the view is not of the shape handled or the ON has a subquery or a column not
    written ``alias.column``."""
    join = _join(cv)
    if join is None:
        return None
    refs = {t.ref for t in cv.tables}
    names = set()
    for node in walk(join.quals):
        if isinstance(node, ast.SubLink | ast.RangeSubselect):
            return None
        if isinstance(node, ast.ColumnRef):
            fields = node.fields
            if len(fields) != 2 or not all(isinstance(f, ast.String) for f in fields) \
                    or fields[0].sval not in refs:
                return None
            if fields[0].sval == cv.tables[j].ref:
                names.add(fields[1].sval)
    columns = [c for c in cv.resolved.tables[j].columns if c.name in names]
    return columns if len(columns) == len(names) else None


def kept(cv: Any, changed: tuple[int, ...]) -> bool:
    """True when a transaction that changed only ``changed`` may take the kept-ON delta: one
    table, NULL-extended, of a view of the shape handled."""
    return (len(changed) == 1 and cv.analysis.outer is not None
            and changed[0] not in cv.analysis.outer.linear
            and on_columns(cv, changed[0]) is not None)


def test(cv: Any, j: int, log: str) -> str:
    """Condition (PL/pgSQL) true when this transaction's log ``log`` of table ``j`` leaves the
    multiset of ON projections as it was: each projection's net count is zero."""
    forms = []
    for c in on_columns(cv, j) or []:
        forms.append(f"__x.{q(c.name)}")
        if not identical(c):
            forms.append(f'(__x.{q(c.name)})::text COLLATE "C"')
    group = f" GROUP BY {', '.join(forms)}" if forms else ""
    return (f"NOT EXISTS (SELECT 1 FROM {log} AS __x WHERE __x.__tm_tx = pg_current_xact_id() "
            f"AND __x.__tm_sign IN (-1, 1){group} HAVING sum(__x.__tm_sign) <> 0)")


def delta(cv: Any, j: int) -> str:
    """The view's flat rows of the change, the log ``__l<j>`` joined to the other table as it
    is (the outer join made inner on its side), each with the log row's sign."""
    join = _join(cv)
    assert join is not None  # kept() holds
    table = cv.tables[j]
    right = join.rarg is table.node

    def swap(node: ast.Node) -> ast.Node | None:
        if node is table.node:
            return ast.RangeVar(relname=f"__l{j}", inh=True, relpersistence="p",
                                alias=ast.Alias(aliasname=table.ref))
        if node is join:
            new = substitute(node.larg, swap), substitute(node.rarg, swap)
            return ast.JoinExpr(jointype=_KEPT[(node.jointype, right)], larg=new[0],
                                rarg=new[1], quals=substitute(node.quals, swap))
        return None

    cols = [f"{e} AS {n}" for n, e in cv.flat_columns()]
    sign = f"{q(table.ref)}.__tm_sign"
    text = (f"SELECT {', '.join([f'({sign})::integer AS __sign', *cols])} "
            f"FROM {deparse(substitute(join, swap))}")
    if cv.analysis.where is not None:
        text += f" WHERE {deparse(substitute(cv.analysis.where, swap))}"
    return text
