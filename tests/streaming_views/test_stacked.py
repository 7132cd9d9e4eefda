"""Deploying views over views: dependency order, cycles, missing inner views, prune refusal."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from streaming_views.deploy import deploy
from streaming_views.errors import DeployError
from tests.streaming_views.conftest import assert_equal, write_views

BASE = "select t.g, count(*) as n from s.t t group by t.g"
MID = "select b.n, count(*) as groups from live.a_base b group by b.n"  # reads a_base
TOP = "select m.n, m.groups from live.a_mid m where m.groups > 1"


@pytest.fixture(scope="module")
def schema(conn: psycopg.Connection) -> None:
    conn.execute("create schema s; create table s.t (id int primary key, g int)")
    conn.execute("insert into s.t select i, i % 10 from generate_series(1, 100) i")


def test_views_are_deployed_inner_first(module_db: str, conn: psycopg.Connection, schema: None,
                                        tmp_path: Path) -> None:
    # names sort the reader before what it reads: the order comes from the dependencies
    views = write_views(tmp_path / "v", z_top=TOP.replace("a_mid", "m_mid"),
                        m_mid=MID.replace("a_base", "z_base"), z_base=BASE)
    results = deploy(module_db, views)
    assert [r.name for r in results] == ["z_base", "m_mid", "z_top"]
    assert {r.action for r in results} == {"created"}
    conn.execute("update s.t set g = 1 where id < 30")
    assert_equal(conn, "m_mid", MID.replace("a_base", "z_base"))
    assert_equal(conn, "z_top", TOP.replace("a_mid", "m_mid"))


def test_prune_refuses_to_drop_a_view_others_read(module_db: str, schema: None,
                                                  tmp_path: Path) -> None:
    views = write_views(tmp_path / "p", z_top=TOP.replace("a_mid", "m_mid"),
                        m_mid=MID.replace("a_base", "z_base"))
    with pytest.raises(DeployError, match=r"cannot prune live\.z_base: read by m_mid "
                                          r"\(.*m_mid\.sql\)"):
        deploy(module_db, views, prune=True)
    views = write_views(tmp_path / "p", z_base=BASE)  # readers pruned too: fine
    actions = {r.name: r.action for r in deploy(module_db, views, prune=True)}
    assert actions["m_mid"] == "dropped" and actions["z_top"] == "dropped"


def test_a_cycle_names_the_files(module_db: str, schema: None, tmp_path: Path) -> None:
    views = write_views(tmp_path / "c", c1="select x.n from live.c2 x",
                        c2="select y.n from live.c1 y")
    with pytest.raises(DeployError, match=r"cycle: c1 \(.*c1\.sql\) -> c2 \(.*c2\.sql\) -> c1"):
        deploy(module_db, views)


def test_a_missing_inner_view_names_the_file(module_db: str, schema: None,
                                             tmp_path: Path) -> None:
    views = write_views(tmp_path / "m", lone="select x.n from live.absent x")
    with pytest.raises(DeployError, match=r"lone \(.*lone\.sql\) read live\.absent, which is "
                                          "neither deployed nor a view file here"):
        deploy(module_db, views)
