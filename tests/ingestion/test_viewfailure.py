"""A live view on a landing table that cannot compute a landed row (here a cast of 'x' to
integer) never stops ingestion: the view is marked broken (reading it raises with the reason)
and the source transaction lands. Before, every landing transaction replayed the view's error:
catch_up raised InvalidTextRepresentation and `ingest run` ended with a 'permanent source error'
while the row (and everything after it) never landed."""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest

from ingestion import catch_up, run
from streaming_views.deploy import deploy_embedded
from streaming_views.errors import DeployError
from streaming_views.viewfile import parse_view_text
from tests.ingestion.conftest import Pair, wait_until
from tidemark.cli.status import views_layer
from tidemark.stack.databases import Databases

CASTS = "select t.id, t.s::int as n from {source}.t t"
TOTAL = "select count(*) as n from {source}.t t"


def _deploy(pair: Pair) -> None:
    deploy_embedded(pair.land, [parse_view_text("casts", CASTS.format(source=pair.source)),
                                parse_view_text("total", TOTAL.format(source=pair.source))])


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def test_catch_up_breaks_the_failing_view_and_lands_the_row(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    pair.src_exec("create table t (id int primary key, s text)", "insert into t values (1, '5')")
    catch_up(pair.src, pair.land, pair.source, timeout_s=60)
    _deploy(pair)
    pair.src_exec("insert into t values (2, 'x'), (3, '7')", "insert into t values (4, '8')")
    caplog.set_level(logging.ERROR, logger="tidemark.ingestion")
    catch_up(pair.src, pair.land, pair.source, timeout_s=60)
    assert _count(pair.land, f'select count(*) from "{pair.source}".t') == 4
    assert any("live view casts is broken" in r.getMessage() and "tidemark views deploy"
               in r.getMessage() for r in caplog.records)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        status, problem = conn.execute("select status, problem from tidemark.views where name ="
                                       " 'casts'").fetchone()
        assert status == "broken" and 'invalid input syntax for type integer: "x"' in problem
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="casts is broken"):
            conn.execute("select * from live.casts").fetchall()
        # The other view of the same table follows on.
        assert conn.execute("select n from live.total").fetchone() == (4,)
    # What `tidemark status` shows in its live views table.
    shown = {v["name"]: v for v in views_layer(
        Databases(pair.src, pair.land, pair.src, pair.land, pair.land, pair.land, None))}
    assert shown["casts"]["status"].startswith("broken: ") and shown["casts"]["rows"] is None
    assert shown["total"]["status"] == "ok" and shown["total"]["rows"] == 1
    # Redeploying while the row is there says what is wrong, in the user's terms.
    with pytest.raises(DeployError, match=r"casts\.sql: deploying live\.casts failed: its query "
                       r"cannot be computed over the rows its tables hold now: invalid input "
                       r"syntax for type integer: \"x\" \(SQLSTATE 22P02") as refused:
        _deploy(pair)
    assert "tidemark_state" not in str(refused.value)
    # Once the row is fixed on the source and landed, the view is rebuilt and exact again.
    pair.src_exec("update t set s = '2' where id = 2")
    catch_up(pair.src, pair.land, pair.source, timeout_s=60)
    _deploy(pair)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        assert conn.execute("select status from tidemark.views where name = 'casts'").fetchone() \
            == ("ok",)
        assert sorted(conn.execute("select * from live.casts").fetchall()) == \
            [(1, 5), (2, 2), (3, 7), (4, 8)]


def test_a_running_ingestion_goes_on_after_a_view_fails(pair: Pair) -> None:
    pair.src_exec("create table t (id int primary key, s text)", "insert into t values (1, '5')")
    catch_up(pair.src, pair.land, pair.source, timeout_s=60)
    _deploy(pair)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop})
    thread.start()
    try:
        pair.src_exec("insert into t values (2, 'x')", "insert into t values (3, '7')")
        assert wait_until(lambda: _count(pair.land, f'select count(*) from "{pair.source}".t')
                          == 3, timeout=60)
        assert thread.is_alive(), "ingest run goes on"
        pair.src_exec("update t set s = '9' where id = 2")
        assert wait_until(lambda: _count(pair.land, f'select count(*) from "{pair.source}".t'
                                         " where s = '9'") == 1, timeout=60)
        assert _count(pair.land, "select n from live.total") == 3
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
