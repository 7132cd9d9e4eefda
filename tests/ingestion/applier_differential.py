"""The applier's property generator: random writes to tables under contracts, checked by
:mod:`tests.ingestion.applier_oracle` after every catch-up.

A :class:`Case` (one seed) creates five source tables — ``p`` keyed (NaN/±Infinity numerics
and floats, a timestamptz, a TOAST column), ``c2`` with a composite key, ``k`` keyless
(``REPLICA IDENTITY FULL``, TOAST), ``q`` keyed by a numeric whose equal values are written
with other scales (``1.0``, ``1.00``; updates that only rescale the key or a value, keyless
copies equal but written differently), ``w`` keyed, whose key and columns (``int``,
``numeric(12,2)``, ``varchar(4)``; and ``k.a``, ``c2.v``, ``q.v``) are widened step by step
(``int``→``bigint``, ``numeric(12,2)``→``numeric(14,2)``→``numeric(16,3)``→``numeric``,
``varchar(4)``→``varchar(8)``→``text``) while changes and dead letters are in flight, the
values only the wider type holds (a key past 2^31) written next — under contracts (not_null,
allowed values, ranges, a ``smallint`` type narrower than the column) that some generated rows
break, then draws steps:
transactions of multi-row DML (inserts, updates that leave TOAST values unchanged, key changes,
deletes, truncates, bad updates that set a TOAST value, rows fixed later at the source by an
update that leaves it or removed by a delete), each written by a session in a random time zone
and DateStyle; catch-ups; ``replay`` of the dead letters; contract edits (strict ↔ relaxed);
columns added with a default (the mirror may lack them until the table's next change). After
each catch-up the oracle holds; at the end, under the relaxed contract, a replay leaves no
letter waiting that the contract accepts.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from contracts import load_contracts, validate_row
from ingestion import catch_up
from ingestion.dead_letters import replay
from tests.ingestion.applier_oracle import Where, nothing_lost

TABLES: dict[str, tuple[str, ...] | None] = {"p": ("id",), "c2": ("a", "b"), "k": None,
                                              "q": ("k",), "w": ("id",)}

SETUP = (
    "create table p (id int primary key, n numeric, f float8, status text, ts timestamptz,"
    " big text)",
    "alter table p alter column big set storage external",
    "create table c2 (a int, b text, v int, note text, primary key (a, b))",
    "create table k (a int, n numeric, big text)",
    "alter table k alter column big set storage external",
    "alter table k replica identity full",
    "insert into p values (1, 5, 0.5, 'a', '2026-01-01 00:00+00', null),"
    " (2, -1, 'NaN', 'x', null, repeat('q', 5000)), (3, 'NaN', 1, null, now(), '')",
    "insert into c2 values (1, 'x', 1, null), (1, 'y', -5, 'n'), (2, 'x', 40000, null)",
    "insert into k values (1, 1, null), (1, 1, null), (9, 1, null), (9, 1, null), (2, 'NaN', 'b')",
    "create table q (k numeric primary key, v int, big text)",
    "alter table q alter column big set storage external",
    "insert into q values (1.0, 1, null), (2.50, -1, repeat('r', 5000)), (3, 2, 's')",
    "create table w (id int primary key, i int, m numeric(12,2), s varchar(4), big text)",
    "alter table w alter column big set storage external",
    "insert into w values (1, 1, 1.50, 'ab', null), (2, -3, 10, 'abcd', repeat('w', 5000)),"
    " (3, 7, null, null, 's')",
)

WIDER = {"integer": "bigint", "numeric(12,2)": "numeric(14,2)", "numeric(14,2)": "numeric(16,3)",
         "numeric(16,3)": "numeric", "character varying(4)": "character varying(8)",
         "character varying(8)": "text"}
"""The widening steps, by the column's type now: each keeps every value (``widen_type``)."""
WIDENABLE = (("w", "id"), ("w", "i"), ("w", "m"), ("w", "s"), ("k", "a"), ("c2", "v"),
             ("q", "v"))
W_INTS = (1, 0, -7, 3000000000, -3000000000, None)
W_NUMS = ("1.5", "-2", "1.005", "123456789012.34", "9999999999999.999", "NaN", None)
W_TEXTS = ("ab", "abcd", "ÄÖÜ", "abcdefg", "abcdefghijk", "", None)
"""Values of ``w``: some fit only once its columns are wider (the statement fails at the source
before: its transaction is rolled back)."""

