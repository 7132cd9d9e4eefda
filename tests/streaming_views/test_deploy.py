"""Deploy: create, unchanged, blue/green replace under readers, prune, catalog, list, verify."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from streaming_views import deploy, rebuild, verify
from streaming_views.errors import DeployError, UnsupportedViewError, ViewDefinitionError
from streaming_views.status import list_views
from tests.streaming_views.conftest import write_views

V1 = ("-- per group\n-- @keys: g\n"
      "select d.g, count(*) as n, sum(d.v) as total from q.t d group by d.g\n")
V2 = ("-- per group, doubled\n-- @keys: g\n"
      "select d.g, count(*) * 2 as n, sum(d.v) as total from q.t d group by d.g\n")
ROWS = "select d.id, d.v from q.t d where d.v > 10\n"


@pytest.fixture(scope="module")
def db(module_db: str, conn: psycopg.Connection) -> str:
    conn.execute("create schema q; create table q.t (id int primary key, g int, v int)")
    conn.execute("insert into q.t select i, i % 5, i from generate_series(1, 200) i")
    return module_db


def test_create_unchanged_replace_prune(db: str, conn: psycopg.Connection, tmp_path: Path):
    d = write_views(tmp_path / "v", per_group=V1, big_rows=ROWS)
    assert {(r.name, r.action) for r in deploy(db, d)} == {("per_group", "created"),
                                                           ("big_rows", "created")}
    assert {(r.name, r.action) for r in deploy(db, d)} == {("per_group", "unchanged"),
                                                           ("big_rows", "unchanged")}
    conn.execute("insert into q.t values (1000, 1, 5)")
    status = {s.name: s for s in list_views(db)}
    assert status["per_group"].rows == 5 and status["big_rows"].rows == 190
    assert status["per_group"].last_change_at is not None
    old_hash = status["per_group"].definition_hash
    write_views(d, per_group=V2)
    results = {r.name: r.action for r in deploy(db, d)}
    assert results == {"per_group": "replaced"}
    assert conn.execute("select sum(n) from live.per_group").fetchone()[0] == 2 * 201
    assert {s.name: s.definition_hash for s in list_views(db)}["per_group"] != old_hash
    results = {r.name: r.action for r in deploy(db, d, prune=True)}
    assert results == {"per_group": "unchanged", "big_rows": "dropped"}
    assert conn.execute("select to_regclass('live.big_rows')").fetchone()[0] is None
    leftovers = conn.execute("select count(*) from pg_class c join pg_namespace n on "
                             "n.oid = c.relnamespace where nspname = 'tidemark_state' and "
                             "relname like 'big_rows%'").fetchone()[0]
    assert leftovers == 0
    triggers = conn.execute("select count(*) from pg_trigger where tgrelid = 'q.t'::regclass "
                            "and not tgisinternal").fetchone()[0]
    assert triggers == 4  # insert, update, delete, truncate of the one remaining view
    assert all(v.ok for v in verify(db))


def test_live_view_has_exactly_the_query_columns(db: str, conn: psycopg.Connection,
                                                 tmp_path: Path):
    deploy(db, write_views(tmp_path / "c", per_group=V2))
    cols = conn.execute("select column_name, data_type from information_schema.columns where "
                        "table_schema = 'live' and table_name = 'per_group' "
                        "order by ordinal_position").fetchall()
    assert cols == [("g", "integer"), ("n", "bigint"), ("total", "bigint")]


def test_redeploy_under_concurrent_readers(db: str, conn: psycopg.Connection, tmp_path: Path):
    d = write_views(tmp_path / "r", per_group=V1)
    deploy(db, d)
    total = conn.execute("select count(*) from q.t").fetchone()[0]
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            with psycopg.connect(db, autocommit=True) as rc:
                while not stop.is_set():
                    seen.append(rc.execute("select coalesce(sum(n), 0) from live.per_group"
                                           ).fetchone()[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for text in (V2, V1, V2, V1):
        write_views(d, per_group=text)
        assert deploy(db, d)[0].action == "replaced"
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert seen and set(seen) <= {total, 2 * total}, set(seen)


def test_verify_reports_differing_rows(db: str, conn: psycopg.Connection, tmp_path: Path):
    deploy(db, write_views(tmp_path / "x", per_group=V1))
    suffix = conn.execute("select suffix from tidemark.views where name = 'per_group'"
                          ).fetchone()[0]
    conn.execute(f'update tidemark_state."{suffix}" set __count = __count + 1 where g = 3')
    [result] = verify(db, "per_group")
    assert not result.ok
    assert len(result.extra) == 1 and len(result.missing) == 1
    assert result.extra[0][0] == 3 and result.extra[0][1] == result.missing[0][1] + 1
    conn.execute(f'update tidemark_state."{suffix}" set __count = __count - 1 where g = 3')
    assert verify(db, "per_group")[0].ok


def test_unsupported_and_invalid_views_deploy_nothing(db: str, tmp_path: Path):
    with pytest.raises(UnsupportedViewError, match=r"bad\.sql:1:\d+: now\(\)"):
        deploy(db, write_views(tmp_path / "b", bad="select d.g, now() as t from q.t d"))
    with pytest.raises(ViewDefinitionError, match="nope"):
        deploy(db, write_views(tmp_path / "b", bad="select d.nope from q.t d"))
    with pytest.raises(UnsupportedViewError, match=r"sum\(\) over double precision.*::numeric"):
        deploy(db, write_views(tmp_path / "b", bad="select sum(d.v::float8) as s from q.t d"))
    with pytest.raises(UnsupportedViewError, match=r"clock_timestamp\(\)"):
        deploy(db, write_views(tmp_path / "b", bad="select clock_timestamp() as t from q.t d"))
    with pytest.raises(UnsupportedViewError, match=r"to_regclass\(\) is stable"):
        deploy(db, write_views(tmp_path / "b", bad="select to_regclass(d.g::text) as t from q.t d"))
    with pytest.raises(UnsupportedViewError, match=r"bad\.sql:1:13: output column 'g' twice"):
        deploy(db, write_views(tmp_path / "b", bad="select d.g, d.g from q.t d"))
    with pytest.raises(UnsupportedViewError, match="unique name"):
        deploy(db, write_views(tmp_path / "b", bad="select d.g + 1 from q.t d"))
    with pytest.raises(UnsupportedViewError, match="neither a GROUP BY"):
        deploy(db, write_views(tmp_path / "b", bad="select d.g as key, count(*) as n from q.t d "
                                             "group by g"))
    with pytest.raises(DeployError, match="unknown target"):
        deploy(db, write_views(tmp_path / "b"), target="nowhere")
    with psycopg.connect(db) as c:
        assert c.execute("select to_regclass('live.bad')").fetchone()[0] is None


def test_rebuild_repairs_writes_made_without_triggers(db: str, conn: psycopg.Connection,
                                                      tmp_path: Path):
    deploy(db, write_views(tmp_path / "rb", per_group=V1))
    conn.execute("alter table q.t disable trigger user")
    conn.execute("insert into q.t values (5000, 4, 1)")
    conn.execute("alter table q.t enable trigger user")
    assert not verify(db, "per_group")[0].ok
    rebuild(db, "per_group")
    assert verify(db, "per_group")[0].ok


def test_engine_column_names_in_base_tables_and_generated_columns(
        db: str, conn: psycopg.Connection, tmp_path: Path):
    """Base tables may have columns named like the engine's own (__sign), identity and
    generated columns: the change logs keep only the columns a view reads, under their names."""
    conn.execute("create table q.odd (id int generated always as identity, __sign int, "
                 "g int, twice int generated always as (g * 2) stored)")
    text = ("select o.g, o.__sign as sgn, max(o.twice) as t, count(*) as n from q.odd o "
            "group by o.g, o.__sign")
    assert deploy(db, write_views(tmp_path / "o", odd=text))[0].action == "created"
    conn.execute("insert into q.odd (__sign, g) values (1, 1), (-1, 2), (1, 2)")
    conn.execute("update q.odd set g = g + 1 where __sign = 1")
    assert verify(db, "odd")[0].ok


def test_raw_postgres_errors_become_positioned_refusals(db: str, conn: psycopg.Connection,
                                                        tmp_path: Path):
    """What used to surface as a raw PostgreSQL error keeps the file:line:column form."""
    deploy(db, write_views(tmp_path / "vv", per_group=V1))
    conn.execute("create or replace view q.plain as select id, g from q.t")
    conn.execute("create materialized view if not exists q.mat as select id, g from q.t")
    for relation, kind in (("q.plain", "view"), ("q.mat", "materialized view")):
        text = f"select x.g, count(*) as n\nfrom {relation} x group by x.g\n"
        with pytest.raises(UnsupportedViewError) as info:
            deploy(db, write_views(tmp_path / "vv", per_group=V1, over=text))
        err = info.value
        assert (err.line, err.column) == (2, 6), str(err)
        assert f"{relation} is a {kind}" in str(err) and "Rewrite:" in str(err)
    with pytest.raises(ViewDefinitionError, match=r"bad\.sql:2:8: .*nope"):
        deploy(db, write_views(tmp_path / "vv", bad="select d.g\n     , d.nope from q.t d\n"))


def test_redeploy_keeps_the_views_that_read_a_live_view(db: str, conn: psycopg.Connection,
                                                         tmp_path: Path):
    """A view reading ``live.<name>`` (a BI view, Tidemark's ``serving.<pair>``) survives a
    redeploy with the same columns; a redeploy that renames a column names the readers instead
    of failing with PostgreSQL's DROP ... CASCADE hint, and changes nothing."""
    d = write_views(tmp_path / "r", per_group_r=V1)
    deploy(db, d)
    conn.execute("create view public.dash_r as select g, n from live.per_group_r")
    write_views(d, per_group_r=V2)  # same columns, other numbers: replaced in place
    assert {r.name: r.action for r in deploy(db, d)} == {"per_group_r": "replaced"}
    rows = conn.execute("select count(*) from q.t").fetchone()[0]
    assert conn.execute("select sum(n) from public.dash_r").fetchone()[0] == 2 * rows
    write_views(d, per_group_r=V1.replace("count(*) as n", "count(*) as orders"))
    with pytest.raises(DeployError, match=r"live\.per_group_r: its columns changed, and "
                                          r"public\.dash_r read it") as err:
        deploy(db, d)
    assert "CASCADE" not in str(err.value)
    assert conn.execute("select sum(n) from public.dash_r").fetchone()[0] == 2 * rows
    conn.execute("drop view public.dash_r")
    assert {r.name: r.action for r in deploy(db, d)} == {"per_group_r": "replaced"}
    assert conn.execute("select sum(orders) from live.per_group_r").fetchone()[0] == rows


def test_prune_names_the_views_that_read_a_live_view_whose_file_is_gone(
        db: str, conn: psycopg.Connection, tmp_path: Path):
    """`deploy --prune` of a view a ``serving.<pair>`` (or a BI view) reads used to stop with
    PostgreSQL's "cannot drop view ... Use DROP ... CASCADE"; it now names the readers and the
    way out, and drops nothing."""
    d = write_views(tmp_path / "p", per_group_p=V1)
    deploy(db, d)
    conn.execute("create view public.dash_p as select g, n from live.per_group_p")
    (d / "per_group_p.sql").unlink()
    with pytest.raises(DeployError, match=r"live\.per_group_p: its file is gone, but "
                                          r"public\.dash_p read it") as err:
        deploy(db, d, prune=True)
    assert "CASCADE" not in str(err.value) and "reconciliation.yml" in str(err.value)
    assert conn.execute("select count(*) from public.dash_p").fetchone()[0] > 0
    conn.execute("drop view public.dash_p")
    actions = {r.name: r.action for r in deploy(db, d, prune=True)}  # (others' views too)
    assert actions["per_group_p"] == "dropped"
    assert conn.execute("select to_regclass('live.per_group_p')").fetchone()[0] is None
