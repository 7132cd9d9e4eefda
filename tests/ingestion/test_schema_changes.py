"""ingestion/schema_changes.py: which type changes keep every value, and how a Relation message
differs from the registered shape."""

from __future__ import annotations

import pytest

from ingestion.schema_changes import diff_columns, is_widening
from ingestion.tables import ColumnInfo

VARHDR = 4


def col(type_oid: int, typmod: int = -1, name: str = "c", type_sql: str = "t") -> ColumnInfo:
    return ColumnInfo(name, type_oid, typmod, type_sql)


def numeric(p: int, s: int) -> int:
    return ((p << 16) | s) + VARHDR


@pytest.mark.parametrize(("old", "new", "safe"), [
    (col(21), col(23), True), (col(21), col(20), True), (col(23), col(20), True),
    (col(20), col(23), False), (col(23), col(21), False), (col(700), col(701), True),
    (col(701), col(700), False), (col(23), col(1700), False), (col(23), col(25), False),
    (col(1700, numeric(12, 2)), col(1700, numeric(14, 2)), True),
    (col(1700, numeric(12, 2)), col(1700, numeric(14, 4)), True),
    (col(1700, numeric(12, 2)), col(1700), True),
    (col(1700, numeric(12, 2)), col(1700, numeric(12, 3)), False),  # fewer integer digits
    (col(1700, numeric(12, 2)), col(1700, numeric(12, 1)), False),
    (col(1700), col(1700, numeric(38, 10)), False),
    (col(1043, 10 + VARHDR), col(1043, 40 + VARHDR), True),
    (col(1043, 40 + VARHDR), col(1043, 10 + VARHDR), False),
    (col(1043, 10 + VARHDR), col(1043), True), (col(1043), col(1043, 10 + VARHDR), False),
    (col(1043, 10 + VARHDR), col(25), True), (col(25), col(1043), False),
    (col(1042, 88 + VARHDR), col(1043, 200 + VARHDR), True),
    (col(1042, 88 + VARHDR), col(25), True), (col(1043, 8 + VARHDR), col(1042, 9 + VARHDR),
                                              False),
    (col(1184, 3), col(1184, 6), True), (col(1184, 3), col(1184), True),
    (col(1184), col(1184, 3), False), (col(1114, 6), col(1184, 6), False),
    (col(1186, 5), col(1186), True), (col(1186), col(1186, 5), False),
])
def test_is_widening(old: ColumnInfo, new: ColumnInfo, safe: bool) -> None:
    assert is_widening(old, new) is safe


def test_diff_columns_kinds() -> None:
    old = [col(23, name="id"), col(23, name="v"), col(25, name="gone"), col(25, name="x")]
    new = [col(23, name="id"), col(20, name="v"), col(25, name="x"), col(23, name="added"),
           col(25, name="back")]
    changes = diff_columns(old, new, {"added"}, retired=[col(25, name="back")])
    assert [(c.kind, c.column) for c in changes] == [
        ("widen_type", "v"), ("drop_column", "gone"), ("add_required_column", "added"),
        ("add_nullable_column", "back")]
    renamed = diff_columns([col(23, name="a")], [col(23, name="b")], set())
    assert [(c.kind, c.column) for c in renamed] == [("rename_column", "a")]
    retyped_back = diff_columns([], [col(23, name="back")], set(), [col(25, name="back")])
    assert [c.kind for c in retyped_back] == ["change_type"]


def test_a_column_dropped_and_added_again_at_another_place_is_a_readd() -> None:
    old = [col(23, name="id"), col(25, name="a"), col(25, name="b"), col(25, name="c")]
    new = [col(23, name="id"), col(25, name="b"), col(25, name="c"), col(25, name="a")]
    changes = diff_columns(old, new, set())
    assert [(c.kind, c.column) for c in changes] == [("readd_column", "a")]
    assert not changes[0].followable
    assert "position 4" in changes[0].detail
    # Two of them, one with a new column between; a plain add keeps the order.
    new2 = [col(23, name="id"), col(25, name="c"), col(25, name="b"), col(25, name="x"),
            col(25, name="a")]
    assert [c.column for c in diff_columns(old, new2, set())] == ["b", "a"]
    assert [c.kind for c in diff_columns(old, [*old, col(25, name="x")], set())] \
        == ["add_nullable_column"]
