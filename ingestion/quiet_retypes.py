"""Type changes of tables that no row change has streamed since: seen in the source catalog.

A safe type change (:func:`ingestion.schema_changes.is_widening`) can rewrite the text every
existing row reads as — ``1.50`` as ``numeric(16,3)`` reads ``1.500``, ``'a  '`` as
``varchar`` reads ``'a'``, ``0.1::real`` as ``double precision`` reads
``0.10000000149011612`` — while logical decoding sends no row, so no Relation message either:
the stream shows the new type only with the table's next row change. A table nobody writes
after the DDL kept the old type, and its old text, in mirror and changelog for good.

At every publication sync (30 s while streaming, and at every start) landing compares the
source catalog's column types with the mirror's: a column the source widened beyond the
registered type and the mirror does not have yet is widened in mirror and changelog (as the
Relation message would have it). The registered shape stays the stream's: the stream may still
send rows of the old type (decoding lags the catalog), which the wider column takes as they are;
the Relation message that finally shows the new type finds the mirror already wide, and records
the change as usual. A keyless table waits until the stream is past the DDL (as below; a
catch-up that saw such a change streams on to a later target, then syncs again): its removals
find their row by its text, and one of the old type (``1.50``) would not find the row of the
wider mirror (``1.500``). A widening an object built on the mirror forbids (a view) is left to
the stream's Relation message, which pauses the table naming the object; a quiet table pauses
so at a later sync, as below.

Any other type change (``varchar(5)`` → ``char(10)``, ``timestamptz`` → ``timestamp`` in the
DDL session's time zone) rewrites the rows' values in a way landing cannot repeat, and pauses the
table at its Relation message; a quiet table sent none, and its mirror silently kept the old
values. A sync that finds the stream past the source's WAL position of an earlier sync that saw
the change in the catalog (so past the DDL, with no Relation message showing it) pauses the
table (``change_type``) as the Relation message would, for a resync, at the checkpoint: the
DDL's own LSN is not known. A contract that refuses ``widen_type`` pauses the same way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ingestion.lsn import lsn_to_str, str_to_lsn, wal_position
from ingestion.schema_changes import SchemaChange, contract_lag_warning, is_widening
from ingestion.state import record_schema_change
from ingestion.tables import ColumnInfo, TableInfo, widen_column

if TYPE_CHECKING:
    from ingestion.session import Session

log = logging.getLogger("tidemark.ingestion")

_TYPES = ("select attrelid::int, attname, atttypid::int, atttypmod, attnum from pg_attribute"
          " where attrelid = any(%s) and attnum > 0 and not attisdropped")


def _types(conn: psycopg.Connection, oids: list[int]
           ) -> dict[int, dict[str, tuple[int, int, int]]]:
    out: dict[int, dict[str, tuple[int, int, int]]] = {}
    for rel, name, typ, mod, num in conn.execute(_TYPES, (oids,)):
        out.setdefault(rel, {})[name] = (typ, mod, num)
    return out


def retyped_ahead(source_conn: psycopg.Connection, landing: psycopg.Connection,
                  known: list[tuple[int, TableInfo]]) -> list[tuple[TableInfo, ColumnInfo]]:
    """The columns whose type the source changed and the mirror has not followed yet.

    Args:
        source_conn: the source (its catalog now).
        landing: the landing connection (the mirrors' catalog).
        known: (source OID, landing table) of the published tables landing has, not paused.

    Returns:
        (table, the column as the source has it now, its ``type_sql`` not filled in); a column
        dropped and added again under its name (another ``attnum``) is left to the stream.
    """
    if not known:
        return []
    source = _types(source_conn, [oid for oid, _ in known])
    landed: dict[str, dict[str, tuple[int, int]]] = {}
    for mirror, name, typ, mod in landing.execute(
            "select m.name, a.attname, a.atttypid::int, a.atttypmod from unnest(%s::text[])"
            " m (name) join pg_attribute a on a.attrelid = to_regclass(m.name) where a.attnum"
            " > 0 and not a.attisdropped",
            ([info.mirror.as_string(landing) for _, info in known],)):
        landed.setdefault(mirror, {})[name] = (typ, mod)
    out = []
    for oid, info in known:
        have = landed.get(info.mirror.as_string(landing), {})
        for col in info.columns:
            now = source.get(oid, {}).get(col.name)
            if now is None or now[:2] == (col.type_oid, col.typmod) or now[2] != col.attnum:
                continue
            new = ColumnInfo(col.name, now[0], now[1], "", now[2])
            # Built-in types only widen (is_widening): their OIDs are the same in landing.
            if not is_widening(col, new) or have.get(col.name) != now[:2]:
                out.append((info, new))
    return out


def retypes_waiting(session: Session) -> bool:
    """Whether a type change the session saw in the source catalog waits for the stream to
    pass the WAL position it was seen at (a keyless table's widening, or a pause)."""
    return any(session.ckpt < since for since in session.retypes_seen.values())


def follow_retypes(session: Session, known: list[tuple[int, TableInfo]]) -> None:
    """Widen in mirror and changelog the columns the source widened without a row streamed
    since (:func:`retyped_ahead`), and pause the tables of other type changes, between
    transactions.

    Args:
        session: the streaming session.
        known: (source OID, landing table) of the published tables landing has.
    """
    known = [(oid, info) for oid, info in known if info.paused_reason is None]
    applier = session.applier
    ahead = retyped_ahead(session.source_conn, session.landing, known)
    # after the catalog read: every change it showed was committed before this position
    position = str_to_lsn(session.source_conn.execute(
        sql.SQL("select {}::text").format(wal_position("insert"))).fetchone()[0])
    session.source_conn.rollback()
    if not applier.in_txn:  # else the read is part of the applier's transaction
        session.landing.rollback()
    if not ahead:
        return
    named = session.tracker.columns([(c.name, c.type_oid, c.typmod) for _, c in ahead])
    applier.begin()
    for (info, _), col in zip(ahead, named, strict=True):
        if info.paused_reason is not None:  # another column of it paused it
            continue
        old = next(c for c in info.columns if c.name == col.name)
        kind = "widen_type" if is_widening(old, col) else "change_type"
        change = SchemaChange(kind, col.name, f"column {col.name!r} changed type from "
                              f"{old.type_sql} to {col.type_sql}", col)
        key = (info.name, col.name, col.type_oid, col.typmod)
        contract = applier.contract_for(info)
        refused = ", not allowed by its contract" if kind == "widen_type" and contract is not \
            None and not contract.allows(kind, change.column) else ""
        blocked = session.widen_blocked.get(key)  # not tried again
        if kind == "change_type" or refused or blocked:
            since = session.retypes_seen.setdefault(key, position)
            if session.ckpt < since:
                continue  # the stream may still show it, with its LSN: seen again later
            why = f"({kind}{refused}; seen in its catalog, no row change of the new type " \
                  f"streamed yet)" + (f", but other objects depend on the landing table "
                                      f"({blocked}); update or drop them first" if blocked
                                      else "")
            session.tracker.pause(info, [change], session.ckpt,
                                  f"{change.detail} on the source {why}")
            continue
        if not info.key and session.ckpt < session.retypes_seen.setdefault(key, position):
            continue  # a keyless table's removals match rows by their text: see the docstring
        applier.flush(info)
        applier.write_letters(info.name)  # their values convert too
        try:
            applier.ddl_locks.run(
                applier.conn, info.qualified, [info.mirror, info.changelog],
                f"apply a schema change ({change.detail})",
                lambda info=info, col=col: widen_column(applier.conn, info, col))
        except (psycopg.errors.DependentObjectsStillExist,
                psycopg.errors.FeatureNotSupported) as exc:  # an object built on the mirror
            session.widen_blocked[key] = (exc.diag.message_detail or exc.diag.message_primary
                                          or str(exc)).strip()
            session.retypes_seen.setdefault(key, position)
            continue
        record_schema_change(applier.conn, session.cfg.source, info.name,
                             lsn_to_str(session.ckpt), change.kind, change.column,
                             f"{change.detail} (no row change streamed since; followed from "
                             f"the source catalog)", "applied")
        log.info("%s: %s (no row change streamed since); applied to mirror and changelog",
                 info.qualified, change.detail)
        lag = contract_lag_warning(contract, change)
        if lag is not None:
            log.warning("%s: %s", info.qualified, lag)
    applier.commit(session.ckpt, session.last_commit_at)
