"""Where the daily partitions start when `tidemark up` started before the first day of data:
recorded once data arrives, while the stack runs (``tidemark.stack.partitions``)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import psycopg

from tidemark.settings import PARTITIONS_START_FILE, load_settings
from tidemark.stack.partitions import FirstDayWatch


def _manifest(path: Path) -> Path:
    """A dbt manifest with one daily mart over the source table ``orders`` (event time
    ``placed_at``), as the shipped project's."""
    source = "source.tidemark.shop.orders"
    path.write_text(json.dumps({
        "sources": {source: {"name": "orders", "source_name": "shop",
                             "meta": {"contract": {"event_time": "placed_at"}}}},
        "nodes": {"model.tidemark.fct_daily": {
            "resource_type": "model", "name": "fct_daily", "tags": ["daily"],
            "depends_on": {"nodes": [source]}}}}))
    return path


def test_first_day_is_recorded_once_data_arrives_while_the_stack_runs(
        fresh_db, tmp_path: Path, monkeypatch) -> None:
    """On main the first day was looked for only when `tidemark up` started: a stack started
    on a source with no data kept the 30-day fallback for as long as it ran."""
    source = fresh_db("partitions_source")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("create table public.orders (order_id int primary key, "
                     "placed_at timestamptz not null)")
    target = tmp_path / "target"
    target.mkdir()
    _manifest(target / "manifest.json")
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TIDEMARK_DBT_TARGET_PATH", str(target))
    monkeypatch.delenv("TIDEMARK_PARTITIONS_START", raising=False)
    settings = load_settings()
    recorded: list[date] = []
    watch = FirstDayWatch(settings, source, recorded.append)
    assert watch.poll() is None  # no data yet: nothing recorded, asked again later
    assert settings.first_partition_day() is None
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("insert into public.orders values (1, '2026-11-30 23:30+00'), "
                     "(2, '2026-12-01 08:00+00')")
    assert watch.poll() == date(2026, 11, 30)
    assert recorded == [date(2026, 11, 30)]
    assert (settings.home / PARTITIONS_START_FILE).read_text().strip() == "2026-11-30"
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("insert into public.orders values (3, '2026-11-01 00:00+00')")
    assert watch.poll() is None and recorded == [date(2026, 11, 30)]  # recorded once
    assert FirstDayWatch(settings, source, recorded.append).poll() is None
