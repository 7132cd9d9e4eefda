"""Aggregate rules: how each kind of aggregate is kept in the state table.

One class per aggregate kind. A rule knows, for its call ``func([DISTINCT] x) [FILTER (WHERE
f)]`` with flat-row columns ``__x<i>`` / ``__f<i>`` (see :mod:`streaming_views.compiler`):

* :meth:`Rule.columns` — its hidden state columns (``__a<i>_...``);
* :meth:`Rule.exprs` — the grouped expressions over flat rows (``__sign`` +1 added, -1 removed)
  giving those columns for a delta or, with every sign +1, for a full build;
* :meth:`Rule.merge` — the ``SET`` clauses adding a grouped delta (``excluded``) to a group
  (``s``), and :meth:`Rule.dirty` when that delta leaves the group needing a recompute;
* :meth:`Rule.recompute` — aggregates over the group's rows for the columns to recompute;
* :meth:`Rule.finalize` — the value as the query returns it, from the group's columns;
* :meth:`Rule.windows` — per-group window columns a rule needs over the flat rows.

The sum rules (``sum``, ``avg`` and the DISTINCT aggregates) are in :mod:`streaming_views.sums`.
"""

from __future__ import annotations

from dataclasses import dataclass

from streaming_views.analyzer import AggCall
from streaming_views.astutil import deparse


def both(*conds: str | None) -> str:
    """The conjunction of the conditions given (None: none)."""
    return " AND ".join(c for c in conds if c and c != "true") or "true"


@dataclass
class Rule:
    """Base of the aggregate rules.

    Attributes:
        index: the aggregate's position among the view's aggregate calls.
        call: the call as written.
        result_type: the call's type (as PostgreSQL resolves it).
        value_type: the type of the kept value (sum or extreme).
        arg_type: the argument's type.
        collate: `` COLLATE ...`` of the kept value, or "".
        share: index of the rule whose columns this one reads (-1: ``__count``), or None.
        notnull: the argument is never NULL (a NOT NULL column, :mod:`streaming_views.notnull`).
        nn_col: another rule's column holding this rule's not-null count ("a NULL-extended
            table matched", :mod:`streaming_views.notnull`), or None.
        unmatched: a count of rows where that table did not match: ``__count - nn_col``.
    """

    index: int
    call: AggCall
    result_type: str
    value_type: str = ""
    arg_type: str = ""
    collate: str = ""
    share: int | None = None
    notnull: bool = False
    nn_col: str | None = None
    unmatched: bool = False

    kind = "rule"
    aux = False

    @property
    def p(self) -> str:
        """The column prefix of this rule (``__a<i>``)."""
        return f"__a{self.index}"

    @property
    def x(self) -> str:
        """The argument's flat column."""
        return f"__x{self.index}"

    def cond(self, *, nonnull: bool = True) -> str | None:
        """The flat-row condition for a row to count: the FILTER, and a non-null argument."""
        parts = []
        if self.call.filter is not None:
            parts.append(f"__f{self.index}")
        if nonnull and self.call.arg is not None and not self.notnull:
            parts.append(f"{self.x} IS NOT NULL")
        return " AND ".join(parts) or None

    @property
    def counted(self) -> bool:
        """The rows that count are all the group's rows (no FILTER, an argument never NULL):
        the rule's not-null count is the group's ``__count``, kept once."""
        return self.notnull and self.call.filter is None

    @property
    def own_nn(self) -> bool:
        """The rule keeps its not-null count in a column of its own (``<p>_nn``)."""
        return not self.counted and self.nn_col is None

    def nonnull_count(self, at: str) -> str:
        """The column of the rule's not-null count in ``at`` (``s``, ``excluded``)."""
        if self.nn_col is not None:
            return f"{at}.{self.nn_col}"
        return f"{at}.__count" if self.counted else f"{at}.{self.p}_nn"

    def _count(self, cond: str | None) -> str:
        if cond is None:
            return "coalesce(sum(__sign), 0)::bigint"
        return f"coalesce(sum(CASE WHEN {cond} THEN __sign ELSE 0 END), 0)::bigint"

    def flat(self) -> list[tuple[str, str]]:
        """(flat column, expression) this rule reads from each row."""
        if self.share is not None:
            return []
        out = []
        if self.call.arg is not None:
            out.append((self.x, deparse(self.call.arg)))
        if self.call.filter is not None:
            out.append((f"__f{self.index}", f"({deparse(self.call.filter)})"))
        return out

    def columns(self) -> list[tuple[str, str]]:
        """(column, type with collation) of the hidden state columns."""
        return []

    def exprs(self, delta: bool = True) -> list[str]:
        """Grouped expressions over flat rows, one per column of :meth:`columns`: of a delta
        (``delta``), or of a full build (every ``__sign`` +1)."""
        return []

    def merge(self) -> list[str]:
        """``SET`` clauses adding ``excluded`` (a grouped delta) to ``s`` (the group)."""
        return []

    def dirty(self) -> str | None:
        """Condition (over ``s`` and ``excluded``) under which the group needs a recompute."""
        return None

    def recompute(self) -> list[tuple[str, str]]:
        """(column, aggregate over the group's flat rows) recomputed for dirty groups."""
        return []

    def delta_dirty(self) -> str | None:
        """Grouped condition over a delta's flat rows under which a group inserted by it (not
        merged into an existing row) must be recomputed."""
        return None

    def grouped_dirty(self, grouped: dict[str, str]) -> str | None:
        """:meth:`delta_dirty` from ``grouped``, the delta's value of each of the rule's
        columns (by name), for a rule whose condition reads only those (else None)."""
        return None

    def windows(self) -> list[tuple[str, str]]:
        """(column, window aggregate over the group's flat rows) this rule needs."""
        return []

    def finalize(self) -> str:
        """The aggregate's value from the group's columns (``s.``)."""
        raise NotImplementedError

    def raises(self) -> str | None:
        """Condition (over ``s.``) under which finalising raises an error, as PostgreSQL's
        final function does — for every group, HAVING or not (it finalises every aggregate of
        a group before it evaluates HAVING)."""
        return None


