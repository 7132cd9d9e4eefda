"""View files as users leave them: each mistake is a message naming the file (and where), never
a Python traceback nor PostgreSQL's words about the engine's own queries.

Before v24: a file that is not UTF-8 and a directory named ``x.sql`` raised UnicodeDecodeError
and IsADirectoryError (the CLI printed "unexpected ..."); ``@retention`` over a column the table
lacks failed with the engine's internal ``select t.nope + CAST(...) from "s"."t"`` and no file;
``@keys`` naming a column the view does not have was accepted.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from streaming_views import deploy
from streaming_views.errors import ViewDefinitionError, ViewFileError


@pytest.fixture(scope="module")
def db(module_db: str) -> str:
    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute("create schema vf; create table vf.t (id int primary key, ts timestamptz)")
    return module_db


def test_a_file_that_is_not_utf8_is_pointed_at(db: str, tmp_path: Path) -> None:
    (tmp_path / "latin.sql").write_bytes(b"select t.id\nfrom vf.t t where t.id = 'caf\xe9'\n")
    with pytest.raises(ViewFileError, match=r"latin\.sql:2:30: the file is not UTF-8 \(byte "
                       r"0xe9\)"):
        deploy(db, tmp_path)


def test_a_directory_named_like_a_view_file_is_refused(db: str, tmp_path: Path) -> None:
    (tmp_path / "old.sql").mkdir()
    with pytest.raises(ViewFileError, match=r"old\.sql: not a file"):
        deploy(db, tmp_path)


def test_settings_naming_columns_that_do_not_exist(db: str, tmp_path: Path) -> None:
    (tmp_path / "kept.sql").write_text("-- @retention: t.when 2 days\nselect t.id from vf.t t\n")
    with pytest.raises(ViewDefinitionError, match=r"kept\.sql: the temporal filter's bound "
                       r"t\.\"when\" \+ .*over vf\.t: column t\.when does not exist$"):
        deploy(db, tmp_path)
    (tmp_path / "kept.sql").write_text("-- @keys: ident\nselect t.id from vf.t t\n")
    with pytest.raises(ViewFileError, match=r"kept\.sql: @keys names ident, which is not a "
                       r"column of the view \(its columns: id\)"):
        deploy(db, tmp_path)
