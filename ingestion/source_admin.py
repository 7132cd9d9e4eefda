"""Adding, describing and removing sources (``tidemark source add|list|remove``).

Adding checks the source before anything is registered: the login works, ``wal_level`` is
``logical``, the selected schemas or tables exist, the stream's role may read them, no slot of
that name lives in another database; then it creates (or brings up to date) the publication of
exactly the publishable tables and reports every table left out with its fix. Removing drops the
slot and the publication and says what stays in landing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ingestion.catalog import copy_blocker, slot_holder
from ingestion.dead_letter_counts import letter_count
from ingestion.errors import PermanentSourceError, SourceBusyError, SourceError
from ingestion.failures import check_capacity, check_source, first_line, is_transient, permanent
from ingestion.letter_indexes import drop_letter_indexes
from ingestion.lock_room import tables_per_transaction
from ingestion.lsn import WAL_NOW
from ingestion.names import CHANGELOG_SCHEMA, publication_name, slot_name
from ingestion.progress import read_progress
from ingestion.publication import (
    PublicationReport,
    missing_schemas,
    selected_tables,
    sync_publication,
)
from ingestion.session_settings import pinned_dsn
from ingestion.sources import (
    SourceSpec,
    delete_source,
    get_source,
    list_sources,
    save_source,
)

log = logging.getLogger("tidemark.ingestion")


@dataclass
class AddReport:
    """What ``source add`` found and did.

    Attributes:
        spec: the registered source.
        publication: the publication sync's report.
        warnings: things that work but deserve attention.
    """

    spec: SourceSpec
    publication: PublicationReport
    warnings: list[str] = field(default_factory=list)


SLOT_GRACE_S = 5.0


def _connect(spec: SourceSpec, admin: bool = False) -> psycopg.Connection:
    """An autocommit connection to the source, with the pinned session settings (UTF8 text from
    a SQL_ASCII database too: its catalog would otherwise come back as bytes); failures worded
    for a person."""
    try:
        return psycopg.connect(pinned_dsn(spec.admin_dsn() if admin else spec.dsn()),
                               autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        if is_transient(exc):
            shown = spec.as_dict()["admin_url"] if admin and spec.as_dict()["admin_url"] \
                else spec.shown_url()
            raise SourceError(f"Source {spec.name!r}: cannot reach {shown} now "
                              f"({first_line(exc)}). Is the server up and reachable from "
                              f"this machine?") from None
        raise permanent(spec.name, exc) from None


def _database_key(conn: psycopg.Connection) -> tuple:
    return (conn.info.host, conn.info.port, conn.info.dbname)


def add_source(landing_dsn: str, spec: SourceSpec) -> AddReport:
    """Check a source, create its publication and register it.

    Raises:
        SourceError: the name is taken, or a selected schema or table does not exist, or the
            stream's role may not read a table.
        PermanentSourceError: the source cannot work as given (login, wal_level, slot...).
        SetupError: the publication cannot be created by the roles given.
    """
    taken = {s.name: s for s in list_sources(landing_dsn)}
    if spec.name in taken:
        raise SourceError(f"A source named {spec.name!r} is registered already "
                          f"({taken[spec.name].shown_url()}). Remove it first "
                          f"(`tidemark source remove {spec.name}`) or choose another name.")
    warnings: list[str] = []
    with _connect(spec) as conn:
        check_source(conn, spec.name, slot_name(spec.name))
        warnings += check_capacity(conn, spec.name, slot_name(spec.name))
        selection = spec.selection
        gone = missing_schemas(conn, selection) if selection.tables is None else []
        if gone:
            raise SourceError(f"Source {spec.name!r}: schema(s) {', '.join(gone)} do not exist "
                              f"in database {conn.info.dbname!r}.")
        tables, missing = selected_tables(conn, selection)
        if missing:
            raise SourceError(f"Source {spec.name!r}: table(s) {', '.join(missing)} do not "
                              f"exist in database {conn.info.dbname!r}.")
        blocked = [reason for t in tables if t.publishable
                   and (reason := copy_blocker(conn, t.oid)) is not None]
        if blocked:
            raise SourceError(f"Source {spec.name!r}: " + "; ".join(blocked) + ".")
        replication = conn.execute(
            "select rolreplication or rolsuper from pg_roles where rolname = current_user"
            ).fetchone()
        if replication is not None and not replication[0]:
            warnings.append(f"role {conn.info.user!r} has no REPLICATION attribute; the stream "
                            f"will be refused unless your provider grants it otherwise "
                            f"(alter role {conn.info.user} replication;).")
        encoding = conn.execute("select pg_encoding_to_char(encoding) from pg_database"
                                " where datname = current_database()").fetchone()[0]
        if encoding == "SQL_ASCII":
            warnings.append(f"database {conn.info.dbname!r} has encoding SQL_ASCII: PostgreSQL "
                            f"stores its text unchecked, and ingestion stops at the first text "
                            f"value that is not valid UTF-8 (README, \"Your own database\").")
        key = _database_key(conn)
    for other in taken.values():
        try:
            with _connect(other) as conn:
                if _database_key(conn) == key:
                    warnings.append(f"source {other.name!r} replicates the same database; each "
                                    f"source has its own slot, so its WAL is read twice.")
        except (SourceError, PermanentSourceError):
            continue
    try:
        report = sync_publication(spec.admin_dsn(), publication_name(spec.name), spec.selection)
    except psycopg.Error as exc:
        raise permanent(spec.name, exc, "admin") from None
    save_source(landing_dsn, spec)
    return AddReport(spec, report, warnings)


@dataclass
class RemoveReport:
    """What ``source remove`` did and left.

    Attributes:
        name: the source.
        dropped: what was dropped on the source (slot, publication).
        pending: statements to run on the source by hand (it could not be reached or the role
            lacked the right).
        landing_left: what stays in landing (unless dropped), as sentences.
        landing_dropped: what was dropped from landing.
    """

    name: str
    dropped: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    landing_left: list[str] = field(default_factory=list)
    landing_dropped: list[str] = field(default_factory=list)


def _drop_on_source(spec: SourceSpec, report: RemoveReport) -> None:
    slot, pub = slot_name(spec.name), publication_name(spec.name)
    drop_pub = f"drop publication if exists {sql.Identifier(pub).as_string()};"
    _drop_source_slot(spec, slot, report)
    with _connect(spec, admin=True) as conn:
        if conn.execute("select 1 from pg_publication where pubname = %s", (pub,)).fetchone():
            try:
                conn.execute(sql.SQL("drop publication {}").format(sql.Identifier(pub)))
                report.dropped.append(f"publication {pub}")
            except psycopg.errors.InsufficientPrivilege:
                report.pending.append(drop_pub)


def _drop_source_slot(spec: SourceSpec, slot: str, report: RemoveReport) -> None:
    """Drop the slot where the stream connects: the source URL's server (a standby streams from
    a slot of its own, while ``--admin-url`` names its primary). Its role has REPLICATION; the
    tables' owner of ``--admin-url`` often has not, so that role is only a fallback."""
    with _connect(spec) as conn:
        # a walsender outlives its client by a moment (an `ingest catch-up` that just ended):
        # only a slot still held after SLOT_GRACE_S is a running ingestion
        pid = slot_holder(conn, slot, SLOT_GRACE_S)
        if pid is not None:
            raise SourceBusyError(f"Source {spec.name!r} is streaming right now (server process "
                                  f"{pid} holds slot {slot!r}). Stop what streams it first "
                                  f"— `tidemark ingest run`, or `tidemark up`, which streams "
                                  f"every registered source (Ctrl-C) — then remove the source.")
        row = conn.execute("select database = current_database() from pg_replication_slots"
                           " where slot_name = %s", (slot,)).fetchone()
        if row is None:
            return
        if not row[0]:
            report.pending.append(f"(slot {slot!r} is in another database of that server; "
                                  f"left alone)")
            return
        dropped = _drop_slot(conn, slot)
    if not dropped and spec.admin_dsn() != spec.dsn():
        with _connect(spec, admin=True) as admin:
            dropped = _drop_slot(admin, slot)
    if dropped:
        report.dropped.append(f"replication slot {slot}")
    else:
        report.pending.append(f"select pg_drop_replication_slot('{slot}');")


