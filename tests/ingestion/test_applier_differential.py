"""The applier's generator (:mod:`tests.ingestion.applier_differential`) on fixed seeds: tables
keyed, with a composite key and keyless under contracts some rows break, sessions in other time
zones, TOAST values, key changes, truncates, rows fixed later at the source, replays and
contract edits at random points; the oracle ("nothing lost") after every catch-up. The long run
is ``bench/applier_differential.py --minutes N``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ingestion.applier_differential import Case
from tests.ingestion.conftest import Pair


@pytest.mark.parametrize("seed", [1, 3])
def test_generated_steps_lose_nothing(pair: Pair, tmp_path: Path, seed: int) -> None:
    stats = Case(pair.src, pair.land, pair.source, tmp_path, seed, steps=25).run()
    assert stats.checks > 3 and stats.steps == 25
