"""Subscribe: each committed change arrives as (timestamp, diff, row); nothing uncommitted."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from streaming_views.errors import ViewNotFoundError
from streaming_views.subscribe import subscribe
from tests.streaming_views.conftest import deploy_text


def test_subscribe_streams_committed_changes(module_db: str, conn: psycopg.Connection) -> None:
    conn.execute("create schema w; create table w.t (id int primary key, g int)")
    conn.execute("insert into w.t values (1, 1)")
    deploy_text(module_db, "counts", "select s.g, count(*) as n from w.t s group by s.g")
    changes = []
    stop = threading.Event()

    def run() -> None:
        for change in subscribe(module_db, "counts", stop=stop):
            changes.append(change)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    with psycopg.connect(module_db) as writer:
        writer.execute("insert into w.t values (2, 1)")
        time.sleep(0.3)
        assert [(c.diff, c.row) for c in changes] == [(1, (1, 1))]  # not yet committed
    deadline = time.monotonic() + 5
    while len(changes) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    conn.execute("delete from w.t where g = 1")
    deadline = time.monotonic() + 5
    while len(changes) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join()
    assert [(c.diff, c.row) for c in changes] == [(1, (1, 1)), (-1, (1, 1)), (1, (1, 2)),
                                                  (-1, (1, 2))]
    assert all(c.timestamp is not None for c in changes)


def test_subscribe_unknown_view(module_db: str) -> None:
    with pytest.raises(ViewNotFoundError, match="not deployed"):
        next(subscribe(module_db, "nope"))
