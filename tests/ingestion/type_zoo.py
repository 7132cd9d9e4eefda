"""A seeded generator of random values over many built-in and user-defined PostgreSQL types
(the "type zoo"), for round-trip tests of snapshot and stream.

Each :class:`ZooType` renders random SQL literals (``'...'::type`` or ``null``) from a
``random.Random``, so a seed reproduces a run. Edge values (infinite and empty ranges, NaN, -0,
BC dates, DST-ambiguous local times, control characters) come up often on purpose.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

SETUP = [
    "create type zoo_mood as enum ('sad', 'ok', 'happy', 'it''s \"q\"')",
    "create type zoo_pair as (a integer, b text, c numeric[])",
    "create domain zoo_ints as integer[] check (cardinality(value) < 10)",
    "create domain zoo_pos as numeric check (value > 0 or value = 'NaN')",
    "create table zoo_only_source (x int)",
]
"""User-defined types the zoo's columns use (run once on the source before the tables)."""


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _lit(text: str, type_sql: str) -> str:
    return f"{_q(text)}::{type_sql}"


def _int(r: random.Random) -> int:
    return r.choice([0, 1, -1, 2**31 - 1, -(2**31), r.randint(-1000, 1000)])


def _ts(r: random.Random, tz: bool = False) -> str:
    if r.random() < 0.15:
        return r.choice(["infinity", "-infinity"])
    bc = " BC" if r.random() < 0.1 else ""
    year = r.choice([r.randint(1, 4713 if bc else 9999), 2024, 2024, 1970, 1])
    # 2024-03-10 02:30 does not exist in America/New_York, 2024-11-03 01:30 is there twice.
    if year == 2024 and r.random() < 0.5:
        base = r.choice(["2024-03-10 02:30:00", "2024-11-03 01:30:00", "2024-03-31 02:30:00",
                         "2024-10-27 02:30:00"])
    else:
        base = (f"{year:04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d} "
                f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"
                f".{r.randint(0, 999999):06d}")
    zone = r.choice(["", "+05:30", "-08", "Europe/Berlin"]) if tz else ""
    return f"{base}{zone and ' ' + zone}{bc}" if zone and zone[0].isalpha() else \
        f"{base}{zone}{bc}"


def _date(r: random.Random) -> str:
    if r.random() < 0.15:
        return r.choice(["infinity", "-infinity"])
    bc = " BC" if r.random() < 0.2 else ""
    return f"{r.randint(1, 5874897 if not bc else 4713):04d}-{r.randint(1, 12):02d}-" \
           f"{r.randint(1, 28):02d}{bc}"


def _range(r: random.Random, lo: Callable[[], str], hi: Callable[[], str]) -> str:
    pick = r.random()
    if pick < 0.1:
        return "empty"
    a, b = lo(), hi()
    if pick < 0.25:
        a = ""
    elif pick < 0.4:
        b = ""
    return f"{r.choice('[(')}{a},{b}{r.choice('])')}"


def _int4range(r: random.Random) -> str:
    x = r.randint(-100, 100)
    return _range(r, lambda: str(x), lambda: str(x + r.randint(0, 50)))


def _tstzrange(r: random.Random) -> str:
    day = r.randint(1, 27)
    return _range(r, lambda: f'"2024-03-{day:02d} 10:00+02"',
                  lambda: r.choice(['"infinity"', f'"2024-03-{day + 1:02d} 09:00-05"']))


def _multirange(r: random.Random) -> str:
    parts, x = [], r.randint(-50, 0)
    for _ in range(r.randint(0, 3)):
        y = x + r.randint(1, 5)
        parts.append(f"[{x},{y})")
        x = y + r.randint(1, 5)
    if r.random() < 0.2:
        parts.append(f"[{x},)")
    return "{" + ",".join(parts) + "}"


_CONTROL = "".join(chr(c) for c in range(1, 32)) + "\\\"'\u2028\u2029\ufeff\x7f\u00e9\U0001f600"


