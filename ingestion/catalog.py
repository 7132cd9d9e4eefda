"""Source-side catalog: publication, slot, type names and keys of replicated tables.

The publication itself is kept by :mod:`ingestion.publication` (with the source's admin URL);
streaming only needs a role with REPLICATION and SELECT on every column, which
:func:`copy_blocker` checks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ingestion.errors import SetupError
from ingestion.versions import source_capabilities

USER_TYPE_OID = 16384

REG_ARRAY_OIDS = frozenset({1008, 2207, 2208, 2209, 2210, 2211, 3735, 3770, 4090, 4097, 4192})
"""The arrays of :data:`REG_TYPE_OIDS`' types."""

REG_TYPE_OIDS = frozenset({24, 2202, 2203, 2204, 2205, 2206, 3734, 3769, 4089, 4096, 4191}
                          ) | REG_ARRAY_OIDS
"""The object identifier types that print and read a catalog name (``regclass``, ``regtype``,
``regproc``, ``regnamespace``, ``regrole``...) and their arrays. A value is an OID of the
*source's* catalog: read back in landing it names another object or none."""

XML_TYPE_OIDS = frozenset({142, 143})
"""``xml`` and ``xml[]``: landing may be built without libxml (the embedded server is), where
every xml value fails to load ("unsupported XML feature"); their text form is kept exactly."""

TEXT_ARRAY_OIDS = REG_ARRAY_OIDS | {143}
"""The array types among those that land as ``text[]`` rather than ``text``."""


def lands_as_text(type_oid: int) -> bool:
    """Whether a source column of this type lands as ``text`` (an array of them as ``text[]``),
    its source text form kept exactly: a user-defined type (enum, domain, composite) does not
    exist in landing, an object identifier type (:data:`REG_TYPE_OIDS`) would name
    landing's objects, and ``xml`` (:data:`XML_TYPE_OIDS`) needs a libxml landing may lack."""
    return type_oid >= USER_TYPE_OID or type_oid in REG_TYPE_OIDS or type_oid in XML_TYPE_OIDS


def copy_blocker(conn: psycopg.Connection, oid: int) -> str | None:
    """Why this source role cannot copy a table whole, or None when it can.

    The copy reads the table with the role's rights, so it needs USAGE on its schema and SELECT
    on every column, and no row-level security policy may apply to it: under a policy ``COPY``
    silently reads only the rows the policy shows, while the stream (PostgreSQL applies no
    policy to replication) sends changes of every row, so landing would miss rows for good.
    Like PostgreSQL's own subscriber (``row_security = off``, see
    :mod:`ingestion.session_settings`), Tidemark refuses such a table rather than copy a part.

    Args:
        conn: a source connection of the role that copies (the stream's).
        oid: the table's OID.

    Returns:
        A sentence that names the table, what is missing and the statement that fixes it.
    """
    row = conn.execute(COPY_RIGHTS + " where c.oid = %s", (oid,)).fetchone()
    return None if row is None else copy_blocker_of(conn, row[1:])


COPY_RIGHTS = (
    "select c.oid::int, n.nspname, c.relname, has_table_privilege(c.oid, 'select'),"
    " has_any_column_privilege(c.oid, 'select'), has_schema_privilege(n.oid, 'usage'),"
    " row_security_active(c.oid), c.relforcerowsecurity, array(select a.attname from"
    " pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
    " and not has_column_privilege(c.oid, a.attnum, 'select') order by a.attnum)"
    " from pg_class c join pg_namespace n on n.oid = c.relnamespace")
"""What the source role may read of a table (OID first), for :func:`copy_blocker_of`."""


def copy_blocker_of(conn: psycopg.Connection, row: tuple) -> str | None:
    """:func:`copy_blocker`'s sentence for a :data:`COPY_RIGHTS` row without its OID."""
    schema, table, readable, some, usage, rls, forced, hidden = row
    ident = sql.Identifier(schema, table).as_string(conn)
    user = sql.Identifier(conn.info.user).as_string(conn)
    if not usage:
        return (f"the source role {conn.info.user!r} may not use schema {schema}, so "
                f"{schema}.{table} cannot be copied: run `grant usage on schema "
                f"{sql.Identifier(schema).as_string(conn)} to {user};` on the source")
    if not readable and some and hidden:
        columns = sql.SQL(", ").join(map(sql.Identifier, hidden)).as_string(conn)
        what = f"column{'s' if len(hidden) > 1 else ''} {', '.join(hidden)}"
        return (f"the source role {conn.info.user!r} may not read {what} of {schema}.{table}, "
                f"so it cannot be copied: run `grant select ({columns}) on {ident} to {user};` "
                f"on the source, or leave the table out of the selection (--tables)")
    if not readable:
        return (f"the source role {conn.info.user!r} may not read {schema}.{table}, so it "
                f"cannot be copied: run `grant select on {ident} to {user};` on the source "
                f"(and `alter default privileges` for its owner, README \"Your own database\")")
    if rls:
        return (f"{schema}.{table} has row-level security{' (forced)' if forced else ''} and "
                f"its policies apply to the source role {conn.info.user!r}: a copy would hold "
                f"only the rows they show while the stream sends changes of every row. Let the "
                f"role bypass them: run `alter role {user} bypassrls;` as a superuser on the "
                f"source (or leave the table out of the selection, --tables)")
    return None