TOUCH = ("insert into p (id, status) values ((select coalesce(max(id), 0) + 1 from p), 'a')",
         "insert into c2 values (9, 'touch', 1, null) on conflict do nothing",
         "insert into k (a) values (4)",
         "insert into q values ((select coalesce(max(k), 0) + 1 from q), 1, null)",
         "insert into w (id, i) values ((select coalesce(max(id), 0) + 1 from w), 1)")
"""A good insert into every table: the last change of each, so each mirror has the source's
columns for the final checks."""

_FRESH = "freshness: {warn_after: 15m, error_after: 1h}\ncompatibility: backward\n" \
         "allowed_lateness: 1h\n"
STRICT = {
    "p": "primary_key: [id]\ncolumns:\n  id: {type: integer}\n"
         "  n: {type: numeric, nullable: true, min: 0, max: 1000}\n"
         "  f: {type: double precision, nullable: true}\n"
         "  status: {type: text, allowed_values: [a, b, c]}\n"
         "  ts: {type: timestamptz, nullable: true}\n  big: {type: text, nullable: true}\n",
    "c2": "primary_key: [a, b]\ncolumns:\n  a: {type: integer}\n  b: {type: text}\n"
          "  v: {type: smallint, min: 0}\n  note: {type: text, nullable: true}\n",
    "k": "primary_key: []\ncolumns:\n  a: {type: integer, min: 0, max: 5}\n"
         "  n: {type: numeric, nullable: true}\n  big: {type: text, nullable: true}\n",
    "q": "primary_key: [k]\ncolumns:\n  k: {type: numeric}\n  v: {type: integer, min: 0}\n"
         "  big: {type: text, nullable: true}\n",
    "w": "primary_key: [id]\ncolumns:\n  id: {type: integer}\n  i: {type: integer, min: 0}\n"
         "  m: {type: numeric, nullable: true, min: 0}\n  s: {type: text, nullable: true}\n"
         "  big: {type: text, nullable: true}\n",
}
RELAXED = {
    "p": "primary_key: [id]\ncolumns:\n  id: {type: integer}\n"
         "  n: {type: numeric, nullable: true}\n  f: {type: double precision, nullable: true}\n"
         "  status: {type: text, nullable: true}\n  ts: {type: timestamptz, nullable: true}\n"
         "  big: {type: text, nullable: true}\n",
    "c2": "primary_key: [a, b]\ncolumns:\n  a: {type: integer}\n  b: {type: text}\n"
          "  v: {type: integer, nullable: true}\n  note: {type: text, nullable: true}\n",
    "k": "primary_key: []\ncolumns:\n  a: {type: integer, nullable: true}\n"
         "  n: {type: numeric, nullable: true}\n  big: {type: text, nullable: true}\n",
    "q": "primary_key: [k]\ncolumns:\n  k: {type: numeric}\n  v: {type: integer, nullable: true}\n"
         "  big: {type: text, nullable: true}\n",
    "w": "primary_key: [id]\ncolumns:\n  id: {type: bigint}\n  i: {type: bigint, nullable: true}\n"
         "  m: {type: numeric, nullable: true}\n  s: {type: text, nullable: true}\n"
         "  big: {type: text, nullable: true}\n",
}
BAD_P = "status is null or status not in ('a', 'b', 'c') or n < 0 or n > 1000 or n = 'NaN'"
BAD_C2 = "v is null or v < 0 or v > 32767"
BAD_K = "a is null or a < 0 or a > 5"
BAD_Q = "v is null or v < 0"
BAD_W = "i is null or i < 0 or i > 2147483647 or id > 2147483647 or m < 0 or m = 'NaN'"

ZONES = ("UTC", "America/St_Johns", "Asia/Kathmandu", "Pacific/Kiritimati", "Europe/Berlin",
         "America/Los_Angeles")