class CountRule(Rule):
    """``count(*)``, ``count(x)`` [FILTER]: a signed count. ``count(*)`` without FILTER reads
    the group's row count ``__count``."""

    kind = "count"

    @property
    def kept(self) -> bool:
        """The count has a column of its own (not ``__count`` nor another rule's)."""
        return self.share is None and self.nn_col is None

    def flat(self) -> list[tuple[str, str]]:
        return super().flat() if self.nn_col is None else []

    def columns(self) -> list[tuple[str, str]]:
        return [(f"{self.p}_n", "bigint")] if self.kept else []

    def exprs(self, delta: bool = True) -> list[str]:
        return [self._count(self.cond())] if self.kept else []

    def merge(self) -> list[str]:
        return [f"{self.p}_n = s.{self.p}_n + excluded.{self.p}_n"] if self.kept else []

    def finalize(self) -> str:
        if self.nn_col is not None:
            return f"(s.__count - s.{self.nn_col})" if self.unmatched else f"s.{self.nn_col}"
        return "s.__count" if self.share == -1 else f"s.{self.p}_n"


class BoolRule(Rule):
    """``bool_and``/``bool_or``: counts of non-null and of false (and) / true (or) values."""

    kind = "bool"

    def _kept(self) -> list[str]:
        return ["nn", "nb"] if self.own_nn else ["nb"]

    def columns(self) -> list[tuple[str, str]]:
        return [(f"{self.p}_{c}", "bigint") for c in self._kept()]

    def exprs(self, delta: bool = True) -> list[str]:
        cond = self.cond()
        test = f"NOT {self.x}" if self.call.func == "bool_and" else self.x
        nb = self._count(both(cond, test))
        return [self._count(cond), nb] if self.own_nn else [nb]

    def merge(self) -> list[str]:
        return [f"{self.p}_{c} = s.{self.p}_{c} + excluded.{self.p}_{c}" for c in self._kept()]

    def finalize(self) -> str:
        test = "= 0" if self.call.func == "bool_and" else "> 0"
        return f"CASE WHEN {self.nonnull_count('s')} > 0 THEN s.{self.p}_nb {test} END"


class ExtremeRule(Rule):
    """``min``/``max``: the extreme, least/greatest on insert; a delete or update that removes
    the group's current extreme marks the group dirty and it is recomputed."""

    kind = "extreme"

    def columns(self) -> list[tuple[str, str]]:
        t = f"{self.value_type}{self.collate}"
        return [(f"{self.p}_v", t), (f"{self.p}_d", t)]

    def exprs(self, delta: bool = True) -> list[str]:
        cond = self.cond(nonnull=False)
        extra = f" AND {cond}" if cond else ""
        f = self.call.func
        return [f"{f}(CASE WHEN __sign > 0{extra} THEN {self.x} END)",
                f"{f}(CASE WHEN __sign < 0{extra} THEN {self.x} END)"]

    def merge(self) -> list[str]:
        pick = "least" if self.call.func == "min" else "greatest"
        return [f"{self.p}_v = {pick}(s.{self.p}_v, excluded.{self.p}_v)",
                f"{self.p}_d = NULL"]

    def dirty(self) -> str:
        cmp = "<=" if self.call.func == "min" else ">="
        return (f"(excluded.{self.p}_d IS NOT NULL AND (s.{self.p}_v IS NULL OR "
                f"excluded.{self.p}_d {cmp} s.{self.p}_v))")

    def recompute(self) -> list[tuple[str, str]]:
        cond = self.cond(nonnull=False)
        filt = f" FILTER (WHERE {cond})" if cond else ""
        return [(f"{self.p}_v", f"{self.call.func}({self.x}){filt}")]

    def delta_dirty(self) -> str:
        return f"{self.exprs()[1]} IS NOT NULL"

    def finalize(self) -> str:
        return f"s.{self.p}_v"