def slot_info(conn: psycopg.Connection, slot: str) -> tuple[bool, int | None] | None:
    """Return (active, active_pid) of a replication slot, or None if it does not exist."""
    row = conn.execute("select active, active_pid from pg_replication_slots where slot_name = %s",
                       (slot,)).fetchone()
    return None if row is None else (row[0], row[1])


def slot_holder(conn: psycopg.Connection, slot: str, timeout_s: float) -> int | None:
    """Wait up to ``timeout_s`` for ``slot`` to be free; return the server process still holding it.

    A walsender outlives its client by a moment (an ingestion that just ended or was killed), so
    only a slot still held after the wait is taken as a running ingestion.

    Args:
        conn: an autocommit connection to the source database.
        slot: the replication slot's name.
        timeout_s: how long to wait for the holder to go away.

    Returns:
        The holder's process id, or None if the slot is free or does not exist.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        info = slot_info(conn, slot)
        if info is None or not info[0]:
            return None
        if time.monotonic() > deadline:
            return info[1]
        time.sleep(0.1)


def wait_slot_free(dsn: str, slot: str, timeout_s: float = 30.0) -> None:
    """Wait until no walsender holds ``slot`` (a killed ingestion leaves one for a moment).

    Raises:
        SetupError: the slot stayed active, i.e. another ingestion process streams from it.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        pid = slot_holder(conn, slot, timeout_s)
        if pid is None:
            return
        who = conn.execute(
            "select coalesce(nullif(application_name, ''), 'a client'),"
            " to_char(backend_start at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'),"
            " coalesce(host(client_addr), 'local socket') from pg_stat_activity"
            " where pid = %s", (pid,)).fetchone()
        holder = "" if who is None else \
            f" ({who[0]}, from {who[2]}, streaming since {who[1]} UTC)"
        raise SetupError(
            f"Replication slot {slot!r} is in use by server process {pid}{holder}:"
            f" another `tidemark ingest run` for this source is running (into this or"
            f" another landing database). Stop it first.")


def drop_slot(dsn: str, slot: str) -> None:
    """Drop a replication slot if it exists (waiting for its walsender to go away)."""
    wait_slot_free(dsn, slot)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if slot_info(conn, slot) is not None:
            conn.execute("select pg_drop_replication_slot(%s)", (slot,))


