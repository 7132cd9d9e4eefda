"""A landing whose state (schema ``tidemark``) an older Tidemark wrote: the commands that only
read it (``ingest status``, ``dlq list``) work for a role that may read but not upgrade it, a
writer upgrades it, and a writing command of such a role says what to do."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingestion.dead_letters import count_dead_letters, list_dead_letters
from ingestion.errors import StateUpgradeError
from ingestion.state import ensure_state
from ingestion.status import status
from tests.ingestion.conftest import Pair
from tests.ingestion.test_cli_roles import as_role
from tests.support import give_password
from tidemark.settings import APP_ROLE
from tidemark.stack.bootstrap import grant_landing

R36_STATE = Path(__file__).parent / "data" / "landing_state_r36.sql"
OPS_ROLE = "tidemark_test_ops"


def _round_36_landing(pair: Pair) -> str:
    """Load round 36's state into the pair's landing, with two waiting letters and one replayed;
    return the URL of a role that may read schema ``tidemark`` but not change it."""
    grant_landing(pair.land)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(R36_STATE.read_text())
        conn.execute(
            "insert into tidemark.dead_letters (source, table_name, lsn, commit_lsn, seq, op,"
            " reason, raw_row, replayed_at) select %s, 't', '0/10', '0/10', g, 'c', 'bad',"
            " jsonb_build_object('id', g), case when g = 3 then now() end"
            " from generate_series(1, 3) g", (pair.source,))
        conn.execute(sql.SQL("do $$ begin create role {} login; exception when duplicate_object"
                             " then null; end $$").format(sql.Identifier(OPS_ROLE)))
        ops = sql.Identifier(OPS_ROLE)
        conn.execute(sql.SQL("grant connect on database {} to {}").format(
            sql.Identifier(conn.info.dbname), ops))
        conn.execute(sql.SQL("grant usage on schema tidemark to {}").format(ops))
        conn.execute(sql.SQL("grant select on all tables in schema tidemark to {}").format(ops))
    give_password(pair.land, OPS_ROLE)
    return as_role(pair.land, OPS_ROLE)


def _indexed(pair: Pair) -> bool:
    with psycopg.connect(pair.land) as conn:
        return conn.execute("select to_regclass('tidemark.dead_letters_at') is not null"
                            ).fetchone()[0]


def test_a_role_that_reads_only_reads_an_older_landing_and_a_writer_upgrades_it(
        pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    ops = _round_36_landing(pair)
    caplog.set_level(logging.WARNING, logger="tidemark.ingestion")
    assert status(pair.src, ops, pair.source)["dead_letters"] == 2
    assert [d["raw_row"]["id"] for d in list_dead_letters(ops, pair.source)] == [1, 2]
    assert count_dead_letters(ops, pair.source, include_replayed=True) == 3
    assert "may not upgrade it" in caplog.text and "tidemark up" in caplog.text
    assert not _indexed(pair)  # read as it is

    with psycopg.connect(ops, autocommit=True) as conn, \
            pytest.raises(StateUpgradeError, match="is older than this Tidemark") as caught:
        ensure_state(conn, pair.source)  # a writer's call: said, with what to do
    assert "tidemark ingest run" in str(caught.value) and OPS_ROLE in str(caught.value)

    app = as_role(pair.land, APP_ROLE)
    assert status(pair.src, app, pair.source)["dead_letters"] == 2  # the owner upgrades it
    assert _indexed(pair)
    caplog.clear()
    assert count_dead_letters(ops, pair.source, include_replayed=True) == 3  # now counted
    assert status(pair.src, ops, pair.source)["dead_letters"] == 2
    assert "may not upgrade it" not in caplog.text
