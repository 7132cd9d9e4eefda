"""dbt_project/reconciliation.yml: it names real views, marts and columns, and the pairs agree.

Each live view's SELECT (streaming_views/views/<name>.sql) is run as plain SQL over the landed
mirror and compared with its mart for every day, with the tolerances of the file: the mart
computes each metric exactly as its live twin does.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.dbt_project.conftest import Landed, added_tables_read
from tests.dbt_project.dbt_runner import DBT_PROJECT

VIEWS_DIR = Path(__file__).resolve().parents[2] / "streaming_views" / "views"
PAIRS = yaml.safe_load((DBT_PROJECT / "reconciliation.yml").read_text())["pairs"]


@pytest.fixture(scope="module")
def built(landed: Landed) -> Landed:
    """Every paired mart and what it reads, built from scratch."""
    landed.dbt.invoke("run", "-s", *sorted({f"+{pair['mart']}" for pair in PAIRS}),
                      "--full-refresh")
    return landed


def live_query(view: str) -> sql.Composable:
    """The view's SELECT as a subquery (its file minus comment lines)."""
    text = (VIEWS_DIR / f"{view}.sql").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return sql.SQL(body.strip().rstrip(";"))  # trusted repository file, not user input


def fetch(conn: psycopg.Connection, query: sql.Composable, columns: list[str],
          keys: list[str]) -> dict[tuple, dict[str, Any]]:
    rows = conn.execute(sql.SQL("select {} from ({}) as q").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in keys + columns), query)).fetchall()
    return {tuple(r[:len(keys)]): dict(zip(columns, r[len(keys):], strict=True)) for r in rows}


def as_number(value: Any) -> Decimal:
    if isinstance(value, dt.timedelta):
        return Decimal(str(value.total_seconds()))
    return Decimal(str(value))


def agrees(live: Any, mart: Any, tolerance: dict) -> bool:
    if live is None or mart is None:
        return live is None and mart is None
    diff = abs(as_number(live) - as_number(mart))
    scale = max(abs(as_number(live)), abs(as_number(mart)))
    return (diff <= Decimal(str(tolerance["absolute"]))
            or diff <= Decimal(str(tolerance["relative"])) * scale)


@pytest.mark.parametrize("pair", PAIRS, ids=[p["name"] for p in PAIRS])
def test_pair_names_real_columns(landed: Landed, pair: dict) -> None:
    assert (VIEWS_DIR / f"{pair['live_view']}.sql").exists()
    node = landed.dbt.manifest.nodes[f"model.tidemark.{pair['mart']}"]
    assert node.config.meta["day_column"] == pair["day_column"]
    assert pair["day_column"] in pair["keys"]
    mart_columns = set(node.columns)
    with psycopg.connect(landed.landing_url) as conn:
        cur = conn.execute(sql.SQL("select * from ({}) as q limit 0").format(
            live_query(pair["live_view"])))
        live_columns = {d.name for d in cur.description}
    for measure in pair["measures"]:
        assert measure.get("mart_column", measure["name"]) in mart_columns, measure
        assert measure.get("live_column", measure["name"]) in live_columns, measure
    assert set(pair["keys"]) <= mart_columns & live_columns


@pytest.mark.parametrize("pair", PAIRS, ids=[p["name"] for p in PAIRS])
def test_live_definition_and_mart_agree_on_every_day(built: Landed, pair: dict) -> None:
    measures = pair["measures"]
    live_cols = [m.get("live_column", m["name"]) for m in measures]
    mart_cols = [m.get("mart_column", m["name"]) for m in measures]
    with psycopg.connect(built.landing_url) as conn:
        live = fetch(conn, live_query(pair["live_view"]), live_cols, pair["keys"])
        mart = fetch(conn, sql.SQL("select * from {}").format(
            sql.Identifier("marts", pair["mart"])), mart_cols, pair["keys"])
    assert live.keys() == mart.keys()
    empty = added_tables_read(built, pair["mart"])
    if empty:  # a user's table the demo seeder does not fill (tests.support)
        assert not mart, (pair["name"], len(mart))
        pytest.skip(f"{pair['mart']} reads {', '.join(sorted(empty))}, a table the demo "
                    "source leaves empty: live view and mart agree on no rows only")
    assert len({key[pair["keys"].index(pair["day_column"])] for key in mart}) >= 4
    for key, live_row in live.items():
        for measure, live_col, mart_col in zip(measures, live_cols, mart_cols, strict=True):
            assert agrees(live_row[live_col], mart[key][mart_col], measure["tolerance"]), (
                key, measure["name"], live_row[live_col], mart[key][mart_col])
