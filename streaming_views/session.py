"""The session settings a live view is evaluated under, whoever writes or reads.

A view's query can depend on session settings: ``t.ts::date`` and ``date_trunc('hour', t.ts)``
on ``TimeZone``, ``d::text`` on ``DateStyle``, ``iv::text`` on ``IntervalStyle``, ``f::text`` on
``extra_float_digits``, ``to_char`` on ``lc_numeric``/``lc_time``, a timestamptz literal in
``WHERE`` on ``TimeZone``, every unqualified name on ``search_path``. The embedded engine pins them:
a live view is its query evaluated under :data:`PINNED` — the values Materialize itself supports
(``TimeZone`` UTC only, ``DateStyle`` ``ISO, MDY``, ``IntervalStyle`` ``postgres``).

They are applied as ``SET`` clauses of every generated maintenance function (so a writer in
another zone or datestyle maintains the view exactly as the deploy built it), with ``SET LOCAL``
in the deploy, rebuild and verify transactions, and by ``verify`` when it runs the query.
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


def set_clauses() -> str:
    """The ``SET name = value ...`` clauses of a generated function's ``CREATE FUNCTION``."""
    return " ".join(f"SET {name} = {sql.Literal(value).as_string(None)}"
                    for name, value in PINNED.items())


PATH = "search_path"
# PL/pgSQL of a hot maintenance function (a statement's log trigger, the commit's apply): the
# pinned settings other than search_path are checked in the body and set (SET LOCAL) only when
# the session differs, then put back; see pinned_body().
PIN_DECLARE = "v_pin boolean; v_saved text[];"


def path_clause() -> str:
    """The ``SET search_path = ...`` clause alone (a SECURITY DEFINER function keeps it)."""
    return f"SET {PATH} = {sql.Literal(PINNED[PATH]).as_string(None)}"


def pinned_body(body: str) -> str:
    """``body`` (PL/pgSQL statements; ``EXIT tm_body`` leaves it) run under :data:`PINNED`.

    A function's ``SET`` clause sets its value on every call and restores it on return, which
    cost a one-row transaction's log and apply functions a large share of their CPU (the locale
    settings call ``setlocale``), though a session almost always has those values already. Here
    the function keeps ``SET search_path`` (it is SECURITY DEFINER: its statements are parsed
    and planned under the pinned path) and compares the others in one expression: only a
    setting that differs is set with ``set_config(..., true)`` before the body and set back
    after it. An error in the body aborts the (sub)transaction, which undoes the change, as for
    a ``SET`` clause."""
    others = [(n, sql.Literal(v).as_string(None)) for n, v in PINNED.items() if n != PATH]
    differs = " OR ".join(f"current_setting('{n}') <> {v}" for n, v in others)
    save = "".join(f"  IF current_setting('{n}') <> {v} THEN\n"
                   f"    v_saved[{i}] := current_setting('{n}');\n"
                   f"    PERFORM set_config('{n}', {v}, true);\n  END IF;\n"
                   for i, (n, v) in enumerate(others, 1))
    restore = "".join(f"  IF v_saved[{i}] IS NOT NULL THEN\n"
                      f"    PERFORM set_config('{n}', v_saved[{i}], true);\n  END IF;\n"
                      for i, (n, _) in enumerate(others, 1))
    return (f"v_pin := {differs};\nIF v_pin THEN\n{save}END IF;\n"
            f"<<tm_body>>\nBEGIN\n{body}\nEND tm_body;\n"
            f"IF v_pin THEN\n{restore}END IF;\n")


def pin(conn: psycopg.Connection) -> None:
    """Apply :data:`PINNED` to the current transaction (``SET LOCAL``); call inside one."""
    for name, value in PINNED.items():
        conn.execute("select set_config(%s, %s, true)", (name, value))


def describe_pinned() -> str:
    """A one-line description for messages and the README."""
    return ", ".join(f"{name}={value}" for name, value in PINNED.items())
