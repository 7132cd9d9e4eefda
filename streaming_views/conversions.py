"""Which functions converting values between types run: input and output functions (through
domains and array elements), and the output functions of arguments printed by functions that
take any type (``text || x``, ``concat``, ``format``, ``to_jsonb``...) — for the volatility
check of :mod:`streaming_views.resolve`."""

from __future__ import annotations

import psycopg
from psycopg import sql

from streaming_views.volatility import prints_arguments, procs

Check = tuple[int, str, str, str]  # (function, what the view does, syntax kind, name)


def type_names(conn: psycopg.Connection, oids: set[int]) -> dict[int, str]:
    """``format_type`` of each type OID."""
    if not oids:
        return {}
    return {int(o): str(n) for o, n in conn.execute(
        "select oid, format_type(oid, null) from pg_type where oid = any(%s)",
        (sorted(oids),)).fetchall()}


def result_type(conn: psycopg.Connection, oid: int) -> str:
    """The result type of function ``oid``."""
    row = conn.execute("select format_type(prorettype, null) from pg_proc where oid = %s",
                       (oid,)).fetchone()
    return str(row[0]) if row else "?"


def io_functions(conn: psycopg.Connection, src: int | None, dst: int) -> list[int]:
    """Output functions of the source type and input functions of the target type
    (through domains and array elements, whose functions run too)."""
    out = type_functions(conn, src, "typoutput") if src is not None else []
    return out + type_functions(conn, dst, "typinput")


def type_functions(conn: psycopg.Connection, typ: int, which: str) -> list[int]:
    """The input or output functions (``which``) that converting a value of type ``typ``
    runs: its own, its domain's base type's, its array elements' (an array of an enum
    prints the enum's labels)."""
    out: list[int] = []
    seen: set[int] = set()
    current: int | None = typ
    while current and current not in seen:
        seen.add(current)
        row = conn.execute(sql.SQL(
            "select {}::oid, case when typtype = 'd' then typbasetype "
            "when typelem <> 0 and typsubscript = 'array_subscript_handler'::regproc "
            "then typelem end from pg_type where oid = %s").format(sql.Identifier(which)),
            (current,)).fetchone()
        if row is None:
            break
        out.append(int(row[0]))
        current = int(row[1]) if row[1] else None
    return [o for o in out if o]


def printing_checks(conn: psycopg.Connection,
                    printed: list[tuple[int, list[int | None]]]) -> list[Check]:
    """Checks for the output functions run by functions that print their arguments of any
    type (``text || x``, ``concat``, ``format``, ``to_jsonb``...): an enum argument prints
    its label, a user type its own output function."""
    found = procs(conn, {oid for oid, _ in printed})
    checks: list[Check] = []
    for oid, arg_types in printed:
        proc = found.get(oid)
        if proc is None or not prints_arguments(proc):
            continue
        names = type_names(conn, {t for t in arg_types if t is not None})
        operator = proc.name in {"anytextcat", "textanycat"}  # reached through ||
        what = "operator ||" if operator else proc.qualified
        for typ in arg_types:
            if typ is None:
                continue
            for out in type_functions(conn, typ, "typoutput"):
                checks.append((out, f"{what} printing a {names.get(typ, '?')} value",
                               "op" if operator else "func",
                               "||" if operator else proc.name))
    return checks


def base_type(conn: psycopg.Connection, type_name: str) -> str:
    """``type_name`` itself, or for a domain (over domains...) its base type with its modifier:
    a kept sum of a domain ``CHECK (value >= 0)`` goes negative when rows are deleted, and the
    aggregate PostgreSQL runs is the base type's anyway."""
    seen = set()
    while type_name not in seen:
        seen.add(type_name)
        row = conn.execute("select typtype, format_type(typbasetype, typtypmod) from pg_type "
                           "where oid = %s::regtype", (type_name,)).fetchone()
        if row is None or row[0] != "d":
            break
        type_name = str(row[1])
    return type_name
