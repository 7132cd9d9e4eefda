"""Sum rules: ``sum``/``avg`` and the DISTINCT ``count``/``sum``/``avg``, with the special
values and the display scale that keep them exact (:mod:`streaming_views.rules`).

Exactness notes: sums over ``numeric`` keep NaN/+Infinity/-Infinity counts beside the finite sum
(as PostgreSQL's own accumulator does), so a special value inserted then deleted leaves no
trace; over unconstrained ``numeric`` they also keep the largest display scale and how many
values have it (PostgreSQL's sum has the largest input scale, and avg divides that sum), which
only a delete of the last value at that scale makes recomputed. ``interval`` sums keep their
+/-infinity counts (PostgreSQL 17+).
"""

from __future__ import annotations

from dataclasses import dataclass

from streaming_views.rules import Rule, both

INFINITE_INTERVALS = 170000  # server_version_num from which intervals can be infinite


@dataclass
class SumRule(Rule):
    """``sum``/``avg`` (not DISTINCT): non-null count and sum, plus for ``numeric`` the counts of
    NaN/+Infinity/-Infinity and, when unconstrained, the display scale (module docstring);
    ``interval`` keeps its +/-infinity counts. avg and sum of the same argument share columns.

    Attributes:
        specials: ``numeric``, ``interval`` or "" (which special values are counted apart).
        scaled: the display scale is tracked (unconstrained ``numeric`` argument).
    """

    specials: str = ""
    scaled: bool = False

    kind = "sum"

    @property
    def nan_recomputed(self) -> bool:
        """A sum of ``numeric(p, s)``: NaN is its one special value (no infinity), kept in the
        sum itself (NaN plus anything is NaN) instead of a counter; a delta whose sum is NaN
        (a NaN row added or removed) marks its group for recompute, so the common write
        carries no special-value bookkeeping. Not for DISTINCT (its own columns)."""
        return (self.kind == "sum" and self.specials == "numeric"
                and self.arg_type.startswith("numeric("))

    def special_names(self) -> list[str]:
        """The special-value counters kept: ``nan``, ``pinf``, ``ninf`` (a numeric with a
        declared precision cannot hold an infinity, only NaN)."""
        if self.nan_recomputed:
            return []
        if self.specials == "numeric" and self.arg_type.startswith("numeric("):
            return ["nan"]
        return {"numeric": ["nan", "pinf", "ninf"], "interval": ["pinf", "ninf"]}.get(
            self.specials, [])

    def finite(self, x: str) -> str:
        """Condition: value ``x`` is not a special value (is counted in the sum)."""
        if self.nan_recomputed:
            return "true"
        if self.specials == "numeric":
            return f"scale({x}) IS NOT NULL"
        if self.specials == "interval":
            return f"isfinite({x})"
        return "true"

    def special_test(self, name: str, x: str) -> str:
        """Condition: value ``x`` is the special value ``name``."""
        value = {("numeric", "nan"): "'NaN'::numeric", ("numeric", "pinf"): "'Infinity'::numeric",
                 ("numeric", "ninf"): "'-Infinity'::numeric",
                 ("interval", "pinf"): "'infinity'::interval",
                 ("interval", "ninf"): "'-infinity'::interval"}[(self.specials, name)]
        return f"{x} = {value}"

    def columns(self) -> list[tuple[str, str]]:
        if self.share is not None:
            return []
        cols = [(f"{self.p}_nn", "bigint")] if self.own_nn else []
        cols += [(f"{self.p}_s", self.value_type)]
        cols += [(f"{self.p}_{n}", "bigint") for n in self.special_names()]
        if self.scaled:
            cols += [(f"{self.p}_ms", "integer"), (f"{self.p}_msn", "bigint"),
                     (f"{self.p}_dms", "integer"), (f"{self.p}_dmn", "bigint")]
        return cols

    def windows(self) -> list[tuple[str, str]]:
        if self.share is not None or not self.scaled:
            return []
        cond, i = self.cond(), self.index
        return [(f"__im{i}", f"max(CASE WHEN {both('__sign > 0', cond)} THEN scale({self.x}) "
                 "END)"),
                (f"__dm{i}", f"max(CASE WHEN {both('__sign < 0', cond)} THEN scale({self.x}) "
                 "END)")]

    def _at_scale(self, sign: str, top: str) -> str:
        test = both(f"__sign {sign} 0", self.cond(), f"scale({self.x}) = {top}")
        return f"coalesce(sum(CASE WHEN {test} THEN 1 ELSE 0 END), 0)::bigint"

    def exprs(self, delta: bool = True) -> list[str]:
        if self.share is not None:
            return []
        cond, t = self.cond(), self.value_type
        out = [self._count(cond)] if self.own_nn else []
        out += [f"coalesce(sum(CASE WHEN {both(cond, self.finite(self.x))} THEN __sign * "
                f"({self.x})::{t} END), '0'::{t})::{t}"]
        out += [self._count(both(cond, self.special_test(n, self.x)))
                for n in self.special_names()]
        if self.scaled:
            i = self.index
            out += [f"max(__im{i})", self._at_scale(">", f"__im{i}"),
                    f"max(__dm{i})", self._at_scale("<", f"__dm{i}")]
        return out

    def _after(self, name: str) -> str:
        if name == "nn":
            return f"({self.nonnull_count('s')} + {self.nonnull_count('excluded')})"
        return f"(s.{self.p}_{name} + excluded.{self.p}_{name})"

    def _finite_after(self) -> str:
        return " - ".join([self._after("nn"), *(self._after(n) for n in self.special_names())])

    def _scale_count_after(self) -> str:
        p, top = self.p, f"greatest(s.{self.p}_ms, excluded.{self.p}_ms)"
        return (f"(CASE WHEN excluded.{p}_ms = {top} THEN excluded.{p}_msn ELSE 0 END + "
                f"CASE WHEN s.{p}_ms = {top} THEN s.{p}_msn ELSE 0 END - "
                f"CASE WHEN excluded.{p}_dms = {top} THEN excluded.{p}_dmn ELSE 0 END)")

    def merge(self) -> list[str]:
        if self.share is not None:
            return []
        p = self.p
        sets = [f"{p}_{c} = s.{p}_{c} + excluded.{p}_{c}"
                for c in [*(["nn"] if self.own_nn else []), "s", *self.special_names()]]
        if self.scaled:
            alive = f"({self._finite_after()}) > 0"
            sets += [f"{p}_ms = CASE WHEN {alive} THEN greatest(s.{p}_ms, excluded.{p}_ms) END",
                     f"{p}_msn = CASE WHEN {alive} THEN {self._scale_count_after()} ELSE 0 END",
                     f"{p}_dms = NULL", f"{p}_dmn = 0"]
        return sets

    def dirty(self) -> str | None:
        if self.share is None and self.nan_recomputed:
            return f"scale(excluded.{self.p}_s) IS NULL"
        if self.share is not None or not self.scaled:
            return None
        return f"(({self._finite_after()}) > 0 AND {self._scale_count_after()} <= 0)"

    def recompute(self) -> list[tuple[str, str]]:
        if self.share is None and self.nan_recomputed:
            cond, t = self.cond(), self.value_type
            filt = f" FILTER (WHERE {cond})" if cond else ""
            return [(f"{self.p}_s", f"coalesce(sum(({self.x})::{t}){filt}, '0'::{t})::{t}")]
        if self.share is not None or not self.scaled:
            return []
        i = self.index
        return [(f"{self.p}_ms", f"max(__im{i})"),
                (f"{self.p}_msn", self._at_scale(">", f"__im{i}"))]

    def grouped_dirty(self, grouped: dict[str, str]) -> str | None:
        if self.share is None and self.nan_recomputed:
            return f"scale({grouped[f'{self.p}_s']}) IS NULL"
        return None

    def delta_dirty(self) -> str | None:
        if self.share is None and self.nan_recomputed:
            return self.grouped_dirty(dict(zip([c for c, _ in self.columns()], self.exprs(),
                                               strict=True)))
        if self.share is not None or not self.scaled:
            return None
        return f"max(__dm{self.index}) IS NOT NULL"

    def raises(self) -> str | None:
        if self.share is not None or self.specials != "interval":
            return None
        return f"s.{self.p}_pinf > 0 AND s.{self.p}_ninf > 0"

    def _final(self, p: str, count: str, scale: str | None) -> str:
        avg, t = self.call.func == "avg", self.result_type
        if self.specials == "numeric" and not self.nan_recomputed:
            value = f"round({p}_s, {scale})" if scale else f"{p}_s"
            if avg:
                value = f"({value})::numeric / ({count})::numeric"
            if self.special_names() == ["nan"]:
                return (f"(CASE WHEN {count} = 0 THEN NULL WHEN {p}_nan > 0 THEN 'NaN'::numeric "
                        f"ELSE {value} END)::{t}")
            return (f"(CASE WHEN {count} = 0 THEN NULL WHEN {p}_nan > 0 OR ({p}_pinf > 0 AND "
                    f"{p}_ninf > 0) THEN 'NaN'::numeric WHEN {p}_pinf > 0 THEN "
                    f"'Infinity'::numeric WHEN {p}_ninf > 0 THEN '-Infinity'::numeric ELSE "
                    f"{value} END)::{t}")
        if self.specials == "interval":
            value = f"{p}_s / ({count})::float8" if avg else f"{p}_s"
            return (f"(CASE WHEN {count} = 0 THEN NULL WHEN {p}_pinf > 0 AND {p}_ninf > 0 THEN "
                    f"({p}_s + 'infinity'::interval) + '-infinity'::interval WHEN {p}_pinf > 0 "
                    f"THEN 'infinity'::interval WHEN {p}_ninf > 0 THEN '-infinity'::interval "
                    f"ELSE {value} END)::{t}")
        if not avg:
            return f"CASE WHEN {count} > 0 THEN {p}_s END::{t}"
        if t == "interval":
            return f"CASE WHEN {count} > 0 THEN {p}_s / ({count})::float8 END"
        return f"CASE WHEN {count} > 0 THEN ({p}_s)::numeric / ({count})::numeric END::{t}"

    def finalize(self) -> str:
        p = f"s.__a{self.index if self.share is None else self.share}"
        count = ("s.__count" if self.counted else f"s.{self.nn_col}" if self.nn_col is not None
                 else f"{p}_nn")
        return self._final(p, count, f"{p}_ms" if self.scaled else None)


