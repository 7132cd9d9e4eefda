"""Live against truth, day by day (no Dagster here).

:func:`load_pairs` reads ``dbt_project/reconciliation.yml``; :func:`compare` compares one pair's
live view and mart for the closed days of a window with the pair's tolerances;
:func:`record_days` keeps the outcome per pair and day in ``tidemark.reconciled_days`` (what the
``serving`` views and the correction sensor read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql

from orchestration.defs.dbt_setup import DBT_PROJECT_DIR
from orchestration.defs.errors import ReconciliationConfigError

PAIRS_FILE = DBT_PROJECT_DIR / "reconciliation.yml"
STATE_SCHEMA = "tidemark"
DAYS_TABLE = "reconciled_days"


@dataclass(frozen=True)
class Measure:
    """One compared measure: live column, mart column and tolerance."""

    name: str
    live_column: str
    mart_column: str
    absolute: Decimal
    relative: Decimal

    def agrees(self, live: Decimal | None, truth: Decimal | None) -> bool:
        """|live - truth| <= absolute, or <= relative * max(|live|, |truth|)."""
        if live is None or truth is None:
            return live is None and truth is None
        diff = abs(live - truth)
        return diff <= self.absolute or diff <= self.relative * max(abs(live), abs(truth))


@dataclass(frozen=True)
class Pair:
    """A live view and the mart it is reconciled against (see reconciliation.yml)."""

    name: str
    live_view: str
    mart: str
    day_column: str
    keys: tuple[str, ...]
    measures: tuple[Measure, ...]
    live_retention_days: int | None
    missing_as_zero: bool


@lru_cache(maxsize=4)
def load_pairs(path: Path = PAIRS_FILE) -> tuple[Pair, ...]:
    """Read and check the pair file.

    Raises:
        ReconciliationConfigError: the file is missing or a field is wrong (named).
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ReconciliationConfigError(f"{path}: cannot read the pair file: {exc}") from None
    pairs = []
    for i, raw in enumerate((doc or {}).get("pairs") or []):
        where = f"{path}: pairs[{i}]"
        try:
            measures = tuple(Measure(
                m["name"], m.get("live_column", m["name"]), m.get("mart_column", m["name"]),
                Decimal(str(m.get("tolerance", {}).get("absolute", 0))),
                Decimal(str(m.get("tolerance", {}).get("relative", 0)))) for m in raw["measures"])
            pair = Pair(raw["name"], raw["live_view"], raw["mart"], raw["day_column"],
                        tuple(raw["keys"]), measures, raw.get("live_retention_days"),
                        bool(raw.get("missing_as_zero", False)))
        except (KeyError, TypeError, ArithmeticError) as exc:
            raise ReconciliationConfigError(f"{where}: missing or invalid field {exc}; see the "
                                            f"file's header for the format.") from None
        if pair.day_column not in pair.keys:
            raise ReconciliationConfigError(f"{where}: day_column {pair.day_column!r} must be "
                                            f"one of the keys {list(pair.keys)}.")
        pairs.append(pair)
    if not pairs:
        raise ReconciliationConfigError(f"{path}: no pairs defined.")
    return tuple(pairs)


@dataclass
class DayResult:
    """Outcome of one day of one pair.

    Attributes:
        day: the day.
        groups: key groups compared (union of both sides).
        drifted_groups: groups with a measure out of tolerance or missing on one side.
        totals: measure -> [live sum, truth sum].
    """

    day: date
    groups: int = 0
    drifted_groups: int = 0
    totals: dict[str, list[Decimal]] = field(default_factory=dict)

    @property
    def reconciled(self) -> bool:
        """True when no group drifted."""
        return self.drifted_groups == 0


