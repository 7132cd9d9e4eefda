"""Where the databases are: the embedded server, or external servers that Tidemark never starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import create_database, embedded_url, free_port
from tidemark.errors import ExternalServerError
from tidemark.settings import Settings
from tidemark.stack.databases import check_reachable, ensure_databases, locate_databases
from tidemark.stack.embedded import EmbeddedServer


def test_embedded_urls_use_least_privileged_roles(tmp_path: Path) -> None:
    dbs = locate_databases(Settings(home=tmp_path, port=50001, source_url=None, landing_url=None))
    assert dbs.server is not None
    assert dbs.source_ingest == embedded_url(tmp_path, 50001, "shop", "tidemark_ingest")
    assert dbs.landing_app == embedded_url(tmp_path, 50001, "tidemark", "tidemark_app")
    assert dbs.reader == embedded_url(tmp_path, 50001, "tidemark", "tidemark_reader")
    assert dbs.reader.endswith(f"?sslmode=disable&password=&passfile={tmp_path}/pgpass")


def test_external_servers_are_used_and_nothing_is_started(pg: EmbeddedServer,
                                                          tmp_path: Path) -> None:
    source, landing = create_database(pg, "ext_source"), create_database(pg, "ext_landing")
    settings = Settings(home=tmp_path / "unused", port=free_port(), source_url=source,
                        landing_url=landing)
    dbs = ensure_databases(settings)
    assert dbs.server is None
    assert (dbs.source, dbs.landing, dbs.source_ingest, dbs.landing_app) == (
        source, landing, source, landing)
    assert not (tmp_path / "unused").exists(), "no embedded server was initialised"


def test_unreachable_server_is_named_with_the_password_masked() -> None:
    url = f"postgresql://app:hunter2@127.0.0.1:{free_port()}/shop"
    with pytest.raises(ExternalServerError) as info:
        check_reachable("TIDEMARK_SOURCE_URL", url)
    assert "TIDEMARK_SOURCE_URL" in str(info.value)
    assert "hunter2" not in str(info.value) and "app:***@" in str(info.value)
    # what failed, not only libpq's hint line ("Is the server running on that host ...?")
    assert "Connection refused" in str(info.value), str(info.value)
