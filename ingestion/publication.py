"""Which source tables a source replicates, and its publication kept to exactly those.

A table can be published safely when PostgreSQL can identify its rows in UPDATE and DELETE: it
has a primary key, a ``REPLICA IDENTITY USING INDEX``, or ``REPLICA IDENTITY FULL``. A
publication that covers any other table makes every UPDATE and DELETE on it fail in the source
application, so the publication lists tables one by one (never ``FOR TABLES IN SCHEMA`` or
``FOR ALL TABLES``) and leaves such tables out; they are reported with the statement that fixes
them. Tables created later in a selected schema are added when the publication is synced again
(at every start of ingestion and between transactions while it runs).

A partitioned table is one table (PostgreSQL 13+): the publication lists its root and is made
``with (publish_via_partition_root = true)``, so its partitions' changes (those attached later
too) arrive under the root's name and land in one mirror; the partitions themselves are never
listed. On PostgreSQL 12, which has no such option, the partitions are published (and land) one
by one, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from functools import partial

import psycopg
from psycopg import sql

from ingestion.errors import SetupError
from ingestion.names import CHANGELOG_SCHEMA, changelog_table_name, landing_table_name
from ingestion.publication_options import (
    generated_tables,
    publish_generated,
    publish_via_root,
    restore_actions,
    unfilter,
)
from ingestion.versions import source_capabilities

log = logging.getLogger("tidemark.ingestion")


@dataclass(frozen=True)
class Selection:
    """What a source replicates: whole schemas, or named tables.

    Attributes:
        schemas: schema names (every table in them, including tables created later).
        tables: ``schema.table`` names (``table`` alone means ``public.table``).
    """

    schemas: tuple[str, ...] = ("public",)
    tables: tuple[str, ...] | None = None

    @classmethod
    def of(cls, schemas: list[str] | tuple[str, ...] | None = None,
           tables: list[str] | tuple[str, ...] | None = None) -> Selection:
        """A selection from optional lists (neither: schema ``public``)."""
        if tables:
            return cls(schemas=(), tables=tuple(qualify(t) for t in tables))
        return cls(schemas=tuple(schemas) if schemas else ("public",), tables=None)

    def describe(self) -> str:
        """``schemas public, sales`` or ``tables public.a, public.b``."""
        if self.tables is not None:
            return "tables " + ", ".join(self.tables)
        return "schemas " + ", ".join(self.schemas)


def qualify(name: str) -> str:
    """``schema.table`` for a table name (``public`` when no schema is given)."""
    schema, _, table = name.strip().rpartition(".")
    return f"{schema or 'public'}.{table}"


@dataclass(frozen=True)
class SourceTable:
    """A table of a selected schema, as the source catalog shows it.

    Attributes:
        oid: relation OID.
        schema: schema name.
        name: table name.
        identity: ``relreplident``: d (default), f (full), i (index), n (nothing).
        has_key: whether it has a primary key.
        has_identity_index: whether an index is marked as its replica identity.
        unlogged: whether it is an unlogged table (never replicated by PostgreSQL).
        has_columns: whether it has a column (``create table t ()`` has none: nothing to land).
        partitioned: a partitioned table (published as its root, PostgreSQL 13+).
        bad_partition: a partition (``schema.table``) of a partitioned table that PostgreSQL
            could not identify rows of in UPDATE and DELETE, and after a ``\x1f`` what it lacks
            (``UNLOGGED``, ``REPLICA IDENTITY NOTHING``, no key): the whole table is left out.
        partition_of: the root (``schema.table``) of a partition whose root is not selected
            (a partition whose root is selected is not listed at all).
        clash: another selected table (``schema.table``) with the same landing table name
            (``public."a__b"`` and ``a.b`` are both ``a__b``), which keeps the name: the one
            already published, else the first in schema and name order.
    """

    oid: int
    schema: str
    name: str
    identity: str
    has_key: bool
    has_identity_index: bool
    unlogged: bool
    has_columns: bool = True
    partitioned: bool = False
    bad_partition: str | None = None
    partition_of: str | None = None
    clash: str | None = None

    @property
    def qualified(self) -> str:
        """``schema.table``."""
        return f"{self.schema}.{self.name}"

    @property
    def landing_name(self) -> str:
        """Its landing table name (:func:`ingestion.names.landing_table_name`)."""
        return landing_table_name(self.schema, self.name)

    @property
    def publishable(self) -> bool:
        """Whether publishing the table leaves the source application's writes working."""
        if self.unlogged or self.clash or not self.has_columns or self.partition_of or \
                self.bad_partition:
            return False
        return self.identity == "f" or (self.identity == "d" and self.has_key) or (
            self.identity == "i" and self.has_identity_index)

    def advice(self) -> str:
        """Why the table is left out and the statement that makes it publishable."""
        ident = sql.Identifier(self.schema, self.name).as_string()
        if self.clash:
            return (f"{self.qualified} would land as {self.landing_name!r}, the landing "
                    f"table of {self.clash}: rename one of them on the source, or leave one "
                    f"out of the selection (--tables)")
        if self.partition_of:
            return (f"{self.qualified} is a partition of {self.partition_of}, which is not "
                    f"selected: a partitioned table lands as one table, with every partition; "
                    f"select {self.partition_of} (or its schema) instead")
        if self.bad_partition:
            leaf, lacks = self.bad_partition.split("\x1f", 1)
            return (f"{self.qualified} is partitioned and its partition {leaf} {lacks}, so "
                    f"PostgreSQL could not replicate its updates and deletes: give it a "
                    f"primary key (on {self.qualified}), or run  alter table "
                    f"{sql.Identifier(*leaf.split('.', 1)).as_string()} replica identity full;"
                    f"  (for every such partition)")
        if not self.has_columns:
            return (f"{self.qualified} has no columns: nothing to replicate (it is picked up "
                    f"once it has one)")
        if self.unlogged:
            return (f"{self.qualified} is UNLOGGED, so PostgreSQL cannot replicate it: "
                    f"alter table {ident} set logged;")
        if self.identity == "n":
            return (f"{self.qualified} has REPLICA IDENTITY NOTHING: "
                    f"alter table {ident} replica identity full;  (or default, with a key)")
        each = ("  (and the same for each of its partitions: a partitioned table is "
                "published whole)" if self.partitioned else "")
        return (f"{self.qualified} has no primary key or replica identity: add a primary key, "
                f"or run  alter table {ident} replica identity full;{each}")


