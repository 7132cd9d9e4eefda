"""Status reads never wait for ingestion's landing transaction (round 38, b38).

A schema change ingestion follows (``add column ... default 'n/a'``) backfills one changelog row
per existing row in the change's landing transaction, holding the mirror and the changelog
ACCESS EXCLUSIVE to its commit: 82 s at 10 M rows, and every read of those tables waits. The
tests hold the same locks in a transaction of their own, as the applier does (its advisory lock
``tidemark:ingest:<source>``, then the DDL), and release them only after the reads returned —
or, on main, after ``HOLD_S`` (a read that waited then misses ``busy``: the test fails).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

from ingestion import catch_up
from ingestion.names import CHANGELOG_SCHEMA, changelog_table_name
from ingestion.status import status, table_status
from tests.ingestion.conftest import Pair

HOLD_S = 30.0  # a read still waiting after this long gets its answer, without ``busy``


@contextmanager
def landing_schema_change(p: Pair, table: str) -> Iterator[psycopg.Connection]:
    """A landing transaction as ingestion's for a followed ``add column``, open meanwhile."""
    conn = psycopg.connect(p.land)
    pid = conn.info.backend_pid

    def end() -> None:  # a reader waiting for the locks gets them (main): the test fails then
        with psycopg.connect(p.land, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (pid,))

    release = threading.Timer(HOLD_S, end)
    try:
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))",
                     (f"tidemark:ingest:{p.source}",))
        for relation in (sql.Identifier(p.source, table),
                         sql.Identifier(CHANGELOG_SCHEMA, changelog_table_name(p.source, table))):
            conn.execute(sql.SQL("alter table {} add column note text default 'n/a'").format(
                relation))
        release.start()
        yield conn
    finally:
        release.cancel()
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        conn.close()


@pytest.fixture
def landed(pair: Pair) -> Pair:
    pair.src_exec("create table public.t (id int primary key, v text,"
                  " updated_at timestamptz not null default clock_timestamp())",
                  "insert into public.t (id, v) select g, 'x' from generate_series(1, 50) g")
    catch_up(pair.src, pair.land, pair.source)
    pair.src_exec("update public.t set v = 'y' where id = 1")
    catch_up(pair.src, pair.land, pair.source)
    return pair


def test_table_status_reports_a_table_held_by_a_landing_transaction_as_busy(
        landed: Pair) -> None:
    # On main the reads of the changelog and the mirror waited for the transaction to end.
    with landing_schema_change(landed, "t"):
        state = table_status(landed.src, landed.land, landed.source, [("t", "updated_at")])
        busy = state["t"]["busy"]
        assert busy is not None and busy.startswith("busy: t is held by ingestion's landing "
                                                    "transaction since ")
        # nothing is judged from a mirror not read: no pending lag of every row since the start
        assert state["t"]["lsn"] is None and state["t"]["pending_s"] is None
    after = table_status(landed.src, landed.land, landed.source, [("t", "updated_at")])
    assert after["t"]["busy"] is None and after["t"]["lsn"] is not None
    assert after["t"]["pending_s"] == 0.0


def test_status_says_what_the_landing_transaction_holds_since_when(
        landed: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    # any open transaction counts (the module, not ``ingestion.status``: the package's function)
    monkeypatch.setattr(sys.modules["ingestion.status"], "BUSY_AFTER_S", 0.0)
    assert status(landed.src, landed.land, landed.source)["busy"] is None
    with landing_schema_change(landed, "t") as holder:
        pid = holder.info.backend_pid
        busy = status(landed.src, landed.land, landed.source)["busy"]
        assert busy is not None and busy["pid"] == pid
        assert busy["tables"] == [f"cdc.{changelog_table_name(landed.source, 't')}",
                                  f"{landed.source}.t"]
        assert busy["since"] is not None
        assert busy["message"].startswith(f"busy: ingestion of {landed.source} is in one "
                                          f"landing transaction since ")


def test_status_of_a_source_without_a_mirror_schema_does_not_wait_for_landing(
        landed: Pair) -> None:
    # `tidemark status` reads the demo's source `shop` too; without its schema in landing (a
    # user with only their own database) ensure_state ran its DDL, whose ALTER TABLEs on the
    # state tables waited for the running landing transaction (37 s of a 40 s hold on main)
    with landing_schema_change(landed, "t") as holder:
        holder.execute("update tidemark.checkpoints set rows_applied = rows_applied"
                       " where source = %s", (landed.source,))
        assert status(landed.src, landed.land, "shop")["checkpoint_lsn"] is None
        # still the same open transaction: the read did not wait for it to end
        assert holder.execute("select count(*) from pg_namespace where nspname = 'shop'"
                              ).fetchone()[0] == 0


def test_status_during_a_snapshot_says_the_transaction_is_the_snapshots(
        pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    # explore51: for the 71 s of a 10 M-row first snapshot `tidemark ingest status` said
    # "busy: ingestion of appa is in one landing transaction since ... (a schema change's
    # backfill or a large source transaction)" beside its own running snapshot
    monkeypatch.setattr(sys.modules["ingestion.status"], "BUSY_AFTER_S", 0.0)
    pair.src_exec("create table public.big (id int primary key, v text)",
                  "insert into public.big select g, md5(g::text) from"
                  " generate_series(1, 100000) g", "analyze public.big")
    seen: list[dict] = []

    def read_status(report: object) -> None:  # called while the snapshot's transaction is open
        if not seen and getattr(report, "rows", 0) and not getattr(report, "done", False):
            seen.append(status(pair.src, pair.land, pair.source))

    catch_up(pair.src, pair.land, pair.source, on_progress=read_status)
    assert seen, "no progress report during the copy"
    snapshot, busy = seen[0]["snapshot"], seen[0]["busy"]
    assert snapshot is not None and snapshot["state"] == "running", seen[0]
    assert busy is not None, seen[0]
    assert "(its snapshot: " in busy["message"], busy["message"]
    assert "schema change's backfill" not in busy["message"], busy["message"]
