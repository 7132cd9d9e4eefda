"""The differential generator's oracle for one live view (see :mod:`.differential`).

Read under the engine's pinned settings (TimeZone UTC): the view is healthy,
``(live EXCEPT ALL query)`` and ``(query EXCEPT ALL live)`` are empty, the same with the text of
every column whose display scale must match (sum/avg/count), and where the query raises a data
exception the view raises one of the same class — but for temporal-filter bounds that cannot be
computed, where the view raises exactly while such a row passes the other conjuncts of WHERE
over its table (see :func:`_same_error`).
"""

from __future__ import annotations

import psycopg
from pglast import ast
from psycopg import sql

from streaming_views.analyzer import analyze
from streaming_views.astutil import deparse, walk
from streaming_views.expiry import clock
from streaming_views.runtime import problem
from streaming_views.session import pin
from streaming_views.temporal import conjuncts, has_temporal, oracle_query
from streaming_views.verify import diff_rows, query_text
from streaming_views.viewfile import parse_view_text
from tests.streaming_views.grammar import View


def mismatch(conn: psycopg.Connection, view: View) -> str | None:
    """What is wrong with ``live.<view>`` against its query now, or None when they agree.

    Args:
        conn: a connection to the database the view lives in (between transactions).
        view: the drawn view.

    Returns:
        A description of the first difference found (reported broken, rows only on one side,
        different text, an error on one side only), or None.
    """
    broken = problem(conn, view.name)
    if broken is not None:
        return f"view reported broken: {broken}"
    try:
        extra, missing = diff_rows(conn, view.name, view.sql)
        if not extra and not missing and view.text_exact:
            extra, missing = _text_diff(conn, view)
        if _uncomputable_bound(conn, view, reaching=True):
            return _unraised(view)
    except psycopg.DataError as exc:  # class 22: e.g. infinities summed, x / 0
        return _same_error(conn, view, exc)
    if extra or missing:
        return f"live only: {extra[:5]}\nquery only: {missing[:5]}"
    return None


def _text_diff(conn: psycopg.Connection, view: View) -> tuple[list, list]:
    cols = conn.execute("select columns from tidemark.views where name = %s",
                        (view.name,)).fetchone()[0]
    picks = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c)) if c in view.text_exact
        else sql.Identifier(c) for c in cols)
    live = sql.SQL("select {} from {}").format(picks, sql.Identifier("live", view.name))
    query = sql.SQL("select {} from ({}) as q").format(picks, sql.SQL(view.sql))  # type: ignore[arg-type]
    out = []
    with conn.transaction():
        pin(conn)
        for a, b in ((live, query), (query, live)):
            out.append(conn.execute(sql.SQL("({}) except all ({})").format(a, b)).fetchall())
    return out[0], out[1]


def _same_error(conn: psycopg.Connection, view: View, exc: psycopg.Error) -> str | None:
    """The query fails (e.g. +infinity and -infinity summed, a temporal bound out of range):
    reading the view must fail too, with an error of the same class (22, data exception; the
    view's message names the view, not the query's operator). Temporal bounds are the
    exception, both ways around: the view raises exactly while a row of its timed table whose
    bound cannot be computed passes the other conjuncts of WHERE over that table alone
    (:func:`_uncomputable_bound`), whether or not the join keeps it — PostgreSQL's plan may
    compute that bound or not (a cheaper conjunct or the join leaves the row out first), and
    may compute it for a row failing another conjunct (the query raises, the view need not)."""
    query = view.sql
    if has_temporal(query):  # the query at the clock's time, as diff_rows reads it
        query = query_text(oracle_query(query, clock(conn)))  # type: ignore[arg-type]
    live = f"select * from live.{view.name}"
    raised = {}
    for text in (live, query):
        try:
            with conn.transaction():
                pin(conn)
                conn.execute(text).fetchall()  # type: ignore[arg-type]
            raised[text] = False
        except psycopg.Error as other:
            if (other.sqlstate or "")[:2] != "22" or (exc.sqlstate or "")[:2] != "22":
                return f"one side fails with {exc.sqlstate}, the other with {other.sqlstate}: " \
                       f"{other}"
            raised[text] = True
    reaching = _uncomputable_bound(conn, view, reaching=True)
    if reaching and not raised[live]:
        return _unraised(view)
    if raised[live] == raised[query] or (raised[live] and reaching):
        return None
    if raised[query] and _uncomputable_bound(conn, view):
        return None
    return (f"one side fails with {exc.sqlstate} ({exc}) and the other does not: "
            f"live raises: {raised[live]}, query raises: {raised[query]}")


def _unraised(view: View) -> str:
    return (f"live.{view.name} reads while a row of its timed table whose temporal bound "
            "cannot be computed passes the other conjuncts of WHERE over that table")


def _uncomputable_bound(conn: psycopg.Connection, view: View, reaching: bool = False) -> bool:
    """Whether computing the view's temporal bounds raises a data exception (class 22) for a
    row of its timed table (``reaching``: for a row passing the conjuncts of WHERE that read
    that table alone, the temporal ones left out; PostgreSQL computes a target list only for
    the rows that pass WHERE)."""
    if not has_temporal(view.sql):
        return False
    an = analyze(parse_view_text(view.name, view.sql))
    t = an.temporal
    if t is None:
        return False
    # as text: an infinite timestamptz would fail in the client (Python's datetime), not here
    exprs = sql.SQL(", ").join(sql.SQL(f"(({deparse(b.expr)})::timestamptz)::text")  # type: ignore[arg-type]
                               for b in t.bounds)
    source = sql.SQL("{} as {}").format(sql.Identifier(t.schema, t.name), sql.Identifier(t.ref))
    alone = [deparse(c) for c in conjuncts(an.where) if all(
        getattr(r.fields[0], "sval", None) == t.ref if len(r.fields) == 2 else len(an.tables) == 1
        for r in walk(c) if isinstance(r, ast.ColumnRef))] if reaching and not an.branches else []
    if alone:
        source = sql.SQL("{} where {}").format(source, sql.SQL(" and ".join(alone)))  # type: ignore[arg-type]
    try:
        with conn.transaction():
            pin(conn)
            conn.execute(sql.SQL("select {} from {}").format(exprs, source)).fetchall()
    except psycopg.DataError:
        return True
    return False