@dataclass
class PublicationReport:
    """What :func:`sync_publication` found and did.

    Attributes:
        publication: the publication's name.
        published: the tables published now (``schema.table``).
        added: tables added by this sync.
        removed: tables removed by this sync (no longer selected or no longer publishable).
        unpublishable: selected tables left out, each with its advice.
        missing: tables named in the selection that do not exist.
        managed: False when the publication was made by someone else for all tables or whole
            schemas; it is then used as it is.
        pending: changes the sync had no right to make (with the statements to run).
        denied: PostgreSQL's message when it refused one, with the grant it needs.
        within_root: partitions removed by this sync because their root is published now
            (``schema.table`` → the root's ``schema.table``): their landing tables, made by
            an older Tidemark, no longer change.
        restored: the narrowed ``publish`` setting this sync put back (its tables missed
            changes), or ``""`` (:mod:`ingestion.publication_options`).
        narrowed: tables whose row filter or column list this sync took off, or whose
            partitions' or generated columns' changes the publication had stopped sending as
            Tidemark lands them → what it had.
    """

    publication: str
    published: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unpublishable: list[SourceTable] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    managed: bool = True
    pending: list[str] = field(default_factory=list)
    denied: str = ""
    within_root: dict[str, str] = field(default_factory=dict)
    restored: str = ""
    narrowed: dict[str, str] = field(default_factory=dict)


_CATALOG = """
    select c.oid::int, n.nspname, c.relname, c.relreplident::text,
        exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary),
        exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisreplident),
        c.relpersistence = 'u', exists (select 1 from pg_attribute a where a.attrelid = c.oid
            and a.attnum > 0 and not a.attisdropped), {partitions}
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ({kinds}) and c.relpersistence <> 't' and {where}
    order by n.nspname, c.relname
"""
_PARTITIONS = """c.relkind = 'p',
        (select ln.nspname || '.' || l.relname || chr(31) || case
            when l.relkind <> 'r' then 'is not a table (a foreign table)'
            when l.relpersistence = 'u' then 'is UNLOGGED'
            when l.relreplident = 'n' then 'has REPLICA IDENTITY NOTHING'
            else 'has no primary key or replica identity' end
         from pg_partition_tree(c.oid) t join pg_class l on l.oid = t.relid
         join pg_namespace ln on ln.oid = l.relnamespace
         where c.relkind = 'p' and t.isleaf and not (l.relkind = 'r'
            and l.relpersistence <> 'u' and (l.relreplident = 'f'
            or (l.relreplident = 'd' and exists (select 1 from pg_index i
                where i.indrelid = l.oid and i.indisprimary))
            or (l.relreplident = 'i' and exists (select 1 from pg_index i
                where i.indrelid = l.oid and i.indisreplident))))
         order by 1 limit 1),
        case when c.relispartition then (select rn.nspname || '.' || r.relname
            from pg_class r join pg_namespace rn on rn.oid = r.relnamespace
            where r.oid = pg_partition_root(c.oid)) end,
        case when c.relispartition then pg_partition_root(c.oid)::int end"""
