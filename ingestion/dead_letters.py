"""Dead letters: changes that broke their contract, kept in ``tidemark.dead_letters``.

:func:`replay` re-validates a dead letter against the current contract and applies it (changelog
and mirror, through the normal applier) only if no newer change for the same key has landed since;
a replayed or superseded letter is marked and never applied twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from ingestion.applier import Applier
from ingestion.errors import DeadLetterNotFoundError
from ingestion.lsn import str_to_lsn
from ingestion.names import publication_name, slot_name
from ingestion.state import ensure_state
from ingestion.tables import load_tables

_COLUMNS = ("id", "source", "table_name", "lsn", "commit_lsn", "seq", "op", "reason",
            "contract_version", "first_seen_at", "replayed_at", "replay_result")


def _fetch(conn: psycopg.Connection, where: sql.Composable, params: tuple) -> list[dict]:
    query = sql.SQL("select {}, raw_row, violations from tidemark.dead_letters where {}"
                    " order by id").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) if c in
                           ("lsn", "commit_lsn") else sql.Identifier(c) for c in _COLUMNS), where)
    out = []
    for row in conn.execute(query, params):
        item = dict(zip((*_COLUMNS, "raw_row", "violations"), row, strict=True))
        for key in ("first_seen_at", "replayed_at"):
            if item[key] is not None:
                item[key] = item[key].isoformat()
        out.append(item)
    return out


def list_dead_letters(landing_dsn: str, source: str, *, table: str | None = None,
                      include_replayed: bool = False) -> list[dict[str, Any]]:
    """Dead letters of a source (oldest first), optionally of one table and replayed ones too."""
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        ensure_state(conn, source)
        conds = [sql.SQL("source = %s")]
        params: list[Any] = [source]
        if table is not None:
            conds.append(sql.SQL("table_name = %s"))
            params.append(table)
        if not include_replayed:
            conds.append(sql.SQL("replayed_at is null"))
        return _fetch(conn, sql.SQL(" and ").join(conds), tuple(params))


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
        Counts: ``applied``, ``superseded`` (a newer change for the key landed), ``invalid``
        (still breaks the contract; kept), ``skipped`` (already replayed).
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
        if since is not None:
            conds.append(sql.SQL("coalesce(commit_at, first_seen_at) >= clock_timestamp() - %s"))
            params.append(since)
        letters = conn.execute(sql.SQL(
            "select id, table_name, lsn::text, commit_lsn::text, seq, op, raw_row, commit_at,"
            " txid, replayed_at is not null from tidemark.dead_letters where {} order by"
            " commit_lsn, seq for update").format(sql.SQL(" and ").join(conds)),
            tuple(params)).fetchall()
        for lid, name, lsn, commit_lsn, seq, op, raw, commit_at, txid, done in letters:
            info = applier.tables.get(name)
            if done or info is None or info.paused_reason is not None:
                counts["skipped"] += 1
                continue
            if _superseded(conn, info, raw, commit_lsn, seq):
                result = "superseded"
            else:
                values = [None if raw.get(c) is None else str(raw[c]).encode()
                          for c in info.column_names]
                applier.start_source_txn(str_to_lsn(commit_lsn), commit_at, txid)
                before = len(applier._dead)
                applier.add(info, op, values, None, str_to_lsn(lsn), seq)
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


def _superseded(conn: psycopg.Connection, info: Any, raw: dict, commit_lsn: str, seq: int
                ) -> bool:
    """Whether the changelog has a change of the same key newer than the dead letter."""
    if any(raw.get(k) is None for k in info.key):
        return False
    match = sql.SQL(" and ").join(
        sql.SQL("{}::text = %s").format(sql.Identifier(k)) for k in info.key)
    query = sql.SQL("select exists (select 1 from {} where (_commit_lsn, _seq) > (%s::pg_lsn, %s)"
                    " and {})").format(info.changelog, match)
    return conn.execute(query, (commit_lsn, seq, *[str(raw[k]) for k in info.key])).fetchone()[0]
