"""Which functions a view may call: checked on the function PostgreSQL actually resolved.

Every function a view's expressions run — called by name, behind an operator, or behind a cast
(a cast function, or the output and input functions of an I/O conversion) — is looked up in
``pg_proc`` by the OID PostgreSQL resolved, never by name:

* **immutable**: allowed anywhere;
* **volatile**: refused (its value can change with no write to the base tables);
* **stable**: allowed only when it is one of PostgreSQL's functions whose result depends on
  nothing but the session settings the engine pins (:mod:`streaming_views.session`) — time zone
  arithmetic, date/time parts and formatting, values printed as text — and only where the
  engine evaluates it under those settings (in maintenance). In the part of the view computed
  when ``live.<name>`` is read (expressions over aggregates, HAVING) it would run in the reader's
  session, so it is refused there. Other stable functions read the database or the session
  (``to_regclass``, ``current_setting``...) and are refused everywhere.

Text-to-date/time conversions are refused: the input functions read ``'now'``, ``'today'``...
as the time of the write. So are enum conversions to and from text (a label can be renamed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg

from streaming_views.session import PINNED

PINNED_STABLE = {
    "date", "date_add", "date_subtract", "date_part", "extract", "date_trunc", "time",
    "timetz", "timestamp", "timestamptz", "timezone", "make_timestamptz", "overlaps",
    "interval_pl_timestamptz", "timestamptz_pl_interval", "timestamptz_mi_interval", "age",
    "to_char", "to_date", "to_timestamp", "to_number", "concat", "concat_ws", "format",
    "array_to_string", "anytextcat", "textanycat", "quote_literal", "quote_nullable",
    "to_json", "to_jsonb", "row_to_json", "array_to_json", "json_build_array",
    "json_build_object", "jsonb_build_array", "jsonb_build_object", "jsonb_path_exists_tz",
    "jsonb_path_match_tz", "jsonb_path_query_array_tz", "jsonb_path_query_first_tz", "money",
    "numeric", "interval_in", "cash_in", "cash_out", "date_out", "timestamp_out",
    "timestamptz_out", "interval_out", "array_out", "record_out", "range_out",
    "multirange_out", "anyarray_out", "anycompatiblearray_out", "anycompatiblerange_out",
    "anycompatiblemultirange_out", "anymultirange_out", "anyrange_out", "array_in",
}
DATETIME_COMPARE = re.compile(r"^(date|timestamp|timestamptz)_(cmp|eq|ne|lt|le|gt|ge)_"
                              r"(date|timestamp|timestamptz)$")
PRINTS_ARGUMENTS = {
    "anytextcat", "textanycat", "concat", "concat_ws", "format", "to_json", "to_jsonb",
    "json_build_array", "json_build_object", "jsonb_build_array", "jsonb_build_object",
    "array_to_string", "array_to_json", "row_to_json", "quote_literal", "quote_nullable",
}
CLOCK_INPUT = {"date_in", "timestamp_in", "timestamptz_in", "time_in", "timetz_in"}
LABELS = {"enum_in", "enum_out", "anyenum_out"}
TIMETZ = "time with time zone"


@dataclass(frozen=True)
class Proc:
    """A function as ``pg_proc`` describes it."""

    oid: int
    schema: str
    name: str
    volatility: str
    args: tuple[str, ...]

    @property
    def qualified(self) -> str:
        """``name()`` for pg_catalog functions, ``schema.name()`` for others."""
        prefix = "" if self.schema == "pg_catalog" else f"{self.schema}."
        return f"{prefix}{self.name}()"


@dataclass(frozen=True)
class Verdict:
    """Why a function may not run where it runs: ``reason`` and the ``rewrite`` to offer."""

    reason: str
    rewrite: str


def procs(conn: psycopg.Connection, oids: set[int]) -> dict[int, Proc]:
    """Look up functions by OID."""
    if not oids:
        return {}
    rows = conn.execute(
        "select p.oid, n.nspname, p.proname, p.provolatile, "
        "coalesce(array(select format_type(t, null) from unnest(p.proargtypes) t), '{}') "
        "from pg_proc p join pg_namespace n on n.oid = p.pronamespace where p.oid = any(%s)",
        (sorted(oids),)).fetchall()
    return {int(r[0]): Proc(int(r[0]), r[1], r[2], r[3], tuple(r[4])) for r in rows}


def pinned_stable(proc: Proc) -> bool:
    """True for a stable pg_catalog function that depends only on the pinned settings."""
    if proc.schema != "pg_catalog":
        return False
    if proc.name == "age":
        return len(proc.args) == 2
    if proc.name == "timezone":
        return TIMETZ not in proc.args
    return proc.name in PINNED_STABLE or bool(DATETIME_COMPARE.match(proc.name))


def prints_arguments(proc: Proc) -> bool:
    """True for a pg_catalog function that converts its arguments of any type to text
    (running their output functions): ``text || x``, ``concat``, ``format``, ``to_jsonb``..."""
    return proc.schema == "pg_catalog" and proc.name in PRINTS_ARGUMENTS


def judge(proc: Proc, what: str, *, final: bool, view: str) -> Verdict | None:
    """Return why ``proc`` (called as ``what``) may not run in a view, or None when it may.

    Args:
        proc: the resolved function.
        what: how the view calls it (``date_trunc()``, ``operator +``, ``cast from a to b``).
        final: it runs when the view is read (an expression over aggregates or HAVING).
        view: the view name, for messages.
    """
    if proc.volatility == "i":
        return None
    if proc.volatility == "v":
        return Verdict(f"{what} is volatile ({proc.qualified}): its value can change with no "
                       "write to the base tables, so no trigger can keep the view equal to its "
                       "query.", "compute the value into a column when the row is written.")
    if proc.name in CLOCK_INPUT and proc.schema == "pg_catalog":
        return Verdict(f"{what} reads 'now', 'today', 'tomorrow' and 'yesterday' as the time of "
                       "the write, so the view would keep a value the query no longer gives.",
                       "store the value as a date/timestamp column when the row is written, or "
                       "parse a fixed format with to_timestamp(x, 'YYYY-MM-DD HH24:MI:SS') "
                       "(which never reads the clock).")
    if proc.name in LABELS and proc.schema == "pg_catalog":
        return Verdict(f"{what} depends on the enum's labels, which ALTER TYPE ... RENAME VALUE "
                       "changes without a write to the base tables.",
                       "compare or group by the enum column itself (t.status = 'paid').")
    if proc.name == "age" and proc.schema == "pg_catalog" and len(proc.args) == 1:
        return Verdict(f"{what} counts from the current date, which changes with no write to "
                       "the base tables.", "age(<a fixed timestamp>, x), or compute the age when "
                       "you read the view.")
    if not pinned_stable(proc):
        return Verdict(f"{what} is stable ({proc.qualified}): it may read the database or the "
                       "session beyond the settings the engine pins, so the view could drift "
                       "from its query.", "mark the function IMMUTABLE if its result depends "
                       "only on its arguments, or compute the value into a column when the row "
                       "is written.")
    if final:
        return Verdict(f"{what} depends on session settings (time zone, date style) and would "
                       f"run when live.{view} is read, in the reader's session; the engine pins "
                       f"the settings (TimeZone={PINNED['TimeZone']}, DateStyle="
                       f"{PINNED['DateStyle']}) only where it maintains the view.",
                       "apply it inside the aggregate or group by it, or write the zone "
                       "explicitly — e.g. (max(t.ts) at time zone 'UTC')::date, which is what "
                       "max(t.ts)::date means under the engine's TimeZone=UTC.")
    return None
