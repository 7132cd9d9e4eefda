"""The view's row of ``tidemark.live_changes`` — its public counter, no longer its commit lock
(engine 26: an advisory lock, ``streaming_views.lockorder``) — is written only by subscribed
commits and deploys. Its table is kept at ``streaming_views.runtime.LOCK_ROW_FILLFACTOR`` (an
install before round 34 is rewritten so), and a view without GROUP BY keeps one state row,
updated by every commit: its state table is pruned early the same way (a grouped view's is not:
its groups share a page)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from tests.streaming_views.conftest import assert_equal, deploy_text

VIEW = "select count(*) as n, sum(v) as total from lr.t"
COMMITS = 120


def _state_row(conn: psycopg.Connection, name: str) -> tuple[list[str] | None, int]:
    """The reloptions of view ``name``'s state table and the line pointer of its first row."""
    suffix = conn.execute("select suffix from tidemark.views where name = %s",
                          (name,)).fetchone()[0]
    options = conn.execute("select reloptions from pg_class where relname = %s and "
                           "relnamespace = 'tidemark_state'::regnamespace",
                           (suffix,)).fetchone()[0]
    offset = conn.execute(sql.SQL("select (ctid::text::point)[1]::int from {}.{} limit 1").format(
        sql.Identifier("tidemark_state"), sql.Identifier(suffix))).fetchone()
    return options, offset[0] if offset else 0


def _row(conn: psycopg.Connection) -> tuple[str, int]:
    """The view's row version (its ``ctid`` and ``xmin``) in ``tidemark.live_changes``, and its
    ``seq``."""
    version, seq = conn.execute("select ctid::text || '/' || xmin::text, seq from "
                                "tidemark.live_changes where name = 'lr_sum'").fetchone()
    return version, seq


def test_a_commit_nobody_subscribes_to_writes_no_row_of_live_changes(
        module_db: str, conn: psycopg.Connection) -> None:
    """Engine 26: the view's lock is an advisory lock; its row of ``tidemark.live_changes`` is
    not written by commits while nobody subscribes (on main every commit updated it). A view
    without GROUP BY still updates its one state row at every commit: that table is pruned
    early (fillfactor 10), a grouped view's is not."""
    conn.execute("drop schema if exists lr cascade; create schema lr; "
                 "create table lr.t (k int primary key, v int not null)")
    assert deploy_text(module_db, "lr_sum", VIEW) == "created"
    assert deploy_text(module_db, "lr_grouped", "select v % 3 as r, count(*) as n from lr.t "
                       "group by v % 3") == "created"
    first = _row(conn)
    state_offsets = []
    for i in range(COMMITS):
        conn.execute("insert into lr.t values (%s, %s)", (i, i))
        assert _row(conn) == first  # the same row version: no update, no new version
        state_offsets.append(_state_row(conn, "lr_sum")[1])
    assert _state_row(conn, "lr_sum")[0] == ["fillfactor=10"]
    assert max(state_offsets) <= 24, state_offsets
    assert _state_row(conn, "lr_grouped")[0] is None
    assert_equal(conn, "lr_sum", VIEW)


def _pages(conn: psycopg.Connection) -> tuple[int, int]:
    """The pages of ``tidemark.live_changes`` holding rows, and the most rows one page holds."""
    return conn.execute("select count(*), max(n) from (select count(*) as n from "
                        "tidemark.live_changes group by (ctid::text::point)[0]) p").fetchone()


def test_an_upgraded_lock_table_packed_at_fillfactor_100_is_rewritten(
        module_db: str, conn: psycopg.Connection) -> None:
    """An install made before round 34 has its lock rows packed in one page (fillfactor 100):
    the next deploy rewrites them at the fillfactor, and not while a reader holds the table."""
    conn.execute("drop schema if exists lu cascade; create schema lu; "
                 "create table lu.t (k int primary key, v int not null)")
    assert deploy_text(module_db, "lu_first", VIEW.replace("lr.", "lu.")) == "created"
    # as an engine of round 33 left it: ~60 views' rows in one page, an older runtime
    conn.execute("alter table tidemark.live_changes reset (fillfactor)")
    conn.execute("vacuum full tidemark.live_changes")
    conn.execute("insert into tidemark.live_changes select format('lu_view_%s', i), i, now() "
                 "from generate_series(1, 60) i")
    conn.execute("comment on function tidemark.live_attach_triggers(text, integer, regclass) "
                 "is 'tidemark live runtime 0000000000000000'")
    assert _pages(conn)[0] == 1 and _pages(conn)[1] > 60
    with psycopg.connect(module_db) as reader:  # a BI session idle in its transaction
        reader.execute("select count(*) from tidemark.live_changes")
        assert deploy_text(module_db, "lu_second", "select count(*) as n from lu.t") == "created"
        assert _pages(conn)[1] > 60  # left for a later deploy; the deploy did not wait
    assert deploy_text(module_db, "lu_second", "select count(*) as n from lu.t") == "unchanged"
    pages, fullest = _pages(conn)
    assert pages >= 5 and fullest <= 16, (pages, fullest)
    assert conn.execute("select reloptions from pg_class where oid = "
                        "'tidemark.live_changes'::regclass").fetchone()[0] == ["fillfactor=10"]
    conn.execute("insert into lu.t values (1, 5), (2, 7)")
    assert_equal(conn, "lu_first", VIEW.replace("lr.", "lu."))
    assert conn.execute("select seq from tidemark.live_changes where name = 'lu_view_7'"
                        ).fetchone()[0] == 7
    conn.execute("delete from tidemark.live_changes where name like 'lu_view_%'")