def type_names(conn: psycopg.Connection,
               types: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """SQL type names for (type OID, typmod) pairs, as ``format_type`` prints them.

    User-defined types (enums, domains, composites) do not exist in landing: they land as
    ``text``, which holds their text form exactly; so do the object identifier types
    (``regclass``..., as ``text`` or ``text[]``: :func:`lands_as_text`), whose values are the
    source's catalog OIDs, and ``xml`` (:data:`XML_TYPE_OIDS`).
    """
    out: dict[tuple[int, int], str] = {}
    asked: list[tuple[int, int]] = []
    for oid, typmod in set(types):
        if oid >= USER_TYPE_OID:
            out[(oid, typmod)] = "text"
        elif lands_as_text(oid):
            out[(oid, typmod)] = "text[]" if oid in TEXT_ARRAY_OIDS else "text"
        else:
            asked.append((oid, typmod))
    if asked:  # one query for them all (a first snapshot asks for every table's at once)
        out.update(((oid, typmod), name) for oid, typmod, name in conn.execute(
            "select t.oid::int, t.mod, format_type(t.oid, case when t.mod < 0 then null else"
            " t.mod end) from unnest(%s::oid[], %s::int[]) t (oid, mod)",
            ([oid for oid, _ in asked], [typmod for _, typmod in asked])))
    return out


def key_columns(conn: psycopg.Connection, relid: int) -> list[str]:
    """The key of a source table as its replica identity sees it.

    ``REPLICA IDENTITY USING INDEX``: that index's columns; otherwise (``DEFAULT``, ``FULL``,
    ``NOTHING``) the primary key's. Empty for a table without either: a keyless table.
    """
    ident = conn.execute("select relreplident from pg_class where oid = %s", (relid,)).fetchone()
    flags = ("indisreplident", "indisprimary") if ident and ident[0] == "i" else \
        ("indisprimary",)
    for flag in flags:
        rows = conn.execute(
            sql.SQL("select a.attname from pg_index i cross join lateral unnest(i.indkey)"
                    " with ordinality k(attnum, ord) join pg_attribute a on a.attrelid ="
                    " i.indrelid and a.attnum = k.attnum where i.indrelid = %s and i.{}"
                    " order by k.ord").format(sql.Identifier(flag)), (relid,)).fetchall()
        if rows:
            return [r[0] for r in rows]
    return []


@dataclass(frozen=True)
class ColumnDefault:
    """What a source column's existing rows read, as the catalog says now.

    Attributes:
        missing: the text form of ``pg_attribute.attmissingval`` (the value rows stored before
            the column was added read: a non-volatile default), or None.
        expression: the default expression, or None.
        identity: ``attidentity`` ('' when not an identity column).
    """

    missing: str | None
    expression: str | None
    identity: str

    @property
    def per_row(self) -> bool:
        """Whether existing rows may each hold their own value, which only the source knows: a
        default or identity evaluated per row when the table was rewritten (``random()``,
        ``gen_random_uuid()``, ``clock_timestamp()``, a sequence)."""
        return self.missing is None and (self.expression is not None or bool(self.identity))


_DEFAULTS = """
select a.attname,
       case when c.relkind <> 'p' then
                case when a.atthasmissing then (a.attmissingval::text::text[])[1] end
            else (select case when bool_and(l.atthasmissing)
                                   and count(distinct l.attmissingval::text) = 1
                              then (min(l.attmissingval::text)::text[])[1] end
                  from pg_partition_tree(a.attrelid) t
                  join pg_attribute l on l.attrelid = t.relid and l.attname = a.attname
                  where t.isleaf)
       end,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text
from pg_attribute a
join pg_class c on c.oid = a.attrelid
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where a.attrelid = %(relid)s and a.attname = any(%(names)s) and not a.attisdropped
"""


def column_defaults(conn: psycopg.Connection, relid: int, names: list[str]
                    ) -> dict[str, ColumnDefault]:
    """The defaults of some columns of a source table (see :class:`ColumnDefault`).

    A partitioned table stores no rows: its partitions hold the missing values, one each. The
    existing rows read one value when every partition has the same; otherwise (a partition
    rewritten, or none yet) the value is unknown, as for a rewritten table.
    """
    rows = conn.execute(_DEFAULTS, {"relid": relid, "names": names}).fetchall()
    return {r[0]: ColumnDefault(r[1], r[2], r[3] or "") for r in rows}


def table_columns(conn: psycopg.Connection, relid: int, publication: str | None = None
                  ) -> list[tuple[str, int, int, bool]]:
    """(name, type OID, typmod, not null) of a source table's live columns, in order: the
    columns the stream sends. Stored generated columns only from PostgreSQL 18 on, and only when
    ``publication`` (if it exists) publishes them: one a DBA made without
    ``publish_generated_columns = stored`` sends none, as before 18."""
    return [tuple(r) for r in conn.execute(
        "select attname, atttypid::int, atttypmod, attnotnull from pg_attribute where attrelid"
        " = %s and attnum > 0 and not attisdropped and (attgenerated = '' or %s)"
        " order by attnum", (relid, sends_generated(conn, publication)))]


def column_attnums(conn: psycopg.Connection, relid: int) -> dict[str, int]:
    """The ``attnum`` of each live column of a source table, by name.

    A column dropped and added again under its name gets a new one (PostgreSQL never reuses
    an attnum), which is all that tells it apart when it was the last column: the Relation
    message then shows the same names, types and order.
    """
    return dict(conn.execute("select attname, attnum::int from pg_attribute where attrelid = %s"
                             " and attnum > 0 and not attisdropped", (relid,)).fetchall())


def sends_generated(conn: psycopg.Connection, publication: str | None = None) -> bool:
    """Whether the stream sends stored generated columns: PostgreSQL 18 on, and ``publication``
    (if it exists) made with ``publish_generated_columns = stored``."""
    generated = source_capabilities(conn).generated_columns
    if generated and publication is not None:
        row = conn.execute("select pubgencols = 's' from pg_publication where pubname = %s",
                           (publication,)).fetchone()
        generated = row is None or row[0]
    return generated


def is_partitioned(conn: psycopg.Connection, relid: int) -> bool:
    """Whether a source table is partitioned (its rows are its partitions')."""
    row = conn.execute("select relkind = 'p' from pg_class where oid = %s", (relid,)).fetchone()
    return bool(row and row[0])


def published_tables(conn: psycopg.Connection, publication: str) -> list[tuple[int, str, str]]:
    """(oid, schema, table) of every table in the publication."""
    return [tuple(r) for r in conn.execute(
        "select c.oid::int, t.schemaname, t.tablename from pg_publication_tables t join"
        " pg_namespace n on n.nspname = t.schemaname join pg_class c on c.relnamespace = n.oid"
        " and c.relname = t.tablename where t.pubname = %s order by 2, 3", (publication,))]
