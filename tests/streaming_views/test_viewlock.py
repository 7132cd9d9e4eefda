"""Engine 26's view lock and ``tidemark.live_changes`` contract (``streaming_views.lockorder``,
``streaming_views.sublog``, ``streaming_views.changes``): commits of one view wait on a
transaction-level advisory lock (class 7411302); a REPEATABLE READ commit whose snapshot
predates another commit of the view fails with 40001 even when that commit wrote no state row;
``seq`` advances once per subscribed commit; ``changed_at`` is sampled from the statistics."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from streaming_views.lockorder import VIEW_LOCK_CLASS
from streaming_views.status import list_views
from tests.streaming_views.conftest import assert_equal, deploy_text

JOIN = ("select d.region, count(*) as n, sum(f.v) as total from vl.f f join vl.d d "
        "on d.k = f.k group by d.region")
BAG = "select t.g from vl.t t"


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema vl; create table vl.d (k int primary key, region text); "
                 "create table vl.f (id int primary key, k int, v int); "
                 "create table vl.t (id int primary key, g int)")
    conn.execute("insert into vl.d select k, 'r' || (k % 2) from generate_series(0, 3) k")
    assert deploy_text(module_db, "vl_join", JOIN) == "created"
    assert deploy_text(module_db, "vl_bag", BAG) == "created"
    return module_db


def _waiting_for_advisory(conn: psycopg.Connection, name: str) -> bool:
    return bool(conn.execute(
        "select exists (select from pg_locks where locktype = 'advisory' and not granted "
        "and classid = %s and objid = (hashtext(%s)::bigint & 4294967295)::oid "
        "and objsubid = 2)", (VIEW_LOCK_CLASS, name)).fetchone()[0])


def test_commits_of_a_view_wait_on_its_advisory_lock(db: str, conn: psycopg.Connection) -> None:
    """A commit applied (SET CONSTRAINTS ALL IMMEDIATE) holds the view's advisory lock until
    it ends; another writer's commit waits for it, then sees its changes."""
    done = threading.Event()
    with psycopg.connect(db) as a:
        a.execute("insert into vl.f values (1, 1, 10)")
        a.execute("set constraints all immediate")  # the apply runs now, the lock is held
        held = a.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and granted and "
            "pid = pg_backend_pid() and classid = %s and objid = "
            "(hashtext('vl_join')::bigint & 4294967295)::oid", (VIEW_LOCK_CLASS,)).fetchone()[0]
        assert held == 1

        def other() -> None:
            with psycopg.connect(db, autocommit=True) as b:
                b.execute("insert into vl.d values (10, 'r1')")
                b.execute("insert into vl.f values (2, 10, 5)")
            done.set()
        thread = threading.Thread(target=other)
        thread.start()
        deadline = time.monotonic() + 30
        while not _waiting_for_advisory(conn, "vl_join") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _waiting_for_advisory(conn, "vl_join")
        assert not done.is_set()
        a.commit()
    thread.join()
    assert_equal(conn, "vl_join", JOIN)


def test_repeatable_read_commit_after_a_commit_that_wrote_no_state_row(
        db: str, conn: psycopg.Connection) -> None:
    """The other commit inserts a dimension row no fact matches yet: it writes no state row, so
    no row version tells a REPEATABLE READ writer (snapshot taken before it) that the view
    moved. Its fact matching that row would be lost; the holder sequence fails it instead."""
    with psycopg.connect(db) as a:
        a.execute("set transaction isolation level repeatable read")
        a.execute("select 1 from vl.f limit 1")  # snapshot taken
        conn.execute("insert into vl.d values (20, 'r20')")  # no fact: no state row written
        a.execute("insert into vl.f values (20, 20, 7)")
        with pytest.raises(psycopg.errors.SerializationFailure):
            a.commit()
        a.execute("set transaction isolation level repeatable read")  # the retry
        a.execute("insert into vl.f values (20, 20, 7)")
        a.commit()
    assert_equal(conn, "vl_join", JOIN)
    assert conn.execute("select n from live.vl_join where region = 'r20'").fetchone() == (1,)


def test_a_commit_nobody_subscribes_to_leaves_seq(db: str, conn: psycopg.Connection) -> None:
    """Engine 26: ``seq`` is the subscription's clock; without a subscriber no commit moves it
    (main: every apply advanced it)."""
    seq = "select seq from tidemark.live_changes where name = 'vl_bag'"
    start = conn.execute(seq).fetchone()[0]
    conn.execute("insert into vl.t values (1, 1)")
    conn.execute("insert into vl.t values (2, 1)")
    assert conn.execute(seq).fetchone()[0] == start


def test_a_subscribed_commit_is_one_batch_at_one_seq(db: str, conn: psycopg.Connection) -> None:
    """A commit whose view is applied twice (SET CONSTRAINTS ALL IMMEDIATE, then more rows) is
    one batch at one ``seq`` (main: one per apply, two seqs for one commit); a savepoint rolled
    back takes its advance back; a rolled-back commit leaves no gap."""
    from streaming_views.subscribe import Batch, subscribe_batches
    seq = "select seq from tidemark.live_changes where name = 'vl_bag'"
    conn.execute("delete from vl.t where id between 10 and 19")
    items = subscribe_batches(db, "vl_bag", poll_s=0.01)
    try:
        snapshot = next(items)
        assert isinstance(snapshot, Batch)
        start = snapshot.seq
        next(items)  # progress
        with psycopg.connect(db) as w:
            w.execute("insert into vl.t values (13, 3)")
            w.execute("set constraints all immediate")
            w.execute("set constraints all deferred")
            w.execute("savepoint s")
            w.execute("insert into vl.t values (14, 4)")
            w.execute("set constraints all immediate")
            w.execute("rollback to savepoint s")
            w.execute("insert into vl.t values (15, 5)")
        batch = next(items)
        assert isinstance(batch, Batch) and batch.seq == start + 1
        assert sorted(batch.changes) == [((3,), 1), ((5,), 1)]
        assert conn.execute(seq).fetchone()[0] == start + 1
        conn.execute("begin; insert into vl.t values (16, 6); rollback")
        conn.execute("insert into vl.t values (17, 7)")
        while not isinstance(batch := next(items), Batch):
            pass
        assert batch == Batch(start + 2, [((7,), 1)])
    finally:
        items.close()
    assert_equal(conn, "vl_bag", BAG)


def test_changed_at_is_sampled_from_the_state_statistics(db: str,
                                                         conn: psycopg.Connection) -> None:
    """``views list`` samples the state's write count: a commit reported to the statistics
    moves ``changed_at``; no commit leaves it."""
    def changed() -> object:
        return next(v.last_change_at for v in list_views(db) if v.name == "vl_bag")
    before = changed()
    assert before is not None
    assert changed() == before  # nothing written
    conn.execute("insert into vl.t values (100, 100)")
    conn.execute("select pg_stat_force_next_flush()")  # report at once, not within seconds
    conn.execute("select 1")
    after = changed()
    assert after is not None and after > before
    assert changed() == after
