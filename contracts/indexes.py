"""The ``indexes:`` list of a table contract: the B-tree indexes of the landing mirror.

Each entry is one column name or a list of column names (one composite index, in that order)::

    indexes:
      - order_id                 # payments (order_id): refunds of a day's orders
      - created_at               # payments (created_at): one day of payments
      - [store_id, placed_at]    # a composite index

Ingestion creates them on the mirror (:mod:`ingestion.landing_indexes`). A broken entry raises a
:class:`~contracts.errors.ContractError` naming the file, the line and the entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from contracts.errors import ContractError


def entry_line(path: Path, index: int, column: int | None = None) -> int | None:
    """The line (1-based) of ``indexes[index]`` (or of its ``column``-th name) in ``path``.

    Only called when an entry is wrong, so the file is composed again just for the marks.
    """
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    seq = next((value for key, value in node.value if key.value == "indexes"), None)
    if not isinstance(seq, yaml.SequenceNode) or index >= len(seq.value):
        return None
    item = seq.value[index]
    if column is not None and isinstance(item, yaml.SequenceNode) and column < len(item.value):
        item = item.value[column]
    return item.start_mark.line + 1


def parse_indexes(path: Path, entries: Sequence[str | list[str]], columns: Mapping[str, object],
                  primary_key: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Check the ``indexes:`` entries of a table contract and return them as column tuples.

    Args:
        path: the contract file (for messages).
        entries: the file's ``indexes`` list (a column name or a list of them each).
        columns: the contract's columns by name.
        primary_key: the contract's key columns (its index serves their leading columns).

    Returns:
        One tuple of column names per index, in the file's order.

    Raises:
        ContractError: an entry is empty, names an unknown column twice or at all, repeats an
            earlier entry, or is served by the primary key's index already.
    """
    result: list[tuple[str, ...]] = []
    for i, entry in enumerate(entries):
        names = (entry,) if isinstance(entry, str) else tuple(entry)

        def fail(problem: str, column: int | None = None, i: int = i) -> ContractError:
            field = f"indexes[{i}]" if column is None else f"indexes[{i}][{column}]"
            return ContractError(path, field, problem, entry_line(path, i, column))

        if not names:
            raise fail("an index needs at least one column")
        for j, name in enumerate(names):
            at = None if isinstance(entry, str) else j
            if name not in columns:
                raise fail(f"unknown column {name!r}; columns: {', '.join(columns)}", at)
            if name in names[:j]:
                raise fail(f"column {name!r} is listed twice in one index", at)
        if names in result:
            raise fail(f"the index ({', '.join(names)}) is listed twice")
        if tuple(primary_key[:len(names)]) == names:
            raise fail(f"the index ({', '.join(names)}) is redundant: the primary key "
                       f"({', '.join(primary_key)}) already leads with these columns")
        result.append(names)
    return tuple(result)
