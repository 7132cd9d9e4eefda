"""``tidemark up``'s demo source on a real server: created and registered, seeded on a first
start, written by the workload until the stack stops (or stopping the stack when it fails)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from rich.console import Console

from ingestion.sources import list_sources
from tests.support import free_port
from tidemark.settings import Settings
from tidemark.stack.databases import Databases
from tidemark.stack.demo_source import (
    create_demo_source,
    seed_demo_history,
    source_is_empty,
    start_demo_load,
)
from tidemark.stack.display import STATUS_FILE, UpDisplay


def _display(home: Path) -> tuple[UpDisplay, io.StringIO]:
    out = io.StringIO()
    return UpDisplay(home, Console(file=out, width=200)), out


def _settings(home: Path) -> Settings:
    return Settings(home=home, port=free_port(), source_url=None, landing_url=None)


def test_the_demo_source_is_created_registered_and_seeded_once_empty(
        fresh_db: Callable[[str], str], tmp_path: Path) -> None:
    source, landing = fresh_db("demo_src"), fresh_db("demo_land")
    dbs = Databases(source, landing, source, landing, landing, landing, None)
    said: list[str] = []
    create_demo_source(dbs, _settings(tmp_path), said.append)
    assert source_is_empty(source)
    assert [(s.name, s.url, s.admin_url) for s in list_sources(landing)] == [
        ("shop", source, source)]
    create_demo_source(dbs, _settings(tmp_path), said.append)  # every start: nothing new
    assert len(list_sources(landing)) == 1 and said == []
    display, out = _display(tmp_path)
    seed_demo_history(source, 1, 30, 7, display)
    assert not source_is_empty(source)
    with psycopg.connect(source) as conn:
        assert conn.execute("select count(*) from orders").fetchone()[0] == 30
    assert "Seeded 1 days of demo history: 30 orders" in out.getvalue()


def test_the_workload_writes_until_stopped_and_stops_the_stack_when_it_fails(
        fresh_db: Callable[[str], str], tmp_path: Path) -> None:
    source = fresh_db("demo_load")
    stop = threading.Event()
    display, out = _display(tmp_path)
    assert start_demo_load(source, _settings(tmp_path), 0, 1, stop, display) is None
    thread = start_demo_load(source, _settings(tmp_path), 300, 1, stop, display)
    assert thread is not None and thread.name == "demo-load"
    time.sleep(1.5)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert "Demo workload: 300 changes/s on the source." in out.getvalue()
    assert "Demo workload stopped:" in out.getvalue()
    assert json.loads((tmp_path / STATUS_FILE).read_text())["demo"]["rate"] == 300
    assert not source_is_empty(source)
    # reference data partly gone: not an outage to ride out; said, and the stack told to stop
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("truncate stores cascade")
    stop = threading.Event()
    thread = start_demo_load(source, _settings(tmp_path), 300, 1, stop, display)
    assert thread is not None
    thread.join(30)
    assert stop.is_set() and "Demo workload failed:" in out.getvalue()
