"""Watermarks on a real server: the arithmetic (max event time − allowed lateness), monotone,
capped for future event times, set by the snapshot, advanced for idle tables, late inserts
recorded per day, and a per-batch statement that never reads the mirror (EXPLAIN at 10× a default
batch over a big mirror).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from contracts import load_contracts
from ingestion import catch_up
from ingestion.state import ensure_state
from ingestion.watermarks import (
    FUTURE_SKEW,
    IDLE_AFTER,
    EventTable,
    advance_sql,
    delay_state,
    event_tables,
    read_watermarks,
)
from tests.ingestion.conftest import Pair

CONTRACT = """version: 1
primary_key: [click_id]
event_time: clicked_at
compatibility: backward
allowed_lateness: 2h
freshness:
  loaded_at: clicked_at
  warn_after: 15m
  error_after: 1h
columns:
  click_id: {type: bigint, min: 1}
  clicked_at: {type: timestamptz}
"""

LATENESS = timedelta(hours=2)


def _setup(p: Pair, root: Path) -> object:
    (root / p.source).mkdir(parents=True)
    (root / p.source / "clicks.yml").write_text(CONTRACT)
    p.src_exec("create table clicks (click_id bigint primary key, clicked_at timestamptz)")
    return load_contracts(root)


def _insert(p: Pair, *rows: tuple[int, datetime]) -> None:
    with psycopg.connect(p.src, autocommit=True) as conn:
        conn.cursor().executemany("insert into clicks values (%s, %s)", rows)


def _state(p: Pair) -> tuple:
    with psycopg.connect(p.land) as conn:
        return conn.execute("select max_event_at, watermark from tidemark.watermarks where"
                            " source = %s and table_name = 'clicks'", (p.source,)).fetchone()


def _late(p: Pair) -> list[tuple]:
    with psycopg.connect(p.land) as conn:
        return conn.execute("select day, late_rows, worst_lateness from tidemark.late_events"
                            " where source = %s order by day", (p.source,)).fetchall()


def _read(p: Pair, contracts: object) -> dict:
    with psycopg.connect(p.land) as conn:
        return read_watermarks(conn, p.source, event_tables(contracts, p.source))[0]


def test_watermark_is_max_event_time_minus_lateness_and_never_moves_back(
        pair: Pair, tmp_path: Path) -> None:
    contracts = _setup(pair, tmp_path / "c")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    # Event times a little ahead of the commit (within FUTURE_SKEW), so the event-time bound
    # beats the source's progress (the idle advance of a table new since its snapshot).
    now = datetime.now(UTC).replace(microsecond=0)
    top = now + timedelta(minutes=2)
    _insert(pair, (1, now + timedelta(minutes=1)), (2, top))
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert _state(pair) == (top, top - LATENESS)

    _insert(pair, (3, now - timedelta(minutes=50)))  # older, within lateness: not late
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert _state(pair) == (top, top - LATENESS)
    assert _late(pair) == []

    row = _read(pair, contracts)
    assert row["watermark"] == top - LATENESS
    assert row["state"] == "ok" and not row["idle"]
    assert 2 * 3600 - 120 - 5 <= row["delay_s"] < 2 * 3600


def test_snapshot_sets_the_watermark_and_the_sources_progress(pair: Pair,
                                                             tmp_path: Path) -> None:
    """A first catch_up returns when the snapshot commits, before any streamed transaction:
    the snapshot's landing transaction advances the watermark by the snapshot rows, as a batch
    would, records no late event and no change time (the table is idle since its snapshot), and
    sets the checkpoint's source progress (a source time before the slot): every event-time
    table, one without rows too, has a watermark."""
    _setup(pair, tmp_path / "c")
    (tmp_path / "c" / pair.source / "taps.yml").write_text(
        CONTRACT.replace("click", "tap").replace("clicked_at", "tapped_at"))
    contracts = load_contracts(tmp_path / "c")
    pair.src_exec("create table taps (tap_id bigint primary key, tapped_at timestamptz)")
    now = datetime.now(UTC).replace(microsecond=0)
    ahead = now + FUTURE_SKEW / 2  # beats the source's progress: the rows' bound shows
    _insert(pair, (1, now - timedelta(days=3)), (2, ahead), (3, None))
    before = datetime.now(UTC)
    stats = catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert stats.transactions == 0 and stats.snapshot_rows == 3
    assert _state(pair) == (ahead, ahead - LATENESS)
    assert _late(pair) == []
    with psycopg.connect(pair.land) as conn:
        last_commit_at, lag, changed = conn.execute(
            "select c.last_commit_at, c.last_lag_ms, w.last_change_at from"
            " tidemark.checkpoints c join tidemark.watermarks w using (source)"
            " where source = %s", (pair.source,)).fetchone()
        marks = read_watermarks(conn, pair.source, event_tables(contracts, pair.source))
    assert before - timedelta(seconds=5) < last_commit_at < datetime.now(UTC)
    assert lag is None and changed is None
    assert [(m["table"], m["watermark"], m["idle"]) for m in marks] == [
        ("clicks", ahead - LATENESS, False), ("taps", last_commit_at - LATENESS, True)]


def test_future_event_time_is_capped(pair: Pair, tmp_path: Path) -> None:
    contracts = _setup(pair, tmp_path / "c")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    _insert(pair, (1, datetime(2099, 1, 1, tzinfo=UTC)))
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    max_event, watermark = _state(pair)
    assert max_event.year == 2099
    assert watermark <= datetime.now(UTC) + FUTURE_SKEW - LATENESS


def test_event_after_its_day_closed_is_recorded_as_late(pair: Pair, tmp_path: Path) -> None:
    contracts = _setup(pair, tmp_path / "c")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    now = datetime.now(UTC).replace(microsecond=0)
    _insert(pair, (1, now))
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    two_days_ago = now - timedelta(days=2)
    yesterday_late = now - timedelta(days=2, hours=3)
    # Two late inserts for the day before yesterday (one of them in a later batch), one update
    # of an old row (not a new event: not counted), one delete.
    _insert(pair, (2, two_days_ago), (3, yesterday_late))
    pair.src_exec("update clicks set click_id = 30 where click_id = 3",
                  "delete from clicks where click_id = 30")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    _insert(pair, (4, two_days_ago - timedelta(minutes=1)))
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    rows = {}
    for day, count, worst in _late(pair):
        rows[day] = (count, worst)
    assert sum(c for c, _ in rows.values()) == 3
    worst = max(w for _, w in rows.values())
    assert timedelta(days=2, hours=3) <= worst < timedelta(days=2, hours=3, minutes=2)
    assert _read(pair, contracts)["late_rows"] == 3
    assert _state(pair)[0] == now, "late rows do not move the watermark"


def test_idle_table_advances_with_the_sources_progress(pair: Pair, tmp_path: Path) -> None:
    contracts = _setup(pair, tmp_path / "c")
    pair.src_exec("create table other (id int primary key)")
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    _insert(pair, (1, old))
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    # Snapshot only, nothing streamed: idle since ever once the source commits again.
    pair.src_exec("insert into other values (1)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    with psycopg.connect(pair.land) as conn:
        progress = conn.execute("select last_commit_at from tidemark.checkpoints where source"
                                " = %s", (pair.source,)).fetchone()[0]
    row = _read(pair, contracts)
    assert row["idle"] and row["watermark"] == progress - LATENESS

    # Streamed once, then idle for longer than IDLE_AFTER (moved back in the state row).
    _insert(pair, (2, old))
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    assert _state(pair)[1] == progress - LATENESS, "the idle advance was folded in"
    with psycopg.connect(pair.land) as conn:
        conn.execute("update tidemark.watermarks set last_change_at = last_change_at - %s",
                     (IDLE_AFTER * 2,))
    pair.src_exec("insert into other values (2)")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    with psycopg.connect(pair.land) as conn:
        later = conn.execute("select last_commit_at from tidemark.checkpoints where source"
                             " = %s", (pair.source,)).fetchone()[0]
    row = _read(pair, contracts)
    assert row["idle"] and row["watermark"] == later - LATENESS > progress - LATENESS


def test_delay_state_thresholds() -> None:
    t = EventTable("clicks", "clicked_at", LATENESS, timedelta(minutes=15), timedelta(hours=1))
    assert delay_state(None, t) == "unknown"
    assert delay_state(LATENESS + timedelta(minutes=10), t) == "ok"
    assert delay_state(LATENESS + timedelta(minutes=20), t) == "warn"
    assert delay_state(LATENESS + timedelta(hours=2), t) == "error"


@pytest.mark.parametrize("batch_rows", [500_000])
def test_per_batch_statement_never_reads_the_mirror(pair: Pair, tmp_path: Path,
                                                    batch_rows: int) -> None:
    """EXPLAIN at 10× the applier's default flush (50,000 lines) over a mirror of 2M rows."""
    contracts = _setup(pair, tmp_path / "c")
    pair.src_exec("insert into clicks select g, now() - g * interval '1 second'"
                  " from generate_series(1, 2000000) g")
    catch_up(pair.src, pair.land, pair.source, contracts=contracts)
    with psycopg.connect(pair.land) as conn:
        ensure_state(conn, pair.source)
        conn.execute("create temp table stg (click_id bigint, clicked_at timestamptz, _op text,"
                     " _commit_at timestamptz)")
        conn.execute("insert into stg select g, now() - g * interval '1 second', 'c', now()"
                     " from generate_series(1, %s) g", (batch_rows,))
        conn.execute("analyze stg")
        plan = "\n".join(r[0] for r in conn.execute(
            sql.SQL("explain ") + advance_sql(sql.Identifier("stg"), "clicked_at"),
            {"source": pair.source, "table": "clicks", "column": "clicked_at",
             "lateness": LATENESS}))
        assert f"{pair.source}.clicks" not in plan and "clicks " not in plan.replace(
            "stg", ""), plan
        assert "Seq Scan on stg" in plan
        scans = [line for line in plan.splitlines() if "Seq Scan" in line]
        assert all("stg" in line or "watermarks" in line or "checkpoints" in line
                   for line in scans), plan


