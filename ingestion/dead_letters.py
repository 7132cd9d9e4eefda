"""Dead letters: changes that broke their contract, kept in ``tidemark.dead_letters``.

:func:`replay` re-validates a dead letter against the current contract and applies it (changelog
and mirror, through the normal applier) only if no newer change for the same key has landed since;
a replayed or superseded letter is marked and never applied twice. :func:`list_dead_letters`
reads a page of the oldest (index-backed), :func:`purge_dead_letters` deletes old ones in batches.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from ingestion.applier import Applier
from ingestion.dead_letter_counts import resolved_count, waiting_counts
from ingestion.decoder import UNCHANGED
from ingestion.errors import DeadLetterNotFoundError
from ingestion.lsn import lsn_to_str, str_to_lsn
from ingestion.names import publication_name, slot_name
from ingestion.state import ensure_state
from ingestion.tables import load_tables

_COLUMNS = ("id", "source", "table_name", "lsn", "commit_lsn", "seq", "op", "reason",
            "contract_version", "first_seen_at", "replayed_at", "replay_result")


def _fetch(conn: psycopg.Connection, where: sql.Composable, params: tuple,
           limit: int | None = None) -> list[dict]:
    query = sql.SQL("select {}, raw_row, violations from tidemark.dead_letters where {}"
                    " order by first_seen_at, id{}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) if c in
                           ("lsn", "commit_lsn") else sql.Identifier(c) for c in _COLUMNS), where,
        sql.SQL("") if limit is None else sql.SQL(" limit {}").format(sql.Literal(limit)))
    out = []
    for row in conn.execute(query, params):
        item = dict(zip((*_COLUMNS, "raw_row", "violations"), row, strict=True))
        for key in ("first_seen_at", "replayed_at"):
            if item[key] is not None:
                item[key] = item[key].isoformat()
        out.append(item)
    return out


def _letters_where(source: str, table: str | None, include_replayed: bool
                   ) -> tuple[sql.Composable, tuple]:
    conds = [sql.SQL("source = %s")]
    params: list[Any] = [source]
    if table is not None:
        conds.append(sql.SQL("table_name = %s"))
        params.append(table)
    if not include_replayed:
        conds.append(sql.SQL("replayed_at is null"))
    return sql.SQL(" and ").join(conds), tuple(params)


def list_dead_letters(landing_dsn: str, source: str, *, table: str | None = None,
                      include_replayed: bool = False, limit: int | None = None
                      ) -> list[dict[str, Any]]:
    """Dead letters of a source, oldest first (by ``first_seen_at``, then id).

    Args:
        landing_dsn: landing URL.
        source: source name.
        table: only this table's letters.
        include_replayed: also the letters already replayed (applied or superseded).
        limit: at most this many, the oldest (None: every one). An index range scan that stops
            after ``limit`` rows, however many letters there are.
    """
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_state(conn, source, read_only=True)
        where, params = _letters_where(source, table, include_replayed)
        return _fetch(conn, where, params, limit)


def count_dead_letters(landing_dsn: str, source: str, *, table: str | None = None,
                       include_replayed: bool = False) -> int:
    """How many dead letters :func:`list_dead_letters` would list without a limit.

    The letters waiting, and those replayed, are counted as they change
    (``ingestion.dead_letter_counts``): the count reads no letter.
    """
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_state(conn, source, read_only=True)
        waiting = waiting_counts(conn, source)
        count = sum(waiting.values()) if table is None else waiting.get(table, 0)
        return count + resolved_count(conn, source, table) if include_replayed else count


def show_dead_letter(landing_dsn: str, letter_id: int) -> dict[str, Any]:
    """One dead letter with its raw row and violations.

    Raises:
        DeadLetterNotFoundError: no dead letter has this id.
    """
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        try:
            rows = _fetch(conn, sql.SQL("id = %s"), (letter_id,))
        except psycopg.errors.UndefinedTable:
            rows = []
    if not rows:
        raise DeadLetterNotFoundError(f"No dead letter with id {letter_id}; "
                                      f"`tidemark dlq list` shows the ids.")
    return rows[0]


def replay(landing_dsn: str, source: str, *, contracts: Any = None,
           ids: list[int] | None = None, table: str | None = None,
           since: timedelta | None = None) -> dict[str, int]:
    """Re-validate dead letters and apply those that pass and are not superseded.

    Args:
        landing_dsn: landing URL.
        source: source name.
        contracts: the current contract set (None applies without validation).
        ids: only these dead letters (default: every letter not yet replayed).
        table: only this table's letters.
        since: only letters of changes committed on the source (or, without a commit time,
            first seen) within this long before now — a bad window, e.g. the last six hours.

    Returns:
        Counts: ``applied``, ``superseded`` (a newer change for the key, or a later truncate or
        resync of the table, landed), ``invalid`` (still breaks the contract; kept), ``skipped``
        (already replayed).
    """
    counts = {"applied": 0, "superseded": 0, "invalid": 0, "skipped": 0}
    with psycopg.connect(landing_dsn) as conn:
        ensure_state(conn, source)
        applier = Applier(conn, source, slot_name(source), publication_name(source), contracts)
        applier.begin()
        applier.tables = load_tables(conn, source)
        conds = [sql.SQL("source = %s")]
        params: list[Any] = [source]
        if ids:
            conds.append(sql.SQL("id = any(%s)"))
            params.append(ids)
        if table is not None:
            conds.append(sql.SQL("table_name = %s"))
            params.append(table)
        if since is not None:  # a value, not clock_timestamp(): then index dead_letters_at
            conds.append(sql.SQL("coalesce(commit_at, first_seen_at) >= %s"))
            params.append(conn.execute("select clock_timestamp() - %s", (since,)).fetchone()[0])
        where = sql.SQL(" and ").join(conds)
        # letters replayed before are counted, not read and locked: they pile up with history
        # (kept as they change for a whole source or table; else a few ids, or a window)
        counts["skipped"] = resolved_count(conn, source, table) if not ids and since is None \
            else conn.execute(sql.SQL("select count(*) from tidemark.dead_letters where {} and"
                                      " replayed_at is not null").format(where),
                              tuple(params)).fetchone()[0]
        # in commit order: qualified, or the order would be of the text the list selects
        letters = conn.execute(sql.SQL(
            "select id, table_name, lsn::text, commit_lsn::text, seq, op, raw_row, commit_at,"
            " txid from tidemark.dead_letters d where {} and replayed_at is null order by"
            " d.commit_lsn, d.seq for update").format(where), tuple(params)).fetchall()
        superseded = _superseded(conn, applier.tables, letters)
        for lid, name, lsn, commit_lsn, seq, op, raw, commit_at, txid in letters:
            info = applier.tables.get(name)
            if info is None or info.paused_reason is not None:
                counts["skipped"] += 1
                continue
            if lid in superseded:
                result = "superseded"
            else:
                values = _letter_values(info, raw)
                applier.start_source_txn(str_to_lsn(commit_lsn), commit_at, txid)
                before = len(applier._dead)
                if info.key or op != "u":
                    applier.add(info, op, values, None, str_to_lsn(lsn), seq)
                else:  # a keyless update: its old row left the bag when the letter was written
                    applier.add(info, op, values, None, str_to_lsn(lsn), seq, old_kind="O",
                                unchanged=False)
                if len(applier._dead) > before:
                    applier._dead.pop()
                    counts["invalid"] += 1
                    continue
                applier.flush(info)
                result = "applied"
            counts[result] += 1
            conn.execute("update tidemark.dead_letters set replayed_at = clock_timestamp(),"
                         " replay_result = %s where id = %s", (result, lid))
        conn.commit()
    return counts


def _letter_values(info: Any, raw: dict[str, Any]) -> list[Any]:
    """A letter's row as the applier takes it: a column the letter does not hold (a TOAST
    value the change left unchanged) stays unchanged, so the applier keeps the mirror's value
    (it wrote NULL over it before); a keyless letter holds its whole row."""
    return [UNCHANGED if info.key and c not in raw else
            None if raw.get(c) is None else str(raw[c]).encode() for c in info.column_names]


def _superseded(conn: psycopg.Connection, tables: dict[str, Any], letters: list[tuple]
                ) -> set[int]:
    """Ids of the letters overtaken by a newer change in the changelog: one query per table.

    A letter is superseded by a later change of its key (insert, update or delete), by a later
    TRUNCATE of its table (a ``t`` changelog row: a truncate on the source, or the one a resync
    writes before its snapshot's rows), or when it was committed before the table's last resync
    snapshot (``snapshot_lsn``: the snapshot holds its effect). Replaying letters in commit order
    adds changelog rows only at each letter's own position, never after a later letter's, so
    deciding every letter before applying any gives the same answer as asking before each. The
    query reads the changelog once from the oldest letter's commit LSN on (a range scan of its
    ``unique (_commit_lsn, _seq)`` index: letters of a bad window are recent; the bound is a
    parameter, so the planner sees how short the range is) and matches keys by hashing, not one
    scan of the changelog per letter.
    """
    waiting: dict[str, list[int]] = {}
    oldest: dict[str, int] = {}
    for lid, name, _lsn, commit_lsn, *_ in letters:
        info = tables.get(name)
        if info is not None and info.paused_reason is None:
            waiting.setdefault(name, []).append(lid)
            at = str_to_lsn(commit_lsn)
            oldest[name] = min(oldest.get(name, at), at)
    out: set[int] = set()
    for name, ids in waiting.items():
        out.update(r[0] for r in conn.execute(*superseded_query(tables[name], ids,
                                                                oldest[name])))
    return out


def superseded_query(info: Any, ids: list[int], oldest: int) -> tuple[sql.Composed, tuple]:
    """The statement (and its parameters) of :func:`_superseded` for one table's letters.

    Args:
        info: the table.
        ids: its letters.
        oldest: the smallest commit LSN of these letters: the changelog is read from there on.

    The changelog's range from ``oldest`` on is read once: its rows of the letters' keys (a
    hashed lookup) and its ``t`` rows are kept, then matched to the letters. A keyless table's
    letters are counted per row instead (:func:`_bag_superseded_query`).
    """
    if not info.key:
        return _bag_superseded_query(info, ids)
    keys = [sql.Identifier(f"k{i}") for i in range(len(info.key))]
    picked = sql.SQL("").join(sql.SQL(", raw_row ->> %s as {}").format(k) for k in keys)
    cols = sql.SQL("").join(sql.SQL("c.{}::text as {}, ").format(sql.Identifier(col), k)
                            for col, k in zip(info.key, keys, strict=True))
    kept = sql.SQL("c._op = 't' or ({}) in (select {} from l)").format(
        sql.SQL(", ").join(sql.SQL("c.{}::text").format(sql.Identifier(col))
                           for col in info.key), sql.SQL(", ").join(keys))
    named: tuple[str, ...] = tuple(info.key)
    query = sql.SQL(
        "with l as materialized (select id, commit_lsn, seq{picked} from tidemark.dead_letters"
        " where id = any(%s)), c as materialized (select {cols}_op, _commit_lsn, _seq"
        " from {changelog} c where c._commit_lsn >= %s::pg_lsn and ({kept}))"
        " select l.id from l where l.commit_lsn < %s::pg_lsn or (l.commit_lsn, l.seq) <"
        " (select _commit_lsn, _seq from c where _op = 't'"
        " order by _commit_lsn desc, _seq desc limit 1)"
        " union select l.id from l join c on {match} and (c._commit_lsn, c._seq) >"
        " (l.commit_lsn, l.seq)"
    ).format(picked=picked, changelog=info.changelog, kept=kept, cols=cols,
             match=sql.SQL(" and ").join(sql.SQL("c.{} = l.{}").format(k, k) for k in keys))
    return query, (*named, ids, lsn_to_str(oldest), lsn_to_str(info.snapshot_lsn))


def _bag_superseded_query(info: Any, ids: list[int]) -> tuple[sql.Composed, tuple]:
    """:func:`superseded_query` of a keyless table: the source's removals are counted per row.

    A keyless row has no key: a letter's identity is its row, and equal rows are copies of one
    bag entry. Since the table's last reset (its last ``t`` changelog row, or its resync
    snapshot), for each distinct row R of the letters:

    - the source holds ``C + W + X`` copies: ``C`` the changelog's net count (``r``/``c``/``u``
      +1, ``b``/``d`` -1; a removal is in the changelog whether the copy it took was landed or a
      letter), ``W`` the letters waiting, ``X`` the letters already superseded (each one a
      removal of a copy that was a letter);
    - the mirror holds ``M`` (a removal that found no copy in the mirror removed nothing there).

    So ``W - (source - M) = M - C - X`` of the waiting letters are copies the source took away:
    the oldest that many are superseded, the rest stay (a replay adds them). Before, any later
    removal of an equal row superseded every earlier letter of it: with two equal bad rows and
    one deleted at the source, both letters were superseded and the remaining row was lost.
    Reading the changelog since the reset is a scan of its rows (of letter rows only kept).
    A letter from before the table's resync snapshot is superseded without reading its row: it
    may hold another type's text (``'abc'`` in a column now ``integer``), which the cast to the
    landing's types would fail on, and with it every replay of the table.
    """
    typed = sql.SQL("row({})::text").format(sql.SQL(", ").join(
        sql.SQL("(raw_row ->> {})::{}").format(sql.Literal(col.name), sql.SQL(col.type_sql))
        for col in info.columns))  # the landing's own types
    row_c, row_m = (sql.SQL("row({})::text").format(sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))
        for name in info.column_names)) for alias in ("c", "m"))
    query = sql.SQL(
        "with l as materialized (select id, commit_lsn, seq, replayed_at is not null as gone,"
        " case when commit_lsn >= %s::pg_lsn then {typed} end as k0 from tidemark.dead_letters"
        " where source = %s and table_name = %s and"
        " (replayed_at is null or replay_result = 'superseded')),"
        " sel as materialized (select distinct k0 from l where id = any(%s)),"
        " c as materialized (select {row_c} as k0, _op, _commit_lsn, _seq from {changelog} c"
        " where c._op = 't' or {row_c} in (select k0 from sel)),"
        " t as materialized (select %s::pg_lsn as snap, tl, ts from (select _commit_lsn as tl,"
        " _seq as ts from c where _op = 't' union all select '0/0'::pg_lsn, -2147483648"
        " order by 1 desc, 2 desc limit 1) x),"
        " m as materialized (select {row_m} as k0, count(*) as n from {mirror} m"
        " where {row_m} in (select k0 from sel) group by 1),"
        " cc as (select c.k0, sum(case when _op in ('b', 'd') then -1 else 1 end) as n from c, t"
        " where c._op <> 't' and c._commit_lsn >= t.snap and (c._commit_lsn, c._seq) > (t.tl, t.ts)"
        " group by 1),"
        " after as (select l.* from l, t where l.commit_lsn >= t.snap and (l.commit_lsn, l.seq)"
        " > (t.tl, t.ts)),"
        " x as (select k0, count(*) as n from after where gone group by 1),"
        " want as (select sel.k0, coalesce(m.n, 0) - coalesce(cc.n, 0) - coalesce(x.n, 0) as n"
        " from sel left join m using (k0) left join cc using (k0) left join x using (k0)),"
        " ranked as (select id, k0, row_number() over (partition by k0 order by commit_lsn, seq)"
        " as rn from after where not gone)"
        " select l.id from l, t where l.id = any(%s) and not l.gone and (l.commit_lsn < t.snap"
        " or (l.commit_lsn, l.seq) < (t.tl, t.ts))"
        " union select r.id from ranked r join want w using (k0) where r.id = any(%s)"
        " and r.rn <= w.n"
    ).format(typed=typed, row_c=row_c, row_m=row_m, changelog=info.changelog,
             mirror=info.mirror)
    snap = lsn_to_str(info.snapshot_lsn)
    return query, (snap, info.source, info.name, ids, snap, ids, ids)


PURGE_BATCH = 10_000
"""Dead letters deleted per transaction by :func:`purge_dead_letters`."""


def purge_dead_letters(landing_dsn: str, source: str, older_than: timedelta, *,
                       waiting: bool = False, batch: int = PURGE_BATCH) -> int:
    """Delete the dead letters first seen longer than ``older_than`` ago, in batches.

    A letter is *waiting* (``replayed_at`` null: never replayed, or replayed and still invalid
    under the contract) or *resolved* (``replayed_at`` set; ``replay_result`` ``applied`` or
    ``superseded``). By default only resolved letters go; ``waiting=True`` deletes waiting ones
    too (their changes are then lost for good).

    Args:
        landing_dsn: landing URL.
        source: source name.
        older_than: delete letters whose ``first_seen_at`` is before now minus this.
        waiting: also delete waiting letters.
        batch: letters per transaction (each a range of index ``dead_letters_seen``).

    Returns:
        How many letters were deleted.
    """
    state = sql.SQL("") if waiting else sql.SQL(" and replayed_at is not null")
    step = sql.SQL(
        "delete from tidemark.dead_letters where id = any(array(select id from"
        " tidemark.dead_letters where source = %s and first_seen_at < %s and (first_seen_at, id)"
        " > (%s, %s){} order by first_seen_at, id limit %s)) returning first_seen_at, id"
    ).format(state)
    deleted = 0
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_state(conn, source)
        cutoff = conn.execute("select clock_timestamp() - %s", (older_than,)).fetchone()[0]
        last: tuple[Any, int] = ("-infinity", 0)
        while True:
            gone = conn.execute(step, (source, cutoff, *last, batch)).fetchall()
            deleted += len(gone)
            if len(gone) < batch:
                return deleted
            last = max(gone)
