"""The applier's oracle, "nothing lost": every source row is in the mirror or held by a waiting
dead letter, the mirror holds no row the source does not, the changelog replays to the mirror.

:func:`nothing_lost` reads the source, the mirror, the changelog and the waiting dead letters
of one table and returns what breaks the mission (an empty list when nothing does). It does not
ask the implementation which letters are superseded; it decides from first principles:

- a keyed table: a permissive replay of the waiting letters, simulated — a letter counts when no
  changelog row of its key (and no truncate, no resync snapshot) came after it, the latest one per
  key wins, and columns it does not hold (TOAST values sent as unchanged) keep the mirror's value.
  The result must equal the source key by key: a key the source lacks is an extra row, a key with
  a different row a wrong or lost value.
- a keyless table (a bag): per distinct row, mirror copies never exceed the source's; mirror
  copies plus waiting letters (after the last truncate or resync) cover the source's; with
  ``settled`` (right after a replay under the current contract, which marks the superseded
  letters) they add up exactly: one waiting letter per copy the mirror lacks.

Rows are compared column by column as PostgreSQL's text forms (the letters' raw values cast to
the mirror's column types first), so NaN, ±Infinity, NULL and time-zone-written timestamps
compare as the server prints them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ingestion.names import changelog_table_name

MISSING = "<not in the letter>"
"""A column a dead letter does not hold (a TOAST value the change left unchanged)."""


@dataclass(frozen=True)
class Where:
    """One replicated table: source and landing URLs, source name, table, key (None: keyless)."""

    src: str
    land: str
    source: str
    table: str
    key: tuple[str, ...] | None


def _columns(url: str, schema: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
            " and not attisdropped order by attnum",
            (sql.Identifier(schema, table).as_string(conn),))]


def _types(url: str, schema: str, table: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = %s::regclass and attnum > 0 and not attisdropped",
            (sql.Identifier(schema, table).as_string(conn),)).fetchall())


def _rows(url: str, schema: str, table: str, columns: list[str],
          read_as: dict[str, str] | None = None) -> list[tuple]:
    """The rows' values as text; a column of ``read_as`` cast to that type first."""
    read_as = read_as or {}
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql.SQL("select {} from {}").format(
            sql.SQL(", ").join(sql.SQL("{}{}::text").format(
                sql.Identifier(c), sql.SQL(f"::{read_as[c]}" if c in read_as else ""))
                for c in columns),
            sql.Identifier(schema, table)))]


def _letters(w: Where, columns: list[str]) -> list[tuple]:
    """The waiting letters as ((commit_lsn, seq), values) in commit order, without those void
    (committed before the table's last truncate, or before its resync snapshot)."""
    with psycopg.connect(w.land) as conn:
        types = dict(conn.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = %s::regclass and attnum > 0 and not attisdropped",
            (sql.Identifier(w.source, w.table).as_string(conn),)).fetchall())
        values = sql.SQL(", ").join(
            sql.SQL("case when raw_row ? {n} then ((raw_row ->> {n})::{t})::text"
                    " else {m} end").format(n=sql.Literal(c), t=sql.SQL(types[c]),
                                            m=sql.Literal(MISSING)) for c in columns)
        letters = [((int(lsn), seq), tuple(vals)) for lsn, seq, *vals in conn.execute(
            sql.SQL("select commit_lsn - '0/0'::pg_lsn, seq, {} from tidemark.dead_letters"
                    " where source = %s and table_name = %s and replayed_at is null"
                    " order by commit_lsn, seq").format(values), (w.source, w.table))]
        changelog = sql.Identifier("cdc", changelog_table_name(w.source, w.table))
        reset = conn.execute(sql.SQL(
            "select _commit_lsn - '0/0'::pg_lsn, _seq from {} where _op = 't'"
            " order by _commit_lsn desc, _seq desc limit 1").format(changelog)).fetchone()
        snap = conn.execute(
            "select snapshot_lsn - '0/0'::pg_lsn from tidemark.replicated_tables"
            " where source = %s and table_name = %s", (w.source, w.table)).fetchone()
    last_t = (-1, 0) if reset is None else (int(reset[0]), reset[1])
    snap_at = 0 if snap is None or snap[0] is None else int(snap[0])
    return [(pos, vals) for pos, vals in letters if pos[0] >= snap_at and pos > last_t]


def changelog_replay(w: Where, columns: list[str]
                     ) -> tuple[Counter, dict[tuple, tuple], Counter]:
    """The mirror the changelog leads to (rows of ``columns`` as text), for a keyed table the
    position of each key's last changelog row, and for a keyless one the net count per row.

    ``r``/``c``/``u`` put a row (by key, or one more copy), ``b``/``d`` remove it (by key, or one
    equal copy if the bag holds one: a removal of a row that went to the dead letters finds
    none in the mirror either), ``t`` empties. A bag's batch nets its lines per row before it
    applies them (a removal then an insert of a row the mirror lacks cancel out), so its mirror
    lies between the net count and the one-by-one count.
    """
    key = list(w.key or ())
    with psycopg.connect(w.land) as conn:
        rows = conn.execute(sql.SQL(
            "select _op, _commit_lsn - '0/0'::pg_lsn, _seq, {} from {} order by _commit_lsn,"
            " _seq").format(sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c))
                                               for c in columns),
                            sql.Identifier("cdc", changelog_table_name(w.source, w.table)))
        ).fetchall()
    idx = [columns.index(k) for k in key]
    keyed: dict[tuple, tuple] = {}
    last: dict[tuple, tuple] = {}
    bag: Counter = Counter()
    net: Counter = Counter()
    for op, lsn, seq, *vals in rows:
        row = tuple(vals)
        if op == "t":
            keyed.clear()
            bag.clear()
            net.clear()
        elif key:
            k = tuple(row[i] for i in idx)
            last[k] = (int(lsn), seq)
            if op in ("b", "d"):
                keyed.pop(k, None)
            else:
                keyed[k] = row
        elif op in ("b", "d"):
            net[row] -= 1
            if bag[row] > 0:
                bag[row] -= 1
        else:
            net[row] += 1
            bag[row] += 1
    return (Counter(keyed.values()) if key else +bag), last, net


