"""The indexes a table contract declares (``indexes:``), on the landing mirror.

Ingestion creates only the mirror's primary key and the idempotency index by itself; a contract's
``indexes:`` list adds B-tree indexes for the reads downstream needs bounded (a one-day dbt build
reads ``payments`` by ``created_at`` and by ``order_id``). dbt's role may not create indexes on
the mirrors, so ingestion, their owner, does:

- on a mirror it creates (a table seen for the first time, and a snapshot's staging mirror, whose
  indexes are built after the load and swapped in with it): :func:`create_declared_indexes`, a
  plain ``CREATE INDEX IF NOT EXISTS`` in the caller's transaction — the table is new, nothing
  waits on it;
- on a mirror that already exists (an index added to a contract later, a landing database older
  than the list): :class:`IndexKeeper` runs :func:`ensure_declared_indexes` in a thread of its
  own when a source starts streaming and whenever the contracts change, with ``CREATE INDEX
  CONCURRENTLY IF NOT EXISTS`` on its own autocommit connection: a large mirror keeps taking
  changes (and dbt keeps reading it) while its index is built, where a plain build would block
  every write for as long as it reads the table. A concurrent build that failed (or was killed)
  leaves an invalid index behind; it is dropped and built again.

Each index is named ``<table>__<column>[__<column>...]_idx`` (:func:`index_name`, cut with a hash
as every landing name beyond 63 bytes). A valid plain B-tree index whose leading columns are the
declared ones (e.g. the live views' expiry index on ``orders (placed_at)``) serves the same reads:
no second index is built beside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from ingestion.letter_indexes import ensure_letter_indexes
from ingestion.names import fit_identifier
from ingestion.tables import TableInfo, create_idempotency_index, create_landing_tables

log = logging.getLogger("tidemark.ingestion")

_SERVING = """
select c.relname, i.indisvalid
  from pg_index i
  join pg_class c on c.oid = i.indexrelid
  join pg_am a on a.oid = c.relam
 where i.indrelid = %(table)s::regclass
   and a.amname = 'btree' and i.indpred is null and i.indexprs is null
   and i.indnkeyatts >= cardinality(%(columns)s::text[])
   and (select array_agg(att.attname::text order by k.n)
          from unnest(i.indkey::int2[]) with ordinality as k(attnum, n)
          join pg_attribute att on att.attrelid = i.indrelid and att.attnum = k.attnum
         where k.n <= cardinality(%(columns)s::text[])) = %(columns)s::text[]
 order by c.relname = %(name)s desc, i.indisvalid desc
