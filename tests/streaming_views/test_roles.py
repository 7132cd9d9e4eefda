"""Least privilege: the app role deploys and maintains views; the reader role reads them."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views import verify
from tests.streaming_views.conftest import deploy_text
from tidemark.stack.bootstrap import grant_landing


def as_role(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


def test_app_role_deploys_writes_and_reader_reads(module_db: str) -> None:
    grant_landing(module_db)
    app = as_role(module_db, "tidemark_app")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("create schema shopx; create table shopx.t (id int primary key, g int)")
        conn.execute("insert into shopx.t select i, i % 3 from generate_series(1, 30) i")
    assert deploy_text(app, "by_g", "select s.g, count(*) as n from shopx.t s group by s.g") \
        == "created"
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("insert into shopx.t values (100, 7)")
        conn.execute("delete from shopx.t where g = 0")
    assert all(r.ok for r in verify(app))
    with psycopg.connect(as_role(module_db, "tidemark_reader"), autocommit=True) as conn:
        rows = dict(conn.execute("select g, n from live.by_g").fetchall())
        assert rows == {1: 10, 2: 10, 7: 1}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into shopx.t values (200, 1)")


def test_guard_installed_by_the_stack_protects_app_role_views(module_db: str) -> None:
    """grant_landing (the stack's bootstrap, as a superuser) installs the DDL guard, so a view
    the app role deployed is marked broken — not left failing writes — when a column it reads
    is renamed by the app role."""
    app = as_role(module_db, "tidemark_app")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("create table shopx.u (id int primary key, g int, v int)")
    assert deploy_text(app, "u_sum", "select s.g, sum(s.v) as sv from shopx.u s group by s.g") \
        == "created"
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("alter table shopx.u rename column v to w")
        conn.execute("insert into shopx.u values (1, 1, 1)")  # the write succeeds
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="u_sum"):
            conn.execute("select * from live.u_sum").fetchall()
