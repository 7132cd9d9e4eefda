"""The session settings a live view is evaluated under, whoever writes or reads.

A view's query can depend on session settings: ``t.ts::date`` and ``date_trunc('hour', t.ts)``
on ``TimeZone``, ``d::text`` on ``DateStyle``, ``iv::text`` on ``IntervalStyle``, ``f::text`` on
``extra_float_digits``, ``to_char`` on ``lc_numeric``/``lc_time``, a timestamptz literal in
``WHERE`` on ``TimeZone``, every unqualified name on ``search_path``. The embedded engine pins them:
a live view is its query evaluated under :data:`PINNED` — the values Materialize itself supports
(``TimeZone`` UTC only, ``DateStyle`` ``ISO, MDY``, ``IntervalStyle`` ``postgres``).

They are applied as ``SET`` clauses of every generated maintenance function (so a writer in
another zone or datestyle maintains the view exactly as the deploy built it), with ``SET LOCAL``
in the deploy, rebuild and verify transactions, and by ``verify`` when it runs the query. The
functions run on every write (the log triggers, the commit-time apply) pin only
:data:`NAMES_ONLY` and the settings the view's expressions read (:mod:`streaming_views.reads`):
PostgreSQL saves, sets and restores each clause on every call.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

PINNED: dict[str, str] = {
    "search_path": "pg_catalog, pg_temp",
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "lc_numeric": "C",
    "lc_time": "C",
    "standard_conforming_strings": "on",
}


# What a function needs pinned when none of its expressions depends on the value settings
# (TimeZone, DateStyle, ..., lc_time): the names it resolves, the literals it parses.
NAMES_ONLY = ("search_path", "standard_conforming_strings")
SCS = "standard_conforming_strings"


def set_clauses(names: tuple[str, ...] | None = None, text: str | None = None) -> str:
    """The ``SET name = value ...`` clauses of a generated function's ``CREATE FUNCTION``:
    every pinned setting, or only ``names`` (PostgreSQL applies each clause on every call and
    restores it on return: a log trigger whose expressions read no setting keeps
    :data:`NAMES_ONLY`, see :func:`streaming_views.triggers.log_function`).

    With ``text``, the function's own text: no ``standard_conforming_strings`` when it holds
    no backslash — the setting only changes how a ``'...'`` literal reads one, and values
    quoted at run time (``format('%L')``, ``quote_literal``) read alike under both."""
    skip = {SCS} if text is not None and "\\" not in text and SCS not in text else set()
    return " ".join(f"SET {name} = {sql.Literal(value).as_string(None)}"
                    for name, value in PINNED.items()
                    if (names is None or name in names) and name not in skip)


def pin(conn: psycopg.Connection) -> None:
    """Apply :data:`PINNED` to the current transaction (``SET LOCAL``); call inside one."""
    for name, value in PINNED.items():
        conn.execute("select set_config(%s, %s, true)", (name, value))


def describe_pinned() -> str:
    """A one-line description for messages and the README."""
    return ", ".join(f"{name}={value}" for name, value in PINNED.items())
