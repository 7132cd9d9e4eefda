"""The reconciliation rules on their own: tolerances, day ranges, the pair file."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tidemark.reconciliation.compare import closed_window
from tidemark.reconciliation.days import contiguous_ranges
from tidemark.reconciliation.errors import ReconciliationConfigError
from tidemark.reconciliation.pairs import Measure, load_pairs


def test_tolerances() -> None:
    exact = Measure("m", "m", "m", Decimal(0), Decimal(0))
    assert exact.agrees(Decimal("1.00"), Decimal("1"))
    assert not exact.agrees(Decimal("1.01"), Decimal("1"))
    assert not exact.agrees(None, Decimal("1"))
    loose = Measure("m", "m", "m", Decimal("0.5"), Decimal("0.01"))
    assert loose.agrees(Decimal("10.4"), Decimal("10"))
    assert loose.agrees(Decimal("1000"), Decimal("1009"))  # 0.9 % relative
    assert not loose.agrees(Decimal("1000"), Decimal("1011"))


def test_contiguous_ranges_and_window() -> None:
    d = date(2026, 3, 1)
    days = [d, d + timedelta(days=1), d + timedelta(days=2), d + timedelta(days=5), d]
    assert contiguous_ranges(days) == [(d, d + timedelta(days=2)),
                                       (d + timedelta(days=5), d + timedelta(days=5))]
    assert closed_window(date(2026, 3, 10), 30, None) == (date(2026, 2, 8), date(2026, 3, 9))
    assert closed_window(date(2026, 3, 10), 30, 2) == (date(2026, 3, 9), date(2026, 3, 9))
    assert closed_window(date(2026, 3, 10), 30, 7) == (date(2026, 3, 4), date(2026, 3, 9))


def test_shipped_pairs_load() -> None:
    pairs = {p.name: p for p in load_pairs()}
    # the shipped pairs; a user may add their own (README "Extending")
    assert set(pairs) >= {"daily_store_revenue", "store_cancellation_rate",
                          "late_deliveries_daily"}
    rate = pairs["store_cancellation_rate"]
    assert {m.name: m.live_column for m in rate.measures}["cancelled_order_count"] \
        == "cancelled_count"


def test_bad_pair_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "reconciliation.yml"
    bad.write_text("pairs:\n  - name: x\n    live_view: x\n    mart: y\n    day_column: d\n"
                   "    keys: [k]\n    measures: []\n")
    with pytest.raises(ReconciliationConfigError, match=r"pairs\[0\].*day_column 'd'"):
        load_pairs(bad)
    bad.write_text("pairs:\n  - name: x\n")
    with pytest.raises(ReconciliationConfigError, match=r"pairs\[0\]: missing or invalid"):
        load_pairs(bad)