@dataclass
class DistinctRule(SumRule):
    """``count/sum/avg(DISTINCT x)`` [FILTER]: the number (and sum, with special values apart)
    of the distinct values with a positive multiplicity in the group's (group, value,
    multiplicity) table (:mod:`streaming_views.auxiliary`); a delta moves them by the values
    whose multiplicity crossed between zero and positive."""

    kind = "distinct"
    aux = True

    def _sums(self) -> bool:
        return self.call.func in {"sum", "avg"}

    def columns(self) -> list[tuple[str, str]]:
        cols = [(f"{self.p}_n", "bigint")]
        if self._sums():
            cols.append((f"{self.p}_s", self.value_type))
            cols += [(f"{self.p}_{n}", "bigint") for n in self.special_names()]
        return cols

    def windows(self) -> list[tuple[str, str]]:
        return []

    def crossings(self) -> list[tuple[str, str, str]]:
        """(flat column, type, expression over the multiplicity upsert's rows ``__c`` crossing
        and ``__v`` value) of the crossings this rule adds up."""
        i, t = self.index, self.value_type
        out = [(f"__dc{i}", "bigint", "__c::bigint")]
        if self._sums():
            out.append((f"__ds{i}", t, f"CASE WHEN {self.finite('__v')} THEN CASE __c WHEN 1 "
                        f"THEN (__v)::{t} WHEN -1 THEN -((__v)::{t}) END END"))
            out += [(f"__d{n}{i}", "bigint", f"CASE WHEN {self.special_test(n, '__v')} THEN __c "
                     "ELSE 0 END") for n in self.special_names()]
        return out

    def exprs(self, delta: bool = True) -> list[str]:
        t, cond = self.value_type, self.cond()
        if delta:
            out = []
            for name, typ, _ in self.crossings():
                zero = "0" if typ == "bigint" else f"'0'::{typ}"
                out.append(f"coalesce(sum({name}), {zero})::{typ}")
            return out
        out = [f"count(DISTINCT {self.x}) FILTER (WHERE {cond})"]
        if self._sums():
            out.append(f"coalesce(sum(DISTINCT CASE WHEN {self.finite(self.x)} THEN "
                       f"({self.x})::{t} END) FILTER (WHERE {cond}), '0'::{t})::{t}")
            out += [f"count(DISTINCT {self.x}) FILTER (WHERE {cond} AND "
                    f"{self.special_test(n, self.x)})" for n in self.special_names()]
        return out

    def merge(self) -> list[str]:
        names = ["n"] + (["s", *self.special_names()] if self._sums() else [])
        return [f"{self.p}_{c} = s.{self.p}_{c} + excluded.{self.p}_{c}" for c in names]

    def dirty(self) -> str | None:
        return None

    def recompute(self) -> list[tuple[str, str]]:
        return []

    def finalize(self) -> str:
        p = f"s.{self.p}"
        if not self._sums():
            return f"{p}_n"
        return self._final(p, f"{p}_n", None)
