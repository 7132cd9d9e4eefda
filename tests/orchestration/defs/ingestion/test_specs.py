"""The ingestion assets' table list while a contract file is being edited (no database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import contracts.loader
from orchestration.defs.ingestion.state import table_specs

GOOD = """version: 1
primary_key: [refund_id]
event_time: refunded_at
idempotency_key: null
compatibility: backward
allowed_lateness: 1h
freshness: {warn_after: 1h, error_after: 1d}
columns:
  refund_id: {type: bigint}
  refunded_at: {type: timestamptz}
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(contracts.loader, "PACKAGE_ROOT", tmp_path)
    (tmp_path / "shop").mkdir()
    table_specs.cache_clear()
    yield tmp_path / "shop"
    table_specs.cache_clear()


def test_a_contract_that_does_not_load_keeps_the_definitions_loading(folder: Path) -> None:
    """A broken contract file (YAML cut in the middle of a list) made every load of the
    definitions fail: the UI's code location, the daemon's sensors and the steps of runs in
    flight, while ingestion went on with its previous contracts. The table keeps its asset,
    described by the error; the other tables keep theirs with their freshness."""
    (folder / "refunds.yml").write_text(GOOD)
    (folder / "orders.yml").write_text(GOOD.replace("refund", "order")
                                       .replace("columns:", "columns: [x\n"))
    specs = {t.name: t for t in table_specs()}
    assert list(specs) == ["orders", "refunds"]
    assert specs["refunds"].loaded_at == "refunded_at" and specs["refunds"].event_time
    broken = specs["orders"]
    assert broken.loaded_at is None and broken.event_time is None
    assert "contract does not load" in broken.description
    assert "shop/orders.yml: invalid YAML" in broken.description
