"""The source catalog of many tables at once: a first snapshot registers each of its tables.

Registering a table (:meth:`ingestion.relations.RelationTracker.from_catalog`) reads its
columns, their types' names, its key and what the source role may read of it: about 8 source
queries a table, one after the other, inside the snapshot's final landing transaction (6.5 s of
a 2,000-table first snapshot). :func:`tables_catalog` reads the same for every table of the
snapshot in four queries, and the registration takes them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from ingestion.catalog import COPY_RIGHTS, copy_blocker_of, sends_generated

_COLUMNS = ("select attrelid::int, attname, atttypid::int, atttypmod, attnotnull"
            " from pg_attribute where attrelid = any(%s) and attnum > 0 and not attisdropped"
            " and (attgenerated = '' or %s) order by attrelid, attnum")

_ATTNUMS = ("select attrelid::int, attname, attnum::int from pg_attribute where attrelid ="
            " any(%s) and attnum > 0 and not attisdropped")

_KEYS = """
select c.oid::int, c.relreplident, array(
    select a.attname from pg_index i cross join lateral unnest(i.indkey) with ordinality
           k (attnum, ord) join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
     where i.indrelid = c.oid and i.indisreplident order by k.ord), array(
    select a.attname from pg_index i cross join lateral unnest(i.indkey) with ordinality
           k (attnum, ord) join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
     where i.indrelid = c.oid and i.indisprimary order by k.ord)
  from pg_class c where c.oid = any(%s)"""


@dataclass
class TableCatalog:
    """One source table as :meth:`RelationTracker.from_catalog` reads it.

    Attributes:
        columns: (name, type OID, typmod, not null) of the columns the stream sends
            (:func:`ingestion.catalog.table_columns`).
        attnums: every live column's ``attnum`` (:func:`ingestion.catalog.column_attnums`).
        key: :func:`ingestion.catalog.key_columns`.
        blocker: :func:`ingestion.catalog.copy_blocker`.
    """

    columns: list[tuple[str, int, int, bool]]
    attnums: dict[str, int]
    key: list[str]
    blocker: str | None


def tables_catalog(conn: psycopg.Connection, oids: list[int], publication: str | None
                   ) -> dict[int, TableCatalog]:
    """The catalog of the tables ``oids`` (those that exist), read now, in four queries.

    Args:
        conn: an autocommit source connection of the role that copies.
        oids: the tables' OIDs.
        publication: the publication (whether it sends stored generated columns).

    Returns:
        By OID, each table as :meth:`RelationTracker.from_catalog` would read it.
    """
    if not oids:
        return {}
    columns: dict[int, list[tuple[str, int, int, bool]]] = {}
    for rel, name, typ, mod, not_null in conn.execute(
            _COLUMNS, (oids, sends_generated(conn, publication))):
        columns.setdefault(rel, []).append((name, typ, mod, not_null))
    attnums: dict[int, dict[str, int]] = {}
    for rel, name, num in conn.execute(_ATTNUMS, (oids,)):
        attnums.setdefault(rel, {})[name] = num
    keys = {}
    for rel, ident, replica, primary in conn.execute(_KEYS, (oids,)):
        keys[rel] = list(replica) if ident == "i" and replica else list(primary)
    out = {}
    for row in conn.execute(COPY_RIGHTS + " where c.oid = any(%s)", (oids,)).fetchall():
        rel = row[0]
        out[rel] = TableCatalog(columns.get(rel, []), attnums.get(rel, {}), keys.get(rel, []),
                                copy_blocker_of(conn, row[1:]))
    return out
