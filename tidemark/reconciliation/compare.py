"""Live against truth, day by day: compare one pair's live view and mart (no Dagster here).

:func:`compare` compares one pair's live view and mart for the closed days of a window with the
pair's tolerances (both sides read in one snapshot); :func:`closed_window` is the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from tidemark.reconciliation.errors import ReconciliationConfigError
from tidemark.reconciliation.pairs import PAIRS_FILE, Pair


@dataclass
class DayResult:
    """Outcome of one day of one pair.

    Attributes:
        day: the day.
        groups: key groups compared (union of both sides).
        drifted_groups: groups with a measure out of tolerance or missing on one side.
        totals: measure -> [live sum, truth sum].
        truth_groups: groups the mart has (0: the mart has no row of the day).
    """

    day: date
    groups: int = 0
    drifted_groups: int = 0
    truth_groups: int = 0
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
        late: drifted days late rows explain (``late.explain_late_drift``): day -> its
            ``LateDay``; a correction is pending for them.
        as_of: the start of the snapshot both sides were read in (rows landed later are not
            in this comparison; None: unknown, the time it is recorded is used).
        live_wrong: why the live view is wrong on the drifted days, when it differs there from
            its own query over the landed tables (e.g. "3 row(s) differ from its query"):
            re-running the mart cannot fix that, rebuilding the view does; "" when it agrees
            with its query there; None when not checked.
        requested: drifted days a correction (a re-run of the mart) had been requested for
            before this comparison: day -> when (``days.requested_corrections``).
        queued: drifted days a correction run that has not finished yet will rebuild.
        unbuilt: closed days the mart has no row of and has never built (the day closed after
            the last run of the mart; the closure sensor builds it): set aside, not compared
            (:meth:`set_aside`).
        built_open: drifted closed days whose last build ran before the day could close (rows
            landed after it that were not late yet; the closure sensor rebuilds it): set
            aside, not compared (:meth:`set_aside`).
    """

    pair: Pair
    days: list[DayResult]
    drift: list[dict[str, Any]]
    late: dict[date, Any] = field(default_factory=dict)
    as_of: datetime | None = None
    live_wrong: str | None = None
    requested: dict[date, datetime] = field(default_factory=dict)
    queued: set[date] = field(default_factory=set)
    unbuilt: list[date] = field(default_factory=list)
    built_open: list[date] = field(default_factory=list)

    def set_aside(self, days: set[date], built_open: bool = False) -> None:
        """Take ``days`` out of the comparison: they are not drift, only not built yet (kept in
        :attr:`unbuilt`) or, with ``built_open``, last built before they closed (kept in
        :attr:`built_open`)."""
        if not days:
            return
        iso = {d.isoformat() for d in days}
        column = self.pair.day_column
        self.days = [d for d in self.days if d.day not in days]
        self.drift = [r for r in self.drift if r[column] not in iso]
        self.late = {d: v for d, v in self.late.items() if d not in days}
        self.requested = {d: at for d, at in self.requested.items() if d not in days}
        self.queued = self.queued - days
        if built_open:
            self.built_open = sorted(set(self.built_open) | days)
        else:
            self.unbuilt = sorted(set(self.unbuilt) | days)

    @property
    def drifted_days(self) -> list[date]:
        """Days with at least one drifted group."""
        return [d.day for d in self.days if not d.reconciled]

    @property
    def unexplained_days(self) -> list[date]:
        """Drifted days late data does not explain (an error)."""
        return [d for d in self.drifted_days if d not in self.late]


def _numeric_expr(conn: psycopg.Connection, schema: str, relation: str,
                  column: str) -> sql.Composable:
    kind = conn.execute(
        "select a.atttypid::regtype::text from pg_attribute a where a.attrelid = %s::regclass"
        " and a.attname = %s and not a.attisdropped",
        (sql.Identifier(schema, relation).as_string(conn), column)).fetchone()
    if kind is None:
        raise ReconciliationConfigError(f"{schema}.{relation} has no column {column!r}; fix "
                                        f"{PAIRS_FILE} or the relation.")
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


def closed_window(today: date, lookback_days: int, retention_days: int | None,
                  closed_through: date | None | bool = True) -> tuple[date, date]:
    """(first, last) closed days to compare: back ``lookback_days`` (or retention) from the last
    closed day.

    Args:
        today: today (UTC).
        lookback_days: how many days to compare.
        retention_days: the live view's retention, if it keeps fewer days: rows older than
            ``retention_days`` from now are gone, so the oldest whole day is
            ``today - retention + 1``.
        closed_through: the mart's last closed day (``tidemark.reconciliation.finality``); None
            when no day is closed (the window is empty: first > last); True: yesterday.
    """
    back = lookback_days if retention_days is None else min(lookback_days, retention_days - 1)
    last = today - timedelta(days=1)
    if closed_through is None:
        return last + timedelta(days=1), last
    if closed_through is not True:
        last = min(last, closed_through)
    first = last - timedelta(days=max(back, 1) - 1)
    if retention_days is not None:  # a day closed long ago may be older than the view keeps
        first = max(first, today - timedelta(days=max(retention_days - 1, 1)))
    return first, last


def compare(landing_dsn: str, pair: Pair, first: date, last: date,
            drift_limit: int = 500) -> Comparison:
    """Compare ``live.<view>`` and ``marts.<mart>`` of ``pair`` for the days first..last.

    Both sides are read in one REPEATABLE READ snapshot. A key on one side only is drift,
    unless ``missing_as_zero`` (then its measures are compared against 0).
    """
    keys = [sql.Identifier(k) for k in pair.keys]
    with psycopg.connect(landing_dsn) as conn:
        conn.execute("set transaction isolation level repeatable read")
        # the snapshot is taken by this first statement: now() (transaction start) is not later
        as_of = conn.execute("select now()").fetchone()[0]
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
        result.truth_groups += bool(in_mart)
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
    return Comparison(pair, [days[d] for d in sorted(days)], drift, as_of=as_of)
