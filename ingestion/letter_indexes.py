"""Indexes of each keyed table's waiting dead letters by the row's key.

A row that broke its contract is a letter, not a mirror row. When a later change of that row
leaves a TOAST value unchanged, the applier takes the value from the row's latest waiting letter
(:func:`ingestion.side_tables.fill_from_letters`, per batch; and
:func:`ingestion.side_tables.complete_letters` for a key change). Those reads look a letter up by
its key, which is inside ``raw_row``: without an index of that key they walked every waiting
letter of the table, a heap fetch and a JSON parse each, inside the landing transaction (364k
letters at a week of the 10x demo, bench/dead_letter_queries.py).

So every keyed table with a contract gets a partial expression index on ``tidemark.dead_letters``:
its key read from ``raw_row`` and cast to the landing's own types (the very expressions those
reads compare, so the planner matches them and the comparison stays the typed one), then
``commit_lsn, seq`` for the latest letter first, over the table's waiting letters only::

    create index concurrently ... on tidemark.dead_letters
        (((raw_row ->> 'id')::integer), commit_lsn, seq)
        where source = 'shop' and table_name = 'orders' and replayed_at is null
          and commit_lsn >= '0/1A2B3C4'::pg_lsn  -- the table's snapshot (current_letters)

:func:`ensure_letter_indexes` builds the missing ones with ``CREATE INDEX CONCURRENTLY`` (the
applier keeps writing letters meanwhile), called by
:func:`ingestion.landing_indexes.ensure_declared_indexes`: when a source starts streaming, when
its contracts change and after a catch-up, so an existing landing gets them the same way as the
contracts' mirror indexes. Each index is named after its table and a digest of its key
(:func:`letter_index_name`); one of an older key of the table (a resync that changed it), or of
a table no longer under contract, is dropped. A key whose type cannot be cast from text in an
index (its input depends on settings: ``date``, ``timestamp``, ``timestamptz``, ...) gets no
index: its lookups read the table's waiting letters, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable

import psycopg
from psycopg import sql

from ingestion.lsn import lsn_to_str
from ingestion.names import STATE_SCHEMA, fit_identifier
from ingestion.tables import TableInfo, load_tables

log = logging.getLogger("tidemark.ingestion")

_TAG = "tidemark: waiting dead letters by key of "
"""The start of each letter index's comment; the rest is ``[source, table]`` as JSON."""

DEAD_LETTERS = sql.Identifier(STATE_SCHEMA, "dead_letters")
"""The table of every source's dead letters, which the letter indexes are on."""

_TAGGED = """
select c.relname, i.indisvalid, obj_description(c.oid, 'pg_class')
  from pg_index i
  join pg_class c on c.oid = i.indexrelid
 where i.indrelid = 'tidemark.dead_letters'::regclass
   and left(obj_description(c.oid, 'pg_class'), length(%(tag)s)) = %(tag)s
"""


def key_expressions(info: TableInfo) -> list[sql.Composable]:
    """The table's key read from a letter's ``raw_row``, cast to the landing's types: the
    expressions :mod:`ingestion.side_tables` compares (and the index holds)."""
    types = {c.name: c.type_sql for c in info.columns}
    return [sql.SQL("(raw_row ->> {})::{}").format(sql.Literal(k), sql.SQL(types[k]))
            for k in info.key]


def current_letters(info: TableInfo, alias: str | None = None) -> sql.Composed:
    """``commit_lsn >= <the table's snapshot LSN>``: the letters of the table's current
    snapshot. One committed before its last resync's snapshot is void (the snapshot holds its
    effect; a replay supersedes it) and may hold another key type's text (``'abc'`` after a
    resync to an ``integer`` key), which the key's cast would fail on: the letter index and
    every lookup by key leave it out."""
    column = sql.Identifier(alias, "commit_lsn") if alias else sql.Identifier("commit_lsn")
    return sql.SQL("{} >= {}::pg_lsn").format(
        column, sql.Literal(lsn_to_str(getattr(info, "snapshot_lsn", 0) or 0)))


def letter_index_name(info: TableInfo) -> str:
    """``dead_letters__<source>__<table>__<digest of the key and its types>`` (63 bytes at
    most): a table whose key changes gets an index of another name."""
    types = {c.name: c.type_sql for c in info.columns}
    digest = hashlib.sha256(json.dumps([[k, types[k]] for k in info.key]).encode()
                            ).hexdigest()[:8]
    return fit_identifier(f"dead_letters__{info.source}__{info.name}__{digest}")


def _tag(source: str, table: str) -> str:
    return _TAG + json.dumps([source, table])


