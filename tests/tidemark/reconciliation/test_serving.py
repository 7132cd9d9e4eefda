"""serving.<pair> views: a pair removed from reconciliation.yml loses its view on the next
serving run; a user's own view in the schema, and one read by other views, are left."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from tidemark.reconciliation.pairs import Measure, Pair
from tidemark.reconciliation.serving import deploy_serving, drop_orphans


def _pair(name: str) -> Pair:
    return Pair(name=name, live_view="v", mart="m", day_column="day", keys=("day",),
                measures=(Measure("n", "n", "n", Decimal(0), Decimal(0)),),
                live_retention_days=None, missing_as_zero=False)


def test_a_removed_pairs_serving_view_is_dropped(module_db: str) -> None:
    # a first serving run: no serving schema, no reconciled_days yet
    assert drop_orphans(module_db, {"kept_pair"}) == ([], [])
    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute("create schema if not exists marts; create schema if not exists live;"
                     "create table marts.m (day date, n int);"
                     "create table live.v (day date, n int);"
                     "insert into live.v values ('2026-12-01', 3)")
    for name in ("kept_pair", "gone_pair", "read_pair"):
        assert deploy_serving(module_db, _pair(name)) == 1
    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute("create view serving.users_own as select 1 as x;"
                     "create view public.dashboard as select * from serving.read_pair")
    dropped, kept = drop_orphans(module_db, {"kept_pair"})
    assert dropped == ["gone_pair"]
    assert len(kept) == 1 and "serving.read_pair" in kept[0] and "(public.dashboard)" in kept[0] \
        and "drop view serving.read_pair cascade" in kept[0]
    with psycopg.connect(module_db) as conn:
        left = [r[0] for r in conn.execute(
            "select table_name from information_schema.views where table_schema = 'serving'"
            " order by 1").fetchall()]
    assert left == ["kept_pair", "read_pair", "users_own"]
    assert drop_orphans(module_db, {"kept_pair", "read_pair"}) == ([], [])
