"""Compare each live view with its query: ``EXCEPT ALL`` both ways, in one snapshot, under the
pinned session settings the view is maintained with (:mod:`streaming_views.session`).

A comparison reads the view's base tables (the ingestion's mirrors) in one transaction, holding
their ACCESS SHARE lock for as long as it runs. Ingestion, to apply a schema change to a mirror
(``ingestion/ddl_locks.py``), cancels the statement of a session named :data:`APPLICATION_NAME`
that holds the mirror, after recording it in ``tidemark.lock_waits.cancelled``: the view is then
reported ``interrupted`` (not a failure), and checked again at the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from streaming_views.astutil import query_text
from streaming_views.catalog import read_catalog
from streaming_views.compiler import LIVE_SCHEMA
from streaming_views.errors import ViewNotFoundError
from streaming_views.runtime import problem
from streaming_views.session import pin
from streaming_views.temporal import has_temporal, oracle_query

MAX_ROWS = 50
APPLICATION_NAME = "tidemark verify"
"""The verify's connections call themselves so: ingestion may interrupt them (and only them)."""
CANCELLED_BY_INGESTION = """select w.relation from tidemark.lock_waits w
  join pg_stat_activity a on a.pid = pg_backend_pid()
  cross join lateral jsonb_array_elements(w.cancelled) c
 where c @> jsonb_build_object('pid', a.pid, 'backend_start', extract(epoch from a.backend_start))
   and (c->>'at')::timestamptz >= %s
 order by w.updated_at desc limit 1"""


@dataclass
class VerifyResult:
    """Outcome of one view's check.

    Attributes:
        name: the view.
        columns: the view's column names.
        extra: rows in ``live.<name>`` that the query does not return (with multiplicity).
        missing: rows the query returns that ``live.<name>`` lacks.
        problem: why the view no longer follows its base tables (broken), or None.
        interrupted: what interrupted the comparison (``a schema change on shop.orders``:
            ingestion needed the table), or None; the view was not checked, which is not a
            failure, and is checked again at the next run.
    """

    name: str
    columns: list[str]
    extra: list[tuple[Any, ...]] = field(default_factory=list)
    missing: list[tuple[Any, ...]] = field(default_factory=list)
    problem: str | None = None
    interrupted: str | None = None

    @property
    def ok(self) -> bool:
        """True when no difference was found and the view follows its base tables (also when
        the comparison was ``interrupted``)."""
        return not self.extra and not self.missing and self.problem is None


def diff_rows(conn: psycopg.Connection, name: str, definition: str,
              limit: int = MAX_ROWS) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Return (extra, missing) rows of ``live.<name>`` against ``definition``, read under the
    pinned settings (in a transaction of its own, or a savepoint of the caller's)."""
    view = sql.Identifier(LIVE_SCHEMA, name)
    out = []
    with conn.transaction():
        pin(conn)
        if has_temporal(definition):  # the query at the clock's time (the last tick)
            from streaming_views.expiry import clock
            definition = oracle_query(definition, clock(conn))  # type: ignore[arg-type]
        query = sql.SQL(query_text(definition))  # type: ignore[arg-type]
        for left, right in ((sql.SQL("select * from {}").format(view), query),
                            (query, sql.SQL("select * from {}").format(view))):
            stmt = sql.SQL("select * from (({}) except all ({})) as d limit {}").format(
                left, right, sql.Literal(limit))
            out.append(conn.execute(stmt).fetchall())
    return out[0], out[1]


def verify(dsn: str, name: str | None = None) -> list[VerifyResult]:
    """Check every embedded live view (or ``name``) against its query.

    Raises:
        ViewNotFoundError: ``name`` is not deployed.
    """
    with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        entries = read_catalog(conn, target="embedded", name=name)
        if name is not None and not entries:
            raise ViewNotFoundError(f"live view {name!r} is not deployed; run "
                                    f"'tidemark views deploy' or 'tidemark views list'.")
        results = []
        for entry in entries:
            broken = problem(conn, entry.name)
            if broken is not None:
                results.append(VerifyResult(entry.name, entry.columns, problem=broken))
                continue
            since = conn.execute("select clock_timestamp()").fetchone()[0]
            try:
                with conn.transaction():
                    conn.execute("set transaction isolation level repeatable read")
                    extra, missing = diff_rows(conn, entry.name, entry.definition)
            except psycopg.errors.QueryCanceled:
                table = cancelled_by_ingestion(conn, since)
                if table is None:  # a user's cancel, a statement_timeout
                    raise
                results.append(VerifyResult(entry.name, entry.columns,
                                            interrupted=f"a schema change on {table}"))
                continue
            results.append(VerifyResult(entry.name, entry.columns, extra, missing))
        return results


def cancelled_by_ingestion(conn: psycopg.Connection, since: datetime) -> str | None:
    """The table whose schema change made ingestion cancel this session's statement (recorded
    at or after ``since``, the comparison's start), or None (cancelled otherwise)."""
    try:
        if not conn.execute("select coalesce(has_table_privilege(to_regclass("
                            "'tidemark.lock_waits')::oid, 'select'), false)").fetchone()[0]:
            return None
        row = conn.execute(CANCELLED_BY_INGESTION, (since,)).fetchone()
    except psycopg.Error:  # cannot tell: the cancel is reported as it came
        return None
    return None if row is None else row[0]