def _text(r: random.Random) -> str:
    return "".join(r.choice(_CONTROL + "abc ,{}()[]") for _ in range(r.randint(0, 12)))


def _bits(r: random.Random, n: int) -> str:
    return "".join(r.choice("01") for _ in range(n))


def _mac(r: random.Random, n: int) -> str:
    return ":".join(f"{r.randint(0, 255):02x}" for _ in range(n))


def _point(r: random.Random) -> str:
    return f"({r.choice([0, -0.0, 1.5, -3, 1e-300])},{r.randint(-9, 9)})"


def _float(r: random.Random) -> str:
    return r.choice(["NaN", "Infinity", "-Infinity", "-0", "0", "1e-320", "1.7976931348623157e308",
                     repr(r.uniform(-1e6, 1e6)), "0.1"])


def _numeric(r: random.Random) -> str:
    return r.choice(["NaN", "0", "-0.000", "1e-30", "123456789012345678901234567890.5",
                     str(r.randint(-10**6, 10**6)) + "." + "0" * r.randint(0, 3)])


@dataclass(frozen=True)
class ZooType:
    """One column type of the zoo.

    Attributes:
        name: a short column name.
        sql_type: the column's type as written in CREATE TABLE.
        gen: a random value's text form (the literal is cast to ``sql_type``).
    """

    name: str
    sql_type: str
    gen: Callable[[random.Random], str]

    def literal(self, r: random.Random) -> str:
        """A random SQL literal of the type (NULL one time in ten)."""
        if r.random() < 0.1:
            return "null"
        return _lit(self.gen(r), self.sql_type)