def _drop_slot(conn: psycopg.Connection, slot: str) -> bool:
    """Drop a replication slot; False when this role may not (no REPLICATION)."""
    try:
        conn.execute("select pg_drop_replication_slot(%s)", (slot,))
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def remove_source(landing_dsn: str, name: str, *, drop_landing: bool = False,
                  force: bool = False) -> RemoveReport:
    """Drop a source's slot and publication, and unregister it.

    Args:
        landing_dsn: landing URL.
        name: the source.
        drop_landing: also drop its landing schema, changelogs and state rows.
        force: unregister even when the source cannot be reached (the statements to run there
            later are returned in ``pending``).

    Raises:
        UnknownSourceError: not registered.
        SourceError: it is streaming now, or cannot be reached (without ``force``).
    """
    spec = get_source(landing_dsn, name)
    report = RemoveReport(name)
    try:
        _drop_on_source(spec, report)
    except SourceBusyError:
        raise
    except (PermanentSourceError, SourceError) as exc:
        if not force:
            raise SourceError(f"{exc} Nothing was changed; pass --force to unregister it anyway "
                              f"(then drop its slot and publication on the source yourself)."
                              ) from None
        report.pending += [f"select pg_drop_replication_slot('{slot_name(name)}');",
                           f"drop publication if exists "
                           f"{sql.Identifier(publication_name(name)).as_string()};"]
    with psycopg.connect(landing_dsn) as conn:
        changelogs = [r[0] for r in conn.execute(
            "select tablename from pg_tables where schemaname = %s and tablename like %s",
            (CHANGELOG_SCHEMA, name.replace("_", "\\_") + "\\_\\_%"))]
        mirrors = conn.execute("select count(*) from pg_tables where schemaname = %s",
                               (name,)).fetchone()[0]
        if drop_landing:
            _drop_tables(conn, [(name, r[0]) for r in conn.execute(
                "select tablename from pg_tables where schemaname = %s", (name,))]
                + [(CHANGELOG_SCHEMA, table) for table in changelogs])
        _forget(conn, "checkpoints", name)
        _forget(conn, "snapshot_progress", name)
        if drop_landing:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(
                sql.Identifier(name)))
            for state in ("replicated_tables", "schema_history", "dead_letters",
                          "paused_changes", "duplicate_events"):
                _forget(conn, state, name)
            report.landing_dropped = [f"schema {name} ({mirrors} mirror tables)",
                                      f"{len(changelogs)} changelogs {CHANGELOG_SCHEMA}."
                                      f"{name}__*", "its rows in tidemark.* state tables"]
        else:
            # Counted as they change (e37): a count of the queue read every letter (0.4 s at
            # a week of the 10x demo's letters).
            dead = letter_count(conn, name) if _exists(conn, "dead_letter_counts") else 0
            report.landing_left = [
                f"schema {name}: {mirrors} mirror tables (as of the last applied change)",
                f"{len(changelogs)} changelogs {CHANGELOG_SCHEMA}.{name}__*",
                f"{dead} dead letters, schema history and duplicate counts in tidemark.*"]
        conn.commit()
    drop_letter_indexes(landing_dsn, name)
    delete_source(landing_dsn, name)
    return report


