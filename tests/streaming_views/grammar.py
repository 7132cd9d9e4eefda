"""The differential generator's grammar: base tables, their values, and live views drawn from
the supported SQL (plus some constructs that must be refused).

Everything is drawn from a ``random.Random`` so a seed reproduces a case. See
:mod:`tests.streaming_views.differential` for the writes and the oracle.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

SCHEMA = """
drop schema if exists gen cascade;
create schema gen;
create domain gen.amount as numeric(12, 2) check (value >= 0);
create table gen.f (id int primary key, k int, g int, n numeric, c numeric(10, 2), x float8,
                    s text, sc text collate "C", ts timestamptz, d date, iv interval, j jsonb,
                    b boolean, note text, m gen.amount,
                    q numeric(12, 2) not null default 0);
create table gen.d (k int primary key, region text, w int, label text collate "C",
                    hits int not null default 0);
create table gen.e (k int primary key, tag text);
create table gen.p (id int, day date, kind text, v int, amount numeric) partition by range (day);
create table gen.p_jan partition of gen.p for values from ('2026-01-01') to ('2026-02-01');
create table gen.p_feb partition of gen.p for values from ('2026-02-01') to ('2026-03-01')
    partition by list (kind);
create table gen.p_feb_a partition of gen.p_feb for values in ('a');
create table gen.p_feb_rest partition of gen.p_feb default;
create table gen.p_rest partition of gen.p default;
drop schema if exists evil cascade;
create schema evil;
create function evil.lower(text) returns text language sql immutable as 'select upper($1)';
create function evil.date_trunc(text, timestamptz) returns timestamptz language sql immutable
    as 'select $2';
