"""The run tag of corrections: the one place its name and its run-slot limit are written.

The reconciliation_corrections sensor tags every correction run (late data, drift) with
``CORRECTION_TAG`` (value: the mart); the run queue lets runs with that tag take at most
``CORRECTION_SLOTS`` of its slots, so a user's run or backfill never waits behind them (README
"Daily truth"). ``orchestration.defs.keys`` re-exports the tag, the ``dagster.yaml`` that
``tidemark up`` writes is rendered from both (:mod:`tidemark.stack.dagster_proc`), and the docker
stack's static ``docker/dagster.yaml`` is checked against them by a test.
"""

from __future__ import annotations

CORRECTION_TAG = "tidemark/correction"
CORRECTION_SLOTS = 1
