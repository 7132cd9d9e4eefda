"""Output helpers shared by every command: human tables by default, JSON on ``--json``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

# Piped into a file, a pager or a CI log, Rich would lay tables out for 80 columns and cut long
# cells with an ellipsis ("fct_daily…"): without a terminal (and without COLUMNS), lay them out
# for a wide page instead; cells too long for the width wrap (fold), nothing is cut.
PIPED_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH)
err_console = Console(stderr=True)


def emit_json(payload: Any) -> None:
    """Print ``payload`` as JSON on stdout (dates and paths as strings)."""
    print(json.dumps(payload, default=str, indent=2, sort_keys=True))


LONGEST_WORD = 30  # a longer word (a URL, a path) is folded wherever it is shown


def emit_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a table for a person (cells verbatim: ``[a-z]`` is text, not markup).

    No column is narrower than its longest word (of up to :data:`LONGEST_WORD` characters). A
    table whose words do not fit the terminal side by side (``tidemark status`` at 80 columns:
    "streamin/g", a timestamp over four lines) is printed one block per row instead, a field
    and its value per line.
    """
    texts = [[cell(v) for v in row] for row in rows]
    table = Table(title=title, title_justify="left")
    for column, width in zip(columns, word_widths(columns, texts), strict=True):
        table.add_column(column, overflow="fold", min_width=width)
    for row in texts:
        table.add_row(*(Text(v) for v in row))
    # rich keeps each column's minimum width even where the sum overflows the terminal
    lines = Segment.split_lines(console.render(table, console.options))
    if max((Segment.get_line_length(line) for line in lines), default=0) > console.width:
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column(no_wrap=True, style="bold")
        table.add_column(overflow="fold")
        for i, row in enumerate(texts):
            if i:
                table.add_section()
            for column, value in zip(columns, row, strict=True):
                table.add_row(Text(column), Text(value))
    console.print(table)


def word_widths(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    """Per column, the longest word of its header and cells (at most :data:`LONGEST_WORD`): the
    narrowest it can be without breaking one."""
    widths = []
    for i, column in enumerate(columns):
        words = [w for text in [column, *(row[i] for row in rows)] for w in text.split()]
        widths.append(min(max((len(w) for w in words), default=1), LONGEST_WORD))
    return widths


def cell(value: Any) -> str:
    """A value as a person reads it in a table: a list as its items joined by commas (``-``
    when empty), never Python's repr (``[datetime.date(2026, 12, 2)]``, ``['a']``)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def fail(message: str) -> None:
    """Print an error for a person on stderr."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
