"""Which pinned session settings a view's maintenance expressions read.

Every generated maintenance function pins :data:`streaming_views.session.PINNED` as ``SET``
clauses — and PostgreSQL saves, sets and restores each clause on every call. A function
whose expressions read no value setting keeps only
:data:`streaming_views.session.NAMES_ONLY` (the names it resolves, the literals it parses)
plus what its expressions do read, as told here from the expression trees PostgreSQL built
(:mod:`streaming_views.nodetree`), function by function (by the OID PostgreSQL resolved):

* an immutable function reads nothing — except the float output functions
  (``extra_float_digits``) and ``byteaout`` (``bytea_output``);
* ``timestamptz ± interval`` reads ``TimeZone`` only when the interval is not a constant of
  hours, minutes and seconds (a day or a month is added on the local calendar: DST);
* a date/time comparison across ``date``, ``timestamp`` and ``timestamptz`` reads
  ``TimeZone``;
* ``date_trunc(unit, timestamptz)`` reads ``TimeZone`` (it truncates the local time: an hour
  in a zone half an hour off UTC), ``date_trunc(unit, timestamptz, zone)`` none (its zone is
  an argument; PostgreSQL 18 marks it immutable, a server marking it stable gets the same
  verdict);
* any other stable function, a domain check, an SQL value function: every setting;
* a constant is parsed again by the generated SQL: a date/time literal reads ``TimeZone`` and
  ``DateStyle``, an interval literal ``IntervalStyle`` when a string of the view parses to
  another interval under another style (``'-1 2:00'`` in ``sql_standard``), a literal of any
  other type whose input function is not immutable every setting.
"""

from __future__ import annotations

from typing import Any

import psycopg

from streaming_views import conversions, nodetree, volatility
from streaming_views.session import PINNED

ALL = frozenset(PINNED)
NOTHING: frozenset[str] = frozenset()
OUTPUTS = {"float4out": "extra_float_digits", "float8out": "extra_float_digits",
           "byteaout": "bytea_output"}
ZONED_ARITHMETIC = {"timestamptz_pl_interval", "timestamptz_mi_interval",
                    "interval_pl_timestamptz"}
LITERALS = {"date_in", "time_in", "timetz_in", "timestamp_in", "timestamptz_in"}
DATETIMES = {"date", "time without time zone", "time with time zone",
             "timestamp without time zone", "timestamp with time zone"}
ZONED_CASTS = {"date", "time", "timetz", "timestamp", "timestamptz"}  # across the zone
ZONED_TRUNC = ("text", "timestamp with time zone")  # date_trunc's first arguments
INFINITIES = {2**63 - 1, -2**63}  # a timestamp's 'infinity' and '-infinity'
TIMESTAMPS = {1114, 1184}
INTERVAL = 1186
INTERVAL_STYLES = ("postgres", "postgres_verbose", "sql_standard", "iso_8601")
FIELDS = ("select extract(year from i), extract(month from i), extract(day from i), "
          "extract(hour from i), extract(minute from i), extract(microseconds from i) "
          "from (select %s::interval as i) as x")
WHOLE = {"SQLVALUEFUNCTION", "COERCETODOMAIN", "XMLEXPR", "NEXTVALUEEXPR", "PARAM"}


def _interval_fields(node: Any) -> tuple[int, int, int] | None:
    """(microseconds, days, months) of an interval constant node, None when not one."""
    if not isinstance(node, dict) or node.get("_") != "CONST" \
            or int(node.get("consttype") or 0) != INTERVAL or node.get("constisnull") == "true":
        return None
    value = node.get("constvalue")
    if not value or len(value[1]) != 16:
        return None
    raw = bytes(int(b) & 0xFF for b in value[1])
    return (int.from_bytes(raw[:8], "little", signed=True),
            int.from_bytes(raw[8:12], "little", signed=True),
            int.from_bytes(raw[12:], "little", signed=True))


def _calls(tree: Any) -> tuple[list[tuple[int, list[Any]]], list[tuple[int | None, int]],
                               set[int], set[int], bool]:
    """(function, arguments) called, I/O conversions, operators compared by row, constant types,
    and whether a node reads every setting."""
    calls: list[tuple[int, list[Any]]] = []
    io: list[tuple[int | None, int]] = []
    opnos: set[int] = set()
    consts: set[int] = set()
    whole = False
    for node in nodetree.walk(tree):
        kind = node["_"]
        if kind == "FUNCEXPR":
            calls.append((int(node["funcid"]), node.get("args") or []))
        elif kind in {"OPEXPR", "DISTINCTEXPR", "NULLIFEXPR", "SCALARARRAYOPEXPR"}:
            if node.get("opfuncid") not in (None, "0"):
                calls.append((int(node["opfuncid"]), node.get("args") or []))
            else:
                opnos.add(int(node["opno"]))
        elif kind == "ROWCOMPAREEXPR":
            opnos.update(int(o) for o in node.get("opnos") or [])
        elif kind in {"AGGREF", "WINDOWFUNC"}:
            calls.append((int(node.get("aggfnoid") or node.get("winfnoid") or 0), []))
        elif kind == "COERCEVIAIO":
            io.append((nodetree.expr_type(node.get("arg")), int(node["resulttype"])))
        elif kind == "CONST" and node.get("constisnull") != "true" \
                and not _infinite(node):
            consts.add(int(node.get("consttype") or 0))
        elif kind in WHOLE:
            whole = True
    return calls, io, opnos, consts, whole


