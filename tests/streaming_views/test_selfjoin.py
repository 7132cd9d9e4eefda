"""Self-joins (streaming_views/selfjoin.py): a table in several roles, inner and outer, with and
without aggregates; statements that change several roles at once, on a real server."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.errors import UnsupportedViewError
from tests.streaming_views.conftest import assert_equal, deploy_text

VIEWS = {
    "reports": "select m.name as manager, count(*) as reports, sum(e.salary) as payroll, "
               "max(e.salary) as top from sj.emp e join sj.emp m on m.id = e.manager_id "
               "group by m.name",
    "pairs": "select e.id, e.name, m.name as manager from sj.emp e join sj.emp m "
             "on m.id = e.manager_id where e.salary > m.salary - 50",
    "with_boss": "select e.dept, count(m.id) as with_manager, count(*) as n, "
                 "count(distinct m.dept) as manager_depts from sj.emp e left join sj.emp m "
                 "on m.id = e.manager_id group by e.dept",
    "three_roles": "select g.name as grand, count(*) as n from sj.emp e join sj.emp m on "
                   "m.id = e.manager_id join sj.emp g on g.id = m.manager_id group by g.name",
    "peers": "select a.dept, count(*) as pairs from sj.emp a join sj.emp b "
             "on b.dept = a.dept and b.id < a.id group by a.dept",
}


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("""
        create schema sj;
        create table sj.emp (id int primary key, name text, manager_id int, dept text,
                             salary numeric);
        insert into sj.emp select i, 'e' || i, case when i > 1 then i / 3 end,
                                  'd' || (i % 3), 100 + i from generate_series(1, 60) i;
    """)
    for name, text in VIEWS.items():
        deploy_text(module_db, name, text)
    return module_db


WRITES = [
    "insert into sj.emp values (100, 'new', 5, 'd1', 150)",
    # one row in both roles: a new manager with a report, in one statement
    "insert into sj.emp values (101, 'boss', 1, 'd2', 500), (102, 'sub', 101, 'd2', 90)",
    # one statement changing a row's report role (manager_id) and manager role (salary)
    "update sj.emp set manager_id = 2, salary = salary + 7 where id in (3, 4, 9)",
    # a row becomes its own manager (both roles in one row)
    "update sj.emp set manager_id = id where id = 10",
    # keys move: every report of 5 loses its manager, 6 gets new ones
    "update sj.emp set id = id + 1000 where id = 5",
    "update sj.emp set manager_id = 6 where manager_id = 1005 or manager_id is null",
    "delete from sj.emp where id in (2, 6)",
    "update sj.emp set dept = 'd9', name = name || 'x' where id % 4 = 0",
    "truncate sj.emp",
    "insert into sj.emp select i, 'f' || i, nullif(i % 7, 0), 'd' || (i % 2), i "
    "from generate_series(1, 30) i",
]


@pytest.mark.parametrize("step", range(len(WRITES)))
def test_each_write_keeps_every_self_join_exact(db: str, conn: psycopg.Connection,
                                                 step: int) -> None:
    conn.execute(WRITES[step])
    for name, text in VIEWS.items():
        assert_equal(conn, name, text)


def test_transaction_with_many_statements(db: str, conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("insert into sj.emp values (500, 'x', 3, 'd0', 1)")
        conn.execute("update sj.emp set manager_id = 500 where id in (1, 2, 3)")
        conn.execute("delete from sj.emp where id = 4")
        conn.execute("update sj.emp set id = 4 where id = 500")
    for name, text in VIEWS.items():
        assert_equal(conn, name, text)


def test_self_join_inside_union_all_is_refused(db: str) -> None:
    with pytest.raises(UnsupportedViewError) as info:
        deploy_text(db, "refused", "select u.id from (select a.id from sj.emp a join sj.emp b "
                    "on b.id = a.manager_id union all select c.id from sj.emp c) as u")
    assert "used twice in a UNION ALL branch" in info.value.construct
