"""Scaffolding contracts from a source catalog (``tidemark contracts init``).

Each table becomes ``<source>/<table>.yml`` with its key, its columns in order, their types and
nullability as the catalog says, and the other fields at permissive defaults for the user to
tighten (allowed values, ranges, patterns, rules, event time, freshness). A column type contracts
have no name for (``timestamp``, ``interval``, ``bytea``, enums...) is declared ``text``, which
checks presence only, and its description names the source type. So is a column whose rows hold
values its contract type refuses (``NaN`` or infinite numbers, infinite or BC dates, NULL array
elements: :attr:`ColumnShape.refused`), so that the scaffolded contract accepts the table's rows.
A keyless table (``REPLICA IDENTITY FULL``, no primary key) gets ``primary_key: []`` and a comment
on its bag semantics: its rows are checked like any other's, its dbt source has no unique test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from contracts.pgtypes import parse_type

_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
_SAME = {"smallint", "integer", "bigint", "numeric", "real", "double precision", "text",
         "boolean", "date", "uuid", "jsonb"}
_ALIASES = {"timestamp with time zone": "timestamptz", "json": "jsonb",
            "character varying": "text", "character": "text", "name": "text", '"char"': "text"}


@dataclass(frozen=True)
class ColumnShape:
    """A source column: name, type as ``format_type`` prints it, and NOT NULL.

    Attributes:
        name: column name.
        type_sql: its type as ``format_type`` prints it.
        not_null: whether it is NOT NULL.
        refused: the kinds of values it holds that its contract type would refuse (e.g.
            ``"NaN or infinite numbers"``); empty when none.
    """

    name: str
    type_sql: str
    not_null: bool
    refused: str = ""


@dataclass(frozen=True)
class TableShape:
    """A source table as contracts see it.

    Attributes:
        qualified: ``schema.table`` on the source.
        name: the landing table name (the contract's file name).
        columns: its columns in order.
        key: primary key (or replica identity index) columns.
    """

    qualified: str
    name: str
    columns: tuple[ColumnShape, ...]
    key: tuple[str, ...]


def contract_type(type_sql: str) -> tuple[str, bool]:
    """The contract type for a source type, and whether it is exact (else ``text``)."""
    text = type_sql.strip().lower()
    if text.endswith("[]"):
        element, exact = contract_type(text[:-2])
        return (element + "[]", True) if exact else ("text", False)
    base = re.sub(r"\(.*\)", "", text).strip()
    if base in _ALIASES:
        return _ALIASES[base], True
    if base == "numeric":
        candidate = text.replace(" ", "")
        try:
            return parse_type(candidate).name, True
        except ValueError:
            return "numeric", True
    if base in _SAME:
        return base, True
    return "text", False


def render(shape: TableShape, source: str) -> str:
    """The YAML text of a scaffolded table contract."""
    columns = {}
    for col in shape.columns:
        ctype, exact = contract_type(col.type_sql)
        refused = f"; its rows hold {col.refused}, which type {ctype} refuses" \
            if col.refused and exact else ""
        if refused:
            ctype, exact = "text", False
        spec: dict = {"type": ctype}
        if not col.not_null and col.name not in shape.key:
            spec["nullable"] = True
        if not exact or ctype.startswith("text") and col.type_sql.lower() != "text":
            spec["description"] = f"source type: {col.type_sql}{refused}" + (
                "" if exact else " (checked as text: present or not)")
        columns[col.name] = spec
    body = {
        "version": 1,
        "description": f"{shape.qualified} of source {source}.",
        "primary_key": list(shape.key),
        "event_time": None,
        "idempotency_key": None,
        "compatibility": "backward",
        "allowed_lateness": "1h",
        "freshness": {"warn_after": "1h", "error_after": "1d"},
        "columns": columns,
    }
    header = (f"# Scaffolded by `tidemark contracts init {source}` from {shape.qualified} on "
              f"{datetime.now(UTC):%Y-%m-%d}.\n"
              "# Types, key and nullability come from the source catalog. Tighten it: add\n"
              "# allowed_values, min/max, pattern and rules where you know them, name the\n"
              "# event_time column, set freshness; bump `version` on every change. A running\n"
              "# ingestion picks changed contracts up within seconds.\n")
    text = yaml.safe_dump(body, sort_keys=False, width=100, allow_unicode=True)
    if not shape.key:
        text = text.replace("\nprimary_key: []\n", "\nprimary_key: []\n" + KEYLESS_NOTE, 1)
    return header + text


KEYLESS_NOTE = (
    "# No key: the source table has no primary key (REPLICA IDENTITY FULL), so it lands as a\n"
    "# bag (equal rows kept apart; a delete or an update removes one equal row). Its rows are\n"
    "# checked like any other's, nothing checks they are unique. Once the source table has a\n"
    "# primary key (and REPLICA IDENTITY DEFAULT), name its columns here, bump `version`.\n")
"""The comment a keyless table's scaffolded contract carries under ``primary_key: []``."""


def _declared_key(path: Path) -> list[str] | None:
    """The ``primary_key`` list of an existing contract file, or None if it has none."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    key = data.get("primary_key") if isinstance(data, dict) else None
    return [str(col) for col in key] if isinstance(key, list) else None


def _kept(path: Path, shape: TableShape) -> str:
    """Why an existing contract file is kept, and what to change in it when its key is no
    longer the source table's (a keyless table that gained a primary key, say)."""
    why = f"{path} exists (--force overwrites it)"
    declared = _declared_key(path)
    if declared is None or declared == list(shape.key):
        return why
    now = f"primary key ({', '.join(shape.key)})" if shape.key else "no key (keyless)"
    identity = (f" (and, if {shape.qualified} still has REPLICA IDENTITY FULL, alter it to "
                "DEFAULT on the source: under FULL the landing mirror stays keyless)"
                ) if shape.key else ""
    return (f"{why}; the source table now has {now} but the contract says primary_key: "
            f"[{', '.join(declared)}]: set primary_key: [{', '.join(shape.key)}] in it and bump "
            f"its version{identity}, then run python dbt_project/scripts/generate_sources.py "
            f"--source {path.parent.name}")


def write_contracts(root: Path, source: str, shapes: list[TableShape], overwrite: bool = False
                    ) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write ``<root>/<source>/<table>.yml`` for each shape.

    Returns:
        (files written, (table, why it was skipped) pairs).
    """
    folder = Path(root) / source
    written: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for shape in shapes:
        if not _NAME_RE.fullmatch(shape.name):
            skipped.append((shape.qualified, f"its name {shape.name!r} cannot be a contract file "
                            "name (lower-case letters, digits, _); it lands without a contract"))
            continue
        path = folder / f"{shape.name}.yml"
        if path.exists() and not overwrite:
            skipped.append((shape.qualified, _kept(path, shape)))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(render(shape, source), encoding="utf-8")
        written.append(path)
    return written, skipped
