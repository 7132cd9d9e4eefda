"""The view's row of ``tidemark.live_changes`` — its commit lock and public counter — is
updated by every commit of the view (a HOT update: a new version in the same page). Its page is
pruned early (``streaming_views.runtime.LOCK_ROW_FILLFACTOR``), so the chain of dead versions
that each apply's lookup of the row walks stays short, while ``seq`` still counts every commit
and moves with it. A view without GROUP BY keeps one state row, updated by every commit too:
its state table is pruned early the same way (a grouped view's is not: its groups share a
page)."""

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


def _row(conn: psycopg.Connection) -> tuple[int, int]:
    """The line pointer (offset in its page) of the view's row version, and its ``seq``."""
    offset, seq = conn.execute("select (ctid::text::point)[1]::int, seq from "
                               "tidemark.live_changes where name = 'lr_sum'").fetchone()
    return offset, seq


def test_the_lock_rows_page_is_pruned_while_commits_update_it(module_db: str,
                                                              conn: psycopg.Connection) -> None:
    conn.execute("drop schema if exists lr cascade; create schema lr; "
                 "create table lr.t (k int primary key, v int not null)")
    assert deploy_text(module_db, "lr_sum", VIEW) == "created"
    assert conn.execute("select reloptions from pg_class where oid = "
                        "'tidemark.live_changes'::regclass").fetchone()[0] == ["fillfactor=10"]
    assert deploy_text(module_db, "lr_grouped", "select v % 3 as r, count(*) as n from lr.t "
                       "group by v % 3") == "created"
    _, first = _row(conn)
    offsets, state_offsets = [], []
    with psycopg.connect(module_db) as reader:  # another session sees seq move at each commit
        for i in range(COMMITS):
            conn.execute("insert into lr.t values (%s, %s)", (i, i))
            offset, seq = _row(conn)
            offsets.append(offset)
            state_offsets.append(_state_row(conn, "lr_sum")[1])
            assert seq == first + i + 1
            assert _row(reader)[1] == seq
            reader.rollback()
    # unpruned, a ~60-byte row's versions fill the page (~110 of them) before it is pruned
    assert max(offsets) <= 24, offsets
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
