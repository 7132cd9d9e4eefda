"""Issue 11, class 4 on a PostgreSQL built with ICU: linguistic and nondeterministic collations.

The embedded server has no ICU (and this machine no libc locale but C/C.utf8), so these tests
run Debian's PostgreSQL 15 server binaries (``/usr/lib/postgresql/15/bin``, ICU 72) through the
same :class:`EmbeddedServer` start-up; they are skipped where those binaries are not installed
(``apt-get install postgresql-15`` to run them). On ICU: ``min``/``max``, group keys, DISTINCT,
comparisons and distinct aggregates keep the column's collation (``'a' < 'B'`` under
``en-x-icu``, unlike "C"), and nondeterministic (case-insensitive) collations are refused at
deploy with their position.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from streaming_views.errors import UnsupportedViewError
from tests.pgversions import DEBIAN
from tests.streaming_views.conftest import assert_equal, deploy_text
from tests.support import create_database, start_test_server

PG15 = DEBIAN[15]

BY_GROUP = """select t.g, min(t.h) as mn, max(t.h) as mx, count(distinct t.h) as dh,
       max(t.k) as mk, count(*) as n
from icu.t t group by t.g"""
BY_KEY = """select t.h, t.k, count(*) as n, min(t.id) as first_id
from icu.t t where t.h >= 'b' group by t.h, t.k"""
DISTINCT = "select distinct t.k from icu.t t"
JOINED = """select d.label, min(t.h) as mn, max(d.label) as ml, count(*) as n
from icu.t t join icu.d d on d.g = t.g group by d.label"""
VIEWS = {"icu_by_group": BY_GROUP, "icu_by_key": BY_KEY, "icu_distinct": DISTINCT,
         "icu_joined": JOINED}


@pytest.fixture(scope="module")
def icu_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database on a PostgreSQL 15 server built with ICU (Debian's binaries)."""
    if not (PG15 / "postgres").exists():
        pytest.skip(f"needs Debian's PostgreSQL 15 server binaries in {PG15} (ICU)")
    server = start_test_server(tmp_path_factory.mktemp("pg15-home"), major=15)
    try:
        dsn = create_database(server, "test_icu")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute('create schema icu; create table icu.t (id int primary key, g int,'
                         ' h text collate "en-x-icu", k text collate "und-x-icu"); '
                         'create table icu.d (g int primary key, label text '
                         'collate "de-x-icu")')
        yield dsn
    finally:
        server.stop()


@pytest.fixture(scope="module")
def conn(icu_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(icu_db, autocommit=True) as connection:
        yield connection


def check(conn: psycopg.Connection) -> None:
    for name, text in VIEWS.items():
        assert_equal(conn, name, text)


def test_linguistic_collations_kept_through_writes(icu_db: str, conn: psycopg.Connection):
    assert conn.info.server_version // 10000 == 15
    for name, text in VIEWS.items():
        assert deploy_text(icu_db, name, text) == "created"
    conn.execute("insert into icu.d values (1, 'Äpfel'), (2, 'apfel'), (3, 'Zebra')")
    conn.execute("insert into icu.t values (1, 1, 'B', 'b'), (2, 1, 'a', 'A'), "
                 "(3, 1, 'Z', 'z'), (4, 1, 'é', 'É'), (5, 2, 'b', 'B'), (6, 2, 'e', 'e'), "
                 "(7, 3, 'A', 'a'), (8, 3, null, null)")
    check(conn)
    # under en-x-icu 'a' < 'B' < 'Z' (under "C" 'B' < 'Z' < 'a'): the view follows ICU
    assert conn.execute("select mn, mx from live.icu_by_group where g = 1").fetchone() \
        == ("a", "Z")
    conn.execute("delete from icu.t where id = 2")  # the minimum leaves: recompute under ICU
    check(conn)
    assert conn.execute("select mn from live.icu_by_group where g = 1").fetchone()[0] == "B"
    conn.execute("update icu.t set h = 'ä' where id = 3")  # the maximum leaves
    check(conn)
    conn.execute("update icu.d set label = 'zebra' where g = 3")
    conn.execute("insert into icu.t select i, i % 3 + 1, chr(65 + i % 58), chr(97 + i % 26) "
                 "from generate_series(10, 200) i")
    check(conn)
    conn.execute("delete from icu.t where id % 2 = 0")
    check(conn)
    with conn.transaction():
        conn.execute("merge into icu.t t using (values (11, 'Ö'), (1000, 'ö')) s(id, h) "
                     "on t.id = s.id when matched then update set h = s.h "
                     "when not matched then insert values (s.id, 1, s.h, s.h)")
    check(conn)


def test_nondeterministic_icu_collation_refused(icu_db: str, conn: psycopg.Connection):
    conn.execute("create collation if not exists icu.ci (provider = icu, "
                 "locale = 'und-u-ks-level2', deterministic = false)")
    conn.execute("alter table icu.t add column if not exists ci text collate icu.ci")
    conn.execute("update icu.t set ci = h")
    for text in ("select t.ci, count(*) as n from icu.t t group by t.ci",
                 "select distinct t.ci from icu.t t",
                 "select t.g, max(t.ci) as m from icu.t t group by t.g",
                 "select t.g, count(distinct t.ci) as m from icu.t t group by t.g",
                 "select t.h collate icu.ci as hc, count(*) as n from icu.t t group by 1"):
        with pytest.raises(UnsupportedViewError, match="nondeterministic") as info:
            deploy_text(icu_db, "ci_view", text)
        assert info.value.line is not None and info.value.column is not None, str(info.value)
        assert "Rewrite:" in str(info.value), str(info.value)
    assert conn.execute("select to_regclass('live.ci_view')").fetchone()[0] is None
    # a nondeterministic column only filtered on, or aggregated by count, is exact
    text = "select t.g, count(t.ci) as n from icu.t t where t.ci = 'B' group by t.g"
    assert deploy_text(icu_db, "ci_filter", text) == "created"
    conn.execute("insert into icu.t (id, g, h, k, ci) values (5000, 1, 'x', 'x', 'b'), "
                 "(5001, 2, 'y', 'y', 'B'), (5002, 2, 'z', 'z', 'c')")
    assert_equal(conn, "ci_filter", text)
    assert conn.execute("select sum(n) from live.ci_filter").fetchone()[0] >= 2
