# ruff: noqa: S608 -- this module generates SQL from the view's deparsed syntax tree; identifiers
# are quoted with psycopg.sql.Identifier (q()).
"""How a transaction's logged changes are applied to a view when it commits.

A transaction may change several base tables of a join; each table's changes are in its change
log (:mod:`streaming_views.changelog`). With ``N_t`` a table now (the transaction's changes
included) and ``D_t`` its change log, the view's change is the inclusion-exclusion sum over the
non-empty sets ``S`` of changed tables::

    sum over S: (-1)^(|S|+1) * join(D_t for t in S, N_t for t not in S)

(for one changed table: its log joined to the others as they are). Because the lock serialises
the views' commits and each statement of the commit-time maintenance sees every transaction
committed before, the view moves from the query over the committed tables to the query over
the tables with this transaction's changes — exactly (this replaces pg_ivm's pre-statement
states and needs no rebuild for writable CTEs or cascades).
"""

from __future__ import annotations

from itertools import combinations

from streaming_views import onkept, pregroup
from streaming_views.astutil import q
from streaming_views.auxiliary import delta_statement
from streaming_views.changelog import BATCH_SIGN, batch_columns, batchable, log_table
from streaming_views.compiler import CompiledView, Term, with_upsert
from streaming_views.layers import is_live
from streaming_views.logwrites import pinned_settings
from streaming_views.netpair import net_columns, net_select, old_column
from streaming_views.onegroup import single_select
from streaming_views.outer import delta as outer_delta


def apply_settings(cv: CompiledView) -> tuple[str, ...] | None:
    """The settings the commit-time ``apply`` pins (see
    :func:`streaming_views.logwrites.pinned_settings`): it evaluates the view's expressions (and
    its temporal filter's bounds) over the logs and the base tables."""
    return pinned_settings(cv, live=any(is_live(t) for t in cv.resolved.tables))


def _subsets(items: list[int]) -> list[tuple[int, ...]]:
    return [c for size in range(1, len(items) + 1) for c in combinations(items, size)]


def terms(cv: CompiledView, changed: tuple[int, ...]) -> list[Term]:
    """The inclusion-exclusion terms of a transaction that changed base tables ``changed``."""
    an = cv.analysis
    if not an.branches:
        return [Term(None, tuple((j, f"__l{j}") for j in s)) for s in _subsets(list(changed))]
    out = []
    for b, branch in enumerate(an.branches):
        mine = sorted({cv._index(t) for t in branch.tables} & set(changed))
        out += [Term(b, tuple((j, f"__l{j}") for j in s)) for s in _subsets(mine)]
    return out


def apply_statement(cv: CompiledView, changed: tuple[int, ...], *, tx: str = "v_tx",
                    batches: bool = True, kept: bool = False, row: str | None = None,
                    one_row: bool = False, net: bool = False) -> str:
    """The one statement applying (and deleting) the logged changes of tables ``changed``; it
    returns whether some group's count fell to zero.

    Args:
        cv: the view.
        changed: the base tables whose logs hold rows of this transaction.
        tx: the transaction id expression.
        batches: whether the logs may hold batch rows (only after a large statement, which
            marks the transaction's delta large: the statement planned for small deltas
            leaves them out).
        kept: the outer join's kept-ON delta (:mod:`streaming_views.onkept`).
        row: the PL/pgSQL record (``NEW``) holding the only row the log of the one table
            ``changed`` holds for the transaction (not a marker): read from the record, the
            log's row deleted unread (no CTE scan of the deleted rows).
        one_row: the delta is at most one flat row (:func:`streaming_views.onegroup.one_per_group`):
            upserted without an aggregate when :func:`streaming_views.onegroup.single_select`
            can rewrite the view's.
        net: the log of the one table ``changed`` holds a net pair
            (:mod:`streaming_views.netpair`): its new row read alone, without an aggregate.
    """
    ctes = []
    for j in changed:  # the log's rows, the transaction's marker (sign 0) left out
        if row is not None:
            names = ["__tm_tx", "__tm_sign", *(q(c.name) for c in cv.resolved.tables[j].columns)]
            values = ", ".join(f"{row}.{n} AS {n}" for n in names)
            ctes += [f"__m{j} AS (DELETE FROM {log_table(cv, j)} WHERE __tm_tx = {tx})",
                     f"__l{j} AS (SELECT {values})"]
            continue
        cols = ", ".join(["__tm_tx", "__tm_sign", *(q(c.name) for c in
                                                    cv.resolved.tables[j].columns),
                          *(map(old_column, net_columns(cv, j)) if net else ())])
        rows = f"SELECT {cols} FROM __m{j} WHERE __tm_sign " + ("= 1" if net else "IN (-1, 1)")
        returned = cols  # only what is read (not the batch arrays a small delta has not)
        if batches and batchable(cv, j):  # set-returning functions in the SELECT list (one
            # ProjectSet, zipped element by element) cost less than ROWS FROM (unnest(...)),
            # which copies every column into a tuplestore first
            arrays = ", ".join(f"unnest(m.{c})" for c in batch_columns(cv, j))
            rows += (f" UNION ALL SELECT m.__tm_tx, {arrays} FROM __m{j} AS m "
                     f"WHERE m.__tm_sign = {BATCH_SIGN}")
            returned += ", " + ", ".join(batch_columns(cv, j))
        ctes += [f"__m{j} AS MATERIALIZED (DELETE FROM {log_table(cv, j)} "
                 f"WHERE __tm_tx = {tx} RETURNING {returned})",
                 f"__l{j} AS ({rows})"]
    if net:  # one net row: no aggregate (streaming_views.netpair)
        return with_upsert(ctes, cv.upsert_sql(net_select(cv, changed[0]) or ""))
    if batches and len(changed) == 1:  # a large delta of one table: grouped first
        grouped = pregroup.statement(cv, changed[0], ctes)
        if grouped is not None:
            return grouped
    if kept:
        return delta_statement(cv, onkept.delta(cv, changed[0]), ctes)
    if cv.analysis.outer is not None:  # outer/semi-joins, two levels: see outer.py
        more, flat = outer_delta(cv, changed, restrict=batches)
        return delta_statement(cv, flat, ctes + more)
    flat = " UNION ALL ".join(cv.flat_select(t) for t in terms(cv, changed))
    if one_row:  # at most one flat row: no aggregate (streaming_views.onegroup)
        select = single_select(cv.aggregate_select(flat, delta=True))
        if select is not None:
            return with_upsert(ctes, cv.upsert_sql(select))
    return delta_statement(cv, flat, ctes)


def masks(cv: CompiledView) -> list[tuple[int, ...]]:
    """Every non-empty set of base tables a transaction can have changed."""
    return _subsets(list(range(len(cv.tables))))
