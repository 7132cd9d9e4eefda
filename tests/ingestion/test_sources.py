"""The source registry keeps no secret: a URL with a password is refused without echoing it;
the password comes from the environment variable named after the source, or the whole URL from
a variable the registration names."""

from __future__ import annotations

import psycopg
import pytest

from ingestion.errors import SourceError, UnknownSourceError
from ingestion.sources import (
    SourceSpec,
    delete_source,
    get_source,
    list_sources,
    password_variable,
    record_error,
    save_source,
)
from tests.ingestion.conftest import Pair


def test_url_with_password_is_refused_and_not_echoed() -> None:
    with pytest.raises(SourceError) as info:
        SourceSpec("mydb", url="postgresql://app:s3cret-pw@db.example:5432/app")
    assert "s3cret-pw" not in str(info.value)
    assert "TIDEMARK_SOURCE_MYDB_PASSWORD" in str(info.value)
    with pytest.raises(SourceError) as info:
        SourceSpec("mydb", url="host=db dbname=app password=other-secret")
    assert "other-secret" not in str(info.value)
    with pytest.raises(SourceError, match="ADMIN_PASSWORD"):
        SourceSpec("mydb", url="postgresql://app@db/app",
                   admin_url="postgresql://owner:pw@db/app")
    # an empty password= (the embedded server's URLs) is no secret; it hides none either
    embedded = "postgresql://app@127.0.0.1:55432/app?sslmode=disable&password=&passfile=/h/pgpass"
    assert SourceSpec("mydb", url=embedded).url == embedded
    with pytest.raises(SourceError) as info:
        SourceSpec("mydb", url=embedded.replace("app@", "app:hidden-pw@", 1))
    assert "hidden-pw" not in str(info.value)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of --url and --url-env"),
    ({"url": "postgresql://a@h/db", "url_env": "X"}, "exactly one"),
    ({"url": "postgresql://a@h/"}, "names no database"),
    ({"url": "not a url at all"}, "not a PostgreSQL connection URL"),
    ({"url": "postgresql://a@h/db", "schemas": ("a",), "tables": ("a.b",)}, "not both"),
])
def test_bad_registrations(kwargs: dict, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        SourceSpec("mydb", **kwargs)
    for name in ("My-DB", "mydb\n", "my\"db;--"):  # "mydb\n" was accepted on main
        with pytest.raises(ValueError, match="lower-case"):
            SourceSpec(name, url="postgresql://a@h/db")


def test_an_unreadable_url_in_the_environment_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On main libpq's message ('missing "=" after "Q6zz"') reached `tidemark source add`.
    spec = SourceSpec("mydb", url_env="MYDB_URL")
    for value in ("host=db dbname=app user=u password=a Q6zz",
                  "postgresql://u@db/app?password=%zzQ6zz"):
        monkeypatch.setenv("MYDB_URL", value)
        with pytest.raises(SourceError, match="MYDB_URL cannot be read") as info:
            spec.dsn()
        assert "Q6zz" not in str(info.value)


def test_passwords_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SourceSpec("mydb", url="postgresql://app@db.example/app",
                      admin_url="postgresql://owner@db.example/app")
    monkeypatch.delenv(password_variable("mydb"), raising=False)
    assert spec.dsn() == "postgresql://app@db.example/app"
    monkeypatch.setenv("TIDEMARK_SOURCE_MYDB_PASSWORD", "pw1")
    assert "password=pw1" in spec.dsn()
    assert "password=pw1" in spec.admin_dsn(), "the admin falls back to the stream's password"
    monkeypatch.setenv("TIDEMARK_SOURCE_MYDB_ADMIN_PASSWORD", "pw2")
    assert "password=pw2" in spec.admin_dsn()
    assert "pw" not in str(spec.as_dict())

    by_env = SourceSpec("mydb", url_env="MY_SOURCE_URL")
    monkeypatch.delenv("MY_SOURCE_URL", raising=False)
    with pytest.raises(SourceError, match="MY_SOURCE_URL, which is not set"):
        by_env.dsn()
    monkeypatch.setenv("MY_SOURCE_URL", "postgresql://u:secret@h/db")
    assert by_env.dsn() == "postgresql://u:secret@h/db"
    assert by_env.as_dict()["url"] == "$MY_SOURCE_URL"


def test_registry_round_trip(pair: Pair) -> None:
    assert list_sources(pair.land) == []
    with pytest.raises(UnknownSourceError, match="none yet"):
        get_source(pair.land, "nope")
    save_source(pair.land, SourceSpec("a", url="postgresql://u@h/a", tables=("s.t",)))
    save_source(pair.land, SourceSpec("b", url_env="B_URL", schemas=("x", "y")))
    with pytest.raises(UnknownSourceError, match=r"registered: a, b"):
        get_source(pair.land, "c")
    assert get_source(pair.land, "a").tables == ("s.t",)
    assert get_source(pair.land, "b").selection.schemas == ("x", "y")
    record_error(pair.land, "a", "broken")
    assert get_source(pair.land, "a").last_error == "broken"
    save_source(pair.land, SourceSpec("a", url="postgresql://u@h/a2"))
    assert get_source(pair.land, "a").last_error is None
    delete_source(pair.land, "a")
    assert [s.name for s in list_sources(pair.land)] == ["b"]
    with psycopg.connect(pair.land) as conn:
        stored = conn.execute("select url, url_env from tidemark.sources").fetchall()
    assert stored == [(None, "B_URL")]
