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
    ("v", "-- @kyes: a\nselect 1", "unknown setting @kyes"),
    ("v", "-- @retention: forever\nselect 1", "must read '<column> <n>"),
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
