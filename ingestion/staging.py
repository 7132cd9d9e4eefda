"""Names of a snapshot's staging objects, and the table they stand for.

Each source stages into three schemas of its own: ``_tidemark_snap_<source>`` holds the side
tables of each table (``d_<oid>`` dead letters, ``k_<oid>`` their keys, ``x_<oid>`` dropped
duplicates, ``w_<oid>`` the rows' latest event time), ``_tidemark_snapm_<source>`` the staged
mirrors and ``_tidemark_snapc_<source>`` the staged changelogs, each under its landing name
(:func:`staging_for`). PostgreSQL then names their indexes, constraints and row types as it
would in landing, and the final snapshot transaction moves them in as they are
(:func:`ingestion.snapswap.move_in`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from psycopg import sql

from ingestion.names import changelog_table_name
from ingestion.tables import TableInfo


def staging_schema(source: str) -> str:
    """The staging schema of a source's snapshots (the side tables)."""
    return f"_tidemark_snap_{source}"


def staging_schemas(source: str) -> list[str]:
    """Every staging schema of a source: side tables, mirrors, changelogs."""
    return [staging_schema(source), f"_tidemark_snapm_{source}", f"_tidemark_snapc_{source}"]


@dataclass(frozen=True)
class Staging:
    """Names of one table's staging objects.

    Attributes:
        schema: the source's staging schema (the side tables).
        oid: the source table's OID.
        mirror_at: (schema, name) of the staged mirror: its landing name, in a schema of
            staged mirrors, so that PostgreSQL names its indexes as it would in landing and
            the final transaction moves it in as it is (:func:`ingestion.snapswap.move_in`);
            None: ``m_<oid>`` in ``schema``.
        changelog_at: the same for the staged changelog (``c_<oid>`` when None).
    """

    schema: str
    oid: int
    mirror_at: tuple[str, str] | None = None
    changelog_at: tuple[str, str] | None = None

    def at(self, prefix: str) -> tuple[str, str]:
        """(schema, name) of :meth:`ident`."""
        named = {"m": self.mirror_at, "c": self.changelog_at}.get(prefix)
        return named if named is not None else (self.schema, f"{prefix}_{self.oid}")

    def ident(self, prefix: str) -> sql.Identifier:
        """m the staged mirror, c changelog (:attr:`mirror_at`, :attr:`changelog_at`); else
        ``<schema>.<prefix>_<oid>``: d dead letters, k their keys, x dropped duplicates, w the
        rows' latest event time (s: older versions' sequence)."""
        return sql.Identifier(*self.at(prefix))


NAME_BYTES = 63
"""PostgreSQL's identifier length: longer derived names are cut."""
_LONGEST_SUFFIX = len("__commit_lsn__seq_key")  # the changelog's unique constraint


def names_derive_whole(table: str, columns: list[str]) -> bool:
    """Whether every name PostgreSQL derives from ``table`` and its columns (``<table>_pkey``,
    ``<table>_<column>_key``, ``<table>_<column>_not_null``, the changelog's
    ``<table>__commit_lsn__seq_key``) fits whole. A cut name can be the same for two tables
    of one snapshot: staged under their landing names in one schema, the second one's index
    build would then fail (``relation "..._pkey" already exists``)."""
    longest = max([len(c.encode()) for c in columns] + [0])
    return len(table.encode()) + 1 + max(longest + len("_not_null"), _LONGEST_SUFFIX) \
        <= NAME_BYTES


def staging_for(info: TableInfo) -> Staging:
    """The staging objects of a table (:data:`staging_schemas`). A table whose derived names
    would be cut (:func:`names_derive_whole`) stages as ``m_<oid>`` / ``c_<oid>`` instead,
    and is swapped in (:func:`ingestion.snapswap.move_in`)."""
    side, mirrors, changelogs = staging_schemas(info.source)
    changelog = changelog_table_name(info.source, info.name)
    columns = [c.name for c in info.columns]
    if not (names_derive_whole(info.name, columns) and names_derive_whole(changelog, columns)):
        return Staging(side, info.source_oid)
    return Staging(side, info.source_oid, (mirrors, info.name), (changelogs, changelog))


def staged_info(info: TableInfo, stg: Staging) -> TableInfo:
    """``info`` with mirror and changelog pointing at the staging tables."""
    values = {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.init}
    return _StagedInfo(**values, stage=stg)


@dataclass
class _StagedInfo(TableInfo):
    stage: Staging | None = None

    @property
    def mirror(self) -> sql.Identifier:
        assert self.stage is not None
        return self.stage.ident("m")

    @property
    def changelog(self) -> sql.Identifier:
        assert self.stage is not None
        return self.stage.ident("c")