def _short(row: tuple | None) -> tuple | None:
    """A row for a message: long values (TOAST) cut to their start and length."""
    if row is None:
        return None
    return tuple(v[:12] + f"…({len(v)} chars)" if isinstance(v, str) and len(v) > 40 else v
                 for v in row)


def nothing_lost(w: Where, *, settled: bool = False, lagging: bool = True) -> list[str]:
    """What breaks "applied or kept in the dead-letter queue, nothing lost" for one table.

    Args:
        w: the table.
        settled: a replay under the current contract has just marked the superseded letters,
            so a keyless table's waiting letters must add up exactly (not merely cover).
        lagging: the mirror may lack columns the source added, and keep a column's type the
            source widened (it takes them at the table's next change: the source rewrote its
            rows, ``1.50`` as ``numeric(16,3)`` reads ``1.500``, and sent none): rows are
            compared on the columns both have, the source's read as the mirror's types. False:
            a column the mirror lacks, or the source's value in another form, is a problem.

    Returns:
        One line per problem (empty: the oracle holds).
    """
    mirrored = set(_columns(w.land, w.source, w.table))
    everything = _columns(w.src, "public", w.table)
    columns = [c for c in everything if c in mirrored]
    out = []
    if not lagging and len(columns) < len(everything):
        out.append(f"{w.table}: the mirror lacks the source's columns"
                   f" {sorted(set(everything) - mirrored)}")
    behind = {}
    if lagging:
        mirror_types = _types(w.land, w.source, w.table)
        behind = {c: t for c, t in _types(w.src, "public", w.table).items()
                  if c in mirrored and mirror_types[c] != t}
        behind = {c: mirror_types[c] for c in behind}
    source = _rows(w.src, "public", w.table, columns, behind)
    mirror = _rows(w.land, w.source, w.table, columns)
    live = _letters(w, columns)
    replayed, last, net = changelog_replay(w, columns)
    have = Counter(mirror)
    if w.key is None:
        off = [row for row in set(replayed) | set(have) | set(net)
               if not max(net[row], 0) <= have[row] <= replayed[row]]
        if off:
            out.append(f"{w.table}: the mirror's count of {[_short(r) for r in off[:5]]} is"
                       f" outside what its changelog allows")
    elif replayed != have:
        more = sorted(map(_short, replayed - Counter(mirror)))
        fewer = sorted(map(_short, Counter(mirror) - replayed))
        out.append(f"{w.table}: the changelog replays to {more} more and {fewer} fewer rows"
                   f" than the mirror")
    if w.key is None:
        s, m, held = Counter(source), Counter(mirror), Counter(v for _, v in live)
        for row, n in (m - s).items():
            out.append(f"{w.table}: the mirror holds {n} more of {_short(row)} than the source")
        for row, n in (s - m - held).items():
            out.append(f"{w.table}: {n} of {_short(row)} lost (in neither mirror nor dead letters)")
        if settled:
            for row, n in (held - (s - m)).items():
                out.append(f"{w.table}: {n} waiting letter(s) of {_short(row)} too many: a replay"
                           f" would add rows the source does not hold")
        return out
    idx = [columns.index(k) for k in w.key]
    final = {tuple(r[i] for i in idx): r for r in mirror}
    for pos, vals in live:
        k = tuple(vals[i] for i in idx)
        if k in last and last[k] > pos:
            continue  # overtaken by a later change of its key
        before = final.get(k)
        final[k] = tuple(before[i] if v == MISSING and before is not None else v
                         for i, v in enumerate(vals))
    want = {tuple(r[i] for i in idx): r for r in source}
    for k, row in want.items():
        if k not in final:
            out.append(f"{w.table}: key {k} lost: source {_short(row)}")
        elif final[k] != row:
            out.append(f"{w.table}: key {k}: source {_short(row)}, mirror + letters"
                       f" {_short(final[k])}")
    for k in final.keys() - want.keys():
        out.append(f"{w.table}: key {k} is in the mirror (or a letter) but not the source:"
                   f" {_short(final[k])}")
    return out


def waiting(land: str, source: str) -> int:
    """How many dead letters of ``source`` wait (never replayed, or still invalid)."""
    with psycopg.connect(land) as conn:
        return conn.execute("select count(*) from tidemark.dead_letters where source = %s"
                            " and replayed_at is null", (source,)).fetchone()[0]
