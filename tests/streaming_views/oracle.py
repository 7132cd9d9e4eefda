"""The differential generator's oracle for one live view (see :mod:`.differential`).

Read under the engine's pinned settings (TimeZone UTC): the view is healthy,
``(live EXCEPT ALL query)`` and ``(query EXCEPT ALL live)`` are empty, the same with the text of
every column whose display scale must match (sum/avg/count), and where the query raises a data
exception the view raises one of the same class.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from streaming_views.analyzer import analyze
from streaming_views.astutil import deparse
from streaming_views.expiry import clock
from streaming_views.runtime import problem
from streaming_views.session import pin
from streaming_views.temporal import has_temporal, oracle_query
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
    view's message names the view, not the query's operator). One exception: a temporal bound
    that cannot be computed for some row makes the view raise (as Materialize's does) even when
    PostgreSQL's plan never computes it (a cheaper conjunct, ``mz_now() >= f.ts`` with
    ``ts = 'infinity'``, already left the row out)."""
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
    if raised[live] == raised[query]:
        return None
    if raised[live] and _uncomputable_bound(conn, view):
        return None
    if raised[query] and not _uncomputable_bound(conn, view, filtered=True):
        return None
    return (f"one side fails with {exc.sqlstate} ({exc}) and the other does not: "
            f"live raises: {raised[live]}, query raises: {raised[query]}")


def _uncomputable_bound(conn: psycopg.Connection, view: View, filtered: bool = False) -> bool:
    """Whether computing the view's temporal bounds raises a data exception (class 22) for a
    row of its timed table (``filtered``: for a row of the view's FROM that passes the rest of
    its WHERE, which the engine tests first; PostgreSQL computes a target list only for the
    rows that pass WHERE).

    Both ways around, a difference is the order in which the conjuncts of WHERE are evaluated,
    which SQL leaves open: the engine raises for a row whose bound cannot be computed among the
    rows that pass the rest of WHERE (other temporal conjuncts not tested), while PostgreSQL's
    plan may compute the bound for a row that fails another conjunct (and raise), or not for a
    row that fails another temporal conjunct (and not raise)."""
    an = analyze(parse_view_text(view.name, view.sql))
    t = an.temporal
    if t is None:
        return False
    # as text: an infinite timestamptz would fail in the client (Python's datetime), not here
    exprs = sql.SQL(", ").join(sql.SQL(f"(({deparse(b.expr)})::timestamptz)::text")  # type: ignore[arg-type]
                               for b in t.bounds)
    source = sql.SQL("{} as {}").format(sql.Identifier(t.schema, t.name), sql.Identifier(t.ref))
    if filtered:
        source = sql.SQL(", ".join(deparse(item) for item in an.from_clause))  # type: ignore[arg-type]
        if an.where is not None:
            source = sql.SQL("{} where {}").format(source, sql.SQL(deparse(an.where)))  # type: ignore[arg-type]
    try:
        with conn.transaction():
            pin(conn)
            conn.execute(sql.SQL("select {} from {}").format(exprs, source)).fetchall()
    except psycopg.DataError:
        return True
    return False