@dataclass
class Comparison:
    """Outcome of one pair over a window of closed days.

    Attributes:
        pair: the pair.
        days: per-day results, oldest first.
        drift: drifted rows: day, key values, measure, live, truth, difference.
    """

    pair: Pair
    days: list[DayResult]
    drift: list[dict[str, Any]]

    @property
    def drifted_days(self) -> list[date]:
        """Days with at least one drifted group."""
        return [d.day for d in self.days if not d.reconciled]


def _numeric_expr(conn: psycopg.Connection, schema: str, relation: str,
                  column: str) -> sql.Composable:
    kind = conn.execute(
        "select a.atttypid::regtype::text from pg_attribute a where a.attrelid = %s::regclass"
        " and a.attname = %s and not a.attisdropped",
        (sql.Identifier(schema, relation).as_string(conn), column)).fetchone()
    if kind is None:
        raise ReconciliationConfigError(f"{schema}.{relation} has no column {column!r}; fix "
                                        f"{PAIRS_FILE.name} or the relation.")
    col = sql.Identifier(column)
    if kind[0] == "interval":
        return sql.SQL("extract(epoch from {})::numeric").format(col)
    return sql.SQL("{}::numeric").format(col)


def _side(conn: psycopg.Connection, pair: Pair, schema: str, relation: str,
          live: bool) -> sql.Composable:
    cols = [sql.Identifier(k) for k in pair.keys]
    cols += [sql.SQL("{} as {}").format(
        _numeric_expr(conn, schema, relation, m.live_column if live else m.mart_column),
        sql.Identifier(m.name)) for m in pair.measures]
    return sql.SQL("select {} from {} where {} >= %(first)s and {} <= %(last)s").format(
        sql.SQL(", ").join(cols), sql.Identifier(schema, relation),
        sql.Identifier(pair.day_column), sql.Identifier(pair.day_column))


def closed_window(today: date, lookback_days: int, retention_days: int | None) -> tuple[date, date]:
    """(first, last) closed days to compare: yesterday back ``lookback_days`` (or retention)."""
    back = lookback_days if retention_days is None else min(lookback_days, retention_days)
    last = today - timedelta(days=1)
    return last - timedelta(days=max(back, 1) - 1), last


def compare(landing_dsn: str, pair: Pair, first: date, last: date,
            drift_limit: int = 500) -> Comparison:
    """Compare ``live.<view>`` and ``marts.<mart>`` of ``pair`` for the days first..last.

    Both sides are read in one REPEATABLE READ snapshot. A key on one side only is drift,
    unless ``missing_as_zero`` (then its measures are compared against 0).
    """
    keys = [sql.Identifier(k) for k in pair.keys]
    with psycopg.connect(landing_dsn) as conn:
        conn.execute("set transaction isolation level repeatable read")
        live = _side(conn, pair, "live", pair.live_view, live=True)
        mart = _side(conn, pair, "marts", pair.mart, live=False)
        query = sql.SQL(
            "select {keys}, l.{k0} is not null, m.{k0} is not null, {measures} from ({live}) l"
            " full join ({mart}) m on {on} order by 1, 2").format(
            keys=sql.SQL(", ").join(sql.SQL("coalesce(l.{k}, m.{k})").format(k=k) for k in keys),
            k0=keys[0], live=live, mart=mart,
            measures=sql.SQL(", ").join(sql.SQL("l.{m}, m.{m}").format(m=sql.Identifier(m.name))
                                        for m in pair.measures),
            on=sql.SQL(" and ").join(sql.SQL("l.{k} = m.{k}").format(k=k) for k in keys))
        rows = conn.execute(query, {"first": first, "last": last}).fetchall()
    day_index = pair.keys.index(pair.day_column)
    days: dict[date, DayResult] = {}
    drift: list[dict[str, Any]] = []
    n = len(pair.keys)
    for row in rows:
        day = row[day_index]
        result = days.setdefault(day, DayResult(day, totals={m.name: [Decimal(0), Decimal(0)]
                                                             for m in pair.measures}))
        in_live, in_mart = row[n], row[n + 1]
        result.groups += 1
        drifted = False
        for i, m in enumerate(pair.measures):
            lv, tv = row[n + 2 + 2 * i], row[n + 3 + 2 * i]
            if pair.missing_as_zero:
                lv, tv = (lv if in_live else Decimal(0)), (tv if in_mart else Decimal(0))
            result.totals[m.name][0] += lv or 0
            result.totals[m.name][1] += tv or 0
            ok = ((in_live and in_mart) or pair.missing_as_zero) and m.agrees(lv, tv)
            if not ok:
                drifted = True
                if len(drift) < drift_limit:
                    drift.append({
                        **{k: str(row[j]) for j, k in enumerate(pair.keys)},
                        "measure": m.name,
                        "live": None if not in_live else lv,
                        "truth": None if not in_mart else tv,
                        "difference": None if lv is None or tv is None else lv - tv})
        result.drifted_groups += drifted
    return Comparison(pair, [days[d] for d in sorted(days)], drift)


