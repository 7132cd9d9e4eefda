"""Fixtures of the live-view tests: deploy a view from SQL text, check the oracle."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streaming_views.deploy import deploy_embedded
from streaming_views.verify import diff_rows
from streaming_views.viewfile import parse_view_text


def deploy_text(dsn: str, name: str, text: str) -> str:
    """Deploy one view from SQL text to the embedded engine; return the action taken."""
    return deploy_embedded(dsn, [parse_view_text(name, text)])[0].action


def run_writers(writer: Callable[[int], None], count: int = 4) -> list[BaseException]:
    """Run ``writer(seed)`` for seeds ``0..count-1`` in threads at once; the errors they raised."""
    errors: list[BaseException] = []

    def guarded(seed: int) -> None:
        try:
            writer(seed)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(s,)) for s in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def write_views(directory: Path, **views: str) -> Path:
    """Make ``directory`` hold exactly the view files ``<name>.sql`` given; return it."""
    directory.mkdir(exist_ok=True)
    for old in directory.glob("*.sql"):
        old.unlink()
    for name, text in views.items():
        (directory / f"{name}.sql").write_text(text)
    return directory


def parents_and_children(module_db: str, conn: psycopg.Connection, schema: str, region: str,
                          parents: int, children: int, view: str) -> str:
    """Tables ``<schema>.parent`` (region ``'r' || <region>`` of ``i``) and ``.child`` (spread
    over the parents, ``qty`` = ``id``) and the view ``<schema>_view``; its state table."""
    conn.execute(f"create schema {schema}; create table {schema}.parent (id int primary key, "
                 f"region text); create table {schema}.child (id int primary key, "
                 "parent_id int, qty int)")
    conn.execute(f"insert into {schema}.parent select i, 'r' || ({region}) "
                 f"from generate_series(1, {parents}) i")
    conn.execute(f"insert into {schema}.child select i, 1 + i % {parents}, i "
                 f"from generate_series(1, {children}) i")
    deploy_text(module_db, f"{schema}_view", view)
    suffix = conn.execute("select suffix from tidemark.views where name = %s",
                          (f"{schema}_view",)).fetchone()
    return f'tidemark_state."{suffix[0]}"'


def oracle(conn: psycopg.Connection, name: str, text: str) -> tuple[list[Any], list[Any]]:
    """(live EXCEPT ALL query, query EXCEPT ALL live) for ``live.<name>``."""
    return diff_rows(conn, name, text)


def assert_equal(conn: psycopg.Connection, name: str, text: str) -> None:
    """Fail with the differing rows when ``live.<name>`` differs from its query."""
    extra, missing = oracle(conn, name, text)
    assert not extra and not missing, f"live.{name}: extra={extra} missing={missing}"


def assert_all_equal(conn: psycopg.Connection, views: dict[str, str]) -> None:
    """:func:`assert_equal` for every view of ``views`` (name -> query)."""
    for name, text in views.items():
        assert_equal(conn, name, text)


@pytest.fixture(scope="module")
def conn(module_db: str):
    """An autocommit connection to this module's database."""
    with psycopg.connect(module_db, autocommit=True) as connection:
        yield connection
