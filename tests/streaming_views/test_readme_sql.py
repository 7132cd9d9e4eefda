"""The README's supported-SQL table says what each target does with each example: every
example is checked against both targets, so a cell that stops being true fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streaming_views.analyzer import analyze
from streaming_views.errors import StreamingViewsError
from streaming_views.mzcheck import check_materialize
from streaming_views.viewfile import parse_view_text

README = Path(__file__).resolve().parents[2] / "README.md"


def _rows() -> list[tuple[str, str, str, str]]:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("### Supported SQL\n"):]
    table = table[table.index("| construct | example | embedded engine | Materialize |"):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        example = re.fullmatch(r"`(.*)`", cells[1])
        if example and example.group(1).lower().startswith(("select", "with")):
            rows.append((cells[0], example.group(1), cells[2], cells[3]))
    return rows


ROWS = _rows()


def test_the_table_is_found() -> None:
    assert len(ROWS) >= 25


@pytest.mark.parametrize(("construct", "example", "embedded", "materialize"), ROWS,
                         ids=[r[0][:40] for r in ROWS])
def test_each_cell_holds(construct: str, example: str, embedded: str, materialize: str) -> None:
    view = parse_view_text("readme_example", example)
    if embedded.startswith("maintained"):
        analyze(view)
    elif "at deploy" in embedded:
        pass  # refused when PostgreSQL resolves the names: needs a database (test_deploy.py)
    else:
        assert embedded.startswith("refused"), embedded
        with pytest.raises(StreamingViewsError):
            analyze(view)
    if materialize.startswith("refused"):
        with pytest.raises(StreamingViewsError):
            check_materialize(view)
    else:
        check_materialize(view)
