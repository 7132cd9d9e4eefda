"""Materialize target: golden files of the generated SQL; a live run when Materialize is there.

Regenerate the golden file after an intended change: ``TIDEMARK_UPDATE_GOLDEN=1 pytest ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from streaming_views import load_views
from streaming_views.errors import MaterializeError
from streaming_views.materialize import (
    MaterializeSource,
    generate_sql,
    referenced_tables,
    view_query,
)
from streaming_views.viewfile import parse_view_text

GOLDEN = Path(__file__).parent / "golden" / "materialize_demo.sql"
SOURCE = MaterializeSource(name="shop", host="source.example", port=5432, user="materialize",
                           database="shop")


def test_generated_sql_matches_golden_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEMARK_MZ_SOURCE_PASSWORD", "s3cret-never-printed")
    rendered = generate_sql(load_views(), [SOURCE]).render()
    assert "s3cret-never-printed" not in rendered
    assert "<secret from $TIDEMARK_MZ_SOURCE_PASSWORD>" in rendered
    if os.environ.get("TIDEMARK_UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text()


def test_retention_becomes_a_temporal_filter() -> None:
    view = parse_view_text("v", "-- @retention: o.placed_at 2 days\n"
                                "select o.store_id, count(*) as n from shop.orders o "
                                "where o.status <> 'x' group by 1")
    text = view_query(view)
    assert "o.status <> 'x' AND mz_now() <= o.placed_at + CAST('2 days' AS interval)" in text


def test_index_on_declared_keys_only() -> None:
    views = [parse_view_text("a", "-- @keys: g\n-- @cluster: c1\nselect t.g, count(*) as n "
                                  "from shop.t t group by 1"),
             parse_view_text("b", "select t.g from shop.t t")]
    build = [s.text for s in generate_sql(views, [SOURCE]).build]
    assert 'CREATE INDEX "a_keys_idx" IN CLUSTER "c1" ON "live_deploy"."a" ("g")' in build
    assert not any('"b_keys_idx"' in s for s in build)
    assert any(s.startswith('CREATE MATERIALIZED VIEW "live_deploy"."b" IN CLUSTER '
                            '"quickstart"') for s in build)


def test_unknown_source_is_refused() -> None:
    with pytest.raises(MaterializeError, match="no Materialize source named 'other'"):
        generate_sql([parse_view_text("v", "select t.g from other.t t")], [SOURCE])


@pytest.mark.materialize
@pytest.mark.skipif(not os.environ.get("TIDEMARK_MATERIALIZE_URL"),
                    reason="needs TIDEMARK_MATERIALIZE_URL (a running Materialize)")
def test_deploy_against_materialize() -> None:  # pragma: no cover - needs Materialize
    from streaming_views import deploy
    url = os.environ["TIDEMARK_MATERIALIZE_URL"]
    results = deploy(url, target="materialize")
    assert {r.name for r in results} == {v.name for v in load_views()}
    with psycopg.connect(url, autocommit=True) as conn:
        for view in load_views():
            conn.execute(f'select count(*) from live."{view.name}"').fetchone()
    assert all(r.action == "unchanged" for r in deploy(url, target="materialize"))


def test_a_view_over_a_live_view_reads_the_new_one_built_before_it() -> None:
    views = [parse_view_text("a_outer", "select x.g, count(*) as n from live.z_inner x "
                                        "group by x.g"),
             parse_view_text("z_inner", "select t.g, t.h from shop.t t")]
    build = [s.text for s in generate_sql(views, [SOURCE]).build]
    creates = [s for s in build if s.startswith("CREATE MATERIALIZED VIEW")]
    assert [c.split()[3] for c in creates] == ['"live_deploy"."z_inner"',
                                               '"live_deploy"."a_outer"']
    assert creates[1].endswith("FROM live_deploy.z_inner AS x GROUP BY x.g")
    assert "live" not in referenced_tables(views)
