"""Least privilege: the app role deploys and maintains views; the reader role reads them."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from streaming_views import verify
from streaming_views.status import list_views
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


def test_app_role_stacks_views_and_subscribes_reader_gets_a_clear_error(module_db: str) -> None:
    """Views over views and subscriptions work for the least-privileged deploying role."""
    from streaming_views.errors import DeployError
    from streaming_views.subscribe import Batch, subscribe_batches
    from tests.streaming_views.conftest import assert_equal
    grant_landing(module_db)
    app = as_role(module_db, "tidemark_app")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("create table shopx.s (id int primary key, g int)")
    deploy_text(app, "s_g", "select s.g, count(*) as n from shopx.s s group by s.g")
    outer = "select x.n, count(*) as groups from live.s_g x group by x.n"
    deploy_text(app, "s_n", outer)
    items = subscribe_batches(app, "s_n", poll_s=0.01)
    snapshot = next(items)
    assert isinstance(snapshot, Batch) and snapshot.changes == []
    next(items)  # progress
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("insert into shopx.s values (1, 1), (2, 1), (3, 2)")
        batch = next(items)
        assert isinstance(batch, Batch) and sorted(batch.changes) == [((1, 1), 1), ((2, 1), 1)]
        assert_equal(conn, "s_n", outer)
    items.close()
    with pytest.raises(DeployError, match="cannot subscribe to live.s_n"):
        next(subscribe_batches(as_role(module_db, "tidemark_reader"), "s_n"))


def _app_table(module_db: str, schema: str, groups: int, rows: int) -> str:
    """The landing grants, and ``<schema>.t (id, g)`` with ``rows`` rows in ``groups`` groups
    made by tidemark_app; returns tidemark_app's URL."""
    grant_landing(module_db)
    app = as_role(module_db, "tidemark_app")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema if not exists {s}; create table if not exists {t}"
                             " (id int primary key, g int)").format(
            s=sql.Identifier(schema), t=sql.Identifier(schema, "t")))
        conn.execute(sql.SQL("insert into {} select i, i %% %s from generate_series(1, %s) i"
                             ).format(sql.Identifier(schema, "t")), (groups, rows))
    return app


def test_reader_sees_live_views_not_engine_state(module_db: str) -> None:
    """A BI tool's schema sync as the reader role offers ``live.<name>`` (with its file's
    description as the view's comment), not the engine's state tables and change logs, which
    the reader cannot read either (a live view reads them with its owner's rights)."""
    app = _app_table(module_db, "shopy", 3, 9)
    deploy_text(app, "bi_sync", "-- Rows per g.\nselect s.g, count(*) as n from shopy.t s "
                                "group by s.g")
    grant_landing(module_db)  # `tidemark up` again: does not give the state back
    with psycopg.connect(as_role(module_db, "tidemark_reader"), autocommit=True) as conn:
        tables = conn.execute("select table_schema || '.' || table_name from "
                              "information_schema.tables where table_schema like 'tidemark%'"
                              " or table_schema = 'live'").fetchall()
        assert not [t for (t,) in tables if t.startswith("tidemark_state.")], tables
        assert ("live.bi_sync",) in tables
        assert conn.execute("select obj_description('live.bi_sync'::regclass, 'pg_class')"
                            ).fetchone()[0].startswith("Rows per g.")
        assert sorted(conn.execute("select g, n from live.bi_sync").fetchall()) == [
            (0, 3), (1, 3), (2, 3)]
        suffix = conn.execute("select suffix from tidemark.views where name = 'bi_sync'"
                              ).fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("select * from {}").format(
                sql.Identifier("tidemark_state", suffix)))


def test_reader_reads_the_counters_not_the_samples_nor_samples_itself(module_db: str) -> None:
    """Engine 26: the reader reads ``tidemark.live_changes`` (``seq``, ``changed_at``), not the
    sampler's ``tidemark.live_samples``, and may not run the sampler (it writes); ``views list``
    as the reader still works (no sample taken). The app role's list samples."""
    app = _app_table(module_db, "shopc", 3, 9)
    deploy_text(app, "bi_counters", "select s.g, count(*) as n from shopc.t s group by s.g")
    grant_landing(module_db)
    assert [v.name for v in list_views(app) if v.name == "bi_counters"] == ["bi_counters"]
    reader_url = as_role(module_db, "tidemark_reader")
    with psycopg.connect(reader_url, autocommit=True) as conn:
        assert conn.execute("select seq from tidemark.live_changes where name = 'bi_counters'"
                            ).fetchone() is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from tidemark.live_samples")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select tidemark.live_note_changes()")
    assert "bi_counters" in [v.name for v in list_views(reader_url)]


def test_superuser_redeploy_of_app_view_stays_readable(module_db: str) -> None:
    """``tidemark views deploy`` connected as the superuser redeploys a view the stack built as
    tidemark_app: the view keeps its owner, whose rights read the new state — readers (a BI
    tool) must not get ``permission denied for table <state>``."""
    app = _app_table(module_db, "shopz", 2, 6)
    text = "select s.g, count(*) as n from shopz.t s group by s.g"
    assert deploy_text(app, "owned", text) == "created"
    assert deploy_text(module_db, "owned", f"-- changed\n{text}") == "replaced"  # superuser
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("insert into shopz.t values (7, 1)")
    for role in ("tidemark_reader", "tidemark_app"):
        with psycopg.connect(as_role(module_db, role), autocommit=True) as conn:
            assert sorted(conn.execute("select g, n from live.owned").fetchall()) == [
                (0, 3), (1, 4)], role


def test_app_role_deploy_over_a_table_it_may_not_use_says_what_to_grant(
        module_db: str) -> None:
    # A view over a table of the user's own (public.x or a new schema, created as a superuser)
    # failed with a bare "permission denied for table targets" / "... for schema ...": no
    # view, no right, no way forward.
    from streaming_views.errors import DeployError
    grant_landing(module_db)
    app = as_role(module_db, "tidemark_app")
    with psycopg.connect(module_db, autocommit=True) as conn:  # the superuser
        conn.execute("create table public.targets (store_id int primary key, target int)")
        conn.execute("create schema plans; create table plans.goals (id int primary key, g int)")
        conn.execute("insert into public.targets values (1, 10), (2, 20)")
    text = ("select t.store_id, sum(t.target) as total from public.targets t "
            "group by t.store_id")
    with pytest.raises(DeployError) as caught:
        deploy_text(app, "store_targets", text)
    message = str(caught.value)
    assert "cannot deploy live.store_targets: role tidemark_app lacks SELECT, INSERT, UPDATE, " \
           "DELETE, TRIGGER on \"public\".\"targets\"" in message
    grants = message.split("(`tidemark db psql`): ")[1].split(" Then deploy again.")[0]
    assert grants == ('grant select, insert, update, delete, trigger on "public"."targets" to '
                      '"tidemark_app";')
    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute(grants)  # what the message says to run, as the owner
    assert deploy_text(app, "store_targets", text) == "created"
    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute("insert into public.targets values (3, 5)")  # another writer: maintained
    assert all(r.ok for r in verify(app, "store_targets"))
    with pytest.raises(DeployError, match=r'lacks USAGE on schema "plans" and SELECT, INSERT, '
                                          r'UPDATE, DELETE, TRIGGER on "plans"\."goals".*grant '
                                          r'usage on schema "plans" to "tidemark_app";'):
        deploy_text(app, "goals", "select p.g, count(*) as n from plans.goals p group by p.g")