_NO_PARTITIONS = "false, null::text, null::text, null::int"


def selected_tables(conn: psycopg.Connection, selection: Selection,
                    keep: Collection[int] = ()) -> tuple[list[SourceTable], list[str]]:
    """The source tables a selection covers, and the named tables that do not exist.

    Args:
        conn: a source connection.
        selection: schemas or tables.
        keep: OIDs of the tables published now: where two tables would land under one name,
            the published one keeps it (a table created later never takes over the landing
            table of one already replicated); among the others, the first in order does.

    Returns:
        (tables in schema and name order, missing ``schema.table`` names).
    """
    if selection.tables is not None:
        pairs = [t.split(".", 1) for t in selection.tables]
        where = sql.SQL("(n.nspname, c.relname) in (select * from unnest(%s::text[], %s::text[]))")
        params: tuple = ([p[0] for p in pairs], [p[1] for p in pairs])
    else:
        where = sql.SQL("n.nspname = any(%s)")
        params = (list(selection.schemas),)
    roots = source_capabilities(conn).partition_root
    rows = conn.execute(sql.SQL(_CATALOG).format(
        partitions=sql.SQL(_PARTITIONS if roots else _NO_PARTITIONS),
        kinds=sql.SQL("'r', 'p'" if roots else "'r'"), where=where), params).fetchall()
    oids = {row[0] for row in rows}
    # A partition (leaf or sub-partitioned) lands within its root: listed only when its root
    # is not selected, to say so.
    found_tables = [SourceTable(*row[:-1]) for row in rows if row[-1] is None
                    or row[-1] not in oids]
    owners: dict[str, str] = {}
    for table in sorted(found_tables, key=lambda t: t.oid not in keep):  # stable sort
        owners.setdefault(table.landing_name, table.qualified)
    tables = [t if (owner := owners[t.landing_name]) == t.qualified else replace(t, clash=owner)
              for t in found_tables]
    found = {f"{row[1]}.{row[2]}" for row in rows}
    missing = [t for t in (selection.tables or ()) if t not in found]
    return tables, missing


def missing_schemas(conn: psycopg.Connection, selection: Selection) -> list[str]:
    """Selected schemas that do not exist on the source."""
    have = {r[0] for r in conn.execute("select nspname from pg_namespace where nspname = any(%s)",
                                       (list(selection.schemas),))}
    return [s for s in selection.schemas if s not in have]


def _published(conn: psycopg.Connection, publication: str
               ) -> tuple[str | None, dict[int, str]] | None:
    """None when missing, else (``"all"``/``"schemas"``/None, the tables listed by OID)."""
    if source_capabilities(conn).schema_publications:  # pg_publication_namespace: 15+
        query = ("select case when p.puballtables then 'all' when exists (select 1 from"
                 " pg_publication_namespace pn where pn.pnpubid = p.oid) then 'schemas' end"
                 " from pg_publication p where p.pubname = %s")
    else:
        query = ("select case when p.puballtables then 'all' end"
                 " from pg_publication p where p.pubname = %s")
    row = conn.execute(query, (publication,)).fetchone()
    if row is None:
        return None
    rels = {r[0]: r[1] for r in conn.execute(
        "select c.oid::int, n.nspname || '.' || c.relname from pg_publication_rel pr"
        " join pg_publication p on p.oid = pr.prpubid join pg_class c on c.oid = pr.prrelid"
        " join pg_namespace n on n.oid = c.relnamespace where p.pubname = %s", (publication,))}
    return row[0], rels