def _infinite(node: dict[str, Any]) -> bool:
    """True for a timestamp constant ``'infinity'`` or ``'-infinity'`` (parsed alike under
    every setting: the window's bounds of a temporal filter)."""
    value = node.get("constvalue")
    if int(node.get("consttype") or 0) not in TIMESTAMPS or not value or len(value[1]) != 8:
        return False
    raw = bytes(int(b) & 0xFF for b in value[1])
    return int.from_bytes(raw, "little", signed=True) in INFINITIES


def _styled(conn: psycopg.Connection, strings: list[str]) -> bool:
    """Whether one of ``strings`` is read as an interval differently (or only) under some
    IntervalStyle: a string no style reads is not an interval literal.

    From PostgreSQL 16 on, ``pg_input_is_valid`` tells a string that is no interval without an
    error: each failed cast would log an ERROR line in the server's log (``status``, ``'UTC'``,
    every string of every view, four styles each, at every deploy)."""
    quiet = conn.info.server_version >= 160000
    for text in strings:
        seen = set()
        for style in INTERVAL_STYLES:
            try:
                with conn.transaction():
                    conn.execute("select set_config('IntervalStyle', %s, true)", (style,))
                    if quiet and not conn.execute("select pg_input_is_valid(%s, 'interval')",
                                                  (text,)).fetchone()[0]:  # type: ignore[index]
                        seen.add(None)
                        continue
                    row = conn.execute(FIELDS, (text,)).fetchone()
                    seen.add(tuple(str(v) for v in row) if row else None)
            except psycopg.Error:
                seen.add(None)  # not an interval literal under this style
        if len(seen) > 1:
            return True
    return False


def settings_read(conn: psycopg.Connection, tree: Any, strings: list[str], *,
                  ignore: frozenset[str] = NOTHING) -> frozenset[str]:
    """The pinned settings the expressions of ``tree`` read (see the module docstring).

    Args:
        conn: a connection to the view's database.
        tree: a parsed expression tree (:func:`streaming_views.nodetree.parse`).
        strings: the string literals of the view's text (for interval literals).
        ignore: names of functions the tree calls that the maintenance does not run (the
            probe's stand-in for the clock).
    """
    calls, io, opnos, consts, whole = _calls(tree)
    if whole:
        return ALL
    if opnos:
        calls += [(int(code), []) for (code,) in conn.execute(
            "select oprcode::oid from pg_operator where oid = any(%s)", (sorted(opnos),))]
    for src, dst in io:
        calls += [(oid, []) for oid in conversions.io_functions(conn, src, dst)]
    types = sorted(consts)
    inputs = [int(r[0]) for r in conn.execute(
        "select typinput::oid from pg_type where oid = any(%s)", (types,))] if types else []
    found = volatility.procs(conn, {oid for oid, _ in calls} | set(inputs))
    needed: set[str] = set()
    for oid in inputs:
        proc = found.get(oid)
        if proc is None or proc.schema != "pg_catalog":
            return ALL
        if proc.name in LITERALS:
            needed |= {"TimeZone", "DateStyle"}
        elif proc.name == "interval_in":
            if _styled(conn, strings):
                needed.add("IntervalStyle")
        elif proc.volatility != "i":
            return ALL
    for oid, args in calls:
        proc = found.get(oid)
        if proc is None:
            return ALL
        if proc.schema == "pg_catalog" and proc.name in OUTPUTS:
            needed.add(OUTPUTS[proc.name])
        elif proc.volatility == "i" or (proc.schema == "pg_catalog" and proc.name in ignore):
            continue
        elif proc.schema != "pg_catalog":
            return ALL
        elif proc.name in ZONED_ARITHMETIC:
            fields = [f for f in map(_interval_fields, args) if f is not None]
            if len(fields) != 1 or fields[0][1] or fields[0][2]:
                needed.add("TimeZone")
        elif proc.name == "date_trunc" and proc.args[:2] == ZONED_TRUNC:
            if len(proc.args) == 2:  # else the zone is its third argument
                needed.add("TimeZone")
        elif volatility.DATETIME_COMPARE.match(proc.name) or (
                proc.name in ZONED_CASTS and proc.args and set(proc.args) <= DATETIMES):
            needed.add("TimeZone")
        else:
            return ALL
    return frozenset(needed)
