"""Output helpers shared by every command: human tables by default, JSON on ``--json``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
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


def emit_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as a table for a person (cells verbatim: ``[a-z]`` is text, not markup)."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell(v)) for v in row))
    console.print(table)


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