ZOO: list[ZooType] = [
    ZooType("i4r", "int4range", _int4range),
    ZooType("i8r", "int8range", lambda r: _range(r, lambda: "-9223372036854775807",
                                                  lambda: "9223372036854775806")),
    ZooType("numr", "numrange", lambda r: _range(r, lambda: "-1.5", lambda: "2.25")),
    ZooType("dr", "daterange", lambda r: _range(r, lambda: "2000-01-01", lambda: "infinity")),
    ZooType("tsr", "tsrange", lambda r: _range(r, lambda: '"2024-11-03 01:30"',
                                                lambda: '"2024-11-03 03:30"')),
    ZooType("tstzr", "tstzrange", _tstzrange),
    ZooType("i4mr", "int4multirange", _multirange),
    ZooType("bt", "bit(8)", lambda r: _bits(r, 8)),
    ZooType("vb", "varbit(20)", lambda r: _bits(r, r.randint(0, 20))),
    ZooType("mac", "macaddr", lambda r: _mac(r, 6)),
    ZooType("mac8", "macaddr8", lambda r: _mac(r, 8)),
    ZooType("cidr_", "cidr", lambda r: r.choice(["10.0.0.0/8", "192.168.100.128/25", "::/0",
                                                 "2001:db8::/32", "1.2.3.4/32"])),
    ZooType("inet_", "inet", lambda r: r.choice(["10.1.2.3/8", "::1", "fe80::1%eth0"[:7],
                                                 "255.255.255.255"])),
    ZooType("mny", "money", lambda r: f"{r.randint(-10**9, 10**9) / 100:.2f}"),
    ZooType("tsv", "tsvector", lambda r: r.choice(["a:1 b:2,3A 'c d':4", "", "fat cat sat",
                                                   "'a''b' \\\\x"])),
    ZooType("tsq", "tsquery", lambda r: r.choice(["a & !b", "(c | d) <-> e:*", "'x y' <2> z"])),
    ZooType("lsn", "pg_lsn", lambda r: f"{r.randint(0, 0xFFFF):X}/{r.randint(0, 2**32 - 1):X}"),
    ZooType("ttz", "timetz", lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00"
            f"{r.choice(['+00', '-05', '+05:30', '+14', '-12:45'])}"),
    ZooType("tm", "time", lambda r: r.choice(["24:00:00", "00:00:00", "12:34:56.789012"])),
    ZooType("pt", "point", _point),
    ZooType("bx", "box", lambda r: f"({r.randint(0, 9)},{r.randint(0, 9)}),(1.5,-0)"),
    ZooType("pg", "polygon", lambda r: "((0,0),(1,1),(" + str(r.randint(2, 9)) + ",0))"),
    ZooType("ci", "circle", lambda r: f"<(1,2),{r.choice(['0', '3.5', '1e10'])}>"),
    ZooType("ln", "line", lambda r: f"{{1,{r.randint(-5, 5)},3}}"),
    ZooType("ls", "lseg", lambda r: f"[(0,0),({r.randint(1, 9)},1)]"),
    ZooType("pa", "path", lambda r: r.choice(["[(0,0),(1,1)]", "((0,0),(1,1),(2,0))"])),
    ZooType("oid_", "oid", lambda r: str(r.choice([0, 1, 4294967295, r.randint(1, 99999)]))),
    ZooType("rtype", "regtype", lambda r: r.choice(["integer", "text[]", "timestamptz"])),
    ZooType("rcls", "regclass", lambda r: r.choice(["zoo_only_source", "pg_class"])),
    ZooType("chn", "char(5)", lambda r: r.choice(["", "a", "ab ", " x", "abcde"])),
    ZooType("nm", "numeric", _numeric),
    ZooType("f8", "float8", _float),
    ZooType("f4", "float4", lambda r: r.choice(["NaN", "-Infinity", "-0", "1e-45", "3.4028235e38",
                                                "0.1"])),
    ZooType("d", "date", _date),
    ZooType("ts", "timestamp", _ts),
    ZooType("tstz", "timestamptz", lambda r: _ts(r, tz=True)),
    ZooType("iv", "interval", lambda r: r.choice(["-178000000 years", "1 mon -1 day 00:00:01",
                                                  "@ 3 days ago", "0"])),
    ZooType("tx", "text", _text),
    ZooType("js", "json", lambda r: r.choice(['{"a":1, "a":2}', '[1, 2.50, "\\u0001"]',
                                              ' {"x" : null} ', '"\\u0000"'])),
    ZooType("jb", "jsonb", lambda r: r.choice(['{"a":1, "a":2}', '[1, 2.50, "\\u0001"]',
                                               '{"k": "\\u2028"}'])),
    ZooType("mood", "zoo_mood", lambda r: r.choice(["sad", "ok", "happy", "it's \"q\""])),
    ZooType("moods", "zoo_mood[]", lambda r: r.choice(["{}", "{sad,happy}",
                                                       "{\"it's \\\"q\\\"\",NULL}"])),
    ZooType("pair", "zoo_pair", lambda r: r.choice(['(1,"a,b","{1.5,NaN}")', "(,,)",
                                                    '(-1,"",{})'])),
    ZooType("ints", "zoo_ints", lambda r: "{" + ",".join(str(_int(r))
                                                         for _ in range(r.randint(0, 5))) + "}"),
    ZooType("pos", "zoo_pos", lambda r: r.choice(["NaN", "1", "0.5000"])),
    ZooType("i4ra", "int4range[]", lambda r: "{" + ",".join(
        '"' + _int4range(r) + '"' for _ in range(r.randint(0, 3))) + "}"),
    ZooType("maca", "macaddr[]", lambda r: "{" + ",".join(_mac(r, 6) for _ in range(2)) + "}"),
    ZooType("pta", "point[]", lambda r: "{" + ",".join('"' + _point(r) + '"'
                                                       for _ in range(r.randint(0, 2))) + "}"),
    ZooType("ia2", "integer[]", lambda r: r.choice(["{{1,2},{3,4}}", "[0:1]={7,8}", "{}"])),
    ZooType("ba", "bytea", lambda r: "\\x" + r.randbytes(r.randint(0, 8)).hex()),
    ZooType("big", "text", lambda r: r.randbytes(r.choice([1, 4000, 9000])).hex()),
    ZooType("bo", "boolean", lambda r: r.choice(["t", "f"])),
    ZooType("u", "uuid", lambda r: f"{r.getrandbits(128):032x}"),
]
"""The zoo's column types."""
