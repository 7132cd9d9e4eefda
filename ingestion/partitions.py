"""The partitions of a partitioned table published as its root: the changes PostgreSQL never sends.

With ``publish_via_partition_root`` (:mod:`ingestion.publication`) the rows of a partitioned
table stream under the root's name, but some partition DDL moves rows without a change in the
stream: ``ATTACH PARTITION`` of a table that holds rows (they join the table), ``DETACH`` and
``DROP`` of a partition (its rows leave it), and a ``TRUNCATE`` of one partition (pgoutput sends a
partition's truncate only when the partition itself is published). Landing remembers each such
table's partitions (``tidemark.partition_sets``: leaf OID → its file, ``relfilenode``, which a
TRUNCATE replaces) as of its snapshot, and compares them with the source's between transactions:
a partition gone, a partition with a new file, or a new partition that holds rows has the table
copied again by itself (:meth:`ingestion.relations.RelationTracker.recopy`). A new empty partition
(``create table ... partition of``, the monthly one) changes nothing: its rows stream. A ``VACUUM
FULL`` or ``CLUSTER`` of a partition also gives it a new file: one copy too many, no row lost.
"""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

TABLES = {
    "partition_sets": """
        source text not null,
        table_name text not null,
        partitions jsonb not null,
        updated_at timestamptz not null default now(),
        primary key (source, table_name)""",
}
"""State table: the partitions (leaf OID → ``relfilenode``) landing's copy of a table holds."""

Leaves = dict[str, list[int]]
"""A partitioned table's leaf partitions: OID (as text, a JSON key) → [relfilenode, has pages]."""


def source_partitions(conn: psycopg.Connection, oids: list[int]) -> dict[int, Leaves]:
    """The leaf partitions, at every level, of the partitioned tables among ``oids``.

    Reads ``pg_inherits`` and ``pg_class`` by SQL (the transaction's snapshot), not through
    ``pg_partition_tree`` (the latest catalog).

    Returns:
        For each partitioned table's OID: its leaves (:data:`Leaves`); a table that is not
        partitioned is absent.
    """
    out: dict[int, Leaves] = {r[0]: {} for r in conn.execute(
        "select oid::int from pg_class where oid = any(%s) and relkind = 'p'", (oids,))}
    if not out:
        return out
    for root, leaf, filenode, pages in conn.execute(
            "with recursive tree (root, rel) as (select i.inhparent, i.inhrelid from pg_inherits i"
            " where i.inhparent = any(%s) union all select t.root, i.inhrelid from tree t"
            " join pg_inherits i on i.inhparent = t.rel)"
            " select t.root::int, c.oid::int, c.relfilenode::bigint,"
            " pg_relation_size(c.oid) > 0 from tree t join pg_class c on c.oid = t.rel"
            " where c.relkind <> 'p'", (list(out),)):
        out[root][str(leaf)] = [filenode, int(pages)]
    return out


def load_partitions(conn: psycopg.Connection, source: str) -> dict[str, Leaves]:
    """The partitions landing's copies hold, by landing table name."""
    return {r[0]: r[1] for r in conn.execute(
        "select table_name, partitions from tidemark.partition_sets where source = %s",
        (source,))}


def save_partitions(conn: psycopg.Connection, source: str, table: str, leaves: Leaves) -> None:
    """Remember the partitions of a landing table's copy (in the caller's transaction)."""
    conn.execute("insert into tidemark.partition_sets (source, table_name, partitions)"
                 " values (%s, %s, %s) on conflict (source, table_name) do update set"
                 " partitions = excluded.partitions, updated_at = now()",
                 (source, table, Jsonb(leaves)))


def partitions_moved_rows(before: Leaves, now: Leaves) -> str | None:
    """What partition DDL moved rows without a change in the stream, or None.

    Args:
        before: the partitions landing's copy holds.
        now: the source's.

    Returns:
        A sentence (for the pause reason) naming what happened, or None when nothing did.
    """
    gone = [k for k in before if k not in now]
    rewritten = [k for k in before if k in now and now[k][0] != before[k][0]]
    joined = [k for k in now if k not in before and now[k][1]]
    what = [f"{len(keys)} partition{'s' if len(keys) > 1 else ''} {verb}"
            for keys, verb in ((gone, "detached or dropped"),
                               (rewritten, "truncated (or rewritten)"),
                               (joined, "attached or created, holding rows"))
            if keys]
    if not what:
        return None
    return (f"{', '.join(what)} on the source: PostgreSQL sends no change for the rows that "
            f"moved in or out that way")