def ensure_days_table(conn: psycopg.Connection) -> None:
    """Create ``tidemark.reconciled_days`` if missing."""
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(STATE_SCHEMA)))
    conn.execute(sql.SQL(
        "create table if not exists {} (pair text not null, mart text not null, day date not "
        "null, status text not null check (status in ('reconciled', 'drift')), groups integer "
        "not null, drifted_groups integer not null, checked_at timestamptz not null default "
        "now(), correction_requested_at timestamptz, primary key (pair, day))").format(
        sql.Identifier(STATE_SCHEMA, DAYS_TABLE)))


def record_days(landing_dsn: str, comparison: Comparison) -> None:
    """Upsert the per-day outcome of ``comparison`` into ``tidemark.reconciled_days``.

    A day that drifts again keeps its ``correction_requested_at`` (one correction per drift);
    a reconciled day clears it.
    """
    table = sql.Identifier(STATE_SCHEMA, DAYS_TABLE)
    with psycopg.connect(landing_dsn) as conn:
        ensure_days_table(conn)
        for d in comparison.days:
            conn.execute(sql.SQL(
                "insert into {t} as r (pair, mart, day, status, groups, drifted_groups) values "
                "(%s, %s, %s, %s, %s, %s) on conflict (pair, day) do update set status = "
                "excluded.status, mart = excluded.mart, groups = excluded.groups, "
                "drifted_groups = excluded.drifted_groups, checked_at = now(), "
                "correction_requested_at = case when excluded.status = 'drift' and r.status = "
                "'drift' then r.correction_requested_at end").format(t=table),
                (comparison.pair.name, comparison.pair.mart, d.day,
                 "reconciled" if d.reconciled else "drift", d.groups, d.drifted_groups))


def pending_corrections(landing_dsn: str) -> dict[str, list[date]]:
    """Drifted days with no correction requested yet, per mart (oldest first)."""
    with psycopg.connect(landing_dsn) as conn:
        ensure_days_table(conn)
        rows = conn.execute(sql.SQL(
            "select mart, day from {} where status = 'drift' and correction_requested_at is "
            "null group by mart, day order by mart, day").format(
            sql.Identifier(STATE_SCHEMA, DAYS_TABLE))).fetchall()
    out: dict[str, list[date]] = {}
    for mart, day in rows:
        out.setdefault(mart, []).append(day)
    return out


def mark_requested(landing_dsn: str, mart: str, days: list[date]) -> None:
    """Note that a correction of ``days`` of ``mart`` was requested."""
    with psycopg.connect(landing_dsn) as conn:
        conn.execute(sql.SQL(
            "update {} set correction_requested_at = now() where mart = %s and day = any(%s) "
            "and status = 'drift'").format(sql.Identifier(STATE_SCHEMA, DAYS_TABLE)),
            (mart, days))


def contiguous_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Group sorted days into (first, last) runs of consecutive days."""
    out: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if out and day - out[-1][1] == timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out
