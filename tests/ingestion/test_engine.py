"""A running ingestion picks changed contracts up without a restart (between transactions)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg

from contracts import load_contracts
from ingestion import run
from tests.ingestion.conftest import Pair, wait_until

CONTRACT = """version: {version}
primary_key: [id]
compatibility: backward
allowed_lateness: 0s
freshness: {{warn_after: 1h, error_after: 1d}}
columns:
  id: {{type: integer}}
  status: {{type: text, allowed_values: [{allowed}]}}
"""


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        try:
            return conn.execute(query).fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return -1


def test_changed_contract_applies_without_restart(pair: Pair, tmp_path: Path) -> None:
    root = tmp_path / "contracts"
    (root / pair.source).mkdir(parents=True)
    path = root / pair.source / "t.yml"
    path.write_text(CONTRACT.format(version=1, allowed="a, b"))
    pair.src_exec("create table t (id int primary key, status text)",
                  "insert into t values (1, 'a')")
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(pair.src, pair.land, pair.source),
                              kwargs={"stop": stop, "contracts": load_contracts(root)})
    thread.start()
    mirror = f'select count(*) from "{pair.source}".t'
    dead = "select count(*) from tidemark.dead_letters"
    try:
        assert wait_until(lambda: _count(pair.land, mirror) == 1)
        pair.src_exec("insert into t values (2, 'c')")
        assert wait_until(lambda: _count(pair.land, dead) == 1), "'c' breaks version 1"
        path.write_text(CONTRACT.format(version=2, allowed="a, b, c"))
        time.sleep(3)  # the folder is looked at every 2 s, between transactions
        pair.src_exec("insert into t values (3, 'c')")
        assert wait_until(lambda: _count(pair.land, mirror) == 2), "version 2 allows 'c'"
        assert _count(pair.land, dead) == 1
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select contract_version from tidemark.dead_letters").fetchone() \
            == ("1",)
