"""Catalog changes that rewrite the text of a table's rows without sending one of them.

Columns of a user-defined type land as their text form (:mod:`ingestion.catalog`), and some
DDL changes the text every existing row reads as while logical replication sends no row:

* ``ALTER TYPE ... RENAME VALUE 'a' TO 'b'`` of an enum: every ``a`` now reads ``b``, in a plain
  column, an array of the enum, a domain over it, a range of it or a composite holding it;
* ``ALTER TYPE ... ADD ATTRIBUTE`` / ``DROP ATTRIBUTE`` of a composite type a column uses (or
  ``ALTER TABLE`` of a table whose row type a column uses): ``(1,x)`` reads ``(1,x,)``.

Landing remembers, per table, the *forms* of the user types its columns reach (``tidemark.type_
forms``: for an enum its labels by ``pg_enum`` OID, for a composite its attributes' types in
order), read before each copy, and compares them with the source's at every publication sync
(30 s while streaming, and at every start): a label renamed (or gone), or a composite's
attributes changed, has the table copied again by itself (:meth:`ingestion.relations.
RelationTracker.recopy`). What leaves existing rows as they read — ``ADD VALUE``, ``RENAME
ATTRIBUTE``, ``RENAME TO``, ``ALTER DOMAIN``, a new column of a new type — copies nothing.
"""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from ingestion.partitions import per_table_state

TABLES = {"type_forms": per_table_state("forms")}
"""State table: the forms of the user types a landing table's copy was read with."""

Forms = dict[str, dict | list | str]
"""A table's user types (OID as text) → an enum's ``{label OID: label}``, or a composite's
attribute type OIDs in attribute order (as text); and ``generated <column>`` → the expression
of a stored generated column."""

GENERATED = "generated "

# Every type a column reaches: through domains, arrays, composites' attributes, ranges and
# multiranges (a union: each type once per table).
_REACHED = """
    with recursive reached (rel, typ) as (
        select a.attrelid, a.atttypid from pg_attribute a
        where a.attrelid = any(%s) and a.attnum > 0 and not a.attisdropped
      union
        select r.rel, s.typ from reached r join pg_type y on y.oid = r.typ
        cross join lateral (
            select y.typbasetype where y.typtype = 'd'
            union all select y.typelem where y.typelem <> 0 and y.typlen = -1
            union all select a.atttypid from pg_attribute a where y.typtype = 'c'
                and a.attrelid = y.typrelid and a.attnum > 0 and not a.attisdropped
            union all select g.rngsubtype from pg_range g where g.rngtypid = y.oid
            {multirange}) s (typ)
    )
    select r.rel::int, y.oid::int, y.typtype::text,
        case y.typtype when 'e' then (select jsonb_object_agg(e.oid::text, e.enumlabel)
            from pg_enum e where e.enumtypid = y.oid)
        else (select jsonb_agg(a.atttypid::int::text order by a.attnum) from pg_attribute a
            where a.attrelid = y.typrelid and a.attnum > 0 and not a.attisdropped) end
    from reached r join pg_type y on y.oid = r.typ
    where y.typtype = 'e' or (y.typtype = 'c' and y.oid >= 16384)
"""
_MULTIRANGE = ("union all select g.rngtypid from pg_range g where g.rngmultitypid = y.oid"
               " and y.typtype = 'm'")


def source_forms(conn: psycopg.Connection, oids: list[int]) -> dict[int, Forms]:
    """The forms of the user types each table among ``oids`` reaches (a table that reaches
    none maps to ``{}``), read in the connection's transaction."""
    out: dict[int, Forms] = {oid: {} for oid in oids}
    if not oids:
        return out
    multirange = conn.info.server_version >= 140000
    query = _REACHED.replace("{multirange}", _MULTIRANGE if multirange else "")
    for rel, typ, _kind, form in conn.execute(query, (oids,)):
        out[rel][str(typ)] = form if form is not None else []
    for rel, column, expression in conn.execute(
            "select a.attrelid::int, a.attname, pg_get_expr(d.adbin, d.adrelid) from"
            " pg_attribute a join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum"
            " where a.attrelid = any(%s) and a.attgenerated = 's' and not a.attisdropped",
            (oids,)):
        out[rel][f"{GENERATED}{column}"] = expression
    return out


def forms_changed(conn: psycopg.Connection, before: Forms, now: Forms) -> str | None:
    """What changed the text of rows read with ``before``'s types, or None.

    Args:
        conn: a source connection (to name the types).
        before: the forms landing's copy was read with.
        now: the source's.

    Returns:
        A sentence for the pause reason naming the types and changes, or None when existing
        rows read as before (an enum value added, a type a column no longer uses).
    """
    what: dict[str, str] = {}
    for typ, old in before.items():
        new = now.get(typ)
        if new is None:
            if typ.startswith(GENERATED) and conn.info.server_version < 180000:
                # `drop expression` (or the column dropped): before 18 the publication never
                # sent the column, so its stored values reach landing only by a copy
                what[typ] = "its expression dropped, its values never sent"
            continue  # else no longer used: the column's own change came through the stream
        if typ.startswith(GENERATED):
            if new != old:
                what[typ] = f"its expression changed from {old} to {new}"
        elif isinstance(old, dict) and isinstance(new, dict):
            renamed = sorted(f"'{label}' to '{new.get(oid)}'" for oid, label in old.items()
                             if new.get(oid) != label)
            if renamed:
                what[typ] = f"values renamed ({', '.join(renamed)})"
        elif old != new:
            what[typ] = "attributes added or dropped"
    if not what:
        return None
    names = dict(conn.execute("select oid::text, 'type ' || oid::regtype::text from pg_type"
                              " where oid = any(%s::oid[])", ([t for t in what if t.isdigit()],)
                              ).fetchall())
    names.update({t: f"generated column {t[len(GENERATED):]!r}" for t in what
                  if t.startswith(GENERATED)})
    return (f"{'; '.join(f'{names.get(t, t)} had {w}' for t, w in what.items())} on the "
            f"source: the text of its existing rows changed, and PostgreSQL sends no change "
            f"for them")


def load_forms(conn: psycopg.Connection, source: str) -> dict[str, Forms]:
    """The forms landing's copies were read with, by landing table name."""
    return {r[0]: r[1] for r in conn.execute(
        "select table_name, forms from tidemark.type_forms where source = %s", (source,))}


def save_forms(conn: psycopg.Connection, source: str, table: str, forms: Forms) -> None:
    """Remember the forms a landing table's copy was read with (in the caller's transaction)."""
    conn.execute("insert into tidemark.type_forms (source, table_name, forms) values"
                 " (%s, %s, %s) on conflict (source, table_name) do update set"
                 " forms = excluded.forms, updated_at = now()", (source, table, Jsonb(forms)))
