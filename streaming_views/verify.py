"""Compare each live view with its query: ``EXCEPT ALL`` both ways, in one snapshot, under the
pinned session settings the view is maintained with (:mod:`streaming_views.session`)."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class VerifyResult:
    """Outcome of one view's check.

    Attributes:
        name: the view.
        columns: the view's column names.
        extra: rows in ``live.<name>`` that the query does not return (with multiplicity).
        missing: rows the query returns that ``live.<name>`` lacks.
        problem: why the view no longer follows its base tables (broken), or None.
    """

    name: str
    columns: list[str]
    extra: list[tuple[Any, ...]] = field(default_factory=list)
    missing: list[tuple[Any, ...]] = field(default_factory=list)
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when the live view equals its query and follows its base tables."""
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
    with psycopg.connect(dsn, autocommit=True) as conn:
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
            with conn.transaction():
                conn.execute("set transaction isolation level repeatable read")
                extra, missing = diff_rows(conn, entry.name, entry.definition)
            results.append(VerifyResult(entry.name, entry.columns, extra, missing))
        return results
