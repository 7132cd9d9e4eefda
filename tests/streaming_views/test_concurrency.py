"""Concurrent writers at READ COMMITTED on the same groups never lose an update."""

from __future__ import annotations

import random
import threading

import psycopg
import pytest

from tests.streaming_views.conftest import assert_equal, deploy_text

SINGLE = """select c.g, count(*) as n, sum(c.v) as sv, min(c.v) as mn, max(c.v) as mx,
       count(distinct c.v) as dv from cc.t c group by c.g"""
JOINED = """select r.region, count(*) as n, sum(c.v) as sv, max(c.v) as mx
       from cc.t c join cc.dim r on r.k = c.g group by r.region"""


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema cc; create table cc.t (id int primary key, g int, v int);"
                 "create table cc.dim (k int primary key, region text)")
    conn.execute("insert into cc.dim select k, 'r' || (k % 2) from generate_series(0, 3) k")
    deploy_text(module_db, "single", SINGLE)
    deploy_text(module_db, "joined", JOINED)
    return module_db


def writer(dsn: str, worker: int, rounds: int, errors: list[BaseException]) -> None:
    rng = random.Random(worker)
    base = worker * 1000
    try:
        with psycopg.connect(dsn) as c:
            for i in range(rounds):
                try:
                    with c.transaction():
                        ids = sorted({base + rng.randrange(40) for _ in range(3)})
                        c.execute("insert into cc.t select unnest(%s::int[]), %s, %s "
                                  "on conflict (id) do update set v = excluded.v",
                                  (ids, rng.randrange(4), rng.randrange(100)))
                        c.execute("update cc.t set v = v + 1, g = (g + 1) %% 4 where id = %s",
                                  (base + rng.randrange(40),))
                        if i % 3 == 0:
                            c.execute("delete from cc.t where id = %s",
                                      (base + rng.randrange(40),))
                        if worker == 0 and i % 4 == 0:
                            c.execute("update cc.dim set region = %s where k = %s",
                                      (f"r{rng.randrange(3)}", rng.randrange(4)))
                except psycopg.errors.DeadlockDetected:
                    continue
    except BaseException as exc:
        errors.append(exc)


def test_concurrent_writers_on_same_groups(db: str, conn: psycopg.Connection) -> None:
    errors: list[BaseException] = []
    threads = [threading.Thread(target=writer, args=(db, w, 40, errors)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert conn.execute("select count(*) from cc.t").fetchone()[0] > 0
    assert_equal(conn, "single", SINGLE)
    assert_equal(conn, "joined", JOINED)




HOT = """select d.region, count(*) as n, sum(f.v) as sv, max(f.v) as mx
from hot.fact f join hot.dim d on d.k = f.k group by d.region"""


def hot_writer(dsn: str, worker: int, seconds: float, stats: dict[str, int],
               errors: list[BaseException]) -> None:
    """A writer of the benchmark's shape: per transaction, update one hot dimension row and
    insert a fact row for another one, in random order."""
    import time

    rng = random.Random(100 + worker)
    deadline = time.monotonic() + seconds
    try:
        with psycopg.connect(dsn) as c:
            while time.monotonic() < deadline:
                a, b = rng.randrange(5), rng.randrange(5)
                try:
                    with c.transaction():
                        if rng.random() < 0.5:
                            c.execute("update hot.dim set hits = hits + 1 where k = %s", (a,))
                            c.execute("insert into hot.fact (k, v) values (%s, %s)",
                                      (b, rng.randrange(100)))
                        else:
                            c.execute("insert into hot.fact (k, v) values (%s, %s)",
                                      (b, rng.randrange(100)))
                            c.execute("update hot.dim set hits = hits + 1 where k = %s", (a,))
                    stats["commits"] = stats.get("commits", 0) + 1
                except psycopg.errors.DeadlockDetected:
                    stats["deadlocks"] = stats.get("deadlocks", 0) + 1
    except BaseException as exc:
        errors.append(exc)


def test_hot_dimension_rows_no_deadlock(module_db: str, conn: psycopg.Connection) -> None:
    conn.execute("create schema hot; create table hot.dim (k int primary key, region text, "
                 "hits int default 0); create table hot.fact (id bigserial primary key, k int, "
                 "v int)")
    conn.execute("insert into hot.dim (k, region) select k, 'r' || (k % 2) "
                 "from generate_series(0, 4) k")
    deploy_text(module_db, "hot_view", HOT)
    stats: dict[str, int] = {}
    errors: list[BaseException] = []
    threads = [threading.Thread(target=hot_writer, args=(module_db, w, 4.0, stats, errors))
               for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert stats.get("deadlocks", 0) == 0, stats
    assert stats["commits"] > 20, stats
    assert_equal(conn, "hot_view", HOT)


def test_redeploy_under_writers_never_deadlocks(module_db: str, conn: psycopg.Connection,
                                                tmp_path) -> None:
    from typer.testing import CliRunner

    from tidemark.cli.main import app
    conn.execute("create schema if not exists hot")
    conn.execute("create table if not exists hot.dim (k int primary key, region text, "
                 "hits int default 0); create table if not exists hot.fact (id bigserial "
                 "primary key, k int, v int)")
    conn.execute("insert into hot.dim (k, region) select k, 'r' || (k % 2) "
                 "from generate_series(0, 4) k on conflict do nothing")
    views = tmp_path / "views"
    views.mkdir()
    stats: dict[str, int] = {}
    errors: list[BaseException] = []
    threads = [threading.Thread(target=hot_writer, args=(module_db, w, 6.0, stats, errors))
               for w in range(4)]
    for t in threads:
        t.start()
    runner = CliRunner()
    outputs = []
    for i in range(6):
        (views / "hot_view.sql").write_text(f"-- version {i}\n{HOT}\n")
        result = runner.invoke(app, ["views", "deploy", "--views-dir", str(views), "--dsn",
                                     module_db])
        outputs.append(result.output)
        assert result.exit_code == 0, (result.output, result.exception)
        assert "Traceback" not in result.output
    for t in threads:
        t.join()
    assert not errors, errors
    assert stats.get("deadlocks", 0) == 0, stats
    assert_equal(conn, "hot_view", HOT)


def test_prepare_transaction_after_base_write(db: str, conn: psycopg.Connection) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("begin")
        c.execute("insert into cc.t values (777001, 1, 5)")
        c.execute("update cc.dim set region = region where k = 1")
        c.execute("prepare transaction 'tm_i11_test'")  # was: cannot PREPARE ... NOTIFY
        c.execute("commit prepared 'tm_i11_test'")
    assert_equal(conn, "single", SINGLE)
    assert_equal(conn, "joined", JOINED)


def test_repeatable_read_writers_on_join_view(db: str, conn: psycopg.Connection) -> None:
    """REPEATABLE READ writers are maintained exactly; a writer whose snapshot is older than
    another writer's change to the same view gets a serialization failure (retry as usual)."""
    with psycopg.connect(db) as a, psycopg.connect(db) as b:
        a.execute("set transaction isolation level repeatable read")
        a.execute("select 1 from cc.t limit 1")  # snapshot taken
        b.execute("insert into cc.t values (99990, 1, 1)")
        b.commit()
        a.execute("insert into cc.t values (99991, 2, 2)")
        with pytest.raises(psycopg.errors.SerializationFailure):
            a.commit()
        a.execute("set transaction isolation level repeatable read")
        a.execute("insert into cc.t values (99991, 2, 2)")
        a.commit()
    assert_equal(conn, "single", SINGLE)
    assert_equal(conn, "joined", JOINED)
