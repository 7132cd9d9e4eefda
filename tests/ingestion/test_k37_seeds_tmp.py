"""Temporary (not committed): generator seeds from K37_SEEDS."""
import os
from pathlib import Path

import pytest

from tests.ingestion.applier_differential import Case
from tests.ingestion.conftest import Pair

SEEDS = [int(s) for s in os.environ.get("K37_SEEDS", "23").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_seed(pair: Pair, tmp_path: Path, seed: int) -> None:
    Case(pair.src, pair.land, pair.source, tmp_path, seed,
         steps=int(os.environ.get("K37_STEPS", "25"))).run()