def _drop_tables(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> None:
    """Drop landing tables (``cascade``: the views built on them too), a few per transaction.

    Each table takes ~8 locks to its commit (itself, its indexes, its TOAST table and index):
    dropped in one transaction, a source of 2,000 tables needs ~32,000, beyond a lock table of
    PostgreSQL's default ``max_locks_per_transaction = 64`` ("out of shared memory", and the
    source half removed: its slot and publication were dropped already). Batches of
    ``max_locks_per_transaction / 8`` tables stay within one transaction's share. A remove
    stopped half-way drops the rest when run again.
    """
    size = tables_per_transaction(conn)
    for start in range(0, len(tables), size):
        conn.execute(sql.SQL("drop table if exists {} cascade").format(sql.SQL(", ").join(
            sql.Identifier(*table) for table in tables[start:start + size])))
        conn.commit()


def _exists(conn: psycopg.Connection, table: str) -> bool:
    return conn.execute("select to_regclass(%s)", (f"tidemark.{table}",)).fetchone()[0] \
        is not None


def _forget(conn: psycopg.Connection, table: str, source: str) -> None:
    """Delete a source's rows from a state table (if landing has that table)."""
    if _exists(conn, table):
        conn.execute(sql.SQL("delete from {} where source = %s").format(
            sql.Identifier("tidemark", table)), (source,))


def describe_sources(landing_dsn: str) -> list[dict[str, Any]]:
    """Every registered source with its slot, landing state and last error (never a secret)."""
    out = []
    for spec in list_sources(landing_dsn):
        item = spec.as_dict()
        try:
            with _connect(spec) as conn:
                row = conn.execute(
                    sql.SQL("select active, pg_wal_lsn_diff({}, restart_lsn)::bigint from"
                            " pg_replication_slots where slot_name = %s and database ="
                            " current_database()").format(WAL_NOW), (slot_name(spec.name),)
                ).fetchone()
            item["slot"] = "missing" if row is None else ("streaming" if row[0] else "idle")
            item["retained_wal_bytes"] = None if row is None else row[1]
        except (SourceError, PermanentSourceError) as exc:
            item["slot"] = f"unreachable: {exc}"
            item["retained_wal_bytes"] = None
        with psycopg.connect(landing_dsn, autocommit=True) as conn:
            item["tables"] = conn.execute(
                "select count(*) from tidemark.replicated_tables where source = %s",
                (spec.name,)).fetchone()[0] if _exists(conn, "replicated_tables") else 0
            item["snapshot"] = read_progress(conn, spec.name)
        out.append(item)
    return out
