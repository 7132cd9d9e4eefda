"""View files: header settings, names, hashes, the shipped views directory."""

from __future__ import annotations

import pytest

from streaming_views.errors import ViewFileError
from streaming_views.viewfile import DEFAULT_VIEWS_DIR, load_views, parse_view_text


def test_header_settings_are_parsed():
    view = parse_view_text("v", "-- Revenue per store.\n-- @keys: store_id, w\n"
                                "-- @cluster: live_views\n-- @retention: o.placed_at 2 days\n"
                                "select 1 as a from s.t")
    assert view.keys == ("store_id", "w")
    assert view.cluster == "live_views"
    assert view.retention is not None and view.retention.column == "o.placed_at"
    assert view.retention.interval == "2 days"
    assert view.description == "Revenue per store."


def test_hash_changes_with_text_only():
    a = parse_view_text("v", "select 1 as a from s.t")
    assert a.definition_hash == parse_view_text("v", "select 1 as a from s.t\n").definition_hash
    assert a.definition_hash != parse_view_text("v", "select 2 as a from s.t").definition_hash


@pytest.mark.parametrize(("name", "text", "message"), [
    ("Bad-Name", "select 1", "must be lower case"),
    ('v";drop table s.t;--', "select 1", "must be lower case"),
    ("v\n", "select 1", "must be lower case"),  # on main: accepted, created live."v<newline>"
    ("v", "-- @kyes: a\nselect 1", "unknown setting @kyes"),
    ("v", "-- @retention: forever\nselect 1", "must read '<column> <n>"),
    ("v", "-- @freshness: 2s\nselect 1", r"v: @freshness: freshness objective '2s' must read"),
    ("v", "-- @freshness: p100 2s\nselect 1", "the percentile between 1 and 99.9"),
    ("v", "-- @freshness: p95 0s\nselect 1", "the amount above 0"),
    ("v", "-- @freshness: p95 2 hours\nselect 1", "e.g. 'p95 2s'"),
])
def test_bad_files_are_refused(name, text, message):
    with pytest.raises(ViewFileError, match=message):
        parse_view_text(name, text)


def test_missing_directory(tmp_path):
    with pytest.raises(ViewFileError, match="does not exist"):
        load_views(tmp_path / "nope")


def test_shipped_views_load():
    names = {v.name for v in load_views(DEFAULT_VIEWS_DIR)}
    assert {"daily_store_revenue", "active_carts"} <= names


@pytest.mark.parametrize(("text", "percentile", "seconds"), [
    ("p95 2s", 0.95, 2.0), ("P99  500ms", 0.99, 0.5), ("p50 1.5s", 0.5, 1.5),
    ("p99.9 1m", 0.999, 60.0), ("p90 2min", 0.9, 120.0),
])
def test_freshness_objective_is_parsed(text, percentile, seconds):
    view = parse_view_text("v", f"-- @freshness: {text}\nselect 1 as a from s.t")
    assert view.freshness is not None
    assert view.freshness.percentile == pytest.approx(percentile)
    assert view.freshness.seconds == pytest.approx(seconds)
    assert parse_view_text("v", "select 1 as a from s.t").freshness is None


def test_freshness_default_setting_is_checked(monkeypatch):
    from tidemark.errors import SettingsError
    from tidemark.settings import load_settings

    monkeypatch.setenv("TIDEMARK_FRESHNESS_OBJECTIVE", "P99 500ms")
    assert load_settings().freshness_objective == "p99 500ms"
    monkeypatch.setenv("TIDEMARK_FRESHNESS_OBJECTIVE", "fast please")
    with pytest.raises(SettingsError,
                       match="TIDEMARK_FRESHNESS_OBJECTIVE .*must read 'p<percentile>"):
        load_settings()
