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


def test_repeatable_read_writer_refused_on_join_view(db: str) -> None:
    with psycopg.connect(db) as c:
        c.execute("set transaction isolation level repeatable read")
        with pytest.raises(psycopg.errors.RaiseException, match="READ COMMITTED"):
            c.execute("insert into cc.t values (99999, 1, 1)")
