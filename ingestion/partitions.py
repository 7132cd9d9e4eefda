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

A new partition that holds rows at the check was either attached with them (ATTACH sends
nothing: copy) or created as a partition and filled by the stream since (nothing to do). The
catalog tells them apart (:func:`streamed_leaves`): ``CREATE TABLE ... PARTITION OF`` writes the
table's row type (``pg_type``) and its ``pg_inherits`` row in one transaction, while a table
attached later got its row type when it was created, before. When they share the transaction and
no row of the partition was written by it, every row came from a later transaction, which could
only reach the table as a partition of the published root: its rows are in the stream. Anything
else — rows written in that very transaction (``create``, ``insert``, ``attach`` in one), a
sub-partition attached on the way to the root, a frozen catalog row, a partition the ingestion
role may not read — is copied, as before. Each leaf also keeps the ``xmin`` of its
``pg_inherits`` rows: a partition detached and attached again between two checks (same OID, same
file) is copied too.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb


def per_table_state(column: str) -> str:
    """The body of a state table holding one jsonb ``column`` per landing table."""
    return (f"source text not null, table_name text not null, {column} jsonb not null,"
            f" updated_at timestamptz not null default now(), primary key (source, table_name)")


TABLES = {"partition_sets": per_table_state("partitions")}
"""State table: the partitions (leaf OID → ``relfilenode``) landing's copy of a table holds."""

Leaves = dict[str, list]
"""A partitioned table's leaf partitions: OID (as text, a JSON key) → [relfilenode, has pages,
the ``xmin`` of each ``pg_inherits`` row from the leaf up to the root (``/``-joined), the
``xmin`` of its row type]. A landing from before round 38 stored the first two only."""

_NO_XID = ("0", "1", "2")  # invalid, bootstrap, frozen: no transaction to compare


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
    for root, leaf, filenode, pages, edges, typed in conn.execute(
            "with recursive tree (root, rel, edges) as (select i.inhparent, i.inhrelid,"
            " i.xmin::text from pg_inherits i where i.inhparent = any(%s) union all"
            " select t.root, i.inhrelid, i.xmin::text || '/' || t.edges from tree t"
            " join pg_inherits i on i.inhparent = t.rel)"
            " select t.root::int, c.oid::int, c.relfilenode::bigint,"
            " pg_relation_size(c.oid) > 0, t.edges, y.xmin::text from tree t"
            " join pg_class c on c.oid = t.rel left join pg_type y on y.oid = c.reltype"
            " where c.relkind <> 'p'", (list(out),)):
        out[root][str(leaf)] = [filenode, int(pages), edges, typed]
    return out


def streamed_leaves(conn: psycopg.Connection, before: Leaves, now: Leaves) -> set[str]:
    """The partitions new since ``before`` that hold rows, all of which came through the stream.

    A leaf qualifies when it was created as a partition (its row type and every ``pg_inherits``
    row up to the root written by one transaction) and none of its rows was written by that
    transaction (a scan of the new partition, in a savepoint of the caller's transaction). See
    the module's docstring; whatever cannot be shown is left out (copied).

    Args:
        conn: source connection in a transaction (the one :func:`source_partitions` read in).
        before: the partitions landing's copy holds.
        now: the source's (:func:`source_partitions`).
    """
    out: set[str] = set()
    for key, leaf in now.items():
        if key in before or not leaf[1] or len(leaf) < 4 or leaf[3] in _NO_XID:
            continue
        if set(leaf[2].split("/")) != {leaf[3]}:
            continue
        try:
            with conn.transaction():
                own = conn.execute(sql.SQL("select exists (select from only {} where xmin = %s"
                                           "::xid)").format(sql.Identifier(*_name(conn, key))),
                                   (leaf[3],)).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            continue
        if not own:
            out.add(key)
    return out


def _name(conn: psycopg.Connection, oid: str) -> tuple[str, str]:
    return conn.execute("select n.nspname, c.relname from pg_class c join pg_namespace n"
                        " on n.oid = c.relnamespace where c.oid = %s::oid", (oid,)).fetchone()


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


def partitions_moved_rows(before: Leaves, now: Leaves, streamed: frozenset[str] | set[str]
                          = frozenset()) -> str | None:
    """What partition DDL moved rows without a change in the stream, or None.

    Args:
        before: the partitions landing's copy holds.
        now: the source's.
        streamed: new partitions whose rows all came through the stream
            (:func:`streamed_leaves`).

    Returns:
        A sentence (for the pause reason) naming what happened, or None when nothing did.
    """
    gone = [k for k in before if k not in now]
    rewritten = [k for k in before if k in now and now[k][0] != before[k][0]]
    joined = [k for k in now if k not in before and now[k][1] and k not in streamed]
    again = [k for k in before if k in now and k not in rewritten and len(before[k]) > 2
             and len(now[k]) > 2 and before[k][2] != now[k][2]]
    what = [f"{len(keys)} partition{'s' if len(keys) > 1 else ''} {verb}"
            for keys, verb in ((gone, "detached or dropped"),
                               (rewritten, "truncated (or rewritten)"),
                               (again, "detached and attached again"),
                               (joined, "attached or created, holding rows"))
            if keys]
    if not what:
        return None
    return (f"{', '.join(what)} on the source: PostgreSQL sends no change for the rows that "
            f"moved in or out that way")
