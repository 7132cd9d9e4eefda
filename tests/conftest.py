"""Shared fixtures: one real embedded PostgreSQL for the whole test session.

``pg`` is the session server (a temporary ``TIDEMARK_HOME``, a free port, fsync off for speed).
``module_db`` gives each test module its own fresh database on it, named after the module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgversions import WHEEL_MAJOR, session_major
from tests.support import create_database, start_test_server
from tidemark.stack.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """The session's embedded PostgreSQL server, with the Tidemark roles.

    ``TIDEMARK_TEST_PG=15`` (or another major version, tests/pgversions.py) runs that version.
    """
    major = session_major()
    server = start_test_server(tmp_path_factory.mktemp("tidemark-home"),
                               major=None if major == WHEEL_MAJOR else major)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_db(pg: EmbeddedServer, request: pytest.FixtureRequest) -> str:
    """A fresh database for this test module; returns its superuser URL."""
    name = re.sub(r"[^a-z0-9_]", "_", Path(request.module.__file__).stem.lower())[:60]
    return create_database(pg, name)
