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
    try:  # the subscription ends whatever fails: a leftover one fails the next tests
        _wait(changes, bool)  # the snapshot: subscribed
        with psycopg.connect(module_db) as writer:
            writer.execute("insert into w.t values (2, 1)")
            time.sleep(0.3)
            assert [(c.diff, c.row) for c in changes] == [(1, (1, 1))]  # not yet committed
        _wait(changes, lambda c: len(c) >= 3)
        conn.execute("delete from w.t where g = 1")
        _wait(changes, lambda c: len(c) >= 4)
    finally:
        stop.set()
        thread.join()
    assert [(c.diff, c.row) for c in changes] == [(1, (1, 1)), (-1, (1, 1)), (1, (1, 2)),
                                                  (-1, (1, 2))]
    assert all(c.timestamp is not None for c in changes)


def test_subscribe_unknown_view(module_db: str) -> None:
    with pytest.raises(ViewNotFoundError, match="not deployed"):
        next(subscribe(module_db, "nope"))


def _collect(dsn: str, name: str, stop: threading.Event, out: list) -> threading.Thread:
    from streaming_views.subscribe import subscribe_batches

    def run() -> None:
        for item in subscribe_batches(dsn, name, stop=stop, poll_s=0.02):
            out.append(item)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait(out: list, predicate, timeout: float = 60.0) -> None:
    """Until ``predicate(out)`` holds, or ``timeout`` s (then the caller's assertion says what
    is missing): the subscriber's thread runs when a loaded machine lets it."""
    deadline = time.monotonic() + timeout
    while not predicate(out) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_batches_are_the_commits_deltas_with_progress(module_db: str,
                                                      conn: psycopg.Connection) -> None:
    from streaming_views.subscribe import Batch, Progress
    conn.execute("create schema b; create table b.t (id int primary key, g int, v numeric)")
    conn.execute("insert into b.t select i, i % 100, i from generate_series(1, 5000) i")
    deploy_text(module_db, "sums", "select s.g, sum(s.v) as total from b.t s group by s.g")
    stop, out = threading.Event(), []
    thread = _collect(module_db, "sums", stop, out)
    _wait(out, lambda o: any(isinstance(i, Progress) for i in o))
    first = out[0]
    assert isinstance(first, Batch) and len(first.changes) == 100  # the snapshot
    conn.execute("update b.t set v = v + 1 where id = 7")  # one group changes
    conn.execute("update b.t set v = 118 - v where id in (9, 109)")  # swapped: same sum
    conn.execute("delete from b.t where g = 5")  # a group disappears
    # Until progress reaches the third commit: the subscriber's polls may see two commits at
    # once (one Progress for both), so counting four Progress items waited out the timeout.
    _wait(out, lambda o: any(isinstance(i, Progress) and i.seq >= first.seq + 3 for i in o))
    stop.set()
    thread.join()
    batches = [i for i in out[1:] if isinstance(i, Batch)]
    progress = [i.seq for i in out if isinstance(i, Progress)]
    assert progress == sorted(progress) and progress[-1] == first.seq + 3
    assert [b.seq for b in batches] == [first.seq + 1, first.seq + 3], batches[:3]  # +2: none
    old = conn.execute("select 7 % 100, sum(v) - 1 from b.t where g = 7").fetchone()
    assert batches[0].changes == [((7, old[1]), -1), ((7, old[1] + 1), 1)]
    assert [d for _, d in batches[1].changes] == [-1] and batches[1].changes[0][0][0] == 5


def test_triggers_only_while_subscribed(module_db: str, conn: psycopg.Connection) -> None:
    from streaming_views.subscribe import subscribe_batches
    conn.execute("create schema c; create table c.t (id int primary key, g int)")
    deploy_text(module_db, "gs", "select s.g, count(*) as n from c.t s group by s.g")
    count = ("select count(*) from pg_trigger t join tidemark.views v on t.tgrelid = "
             "('tidemark_state.' || quote_ident(v.suffix))::regclass where v.name = 'gs' "
             "and t.tgname like '%\\_sub\\_%'")
    assert conn.execute(count).fetchone()[0] == 0
    items = subscribe_batches(module_db, "gs")
    next(items)
    assert conn.execute(count).fetchone()[0] == 3
    items.close()
    assert conn.execute(count).fetchone()[0] == 0
    assert conn.execute("select count(*) from tidemark.live_subscriptions").fetchone()[0] == 0


def test_two_subscribers_and_a_view_over_a_view(module_db: str,
                                                conn: psycopg.Connection) -> None:
    from streaming_views.subscribe import Batch
    conn.execute("create schema d; create table d.t (id int primary key, g int)")
    deploy_text(module_db, "dg", "select s.g, count(*) as n from d.t s group by s.g")
    deploy_text(module_db, "dn", "select x.n, count(*) as groups from live.dg x group by x.n")
    stop, one, two = threading.Event(), [], []
    threads = [_collect(module_db, "dn", stop, one), _collect(module_db, "dn", stop, two)]
    _wait(one, bool)
    _wait(two, bool)
    conn.execute("insert into d.t values (1, 1), (2, 1), (3, 2)")
    _wait(one, lambda o: len([i for i in o if isinstance(i, Batch)]) >= 2)
    _wait(two, lambda o: len([i for i in o if isinstance(i, Batch)]) >= 2)
    stop.set()
    for thread in threads:
        thread.join()
    for out in (one, two):
        batches = [i for i in out if isinstance(i, Batch)]
        assert batches[0].changes == []  # empty snapshot
        assert sorted(batches[1].changes) == [((1, 1), 1), ((2, 1), 1)]
    assert conn.execute("select count(*) from tidemark.live_sub_log").fetchone()[0] == 0


def test_bag_multiplicities_redeploy_and_no_rebuild_on_leaving(module_db: str,
                                                               conn: psycopg.Connection) -> None:
    from streaming_views.subscribe import Batch, SubscriptionEnded, subscribe_batches
    conn.execute("create schema e; create table e.t (id int primary key, g int)")
    deploy_text(module_db, "bag", "select s.g from e.t s")
    deploy_text(module_db, "bag_n", "select b.g, count(*) as n from live.bag b group by b.g")
    seq = "select seq from tidemark.live_changes where name = 'bag'"
    items = subscribe_batches(module_db, "bag", poll_s=0.01)
    assert next(items) == Batch(conn.execute(seq).fetchone()[0], [])
    next(items)  # progress
    conn.execute("insert into e.t values (1, 7), (2, 7), (3, 8)")
    batch = next(items)
    assert isinstance(batch, Batch) and sorted(batch.changes) == [((7,), 2), ((8,), 1)]
    before = conn.execute(seq).fetchone()[0]
    items.close()  # the guard must not take dropping the triggers for a change of the table
    assert conn.execute(seq).fetchone()[0] == before
    items = subscribe_batches(module_db, "bag", poll_s=0.01)
    next(items)
    next(items)
    deploy_text(module_db, "bag", "select s.g, s.id from e.t s")
    with pytest.raises(SubscriptionEnded, match="redeployed"):
        next(items)
