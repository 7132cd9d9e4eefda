"""The engine's PostgreSQL versions (streaming_views/versions.py).

The whole live-view suite runs on PostgreSQL 15 in CI as well (``TIDEMARK_TEST_PG=15``,
.ci/pg15-tests); here: the issue's view (a distinct count, whose maintenance used PostgreSQL 18's
``RETURNING WITH (OLD, NEW)`` once) deploys and stays equal on the session server's version, and
a landing server older than 15 is refused at deploy with both versions named.
"""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.errors import DeployError
from tests.streaming_views.conftest import assert_equal, deploy_text
from tests.support import create_database, start_test_server

DISTINCT = """select o.g, count(distinct o.v) as dv, sum(distinct o.v) as sv, count(*) as n
from vers.o o group by o.g"""


def test_distinct_count_deploys_and_stays_equal(module_db: str, conn: psycopg.Connection):
    conn.execute("create schema vers; create table vers.o (id int primary key, g int, v int)")
    conn.execute("insert into vers.o select i, i % 3, i % 5 from generate_series(1, 60) i")
    assert deploy_text(module_db, "vers_distinct", DISTINCT) == "created"
    conn.execute("update vers.o set v = v + 1 where id % 4 = 0")
    conn.execute("delete from vers.o where id % 7 = 0")
    conn.execute("insert into vers.o values (1000, 9, null), (1001, 9, 1)")
    assert_equal(conn, "vers_distinct", DISTINCT)


def test_landing_older_than_15_refused_at_deploy(tmp_path_factory: pytest.TempPathFactory):
    server = start_test_server(tmp_path_factory.mktemp("pg14-home"), major=14)
    try:
        dsn = create_database(server, "old_landing")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("create table t (id int primary key, g int)")
        with pytest.raises(DeployError, match=r"PostgreSQL 15 to 18; this landing server runs "
                                              r"PostgreSQL 14\.\d+"):
            deploy_text(dsn, "old", "select t.g, count(*) as n from public.t t group by t.g")
    finally:
        server.stop()