"""

FACT_COLUMNS = ["id", "k", "g", "n", "c", "x", "s", "sc", "ts", "d", "iv", "j", "b", "note",
                "m", "q"]
FACT_TYPES = ["int", "int", "int", "numeric", "numeric(10,2)", "float8", "text", "text",
              "timestamptz", "date", "interval", "jsonb", "boolean", "text", "gen.amount",
              "numeric(12,2)"]

VALUES: dict[str, list[str | None]] = {
    "k": [None, "0", "1", "2", "3", "4", "5"],
    "g": [None, "0", "1", "2", "3"],
    "n": [None, "0", "1", "-1", "1.5", "2.25", "0.125", "1.0", "1.00", "100.000", "NaN",
          "Infinity", "-Infinity", "1e-20", "12345678901234567890.1234", "3.333333333333"],
    "c": [None, "0", "1.5", "-2.25", "99.99", "0.01", "NaN"],
    "x": [None, "0", "-0", "1.5", "NaN", "Infinity", "-Infinity", "1e300", "0.1"],
    "s": [None, "", "a", "A", "b", "B", "é", "É", " a", "a ", "ß", "😀"],
    "sc": [None, "a", "A", "b", "Z", "é"],
    "ts": [None, "2026-01-01 00:00:00+00", "2026-01-01 12:00", "2026-03-29 00:30:00+00",
           "2026-01-01 23:30:00+00", "2025-12-31 18:45:00-05", "2026-03-29 01:30:00+01",
           "2026-01-02 09:30:00+05:30", "infinity", "-infinity"],
    "d": [None, "2026-01-01", "2026-02-28", "2025-12-31", "infinity"],
    "iv": [None, "1 day", "24 hours", "1 mon", "-1 day", "1 day 02:00", "00:00:00.5"],
    "j": [None, "{}", '{"a": 1}', '{"a": 1.0}', '{"a": "x"}', "[1, 2]", "null",
          '{"b": {"c": true}}'],
    "b": [None, "true", "false"],
    "note": [None, "n1", "n2"],
    "m": [None, "0", "1.50", "2.25", "99.99"],
    # NOT NULL: its sums keep no not-null counter, and NaN stays in them (streaming_views.notnull)
    "q": ["0", "1.50", "-2.25", "99.99", "NaN"],
}
INFINITE_INTERVALS = ["infinity", "-infinity"]


def fact_values(rng: random.Random, ident: int, server_version: int) -> list[str | None]:
    """One fact row as text values (cast in SQL): id, then a random value per column."""
    row: list[str | None] = [str(ident)]
    for col in FACT_COLUMNS[1:]:
        choices = VALUES[col]
        if col == "iv" and server_version >= 170000:
            choices = choices + INFINITE_INTERVALS
        row.append(rng.choice(choices))
    return row


@dataclass
class View:
    """A generated view: its SQL, output columns whose text is exact (sum/avg/count...),
    and whether the engine must refuse it."""

    name: str
    sql: str
    text_exact: list[str] = field(default_factory=list)
    expect_refusal: bool = False


FROMS = {
    "f": ("gen.f f", ["f"]),
    "fd": ("gen.f f join gen.d d on d.k = f.k", ["f", "d"]),
    "fde": ("gen.f f join gen.d d on d.k = f.k join gen.e e on e.k = d.k", ["f", "d", "e"]),
    "comma": ("gen.f f, gen.d d", ["f", "d"]),
    "p": ("gen.p p", ["p"]),
}
# Outer joins (streaming_views/outer.py): every join equates the key k between its sides.
OUTER_FROMS = {
    "f_left_d": ("gen.f f left join gen.d d on d.k = f.k", ["f", "d"]),
    "d_left_f": ("gen.d d left join gen.f f on f.k = d.k", ["d", "f"]),
    "f_right_d": ("gen.f f right join gen.d d on d.k = f.k and d.w > 1", ["f", "d"]),
    "f_full_d": ("gen.f f full join gen.d d on d.k = f.k", ["f", "d"]),
    "f_full_d_left_e": ("gen.f f full join gen.d d on d.k = f.k left join gen.e e "
                        "on e.k = f.k and e.k = d.k", ["f", "d", "e"]),
    "e_left_fd": ("gen.e e left join (gen.f f join gen.d d on d.k = f.k and f.g > 0) "
                  "on f.k = e.k", ["e", "f", "d"]),
}
FROMS.update(OUTER_FROMS)
# Self-joins (streaming_views/selfjoin.py): gen.f in a second role f2 (read in ON only).
SELF_FROMS = {
    "f_self": ("gen.f f join gen.f f2 on f2.g = f.k and f2.id <> f.id", ["f"]),
    "f_self_left": ("gen.f f left join gen.f f2 on f2.k = f.g", ["f"]),
    "f_self_full": ("gen.f f full join gen.f f2 on f2.k = f.g and f2.b", ["f"]),
    "f_self_d": ("gen.f f join gen.d d on d.k = f.k join gen.f f2 on f2.g = d.w", ["f", "d"]),
}
FROMS.update(SELF_FROMS)
# FROM subqueries and WITH (streaming_views/inline.py): gen.f behind a subquery named f.
_F_ALL = ", ".join(f"f.{c}" for c in FACT_COLUMNS)
INLINE_FROMS = {
    "sub_fd": (f"(select {_F_ALL} from gen.f f where f.k is not null) f join gen.d d "
               "on d.k = f.k", ["f", "d"]),
    "sub_d_left_f": (f"gen.d d left join (select {_F_ALL} from gen.f f where f.g > 0) f "
                     "on f.k = d.k", ["d", "f"]),
    "with_fd": ("w f join gen.d d on d.k = f.k", ["f", "d"]),
    "with_f": ("w f", ["f"]),
}
WITH_PREFIX = f"with w as (select {_F_ALL} from gen.f f where f.s is distinct from 'a') "
FROMS.update(INLINE_FROMS)
# Two-level aggregation (streaming_views/twolevel.py): an aggregate over gen.f grouped by a key.
TWO_LEVEL = [
    "select c.n as k0, count(*) as a0, sum(c.s) as a1 from (select f.k, count(*) as n, "
    "sum(f.c) as s from gen.f f group by f.k) c group by c.n",
    "select count(*) as a0, max(c.s) as a1, sum(c.n) as a2 from (select f.g, f.b, count(*) as "
    "n, sum(f.c) as s from gen.f f where f.b is not null group by f.g, f.b having count(*) > 1) c",
    "select c.m as k0, c.g as k1 from (select f.g, min(f.s) as m, count(distinct f.k) as n "
    "from gen.f f group by f.g) c where c.n > 1",
]
# Semi- and anti-joins (streaming_views/semijoin.py), added to WHERE of a view over gen.f.
SEMI_WHERES = ["exists (select 1 from gen.d d2 where d2.k = f.k and d2.w > 0)",
               "not exists (select 1 from gen.e e2 where e2.k = f.k)",
               "f.k in (select e2.k from gen.e e2 where e2.tag <> 't0')",
               "f.id not in (select d2.k from gen.d d2)",
               "not exists (select 1 from gen.f f3 where f3.g = f.g and f3.id < f.id)"]
KEYS = {
    "f": ["f.g", "f.k", "f.s", "f.sc", "f.b", "f.d", "date_trunc('hour', f.ts)", "f.ts::date",
          "extract(hour from f.ts)", "(f.ts at time zone 'UTC')::date", "f.j ->> 'a'",
          "lower(f.s)", "f.c", "f.iv::text", "f.d::text", "f.x::text", "date_bin('2 hours', "
          "f.ts, timestamptz '2000-01-01 00:00:00+00')", "f.m"],
    "d": ["d.region", "d.label", "d.w"],
    "e": ["e.tag"],
    "p": ["p.kind", "p.day", "p.v"],
}
SUMS = {"f": ["f.g", "f.c", "f.n", "f.iv", "f.n / nullif(f.c, 0)", "f.g * f.c", "f.m", "f.q",
              "f.q"],
        "d": ["d.w"], "p": ["p.v", "p.amount"], "e": []}
EXTREMES = {"f": ["f.s", "f.sc", "f.ts", "f.d", "f.x", "f.n", "f.c", "f.iv", "f.g", "f.m",
                  "f.q"],
            "d": ["d.label", "d.region"], "p": ["p.day", "p.amount"], "e": ["e.tag"]}
DISTINCTS = {"f": ["f.g", "f.s", "f.sc", "f.c", "f.j", "f.m"], "d": ["d.region"], "p": ["p.kind"],
             "e": ["e.tag"]}
FILTERS = {"f": ["f.b", "f.g > 1", "f.s is not null", "f.c > 0"], "d": ["d.w > 0"],
           "p": ["p.v > 0"], "e": ["e.tag <> 'x'"]}
WHERES = {"f": ["f.g > 0", "f.s <> 'a'", "f.ts >= '2026-01-01 12:00'",
                "f.ts::date > '2025-12-31'", "f.d is not null", "f.c > 0", "f.b",
                "f.x < 10", "f.iv > interval '1 hour'", "f.j ? 'a'", "f.k is distinct from 3",
                "f.ts + interval '1 day' > timestamptz '2026-01-02 00:00:00+00'",
                "f.n / nullif(f.c, 0) > 1", "f.g % 3 = 1"],
          "d": ["d.w > 0", "d.region <> 'r1'"], "e": ["e.tag is not null"],
          "p": ["p.v > 1", "p.kind <> 'b'"]}
REFUSED = ["select f.g, sum(f.x) as s from gen.f f group by f.g",
           "select f.id, now() as t from gen.f f",
           "select f.g, age(f.ts) as a, count(*) as n from gen.f f group by 1, 2",
           "select f.s::timestamptz as t, count(*) as n from gen.f f group by 1",
           "select f.g, max(f.ts)::date as last_day from gen.f f group by f.g",
           "select f.g, sum(distinct f.n) as s from gen.f f group by f.g",
           "select f.id from gen.f f where f.ts < 'now'",
           "select f.id, f.ctid as c from gen.f f",
           "select d.k, d::text as r from gen.d d",
           "select f.g, count(e) as n from gen.f f join gen.e e on e.k = f.k group by f.g",
           "select f.id, f.n / f.c as r from gen.f f",
           "select f.g, count(*) filter (where f.n % f.g > 0) as n from gen.f f group by f.g"]


def draw_view(rng: random.Random, name: str) -> View:
    """Draw one view from the grammar (about 1 in 15 from the constructs to refuse)."""
    if rng.random() < 1 / 15:
        return View(name, rng.choice(REFUSED), expect_refusal=True)
    shape = rng.choice(["f", "f", "fd", "fd", "fde", "comma", "p", "union", "outer", "outer",
                        "self", "semi", "inline", "two_level"])
    if shape == "union":
        return _union_view(rng, name)
    if shape == "outer":
        shape = rng.choice(sorted(OUTER_FROMS))
    if shape == "self":
        shape = rng.choice(sorted(SELF_FROMS))
    if shape == "two_level":
        return View(name, rng.choice(TWO_LEVEL), ["a0", "a2"])
    if shape == "inline":
        shape = rng.choice(sorted(INLINE_FROMS))
    prefix = WITH_PREFIX if shape.startswith("with_") else ""
    semi = [rng.choice(SEMI_WHERES)] if shape == "semi" else []
    shape = "f" if shape == "semi" else shape
    from_sql, aliases = FROMS[shape]
    where = [rng.choice(WHERES[a]) for a in aliases if rng.random() < 0.4] + semi
    if shape == "comma":
        where.append("d.k = f.k")
    kind = rng.choices(["aggregate", "distinct", "bag"], [7, 1, 2])[0]
    keys = sorted({rng.choice(KEYS[rng.choice(aliases)]) for _ in range(rng.randint(0, 3))})
    text_exact: list[str] = []
    if kind != "aggregate":
        if not keys:
            keys = [rng.choice(KEYS[aliases[0]])]
        if kind == "bag" and rng.random() < 0.5:
            keys.append(f"{aliases[0]}.{'id' if aliases[0] in 'fp' else 'k'}")
        cols = [f"{k} as k{i}" for i, k in enumerate(keys)]
        head = "select distinct" if kind == "distinct" else "select"
        sql = f"{head} {', '.join(cols)} from {from_sql}"
    else:
        cols = [f"{k} as k{i}" for i, k in enumerate(keys)]
        for i in range(rng.randint(1, 5)):
            col, exact = _aggregate(rng, aliases, i)
            cols.append(col)
            if exact:
                text_exact.append(f"a{i}")
        sql = f"select {', '.join(cols)} from {from_sql}"
    if where:
        sql += " where " + " and ".join(where)
    if kind == "aggregate" and keys:
        sql += " group by " + ", ".join(str(i + 1) for i in range(len(keys)))
        if rng.random() < 0.3:
            sql += rng.choice([" having count(*) > 1", " having count(*) filter (where true) "
                               "<> 2"])
    return View(name, prefix + sql, text_exact)


def _aggregate(rng: random.Random, aliases: list[str], i: int) -> tuple[str, bool]:
    alias = rng.choice(aliases)
    kind = rng.choice(["count", "count", "sum", "avg", "extreme", "bool", "distinct", "expr"])
    filt = f" filter (where {rng.choice(FILTERS[alias])})" if rng.random() < 0.25 else ""
    if kind == "count":
        arg = "*" if rng.random() < 0.5 else rng.choice(EXTREMES[alias])
        return f"count({arg}){filt} as a{i}", True
    if kind in {"sum", "avg"} and SUMS[alias]:
        return f"{kind}({rng.choice(SUMS[alias])}){filt} as a{i}", True
    if kind == "bool" and alias == "f":
        return f"{rng.choice(['bool_and', 'bool_or'])}(f.b){filt} as a{i}", True
    if kind == "distinct":
        arg = rng.choice(DISTINCTS[alias])
        func = "count" if arg not in {"f.g", "f.c"} else rng.choice(["count", "sum", "avg"])
        return f"{func}(distinct {arg}){filt} as a{i}", func != "count" or True
    if kind == "expr":
        return rng.choice([f"count(*) * 2 + 1 as a{i}",
                           f"round(count(*) filter (where {rng.choice(FILTERS[alias])})::numeric"
                           f" / count(*), 4) as a{i}"]), True
    return f"{rng.choice(['min', 'max'])}({rng.choice(EXTREMES[alias])}){filt} as a{i}", False


# Sums of typed columns only (streaming_views/netpair.py: a lone one-row UPDATE of the columns
# they read is applied as one net row); f.n, unconstrained, keeps its scales: the pair
NET_SUMS = ["f.c", "f.q", "f.m", "f.g", "f.k", "f.iv", "f.c * 2", "f.n"]


def draw_sums_view(rng: random.Random, name: str) -> View:
    """A view whose aggregates are all counts, sums and averages, over gen.f alone or joined to
    gen.d on its key, grouped by keys of either (a float's text, a collated text among them)."""
    from_sql, aliases = FROMS[rng.choice(["f", "fd", "with_f", "sub_fd"])]
    prefix = WITH_PREFIX if from_sql.startswith("w ") else ""
    keys = sorted({rng.choice([*KEYS["f"], *(KEYS["d"] if "d" in aliases else [])])
                   for _ in range(rng.randint(0, 2))})
    cols = [f"{k} as k{i}" for i, k in enumerate(keys)]
    for i in range(rng.randint(1, 4)):
        filt = f" filter (where {rng.choice(FILTERS['f'])})" if rng.random() < 0.3 else ""
        func = rng.choice(["count", "sum", "sum", "avg"])
        arg = rng.choice(["*", "f.x", "f.s", "f.c"]) if func == "count" else rng.choice(NET_SUMS)
        cols.append(f"{func}({arg}){filt} as a{i}")
    sql = f"select {', '.join(cols)} from {from_sql}"
    where = [rng.choice(WHERES[a]) for a in aliases if rng.random() < 0.4]
    if where:
        sql += " where " + " and ".join(where)
    if keys:
        sql += " group by " + ", ".join(str(i + 1) for i in range(len(keys)))
    return View(name, prefix + sql, [f"a{i}" for i in range(len(cols) - len(keys))])


def _union_view(rng: random.Random, name: str) -> View:
    sql = ("select u.g as k0, count(*) as a0, sum(u.v) as a1, max(u.v) as a2 from ("
           "select f.g, f.c as v from gen.f f where f.b "
           "union all select d.w, f.c + 1 from gen.d d join gen.f f on f.k = d.k"
           + (" union all select p.v, p.amount from gen.p p" if rng.random() < 0.5 else "")
           + ") as u group by u.g")
    return View(name, sql, ["a0", "a1"])


# ---------------------------------------------------------------- temporal filters (mz_now())
TEMPORAL_REFUSED = [
    "select f.id, mz_now() as t from gen.f f",
    "select f.id from gen.f f where mz_now() <= f.ts or f.g = 1",
    "select f.id from gen.f f where mz_now() - interval '1 day' <= f.ts",
    "select f.g, count(*) as n from gen.f f group by f.g having mz_now() <= max(f.ts)",
    "select f.id from gen.f f join gen.d d on d.k = f.k where mz_now() <= f.ts + d.w * "
    "interval '1 day'",
    "select f.id from gen.f f where mz_now() <> f.ts",
]


def draw_temporal_view(rng: random.Random, name: str, clock_days: int) -> View:
    """A view with a temporal filter whose rows expire and get admitted while the clock moves
    on (``clock_days``: the clock's days after 2026-01-01, where gen.f's times lie); about 1 in
    6 from the forms to refuse. Aggregates only where the text is exact and no data error."""
    if rng.random() < 1 / 6:
        return View(name, rng.choice(TEMPORAL_REFUSED), expect_refusal=True)
    until = clock_days + rng.randint(0, 60)
    since = clock_days + rng.randint(-30, 40)
    bound = rng.choice([
        f"mz_now() <= f.ts + interval '{until} days'",
        f"mz_now() < f.ts + interval '{until} days' and f.ts + interval '{since} days' <= mz_now()",
        f"mz_now() between f.ts + interval '{since} days' and f.ts + interval '{until} days'",
        f"mz_now() >= f.ts + interval '{since} days'",
        f"mz_now() < f.d + {until}",
        f"mz_now() > f.ts + interval '{since} days' and mz_now() <= f.d + {until}",
        # engine 5: edges found by inverting the bound to a range of its column (expiry.py)
        f"mz_now() >= f.ts - interval '{-since} days' and mz_now() < f.ts + interval "
        f"'{until // 30 + 1} months'",
        f"mz_now() >= f.d and mz_now() < f.d + {until}",
        "mz_now() <= f.ts + f.iv and mz_now() >= f.ts",  # not invertible: a scan per tick
        # engine 17: AT TIME ZONE through an expression index, casts through the column's
        f"mz_now() >= (f.ts at time zone 'Australia/Lord_Howe') - interval '{-since} days' "
        f"and mz_now() < (f.ts at time zone 'America/Los_Angeles') + interval '{until} days'",
        f"mz_now() < (f.ts::timestamp at time zone 'Australia/Lord_Howe') + interval '{until} "
        f"days'",  # not invertible (a cast inside), computed in SQL
        f"mz_now() <= f.ts::date + {until} and mz_now() >= f.d::timestamp",
        f"mz_now() < date_trunc('day', f.ts) + interval '{until} days' and mz_now() >= "
        f"date_trunc('month', f.d)",
    ])
    if rng.random() < 0.15:  # a keyless, partitioned timed table (its partitions' triggers)
        return View(name, f"select p.kind as k0, count(*) as a0, sum(p.v) as a1 from gen.p p "
                          f"where mz_now() <= p.day + {until} and mz_now() >= p.day + "
                          f"{since - 10} group by 1")
    header = f"-- @retention: f.ts {until + 20} days\n" if rng.random() < 0.2 else ""
    shape = rng.choice(["f", "f", "fd", "bag"])
    extra = f" and {rng.choice(WHERES['f'][:7])}" if rng.random() < 0.4 else ""
    if shape == "bag":
        sql = f"select f.id as k0, f.g as k1 from gen.f f where {bound}{extra}"
    elif shape == "fd":
        sql = (f"select d.region as k0, count(*) as a0, sum(f.g) as a1, max(f.ts) as a2 "
               f"from gen.f f join gen.d d on d.k = f.k where {bound}{extra} group by 1")
    else:
        sql = (f"select f.g as k0, count(*) as a0, count(f.s) as a1, min(f.ts) as a2, "
               f"bool_or(f.b) as a3 from gen.f f where {bound}{extra} group by 1")
    return View(name, header + sql)


def draw_view_over(rng: random.Random, name: str, inner: str, columns: list[str]) -> View:
    """Draw a view over the live view ``live.<inner>`` (columns ``columns``): a count, a
    regrouping by one of its columns, or its rows filtered, joined to ``gen.d`` when it has a
    numeric ``k0`` (issue 13 item 4)."""
    pick = rng.choice(columns)
    shapes = [f"select count(*) as a0, count(x.{pick}) as a1 from live.{inner} x",
              f"select x.{pick} as k0, count(*) as a0 from live.{inner} x group by 1",
              f"select x.{pick} as k0 from live.{inner} x where x.{pick} is not null"]
    exact = [["a0", "a1"], ["a0"], []]
    i = rng.randrange(len(shapes))
    return View(name, shapes[i], exact[i])