def _idents(tables: list[SourceTable]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in tables)


def sync_publication(admin_dsn: str, publication: str, selection: Selection, *,
                     must_exist: bool = True) -> PublicationReport:
    """Create the publication, or bring it to exactly the publishable selected tables.

    Args:
        admin_dsn: source URL of a role that owns the tables (or a superuser). A role without
            those rights can still use a publication that already lists the right tables.
        publication: the publication's name.
        selection: what the source replicates.
        must_exist: raise when the publication is missing and cannot be created (False: report
            the statement in ``pending``).

    Returns:
        What was found and done.

    Raises:
        SetupError: the publication is missing and this role may not create it.
    """
    report = PublicationReport(publication)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        current = _published(conn, publication)
        tables, report.missing = selected_tables(conn, selection,
                                                 keep=current[1] if current else ())
        wanted = [t for t in tables if t.publishable]
        report.unpublishable = [t for t in tables if not t.publishable]
        if current is not None and current[0]:
            # Made for all tables or whole schemas (by an administrator, or an older Tidemark):
            # turn it into the table list when this role may, else use it as it is.
            pending = len(report.pending)
            narrow = sql.SQL("alter publication {} set table {}").format(
                sql.Identifier(publication), _idents(wanted))
            if current[0] == "all" or not wanted or not _run(conn, narrow, report):
                if not report.unpublishable:
                    del report.pending[pending:]
                report.managed = False
                report.published = [t.qualified for t in wanted]
                report.restored = restore_actions(conn, publication, partial(_run, report=report))
                return report
            current = _published(conn, publication)
            assert current is not None
        if current is None:
            statement = sql.SQL("create publication {}").format(sql.Identifier(publication))
            if wanted:
                statement = sql.SQL("{} for table {}").format(statement, _idents(wanted))
            options = [option for option, on in (
                ("publish_via_partition_root = true", source_capabilities(conn).partition_root),
                ("publish_generated_columns = stored",
                 source_capabilities(conn).generated_columns)) if on]
            if options:
                statement = sql.SQL("{} with ({})").format(statement,
                                                           sql.SQL(", ".join(options)))
            if not _run(conn, statement, report):
                if must_exist:
                    raise SetupError(_cannot_create(conn, publication, wanted, report))
                return report
            report.added = [t.qualified for t in wanted]
            report.published = [t.qualified for t in wanted]
            return report
        run = partial(_run, report=report)
        report.restored = restore_actions(conn, publication, run)
        report.narrowed = unfilter(conn, publication, run)
        if publish_generated(conn, publication, run):
            report.narrowed.update({t.qualified: "publish_generated_columns = none"
                                    for t in wanted if t.oid in generated_tables(conn, wanted)})
        if publish_via_root(conn, publication, run):
            report.narrowed.update({t.qualified: "publish_via_partition_root = false"
                                    for t in wanted if t.partitioned})
        have = current[1]
        add = [t for t in wanted if t.oid not in have]
        wanted_oids = {t.oid for t in wanted}
        drop = {oid: name for oid, name in have.items() if oid not in wanted_oids}
        if add and _run(conn, sql.SQL("alter publication {} add table {}").format(
                sql.Identifier(publication), _idents(add)), report):
            report.added = [t.qualified for t in add]
        if drop:
            names = [n.split(".", 1) for n in drop.values()]
            if _run(conn, sql.SQL("alter publication {} drop table {}").format(
                    sql.Identifier(publication),
                    sql.SQL(", ").join(sql.Identifier(s, t) for s, t in names)), report):
                report.removed = sorted(drop.values())
                report.within_root = _within_root(conn, list(drop), wanted)
        now = _published(conn, publication)
        report.published = sorted(now[1].values()) if now else []
    return report


def _cannot_create(conn: psycopg.Connection, publication: str, wanted: list[SourceTable],
                   report: PublicationReport) -> str:
    """Why this role may not create the publication, and the two ways forward."""
    user = conn.info.user
    owns = conn.execute(
        "select coalesce(bool_and(pg_has_role(relowner, 'usage')), true) or (select rolsuper"
        " from pg_roles where rolname = current_user) from pg_class where oid = any(%s)",
        ([t.oid for t in wanted],)).fetchone()[0]
    why = report.denied
    if not owns:  # a grant of CREATE alone would only lead to "must be owner of table"
        why = (f"role {user!r} is not the owner of the tables (only their owner or a "
               f"superuser may publish them) and PostgreSQL says: "
               f"{why.split(' (creating a publication', 1)[0]}")
    return (f"Cannot create publication {publication!r} on the source: {why}. Either a DBA "
            f"creates it, as the tables' owner (with CREATE on the database) or a superuser:\n"
            f"  {report.pending[-1]}\nand Tidemark uses it as it is (tables created later are "
            f"added by the DBA too: the ingestion log says what to run); or register the "
            f"source with --admin-url of such a role.")


