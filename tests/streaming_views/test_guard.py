"""Issue 11, class 5: DDL on base tables. Never a silently stale view, never a failing source
write: with the DDL guard (an event trigger, installed by a superuser) a change that breaks a
view drops its triggers and marks it broken — reading it raises an error naming the view and the
fix — and ``deploy`` repairs it; without the guard, ``deploy``/``verify``/``list`` find it."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from streaming_views import deploy, verify
from streaming_views.status import list_views
from tests.streaming_views.conftest import assert_equal, write_views
from tests.support import create_database
from tidemark.stack.bootstrap import grant_landing
from tidemark.stack.embedded import EmbeddedServer

VIEW = "select t.g, count(*) as n, sum(t.v) as sv from gd.t t group by t.g\n"
JOIN = ("select d.label, count(*) as n from gd.t t join gd.dim d on d.k = t.g "
        "group by d.label\n")


def actions(dsn: str, directory: Path) -> dict[str, str]:
    return {r.name: r.action for r in deploy(dsn, directory)}


def make_tables(conn: psycopg.Connection) -> None:
    conn.execute("drop schema if exists gd cascade; create schema gd; "
                 "create table gd.t (id int primary key, g int, v int, note text); "
                 "create table gd.dim (k int primary key, label text)")
    conn.execute("insert into gd.t select i, i % 3, i, 'n' from generate_series(1, 30) i; "
                 "insert into gd.dim values (0, 'zero'), (1, 'one'), (2, 'two')")


def test_drop_and_recreate_base_table(module_db: str, conn: psycopg.Connection,
                                      tmp_path: Path) -> None:
    make_tables(conn)
    views = write_views(tmp_path / "v", per_g=VIEW, joined=JOIN)
    assert actions(module_db, views) == {"per_g": "created", "joined": "created"}
    conn.execute("drop table gd.t")  # the DDL itself succeeds
    conn.execute("create table gd.t (id int primary key, g int, v int, note text)")
    conn.execute("insert into gd.t values (1, 1, 10, 'x')")  # the write succeeds
    for name in ("per_g", "joined"):
        with pytest.raises(psycopg.Error, match=rf"(?s)live view {name} .*tidemark views deploy"):
            conn.execute(f"select * from live.{name}").fetchall()
    status = {s.name: s.status for s in list_views(module_db)}
    assert status["per_g"].startswith("broken") and "gd.t" in status["per_g"]
    assert not verify(module_db, "per_g")[0].ok
    assert actions(module_db, views) == {"per_g": "repaired", "joined": "repaired"}
    assert_equal(conn, "per_g", VIEW)
    assert_equal(conn, "joined", JOIN)
    conn.execute("insert into gd.t values (2, 1, 5, 'y')")
    assert_equal(conn, "per_g", VIEW)
    assert actions(module_db, views) == {"per_g": "unchanged", "joined": "unchanged"}


def test_rename_and_drop_of_used_columns(module_db: str, conn: psycopg.Connection,
                                         tmp_path: Path) -> None:
    make_tables(conn)
    views = write_views(tmp_path / "c", per_g=VIEW, joined=JOIN)
    deploy(module_db, views)
    conn.execute("alter table gd.t rename column note to remark")  # unused: nothing breaks
    conn.execute("insert into gd.t values (100, 1, 1, 'r')")
    assert_equal(conn, "per_g", VIEW)
    conn.execute("alter table gd.t rename column v to amount")
    conn.execute("insert into gd.t values (101, 1, 1, 'r')")  # was: fails inside the trigger
    conn.execute("update gd.dim set label = 'uno' where k = 1")
    with pytest.raises(psycopg.Error, match="(?s)live view per_g .*column"):
        conn.execute("select * from live.per_g").fetchall()
    assert_equal(conn, "joined", JOIN)  # joined reads t.g only: untouched
    conn.execute("alter table gd.dim drop column label")
    conn.execute("insert into gd.dim values (9)")
    with pytest.raises(psycopg.Error, match="live view joined"):
        conn.execute("select * from live.joined").fetchall()
    fixed = write_views(tmp_path / "c", per_g=VIEW.replace("t.v", "t.amount"), joined=JOIN)
    with pytest.raises(Exception, match="label"):
        deploy(module_db, fixed)  # joined's file still reads d.label: a clear error
    write_views(tmp_path / "c", per_g=VIEW.replace("t.v", "t.amount"))
    result = {r.name: r.action for r in deploy(module_db, fixed, prune=True)}
    assert result["per_g"] == "replaced" and result["joined"] == "dropped"
    assert_equal(conn, "per_g", VIEW.replace("t.v", "t.amount"))


def test_without_guard_deploy_and_verify_detect(pg: EmbeddedServer, tmp_path: Path) -> None:
    """As the least-privileged app role (no event trigger possible) the guard is absent."""
    admin = create_database(pg, "test_guard_app_role")
    grant_landing(admin)  # installs the guard (as the stack does): remove it for this test
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("drop event trigger tidemark_live_ddl_end; "
                  "drop event trigger tidemark_live_sql_drop; "
                  "drop event trigger tidemark_live_rewrite")
    app = admin.replace("postgres@", "tidemark_app@", 1)
    with psycopg.connect(app, autocommit=True) as c:
        c.execute("create schema if not exists ng; drop table if exists ng.t; "
                  "create table ng.t (id int primary key, g int)")
        c.execute("insert into ng.t values (1, 1)")
    views = write_views(tmp_path / "n",
                        ng_view="select t.g, count(*) as n from ng.t t group by t.g\n")
    assert actions(app, views) == {"ng_view": "created"}
    with psycopg.connect(app, autocommit=True) as c:
        c.execute("drop table ng.t; create table ng.t (id int primary key, g int)")
        c.execute("insert into ng.t values (5, 5)")
    [result] = verify(app, "ng_view")
    assert not result.ok and "ng.t" in (result.problem or "")
    assert actions(app, views) == {"ng_view": "repaired"}
    assert verify(app, "ng_view")[0].ok
    with psycopg.connect(admin, autocommit=True) as c:
        # (the stack's tidemark_keep_private, which is not the guard, stays)
        assert c.execute("select count(*) from pg_event_trigger"
                         " where evtname like 'tidemark_live%'").fetchone()[0] == 0
