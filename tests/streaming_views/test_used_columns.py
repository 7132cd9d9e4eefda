"""streaming_views.used_columns: which base-table columns a view reads, with the catalog's
types and collations, a join's columns followed to their base column, and the refusals
reading finds (system columns, whole rows) placed at their line and column."""

from __future__ import annotations

import psycopg
import pytest

from streaming_views.compiler import compile_view
from streaming_views.errors import UnsupportedViewError
from streaming_views.viewfile import parse_view_text

TABLES = """
create schema uc;
create table uc.a (id int primary key, k int, name text collate "C", unused text, w numeric(12, 2));
create table uc.b (k int primary key, label varchar(20), other int);
"""


@pytest.fixture(scope="module")
def ready(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute(TABLES)
    return conn


def _columns(conn: psycopg.Connection, text: str) -> dict[str, list[tuple[str, str, str | None]]]:
    cv = compile_view(conn, parse_view_text("uc_view", text))
    return {t.name: [(c.name, c.type, c.collation) for c in t.columns] for t in cv.resolved.tables}


def test_reads_only_the_columns_used_with_their_types_and_collations(ready):
    got = _columns(ready, "select a.name, b.label, sum(a.w) as total from uc.a a "
                          "join uc.b b on b.k = a.k group by a.name, b.label")
    assert got == {
        "a": [("k", "integer", None), ("name", "text", 'pg_catalog."C"'),
              ("w", "numeric(12,2)", None)],
        "b": [("k", "integer", None), ("label", "character varying(20)",
                                        "pg_catalog.\"default\"")],
    }


def test_a_join_using_column_is_followed_to_both_base_columns(ready):
    got = _columns(ready, "select k, count(*) as n from uc.a join uc.b using (k) group by k")
    assert [c[0] for c in got["a"]] == ["k"]
    assert [c[0] for c in got["b"]] == ["k"]


def test_a_system_column_is_refused_where_it_is_written(ready):
    with pytest.raises(UnsupportedViewError) as info:
        _columns(ready, "select a.id,\n       a.xmin as x from uc.a a")
    err = info.value
    assert err.construct == "system column xmin", str(err)
    assert (err.line, err.column) == (2, 8), str(err)
    assert "use a key column" in str(err)