def test_idle_threshold_and_future_cap_are_settings(pair: Pair, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """TIDEMARK_WATERMARK_IDLE_AFTER_S / _FUTURE_SKEW_S set the policy of the process that
    loads the settings: a 1 s idle threshold advances a table idle for 2 s (the default needs a
    minute), a 0 s cap keeps a future event time from moving the watermark past the commit."""
    from ingestion.watermarks import policy
    from tidemark.settings import load_settings

    monkeypatch.setenv("TIDEMARK_WATERMARK_IDLE_AFTER_S", "1")
    monkeypatch.setenv("TIDEMARK_WATERMARK_FUTURE_SKEW_S", "0")
    try:
        load_settings()
        assert policy().idle_after == timedelta(seconds=1)
        assert policy().future_skew == timedelta(0)
        contracts = _setup(pair, tmp_path / "c")
        pair.src_exec("create table other (id int primary key)")
        _insert(pair, (1, datetime.now(UTC) + timedelta(hours=1)))  # an hour in the future
        catch_up(pair.src, pair.land, pair.source, contracts=contracts)
        _insert(pair, (2, datetime.now(UTC) + timedelta(hours=1)))
        catch_up(pair.src, pair.land, pair.source, contracts=contracts)
        with psycopg.connect(pair.land) as conn:
            commit_at = conn.execute(sql.SQL("select _commit_at from {} where click_id = 2")
                                     .format(sql.Identifier("cdc", f"{pair.source}__clicks"))
                                     ).fetchone()[0]
        assert _state(pair)[1] == commit_at - LATENESS, "capped at the insert's commit time"
        import time

        time.sleep(2.0)  # longer than the 1 s idle threshold
        pair.src_exec("insert into other values (1)")
        catch_up(pair.src, pair.land, pair.source, contracts=contracts)
        with psycopg.connect(pair.land) as conn:
            later = conn.execute("select last_commit_at from tidemark.checkpoints where"
                                 " source = %s", (pair.source,)).fetchone()[0]
        row = _read(pair, contracts)
        assert row["idle"] and row["watermark"] == later - LATENESS > commit_at - LATENESS
    finally:
        monkeypatch.delenv("TIDEMARK_WATERMARK_IDLE_AFTER_S")
        monkeypatch.delenv("TIDEMARK_WATERMARK_FUTURE_SKEW_S")
        load_settings()
    assert policy().idle_after == IDLE_AFTER and policy().future_skew == FUTURE_SKEW


def test_status_shows_the_watermark_in_utc_whatever_the_readers_zone(
        pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `tidemark status` printed the watermark as the session's local time with no zone: read
    # with PGTZ=Asia/Kolkata, a UTC 10:00 watermark showed as "15:30:00" beside UTC days.
    import contracts.loader
    from tidemark.cli.status import watermarks_layer

    _setup(pair, tmp_path / "c")
    monkeypatch.setattr(contracts.loader, "PACKAGE_ROOT", tmp_path / "c")
    top = (datetime.now(UTC) + timedelta(minutes=1)).replace(microsecond=0)
    catch_up(pair.src, pair.land, pair.source, contracts=load_contracts(tmp_path / "c"))
    _insert(pair, (1, top))
    catch_up(pair.src, pair.land, pair.source, contracts=load_contracts(tmp_path / "c"))
    monkeypatch.setenv("PGTZ", "Asia/Kolkata")

    class Dbs:
        landing = pair.land

    [row] = watermarks_layer(Dbs(), pair.source)  # type: ignore[arg-type]
    assert row["watermark"] == (top - LATENESS).strftime("%Y-%m-%d %H:%M:%S"), row
    assert row["max_event_at"] == top.strftime("%Y-%m-%d %H:%M:%S"), row