DATESTYLES = ("ISO, MDY", "SQL, DMY", "Postgres, YMD", "German", "ISO, DMY")
NUMS = (None, "NaN", "Infinity", "-Infinity", "0", "5", "-1", "2000", "12.50", "5.0", "12.5")
FLOATS = (None, "NaN", "Infinity", "-Infinity", "-0", "1e-300", "0.1", "0")
STATUSES = ("a", "b", "c", "a", "x", None)
Q_KEYS = ("1", "1.0", "1.00", "2.5", "2.50", "-0.0", "0", "7", "7.000")
"""Keys of ``q``: equal values written differently (numeric scale), as the source keeps them."""
STAMPS = ("2026-03-04 05:06:07", "2026-10-25 02:30:00", "2026-12-31 23:59:59.999999",
          "2027-01-01 00:00:00+14", "infinity", "-infinity", None)


class OracleFailure(AssertionError):
    """The oracle broke: what, and the steps that led there."""


@dataclass
class Stats:
    """What a run did."""

    cases: int = 0
    steps: int = 0
    checks: int = 0
    letters: int = 0
    refused: int = 0
    kinds: Counter = field(default_factory=Counter)
    replays: Counter = field(default_factory=Counter)

    def merge(self, other: Stats) -> None:
        """Add another run's counts."""
        self.cases += other.cases
        self.steps += other.steps
        self.checks += other.checks
        self.letters += other.letters
        self.refused += other.refused
        self.kinds.update(other.kinds)
        self.replays.update(other.replays)


