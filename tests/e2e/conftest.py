"""One running ``tidemark up`` shared by the end-to-end and browser tests of a session.

The stack runs on a fresh ``TIDEMARK_HOME`` in the test's temporary directory with free ports,
at the default scale a new user gets (7 days x 2,000 orders, 158,000 rows) and a demo load of
100 changes/s without orders placed on closed days (``TIDEMARK_DEMO_BEYOND_LATENESS_SHARE=0``:
each of them makes the corrections sensor queue a re-build of a mart day, and the UI's runs wait
behind those; ``test_stack.py`` puts its own late order through the corrections path, and
``tests/tidemark/test_up.py`` runs the demo's late orders). ``test_stack.py`` stops and
restarts it (same home, same ports); whoever uses it last leaves it running, and the session's
teardown stops it with Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import TIDEMARK, RunningStack
from tests.support import free_port

SEED_ARGS: tuple[str, ...] = ()  # the defaults: 7 days x 2,000 orders a day
LOAD_RATE = "100"
# Not about the demo's late orders (see the module docstring): none, so no correction run queues.
STACK_SETTINGS = {"TIDEMARK_DEMO_BEYOND_LATENESS_SHARE": "0"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """``tidemark up`` with Dagster, running (started once per session)."""
    if TIDEMARK is None:
        pytest.skip("the tidemark console script is not installed (pip install -e '.[dev]')")
    home = tmp_path_factory.mktemp("e2e") / "home"
    running = RunningStack(home=home, pg_port=free_port(), dagster_port=free_port(),
                           args=SEED_ARGS, settings=dict(STACK_SETTINGS))
    running.start("--rate", LOAD_RATE)
    try:
        yield running
    finally:
        running.kill()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``test-artifacts/`` at the repository root (gitignored): screenshots and logs."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