def ensure_letter_indexes(conn: psycopg.Connection, source: str, contracted: Iterable[str]
                          ) -> list[str]:
    """Build the letter indexes the contracted keyed tables of ``source`` miss, concurrently,
    and drop the source's letter indexes no table needs (an older key, a table no longer under
    contract).

    Args:
        conn: landing connection in autocommit mode (``CREATE INDEX CONCURRENTLY``).
        source: source name.
        contracted: the names of the tables with a contract.

    Returns:
        ``tidemark.<index>`` of each index built.
    """
    tables = load_tables(conn, source)
    wanted = {letter_index_name(info): info for name in contracted
              if (info := tables.get(name)) is not None and info.key}
    have = {name: valid for name, valid, comment in conn.execute(_TAGGED, {"tag": _TAG})
            if json.loads(comment[len(_TAG):])[0] == source}
    built: list[str] = []
    for name, valid in have.items():
        if name not in wanted or not valid:  # not needed, or a failed build's remains
            conn.execute(sql.SQL("drop index concurrently if exists {}").format(
                sql.Identifier(STATE_SCHEMA, name)))
    for name, info in wanted.items():
        if have.get(name):
            continue
        if _build(conn, name, info):
            built.append(f"{STATE_SCHEMA}.{name}")
    return built


def stale_letter_index(conn: psycopg.Connection, info: TableInfo, new: TableInfo
                       ) -> sql.Identifier | None:
    """The letter index of a keyed table that its new shape ``new`` leaves stale (another key,
    or a key column of another type), if it exists; else None.

    The index casts the key to its old type, and PostgreSQL evaluates that cast for every
    letter the table gets: once ``integer`` is ``bigint``, a letter of key 3000000000 fails it
    (``value "3000000000" is out of range for type integer``), and with it every try of the
    landing transaction (or of the resync). The schema change (or resync) drops it
    (:func:`drop_letter_index`) in its transaction; :func:`ensure_letter_indexes` builds the
    new key's after the catch-up.
    """
    if not info.key or letter_index_name(info) == letter_index_name(new):
        return None
    index = sql.Identifier(STATE_SCHEMA, letter_index_name(info))
    found = conn.execute("select to_regclass(%s)", (index.as_string(conn),)).fetchone()[0]
    return index if found is not None else None


def drop_letter_index(conn: psycopg.Connection, index: sql.Identifier) -> None:
    """Drop a letter index in the caller's transaction, which holds ``tidemark.dead_letters``
    ACCESS EXCLUSIVE (:data:`DEAD_LETTERS`) until it ends: only a change of a key's columns or
    types does this."""
    conn.execute(sql.SQL("drop index if exists {}").format(index))


def drop_letter_indexes(landing_dsn: str, source: str) -> list[str]:
    """Drop every letter index of ``source`` (a removed source: no applier looks its letters up
    by key; a source of that name added again builds them again), concurrently.

    Args:
        landing_dsn: landing URL.
        source: source name.

    Returns:
        ``tidemark.<index>`` of each index dropped.
    """
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        if conn.execute("select to_regclass('tidemark.dead_letters')").fetchone()[0] is None:
            return []
        names = [name for name, _, comment in conn.execute(_TAGGED, {"tag": _TAG})
                 if json.loads(comment[len(_TAG):])[0] == source]
        for name in names:
            conn.execute(sql.SQL("drop index concurrently if exists {}").format(
                sql.Identifier(STATE_SCHEMA, name)))
    return [f"{STATE_SCHEMA}.{name}" for name in names]


def _build(conn: psycopg.Connection, name: str, info: TableInfo) -> bool:
    """Build one letter index and tag it; False when its key cannot be indexed."""
    log.info("source %s: building index %s of the waiting dead letters of %s by key,"
             " concurrently", info.source, name, info.name)
    try:
        conn.execute(sql.SQL(
            "create index concurrently if not exists {} on {} ({}, commit_lsn, seq) where"
            " source = {} and table_name = {} and replayed_at is null and {}").format(
            sql.Identifier(name), sql.Identifier(STATE_SCHEMA, "dead_letters"),
            sql.SQL(", ").join(sql.SQL("({})").format(e) for e in key_expressions(info)),
            sql.Literal(info.source), sql.Literal(info.name), current_letters(info)))
    except psycopg.errors.InvalidObjectDefinition as exc:  # a cast that is not immutable
        log.info("source %s: no key index of the dead letters of %s (%s); its lookups read"
                 " the table's waiting letters", info.source, info.name, str(exc).strip())
        return False
    conn.execute(sql.SQL("comment on index {} is {}").format(
        sql.Identifier(STATE_SCHEMA, name), sql.Literal(_tag(info.source, info.name))))
    return True
