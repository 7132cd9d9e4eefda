"""Materialize target: golden files of the generated SQL; a live run when Materialize is there.

Materialize cannot run on this machine (no Docker): the first deploy and a redeploy of the demo
views are golden files, the blue/green decisions and the wait are tested on their own, and the
live run needs ``TIDEMARK_MATERIALIZE_URL``. Regenerate the golden files after an intended
change: ``TIDEMARK_UPDATE_GOLDEN=1 pytest ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from streaming_views import load_views
from streaming_views.errors import MaterializeError, UnsupportedViewError
from streaming_views.materialize import (
    MaterializeSource,
    generate_sql,
    referenced_tables,
    view_query,
)
from streaming_views.mzdeploy import ClusterSpec, Environment, Readiness, wait_ready
from streaming_views.viewfile import parse_view_text

GOLDEN = Path(__file__).parent / "golden" / "materialize_demo.sql"
GOLDEN_REDEPLOY = Path(__file__).parent / "golden" / "materialize_redeploy.sql"
SOURCE = MaterializeSource(name="shop", host="source.example", port=5432, user="materialize",
                           database="shop")


def test_generated_sql_matches_golden_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEMARK_MZ_SOURCE_PASSWORD", "s3cret-never-printed")
    monkeypatch.delenv("TIDEMARK_MZ_CLUSTER_SIZE", raising=False)
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
    assert "WHERE o.status <> 'x' AND MZ_NOW() <= o.placed_at + INTERVAL '2 DAYS'" in text


def test_index_on_declared_keys_only() -> None:
    views = [parse_view_text("a", "-- @keys: g\n-- @cluster: c1\nselect t.g, count(*) as n "
                                  "from shop.t t group by 1"),
             parse_view_text("b", "select t.g from shop.t t")]
    build = [s.text for s in generate_sql(views, [SOURCE]).build]
    assert ('CREATE INDEX "a_keys_idx" IN CLUSTER "c1_dbt_deploy" ON "live_dbt_deploy"."a" '
            '("g")') in build
    assert not any('"b_keys_idx"' in s for s in build)
    # quickstart also runs the source: never swapped, the view is rebuilt on it in place
    assert any(s.startswith('CREATE MATERIALIZED VIEW "live_dbt_deploy"."b" IN CLUSTER '
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


def _demo_env(changed: str) -> Environment:
    views = load_views()
    deployed = {v.name: v.definition_hash for v in views}
    deployed[changed] = "0" * 16
    return Environment(deployed=deployed, clusters={
        "live_views": ClusterSpec("live_views", "50cc", 2),
        "quickstart": ClusterSpec("quickstart", "25cc", 1, dedicated=False)})


def test_redeploy_matches_golden_file() -> None:
    """One demo view changed on a running Materialize: the cluster's size and replicas are
    copied to its deploy twin, every view of live is rebuilt there, both are swapped."""
    plan = generate_sql(load_views(), [SOURCE], _demo_env("store_revenue_per_minute"))
    rendered = plan.render()
    if os.environ.get("TIDEMARK_UPDATE_GOLDEN"):
        GOLDEN_REDEPLOY.write_text(rendered)
    assert rendered == GOLDEN_REDEPLOY.read_text()
    assert plan.deploy.actions["store_revenue_per_minute"] == "replaced"
    assert 'CREATE CLUSTER "live_views_dbt_deploy" (SIZE = \'50cc\', REPLICATION FACTOR = 2)' \
        in rendered
    assert 'CREATE CLUSTER "live_views" ' not in rendered  # it exists: not re-created


def test_nothing_changed_touches_nothing() -> None:
    views = load_views()
    env = Environment(deployed={v.name: v.definition_hash for v in views})
    plan = generate_sql(views, [SOURCE], env)
    assert set(plan.deploy.actions.values()) == {"unchanged"}
    assert not (plan.deploy.init or plan.deploy.build or plan.deploy.promote
                or plan.deploy.cleanup or plan.catalog)
    assert "nothing changed" in plan.render()


def _view(name: str, cluster: str, body: str = "select t.g, count(*) as n from shop.t t "
          "group by 1") -> object:
    return parse_view_text(name, f"-- @cluster: {cluster}\n{body}")


def test_only_clusters_of_changed_views_are_swapped() -> None:
    a, b = _view("a", "c1"), _view("b", "c2")
    env = Environment(deployed={"a": "old", "b": b.definition_hash}, clusters={
        "c1": ClusterSpec("c1", "25cc", 1), "c2": ClusterSpec("c2", "100cc", 1)})
    bg = generate_sql([a, b], [SOURCE], env).deploy
    assert bg.actions == {"a": "replaced", "b": "unchanged"}
    assert bg.swapped_clusters == ["c1"]
    build = [s.text for s in bg.build]
    assert build[0].startswith('CREATE MATERIALIZED VIEW "live_dbt_deploy"."a" IN CLUSTER '
                               '"c1_dbt_deploy"')
    # b is in the swapped schema, so it is rebuilt, on its own cluster, which is left alone
    assert build[1].startswith('CREATE MATERIALIZED VIEW "live_dbt_deploy"."b" IN CLUSTER "c2"')
    assert [s.text for s in bg.promote] == [
        "BEGIN", 'ALTER SCHEMA "live" SWAP WITH "live_dbt_deploy"',
        'ALTER CLUSTER "c1" SWAP WITH "c1_dbt_deploy"', "COMMIT"]
    assert [s.text for s in bg.cleanup] == ['DROP SCHEMA "live_dbt_deploy" CASCADE',
                                            'DROP CLUSTER "c1_dbt_deploy" CASCADE']


def test_a_cluster_running_other_objects_is_never_swapped() -> None:
    a = _view("a", "shared")
    env = Environment(deployed={"a": "old"},
                      clusters={"shared": ClusterSpec("shared", "25cc", 1, dedicated=False)})
    bg = generate_sql([a], [SOURCE], env).deploy
    assert bg.swapped_clusters == []
    assert 'IN CLUSTER "shared" AS' in bg.build[0].text
    assert not any("CLUSTER" in s.text for s in bg.promote + bg.cleanup)


def test_a_dropped_view_is_a_change() -> None:
    a = _view("a", "c1")
    env = Environment(deployed={"a": a.definition_hash, "gone": "h"},
                      clusters={"c1": ClusterSpec("c1", "25cc", 1)})
    bg = generate_sql([a], [SOURCE], env).deploy
    assert bg.changed and bg.dropped == ["gone"]
    assert bg.swapped_clusters == []  # a is unchanged: its cluster stays


def test_views_over_views_are_built_after_what_they_read() -> None:
    inner = _view("z_inner", "c1")
    outer = _view("a_outer", "c1", "select i.g, i.n from live.z_inner i where i.n > 1")
    build = [s.text for s in generate_sql([outer, inner], [SOURCE]).build]
    assert build[0].startswith('CREATE MATERIALIZED VIEW "live_dbt_deploy"."z_inner"')
    assert "FROM live_dbt_deploy.z_inner AS i" in build[1]
    assert "live" not in referenced_tables([outer, inner])  # another view, not a source
    with pytest.raises(MaterializeError, match="neither deployed nor among the views"):
        generate_sql([outer], [SOURCE])
    loop = _view("z_inner", "c1", "select o.g, o.n from live.a_outer o")
    with pytest.raises(MaterializeError, match="cycle: a_outer -> z_inner -> a_outer"):
        generate_sql([outer, loop], [SOURCE])


def test_materialize_refusals_name_the_construct() -> None:
    view = parse_view_text("v", "select t.g, now() as at from shop.t t")
    with pytest.raises(UnsupportedViewError, match=r"v.sql:1:13: now\(\) is not supported"):
        generate_sql([view], [SOURCE])


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_returns_when_hydrated_and_caught_up() -> None:
    states = iter([Readiness(4, 1, 0.0), Readiness(4, 4, 7.0), Readiness(4, 4, 0.4)])
    clock = _Clock()
    state = wait_ready(lambda: next(states), lag_threshold_s=1.0, timeout_s=60,
                       sleep=clock.sleep, clock=clock)
    assert state == Readiness(4, 4, 0.4)
    assert clock.now == 2.0


@pytest.mark.parametrize(("state", "message"), [
    (Readiness(5, 3, 0.0), "2 of 5 objects are not hydrated"),
    (Readiness(5, 5, 12.5), "lag is 12.5s, above the 1s threshold"),
])
def test_wait_times_out_with_what_is_missing(state: Readiness, message: str) -> None:
    clock = _Clock()
    with pytest.raises(MaterializeError, match=message) as caught:
        wait_ready(lambda: state, lag_threshold_s=1.0, timeout_s=30, sleep=clock.sleep,
                   clock=clock)
    assert "not ready after 30s" in str(caught.value)
    assert "live views were left as they were" in str(caught.value)


def test_wait_fails_fast_without_replicas() -> None:
    with pytest.raises(MaterializeError, match="live_views_dbt_deploy have no replica"):
        wait_ready(lambda: Readiness(3, 0, 0.0, ("live_views_dbt_deploy",)))


@pytest.mark.materialize
@pytest.mark.skipif(not os.environ.get("TIDEMARK_MATERIALIZE_URL"),
                    reason="needs TIDEMARK_MATERIALIZE_URL (a running Materialize)")
def test_blue_green_redeploy_against_materialize(tmp_path: Path) -> None:  # pragma: no cover
    """A changed view is replaced through the deploy schema and cluster; the others report
    unchanged; no ``_dbt_deploy`` schema or cluster is left behind."""
    from streaming_views import deploy
    url = os.environ["TIDEMARK_MATERIALIZE_URL"]
    for view in load_views():
        (tmp_path / f"{view.name}.sql").write_text(view.text)
    deploy(url, tmp_path, target="materialize")
    changed = tmp_path / "store_revenue_per_minute.sql"
    changed.write_text(changed.read_text() + "\n-- changed by the blue/green test\n")
    actions = {r.name: r.action for r in deploy(url, tmp_path, target="materialize")}
    assert actions.pop("store_revenue_per_minute") == "replaced"
    assert set(actions.values()) == {"unchanged"}
    with psycopg.connect(url, autocommit=True) as conn:
        for catalog in ("mz_schemas", "mz_clusters"):
            assert not conn.execute(f"select name from mz_catalog.{catalog} "
                                    "where name like '%\\_dbt\\_deploy'").fetchall()
        conn.execute("select count(*) from live.store_revenue_per_minute").fetchone()
