"""Self-joins: a table joined to itself in several roles (``employees e JOIN employees m ON
m.id = e.manager_id``).

**Design.** Each role is a base table of its own for the engine: its own index in
:attr:`Analysis.tables`, its own statement triggers on the (same) physical table and its own
change log. A statement on the table fires every role's triggers, so each role's log receives
the statement's rows, and the transaction's changed set holds every role. The inclusion-exclusion
of :mod:`streaming_views.deltas` then gives the exact change of the join, for one statement that
changes both roles at once too: with ``D`` the change and ``N`` the table now,
``D ⋈ N + N ⋈ D - D ⋈ D`` is ``(N ⋈ N) - (O ⋈ O)`` for ``O = N - D``. Outer self-joins go through
:mod:`streaming_views.outer` the same way (each role has its own key column).

The only shared piece is which columns a role's log keeps: PostgreSQL reports the columns the
view reads per physical table, so every role logs all of them (:func:`share_columns`).
Self-joins inside ``UNION ALL`` branches are refused (their tables are shared between branches).
"""

from __future__ import annotations

from typing import Any


def share_columns(resolved: Any) -> None:
    """Give every role of a table the columns the view reads of that table (in any role)."""
    by_oid: dict[int, list[Any]] = {}
    for info in resolved.tables:
        by_oid.setdefault(info.oid, []).append(info)
    for infos in by_oid.values():
        if len(infos) < 2:
            continue
        columns = {c.attnum: c for info in infos for c in info.columns}
        for info in infos:  # a column one role relies on being NOT NULL: every role records it
            columns.update({c.attnum: c for c in info.columns if c.notnull})
        for info in infos:
            info.columns = [columns[a] for a in sorted(columns)]
