"""The differential generator's fixed-seed slice (CI): random views from the supported grammar,
random writes by writers in other sessions, the oracle after every step. The long run is
``python bench/ivm_differential.py --minutes 60`` (results in bench/RESULTS.md)."""

from __future__ import annotations

import pytest

from tests.streaming_views.differential import run_seeds

BLOCKS = 6
SEEDS_PER_BLOCK = 5


@pytest.mark.parametrize("block", range(BLOCKS))
def test_random_views_equal_their_queries_after_every_step(module_db: str, block: int) -> None:
    first = block * SEEDS_PER_BLOCK
    stats = run_seeds(module_db, range(first, first + SEEDS_PER_BLOCK), views=4, steps=15)
    assert stats.cases == SEEDS_PER_BLOCK
    # views deployed and checked every step (a lone case has one view: differential.Case.lone)
    assert stats.checks >= stats.steps, stats