"""


def index_name(table: str, columns: Sequence[str]) -> str:
    """The mirror index of ``columns``: ``<table>__<col>[__<col>...]_idx`` (63 bytes at most)."""
    return fit_identifier(f"{table}__{'__'.join(columns)}_idx")


def declared_indexes(contract: Any, columns: Sequence[str]) -> list[tuple[str, ...]]:
    """The contract's indexes whose columns the mirror has (a column the source dropped is left
    out until it comes back)."""
    have = set(columns)
    return [tuple(cols) for cols in getattr(contract, "indexes", ()) or ()
            if set(cols) <= have]


def _serving(conn: psycopg.Connection, table: str, columns: Sequence[str],
             name: str) -> tuple[str, bool] | None:
    """(name, valid) of the best index of ``table`` that leads with ``columns``: the one named
    ``name`` first, valid ones before invalid ones; None when there is none."""
    row = conn.execute(_SERVING, {"table": table, "columns": list(columns),
                                  "name": name}).fetchone()
    return (row[0], row[1]) if row else None


def create_landing(conn: psycopg.Connection, info: TableInfo, contract: Any) -> None:
    """Create a table's mirror and changelog, with the contract's idempotency key index and
    declared indexes (in the caller's transaction)."""
    create_landing_tables(conn, info)
    idem = getattr(contract, "idempotency_key", None) if contract is not None else None
    if idem and idem in info.column_names:
        create_idempotency_index(conn, info, idem)
    create_declared_indexes(conn, info, contract)


def create_declared_indexes(conn: psycopg.Connection, info: TableInfo, contract: Any) -> None:
    """Create the contract's indexes on a mirror just created (in the caller's transaction).

    ``info.mirror`` may be a snapshot's staging mirror: its indexes are dropped before the load,
    rebuilt after it and keep their names through the swap.
    """
    if contract is None:
        return
    table = info.mirror.as_string(conn)
    for columns in declared_indexes(contract, info.column_names):
        name = index_name(info.name, columns)
        found = _serving(conn, table, columns, name)
        if found is not None and found[1]:
            continue
        conn.execute(sql.SQL("create index if not exists {} on {} ({})").format(
            sql.Identifier(name), info.mirror, sql.SQL(", ").join(map(sql.Identifier, columns))))


def ensure_declared_indexes(landing_dsn: str, source: str, contracts: Any) -> list[str]:
    """Build the declared indexes that the existing mirrors of ``source`` miss, concurrently.

    Then the indexes of the contracted keyed tables' waiting dead letters by key
    (:func:`ingestion.letter_indexes.ensure_letter_indexes`), the same way.

    Args:
        landing_dsn: landing URL (the mirrors' owner).
        source: the source (the mirrors' schema).
        contracts: the contract set.

    Returns:
        ``<source>.<index>`` of each index built (an invalid one left by a failed build is
        dropped and built again), then ``tidemark.<index>`` of each letter index built.
    """
    built: list[str] = []
    tables = getattr(contracts, "tables", None)
    if tables is None:
        return built
    try:
        contracted = list(tables(source))
    except KeyError:  # ContractNotFoundError: no contract for this source
        return built
    with psycopg.connect(landing_dsn, autocommit=True) as conn:
        for contract in contracted:
            if not contract.indexes:
                continue
            mirror = sql.Identifier(source, contract.name)
            table = mirror.as_string(conn)
            oid = conn.execute("select to_regclass(%s)", (table,)).fetchone()[0]
            if oid is None:
                continue
            columns = [r[0] for r in conn.execute(
                "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0"
                " and not attisdropped", (table,))]
            for cols in declared_indexes(contract, columns):
                name = index_name(contract.name, cols)
                found = _serving(conn, table, cols, name)
                if found is not None and found[1]:
                    continue
                ident = sql.Identifier(source, name)
                if found is not None and found[0] == name:  # invalid: a failed build's remains
                    conn.execute(sql.SQL("drop index concurrently if exists {}").format(ident))
                log.info("source %s: building index %s on %s (%s), concurrently", source, name,
                         table, ", ".join(cols))
                conn.execute(sql.SQL("create index concurrently if not exists {} on {} ({})"
                                     ).format(sql.Identifier(name), mirror,
                                              sql.SQL(", ").join(map(sql.Identifier, cols))))
                built.append(f"{source}.{name}")
        built += ensure_letter_indexes(conn, source, [c.name for c in contracted])
    return built


class IndexKeeper:
    """Runs :func:`ensure_declared_indexes` in the background, once per contract set.

    A streaming source calls :meth:`poll` between transactions; a build runs on its own thread
    and connection, so the stream never waits for it (nor holds a lock it waits for).
    """

    def __init__(self) -> None:
        self._done_for: object = None
        self._thread: threading.Thread | None = None

    def poll(self, landing_dsn: str, source: str, contracts: Any) -> None:
        """Start a pass when ``contracts`` is a set not yet passed over and none is running."""
        if contracts is None or contracts is self._done_for:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._done_for = contracts
        self._thread = threading.Thread(target=self.build, args=(landing_dsn, source, contracts),
                                        name=f"tidemark-indexes-{source}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for a running pass (tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    @staticmethod
    def build(landing_dsn: str, source: str, contracts: Any) -> None:
        """One pass of :func:`ensure_declared_indexes`, in the caller's thread; a failure is
        logged (the next pass tries again), not raised."""
        try:
            built = ensure_declared_indexes(landing_dsn, source, contracts)
        except psycopg.Error as exc:
            log.warning("source %s: declared indexes not built (%s); the next start or "
                        "contract change tries again", source, str(exc).strip())
            return
        if built:
            log.info("source %s: built the declared indexes %s", source, ", ".join(built))