def _within_root(conn: psycopg.Connection, dropped: list[int], wanted: list[SourceTable]
                 ) -> dict[str, str]:
    """Of the tables just dropped from the publication, the partitions whose root it lists
    now (an older Tidemark published them one by one): ``schema.table`` → the root's."""
    roots = {t.oid: t.qualified for t in wanted if t.partitioned}
    if not roots or not dropped:
        return {}
    rows = conn.execute("select c.oid::int, n.nspname || '.' || c.relname,"
                        " pg_partition_root(c.oid)::int from pg_class c join pg_namespace n"
                        " on n.oid = c.relnamespace where c.oid = any(%s) and c.relispartition",
                        (dropped,)).fetchall()
    return {name: roots[root] for _, name, root in rows if root in roots}


def _run(conn: psycopg.Connection, statement: sql.Composable, report: PublicationReport) -> bool:
    """Run a publication statement; without the rights, keep it in ``report.pending``."""
    try:
        conn.execute(statement)
        return True
    except psycopg.errors.InsufficientPrivilege as exc:
        report.pending.append(statement.as_string(conn) + ";")
        report.denied = exc.diag.message_primary or str(exc)
        if "for database" in report.denied:  # CREATE PUBLICATION needs CREATE on the database
            grant = sql.SQL("grant create on database {} to {}").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(conn.info.user))
            report.denied += (f" (creating a publication needs CREATE on the database: "
                              f"{grant.as_string(conn)};)")
        return False


def within_root_advice(source: str, partition: str, root: str) -> str:
    """What became of a partition's landing tables, made by an older Tidemark, once its root
    is published (``schema.table`` names), and how to remove them."""
    old = landing_table_name(*partition.split(".", 1))
    new = landing_table_name(*root.split(".", 1))
    drop = sql.SQL("drop table {}, {}; delete from tidemark.replicated_tables where source = {}"
                   " and table_name = {};").format(
        sql.Identifier(source, old), sql.Identifier(CHANGELOG_SCHEMA,
                                                    changelog_table_name(source, old)),
        sql.Literal(source), sql.Literal(old)).as_string()
    return (f"partition {partition} now lands within its partitioned table {root}, as one "
            f"table {source}.{new} (PostgreSQL 13+, publish_via_partition_root); the landing "
            f"tables an older Tidemark made for the partition no longer change: point live "
            f"views and dbt models at {source}.{new}, then, with ingestion stopped, run on "
            f"landing: {drop}")


def log_report(source: str, report: PublicationReport) -> None:
    """Log what a sync did and every table left out (once per sync)."""
    if report.added:
        log.info("source %s: publication %s now includes %s", source, report.publication,
                 ", ".join(report.added))
    if report.removed:
        log.warning("source %s: removed from publication %s (no longer selected or no longer "
                    "publishable): %s", source, report.publication, ", ".join(report.removed))
    for part, root in sorted(report.within_root.items()):
        log.warning("source %s: %s", source, within_root_advice(source, part, root))
    for table in report.unpublishable:
        log.warning("source %s: not replicated: %s", source, table.advice())
    for name in report.missing:
        log.warning("source %s: table %s does not exist on the source", source, name)
    for statement in report.pending:
        log.warning("source %s: this role may not change publication %s; run as the tables' "
                    "owner: %s", source, report.publication, statement)
    if report.restored:
        log.warning("source %s: publication %s had %s (changed on the source): put back to "
                    "every action; its tables are copied again", source, report.publication,
                    report.restored)
    for name, had in sorted(report.narrowed.items()):
        log.warning("source %s: publication %s had %s on %s (changed on the source): taken "
                    "off; the table is copied again", source, report.publication, had, name)
    if not report.managed:
        log.info("source %s: publication %s was made for all tables or whole schemas by someone "
                 "else; Tidemark uses it as it is", source, report.publication)