class Case:
    """One seed's steps on a source/landing pair (fresh databases, tables not yet created).

    Args:
        src: source URL.
        land: landing URL.
        source: source name.
        root: a directory for the contract files.
        seed: the random seed.
        steps: how many steps to draw.
    """

    def __init__(self, src: str, land: str, source: str, root: Path, seed: int,
                 steps: int = 30) -> None:
        self.src, self.land, self.source, self.root = src, land, source, root
        self.rng = random.Random(seed)
        self.seed, self.steps = seed, steps
        self.version = 0
        self.added = 0
        self.strict = True
        self.contracts = None
        self.log: list[str] = []
        self.stats = Stats(cases=1)

    def run(self) -> Stats:
        """Set up, draw and run the steps, check; raise :class:`OracleFailure` on a break."""
        with psycopg.connect(self.src, autocommit=True) as conn:
            for stmt in SETUP:
                conn.execute(stmt)
        self._contract(strict=True)
        self._catch_up()
        for _ in range(self.steps):
            self._step()
        for stmt in TOUCH:  # every table changes once more: its mirror takes added columns
            self._source(stmt)
        self._catch_up()
        self._replay()
        self._check(settled=True, lagging=False)
        self._contract(strict=False)
        self._replay()
        self._check(settled=True)
        with psycopg.connect(self.land) as conn:
            self.stats.letters = conn.execute("select count(*) from tidemark.dead_letters"
                                              " where source = %s", (self.source,)).fetchone()[0]
        left = self._valid_waiting()
        if left:
            self._fail([f"{len(left)} letters the relaxed contract accepts still wait after its"
                        f" replay: {left[:5]}"])
        return self.stats

    # ------------------------------------------------------------------ steps

    def _step(self) -> None:
        r = self.rng.random()
        self.stats.steps += 1
        if r < 0.2:
            self._catch_up()
        elif r < 0.27:
            self._catch_up()
            self._replay()
        elif r < 0.32:
            self._contract(strict=not self.strict)
        elif r < 0.345 and self.added < 3:
            self.added += 1  # the mirror takes the column at the table's next change
            self._source(f"alter table {self.rng.choice(list(TABLES))} add column"
                         f" e{self.added} int default {self.added + 6}")
        else:
            self._transaction()

    def _transaction(self) -> None:
        rng = self.rng
        stmts: list[tuple[str, tuple]] = []
        zone, style = rng.choice(ZONES), rng.choice(DATESTYLES)
        stmts.append(("select set_config('timezone', %s, true),"
                      " set_config('datestyle', %s, true)", (zone, style)))
        for _ in range(rng.randint(1, 5)):
            kind, stmt, params = self._draw()
            self.stats.kinds[kind] += 1
            stmts.append((stmt, params))
        self.log.append("txn " + "; ".join(s if not p else f"{s} {p!r:.120}" for s, p in stmts))
        try:
            with psycopg.connect(self.src, autocommit=True) as conn, conn.transaction():
                for stmt, params in stmts:
                    conn.execute(stmt, params or None)
        except psycopg.errors.UniqueViolation:  # a key change onto an existing key (c_mov):
            self.log.append("(rolled back at the source: a key taken)")  # nothing to stream
        except (psycopg.errors.NumericValueOutOfRange,
                psycopg.errors.StringDataRightTruncation):  # a value of w its type lacks
            self.log.append("(rolled back at the source: a value too wide)")

    def _big(self) -> str | None:
        return self.rng.choice([None, "", "s", "x" * self.rng.randint(3000, 40000)])

    def _draw(self) -> tuple[str, str, tuple]:
        rng = self.rng
        pick = rng.randint(0, 40)
        one_p = f"id = (select id from p order by id offset mod({pick}, greatest((select" \
                " count(*) from p), 1)) limit 1)"
        one_c = f"(a, b) = (select a, b from c2 order by a, b offset mod({pick}," \
                " greatest((select count(*) from c2), 1)) limit 1)"
        one_k = f"ctid = (select ctid from k order by ctid offset mod({pick}," \
                " greatest((select count(*) from k), 1)) limit 1)"
        kind = rng.choice(["p_ins", "p_ins", "p_upd", "p_upd", "p_mov", "p_del", "p_fix",
                           "p_fix", "p_kill", "p_many", "p_taint", "p_taint", "c_ins", "c_upd",
                           "c_mov", "c_del", "c_fix", "k_ins", "k_ins", "k_dup", "k_upd", "k_del",
                           "k_fix", "k_kill", "k_many", "p_trunc", "k_trunc", "q_ins",
                           "q_ins", "q_upd", "q_scale", "q_scale", "q_del", "q_fix", "q_taint",
                           "p_scale", "k_scale", "k_dup", "w_ins", "w_ins", "w_upd", "w_mov",
                           "w_del", "w_fix", "w_taint", "w_widen", "w_widen"])
        if kind == "p_trunc" and rng.random() < 0.7 or kind == "k_trunc" and rng.random() < 0.7:
            kind = "p_upd"
        if kind == "p_ins":
            n = rng.randint(1, 3)
            rows = [(rng.choice(NUMS), rng.choice(FLOATS), rng.choice(STATUSES),
                     rng.choice(STAMPS), self._big()) for _ in range(n)]
            values = ", ".join("((select coalesce(max(id), 0) from p) + %s, %s, %s, %s, %s, %s)"
                               for _ in rows)
            params = tuple(v for i, row in enumerate(rows) for v in (i + 1, *row))
            return kind, f"insert into p (id, n, f, status, ts, big) values {values}", params
        if kind == "p_upd":
            sets, params = [], []
            for col, pool in (("n", NUMS), ("f", FLOATS), ("status", STATUSES), ("ts", STAMPS)):
                if rng.random() < 0.5:
                    sets.append(f"{col} = %s")
                    params.append(rng.choice(pool))
            if rng.random() < 0.3:
                sets.append("big = %s")
                params.append(self._big())
            if not sets:
                sets.append("ts = now()")
            return kind, f"update p set {', '.join(sets)} where {one_p}", tuple(params)
        if kind == "p_mov":
            status = rng.choice([None, *STATUSES])
            extra = "" if status is None else ", status = %s"
            return kind, (f"update p set id = (select max(id) from p) + {rng.randint(1, 3)}"
                          f"{extra} where {one_p}"), (() if status is None else (status,))
        if kind == "p_del":
            return kind, f"delete from p where {one_p}", ()
        if kind == "p_fix":  # a bad row made good at the source; its TOAST value left alone
            return kind, ("update p set status = 'b', n = 1 where id = (select min(id) from p"
                          f" where {BAD_P})"), ()
        if kind == "p_taint":  # a bad update that sets the TOAST value; p_fix, which leaves
            # it, fixes the lowest bad id: often this row
            where = rng.choice([one_p, "id = (select min(id) from p)"])
            return kind, f"update p set status = %s, big = %s where {where}", (
                rng.choice(["x", None]), rng.choice("tuvw") * rng.randint(3000, 9000))
        if kind == "p_kill":
            return kind, f"delete from p where id = (select max(id) from p where {BAD_P})", ()
        if kind == "p_many":
            m = rng.randint(2, 4)
            return kind, rng.choice([f"update p set n = n + 1 where mod(id, {m}) = 0",
                                     f"delete from p where mod(id, {m}) = 1",
                                     f"update p set id = id + 1000 where mod(id, {m}) = 0"]), ()
        if kind == "c_ins":
            return kind, "insert into c2 values (%s, %s, %s, %s) on conflict do nothing", (
                rng.randint(0, 4), rng.choice("xyz"), rng.choice([0, 5, -3, 40000, None]),
                rng.choice([None, "n", "ü"]))
        if kind == "c_upd":
            return kind, f"update c2 set v = %s where {one_c}", (
                rng.choice([1, 7, -2, 50000, None]),)
        if kind == "c_mov":
            return kind, f"update c2 set b = b || 'm', v = %s where {one_c}", (
                rng.choice([2, -8, None]),)
        if kind == "c_del":
            return kind, f"delete from c2 where {one_c}", ()
        if kind == "c_fix":
            return kind, ("update c2 set v = 3 where (a, b) = (select a, b from c2 where"
                          f" {BAD_C2} order by a, b limit 1)"), ()
        if kind == "k_ins":
            n = rng.randint(1, 3)
            rows = [(rng.choice([0, 1, 5, 6, 9, None]), rng.choice(NUMS[:6]),
                     rng.choice([None, None, "b", "x" * 9000])) for _ in range(n)]
            return kind, "insert into k values " + ", ".join(["(%s, %s, %s)"] * n), \
                tuple(v for row in rows for v in row)
        if kind == "k_dup":  # equal rows, good or bad; or equal, but written differently
            row = (rng.choice([1, 6, 9]), rng.choice(["1", "NaN", None]), None)
            other = row if rng.random() < 0.5 else (row[0], rng.choice(["1.0", "1.00"]), None)
            return kind, "insert into k values (%s, %s, %s), (%s, %s, %s)", row + other
        if kind == "k_scale":  # the same value written with another scale
            return kind, f"update k set n = round(n, %s) where {one_k}", (rng.randint(0, 3),)
        if kind == "p_scale":
            return kind, f"update p set n = round(n, %s), f = -f where {one_p}", (
                rng.randint(0, 3),)
        one_q = f"k = (select k from q order by k offset mod({pick}, greatest((select" \
                " count(*) from q), 1)) limit 1)"
        if kind == "q_ins":
            return kind, ("insert into q values (%s, %s, %s) on conflict do nothing"), (
                rng.choice(Q_KEYS), rng.choice([1, 2, -4, None]), self._big())
        if kind == "q_upd":
            return kind, f"update q set v = %s where {one_q}", (rng.choice([0, 3, -1, None]),)
        if kind == "q_scale":  # the key (or also v) rewritten as an equal value
            extra = rng.choice(["", ", v = 5", ", v = -5"])
            return kind, f"update q set k = round(k, %s){extra} where {one_q}", (
                rng.randint(0, 3),)
        if kind == "q_fix":
            return kind, ("update q set v = 6 where k = (select k from q where"
                          f" {BAD_Q} order by k limit 1)"), ()
        if kind == "q_taint":
            return kind, f"update q set v = %s, big = %s where {one_q}", (
                rng.choice([-2, None, 4]), rng.choice("tuvw") * rng.randint(3000, 9000))
        if kind == "q_del":
            return kind, f"delete from q where {one_q}", ()
        if kind.startswith("w_"):
            return self._draw_w(kind, pick)
        if kind == "k_upd":
            if rng.random() < 0.5:
                return kind, f"update k set a = %s where {one_k}", (rng.choice([1, 2, 7]),)
            return kind, f"update k set n = %s where {one_k}", (rng.choice(NUMS[:6]),)
        if kind == "k_del":
            return kind, f"delete from k where {one_k}", ()
        if kind == "k_fix":
            return kind, (f"update k set a = 3 where ctid = (select ctid from k where {BAD_K}"
                          " limit 1)"), ()
        if kind == "k_kill":
            return kind, ("delete from k where ctid = (select ctid from k where"
                          f" {BAD_K} limit 1)"), ()
        if kind == "k_many":
            return kind, rng.choice(["update k set n = 2 where a = 1", "delete from k where a = 9",
                                     "update k set a = a + 1 where a >= 5"]), ()
        return kind, f"truncate {kind[0] if kind[0] == 'p' else 'k'}", ()

    def _draw_w(self, kind: str, pick: int) -> tuple[str, str, tuple]:
        """A step of ``w``, or a widening of one of :data:`WIDENABLE` (by the source's type now:
        the same in every run of the seed)."""
        rng = self.rng
        one_w = f"id = (select id from w order by id offset mod({pick}, greatest((select" \
                " count(*) from w), 1)) limit 1)"
        if kind == "w_widen":
            with psycopg.connect(self.src) as conn:
                types = dict(conn.execute(
                    "select attrelid::regclass::text || '.' || attname,"
                    " format_type(atttypid, atttypmod) from pg_attribute where attrelid ="
                    " any(array['w', 'k', 'c2', 'q']::regclass[]) and attnum > 0").fetchall())
            open_ = [(t, c) for t, c in WIDENABLE if types.get(f"{t}.{c}") in WIDER]
            if open_:
                table, col = rng.choice(open_)
                return kind, (f"alter table {table} alter column {col} type"
                              f" {WIDER[types[f'{table}.{col}']]}"), ()
            kind = "w_ins"
        if kind == "w_ins":
            new_id = rng.choice(["(select coalesce(max(id), 0) + 1 from w)",
                                 "(select greatest(max(id), 3000000000) + 1 from w)"])
            return kind, f"insert into w values ({new_id}, %s, %s, %s, %s)", (
                rng.choice(W_INTS), rng.choice(W_NUMS), rng.choice(W_TEXTS), self._big())
        if kind == "w_upd":
            col, pool = rng.choice([("i", W_INTS), ("m", W_NUMS), ("s", W_TEXTS)])
            return kind, f"update w set {col} = %s where {one_w}", (rng.choice(pool),)
        if kind == "w_mov":
            return kind, (f"update w set id = id + %s where {one_w}"), (
                rng.choice([1000, 3000000000, -3000000000]),)
        if kind == "w_del":
            return kind, f"delete from w where {one_w}", ()
        if kind == "w_fix":
            return kind, ("update w set i = 2, m = 3 where id = (select min(id) from w where"
                          f" {BAD_W})"), ()
        return kind, f"update w set i = %s, big = %s where {one_w}", (  # w_taint
            rng.choice([-2, None, 4]), rng.choice("tuvw") * rng.randint(3000, 9000))

    def _valid_waiting(self) -> list[int]:
        """The waiting letters the current contract accepts (a contract refuses NaN, ±Infinity
        and ±infinity timestamps whatever its bounds: those letters wait for good)."""
        with psycopg.connect(self.land) as conn:
            rows = conn.execute("select id, table_name, raw_row from tidemark.dead_letters"
                                " where source = %s and replayed_at is null",
                                (self.source,)).fetchall()
        self.stats.refused += len(rows)
        return [lid for lid, table, raw in rows
                if not validate_row(self.contracts.table(self.source, table), raw,
                                    self.contracts)]

    # ------------------------------------------------------------------ effects

    def _source(self, stmt: str) -> None:
        self.log.append(stmt)
        with psycopg.connect(self.src, autocommit=True) as conn:
            conn.execute(stmt)

    def _contract(self, *, strict: bool) -> None:
        self.version += 1
        self.strict = strict
        folder = self.root / self.source
        folder.mkdir(parents=True, exist_ok=True)
        for table, body in (STRICT if strict else RELAXED).items():
            (folder / f"{table}.yml").write_text(f"version: {self.version}\n{_FRESH}{body}")
        self.contracts = load_contracts(self.root)
        self.log.append(f"contract v{self.version} {'strict' if strict else 'relaxed'}")

    def _catch_up(self) -> None:
        self.log.append("catch_up")
        catch_up(self.src, self.land, self.source, contracts=self.contracts)
        self._check(settled=False)

    def _replay(self) -> None:
        counts = replay(self.land, self.source, contracts=self.contracts)
        self.log.append(f"replay {counts}")
        self.stats.replays.update(counts)
        self._check(settled=True)

    def _check(self, *, settled: bool, lagging: bool = True) -> None:
        self.stats.checks += 1
        problems = [p for table, key in TABLES.items()
                    for p in nothing_lost(Where(self.src, self.land, self.source, table, key),
                                          settled=settled, lagging=lagging)]
        if problems:
            self._fail(problems)

    def _fail(self, problems: list[str]) -> None:
        raise OracleFailure(f"seed {self.seed}: " + "\n".join(problems[:12])
                            + "\nlast steps:\n" + "\n".join(self.log[-12:]))
