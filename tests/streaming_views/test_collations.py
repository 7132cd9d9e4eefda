"""Issue 11, class 4: collations — a column's own collation is carried through the state, the
live view's columns have the query's collations, nondeterministic collations are refused."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import assert_equal, deploy_text

VIEW = """select t.g, min(t.h) as mn, max(t.h collate "POSIX") as mx, t.k,
       count(distinct t.h) as dh
from co.t t group by t.g, t.k"""


def collations(conn: psycopg.Connection, relation: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "select coalesce(c.collname, '-') from pg_attribute a left join pg_collation c on "
        "c.oid = a.attcollation where a.attrelid = %s::regclass and a.attnum > 0 "
        "order by a.attnum", (relation,)).fetchall()]


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    builtin = "pg_c_utf8" if conn.info.server_version >= 170000 else "POSIX"  # builtin: 17+
    conn.execute('create schema co; create table co.t (id int primary key, g int, '
                 f'h text collate "C.utf8", k text collate "{builtin}")')
    return module_db


def test_min_max_and_keys_keep_the_column_collation(db: str, conn: psycopg.Connection):
    assert deploy_text(db, "colls", VIEW) == "created"
    conn.execute("create temp view q_colls as " + VIEW)
    assert collations(conn, "live.colls") == collations(conn, "q_colls")
    conn.execute("insert into co.t values (1, 1, 'b', 'x'), (2, 1, 'B', 'x'), (3, 1, 'a', 'y'),"
                 " (4, 1, 'é', 'x'), (5, 2, null, null)")
    assert_equal(conn, "colls", VIEW)
    conn.execute("delete from co.t where h in ('a', 'é')")
    assert_equal(conn, "colls", VIEW)
    # a reader comparing the view's columns with the table's sees no collation conflict
    conn.execute("select 1 from live.colls v join co.t t on t.h = v.mn and t.k = v.k")


def test_nondeterministic_collation_refused(db: str, conn: psycopg.Connection) -> None:
    """The embedded server has no ICU: a nondeterministic collation is simulated in the catalog
    (as a superuser) to check the refusal. A real ICU case-insensitive collation (and an ICU
    ordering unlike "C") was checked by hand on Debian's PostgreSQL 15: bench/RESULTS.md."""
    conn.execute("drop collation if exists co.fake_ci")
    conn.execute("create collation co.fake_ci (provider = libc, locale = 'C')")
    conn.execute("update pg_collation set collisdeterministic = false "
                 "where collname = 'fake_ci'")
    conn.execute("alter table co.t add column ci text collate co.fake_ci")
    for text in ("select t.ci, count(*) as n from co.t t group by t.ci",
                 "select distinct t.ci from co.t t",
                 "select t.g, max(t.ci) as m from co.t t group by t.g"):
        with pytest.raises(UnsupportedViewError, match="nondeterministic") as info:
            deploy_text(db, "ci_view", text)
        assert info.value.line is not None
