"""View files: ``views/<name>.sql`` — one SELECT, with settings in a header comment.

File format::

    -- Revenue and order count per store per minute.          (free text: the description)
    -- @keys: store_id, window_start                            (columns to index)
    -- @cluster: live_views                                     (Materialize cluster)
    -- @retention: placed_at 2 days                             (temporal filter, both engines)
    -- @freshness: p95 2s                                       (freshness objective)
    select ...

Settings are comment lines of the form ``-- @name: value`` before the SELECT. Every setting is
optional; unknown settings are refused so typos do not pass silently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from streaming_views.errors import ViewFileError
from streaming_views.objective import Objective, parse_objective

DEFAULT_VIEWS_DIR = Path(__file__).parent / "views"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
SETTING_RE = re.compile(r"^--\s*@(\w+)\s*:\s*(.*?)\s*$")
RETENTION_RE = re.compile(
    r"^(?P<column>[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?)\s+"
    r"(?P<amount>\d+)\s+(?P<unit>second|minute|hour|day)s?$")
KNOWN_SETTINGS = ("keys", "cluster", "retention", "freshness")
DEFAULT_CLUSTER = "quickstart"

# Changes to the compiler change every view's hash, so a new engine version rebuilds views.
ENGINE_VERSION = "27"  # 27 (np40, round 40): a lone one-row UPDATE of aggregated-only columns
#    is applied as one net row without the aggregate (streaming_views.netpair): its log gains
#    the old values' columns __tm_v<k>. Views of 26 are redeployed.
# 26 (lk39, round 39; merged after g39's 25): a view's commit lock
#    is a transaction-level advisory lock and a holder sequence (streaming_views.lockorder),
#    no longer an UPDATE of its row of tidemark.live_changes; seq moves only while someone
#    subscribes (sublog), changed_at is sampled (streaming_views.changes). Views of 25 are
#    redeployed.
#    25 (g39, round 39): a lone one-row INSERT or DELETE (the view's only logged row in
#    the transaction) notes `` name/j! `` and is applied from the apply's NEW (c37's
#    branch); when the row meets at most one row of each other table (a single-table view,
#    or joins on a unique key learnt at deploy and guarded by tidemark.live_problem) its
#    upsert has no aggregate (streaming_views.onegroup).
#    Views of 24 are redeployed.
#    24 (y38, round 38): the commit-time apply runs with jit = off (its
#    disabled seq scans made every commit JIT-compile on PostgreSQL 15-17,
#    streaming_views.apply.APPLY_SETTINGS). Views of 23 are redeployed.
#    23 (v38, round 38): NOT NULL columns of a NULL-extended table share one
#    not-null counter ("the table matched"), and count(*) FILTER (WHERE <such a column> IS NULL)
#    is __count minus it (streaming_views.notnull); the one-row UPDATE log of a timed table
#    reads the clock as a FROM item (no other conjunct on the table) or in one sub-SELECT of the
#    CTE per side (streaming_views.expiry.CLOCK_FROM). Views of 22 are redeployed.
#    22 (c35, round 35): a one-row UPDATE of a table without a filter pushed
#    to its log notes the table in tidemark.pending in the VALUES that log its pair (no PL/pgSQL
#    IF nor set_config after it) and tests v_x.__ch first; the apply's loop over the upsert's
#    rows takes one IF per row. Views of 21 are redeployed.
#    21 (c34, round 34): the state table of a view without GROUP BY (one
#    row, updated by every commit) has fillfactor 10: its page is pruned early, so the apply's
#    lookup of the row walks a short chain of dead versions. Views of 20 are redeployed.
#    20: both of round 33's changes (c33 and j33, each 19 on its branch;
#    19 never landed): a one-row UPDATE's pair SELECT of a table without a pushed filter reads
#    no __ook/__wok (c33); a transaction that changed only the NULL-extended table of a
#    two-table outer join and left its ON columns as they were is applied like an inner join,
#    without the recount (j33, streaming_views.onkept). Views of 18 are redeployed.
#    18: both of round 32's changes (t32 and c32, each 17 on its branch;
#    17 never landed): a temporal bound col AT TIME ZONE '<zone>' (+/- interval) is inverted
#    to a range of an expression index on it, casts between time types to a range of the
#    column, and such a bound is computed in SQL (no PL/pgSQL per row) when it cannot raise
#    (streaming_views.edges; t32); a one-row INSERT or DELETE is logged by one INSERT ...
#    SELECT, its row the marker (no size probe, no row numbering); the apply tells the common
#    case by one array_position() instead of a CASE; a one-row UPDATE of columns the view does
#    not read returns before it reads tidemark.pending (c32): views of 16 are redeployed.
#    16: both of round 31's changes (n31 and c31, each 15 on its branch;
#    15 never landed): sums, counts and bool aggregates of a NOT NULL column keep no not-null
#    counter (streaming_views.notnull), a numeric(p, s) sum keeps NaN in the sum (no counter: a
#    NaN delta recomputes the group), a one-row UPDATE's log compares numeric by value and
#    scale, functions without a backslash pin no standard_conforming_strings (n31); a one-row
#    UPDATE reads its pair of rows, then logs them only when the view can tell them apart (no
#    INSERT for columns it does not read; c31): views of 14 are redeployed.
#    14: the apply of a small delta loops over its upsert's rows (no
#    CTE scan nor aggregate) and tests fewer PL/pgSQL expressions (l30): views of 13 are
#    redeployed. 13: date_trunc(unit, timestamptz) pins TimeZone only,
#    date_trunc(unit, timestamptz, zone) nothing (streaming_views.reads; h30): views of 12 are
#    redeployed. 12: the apply (and the log triggers of a filtered table) pin only
#    search_path, standard_conforming_strings and the settings the view's expressions read
#    (streaming_views.reads; p29): views of 11 are redeployed. 11: a row whose temporal bound
#    cannot be computed counts (the view
#    raises 22008) only when the other conjuncts of WHERE over its table hold for it (t27):
#    views of 10 are rebuilt. 10: live.<name> raises 40001 for a REPEATABLE READ / SERIALIZABLE
#    snapshot older than its deploy, which read the new state empty (q26): views of 9 are
#    rebuilt. 9: a temporal view's window adds the expiry index's range of its
#    invertible bounds, so a recompute reads the rows near the window, not the group's history
#    (u24): views of 8 are rebuilt. 8: the one-row UPDATE's log without a probe, log functions
#    pinning only what they read, the clock read once per log statement (p23); no index on the
#    state's __count, zero groups deleted by row id (c23): views of 7 are rebuilt. 7: fewer
#    statements and expressions per commit (p22). 6: the commit-time apply reads its logs by
#    index, locks base tables before the views, guards temporal bounds (w11, e20, t20)


@dataclass(frozen=True)
class Retention:
    """A Materialize temporal filter: keep rows while ``mz_now() <= column + interval``."""

    column: str
    interval: str


@dataclass(frozen=True)
class ViewFile:
    """One live view as written in its file.

    Attributes:
        name: the view name (file stem); the view is ``live.<name>``.
        path: the file.
        text: the whole file text (header included; positions refer to it).
        keys: columns to index (``@keys``).
        cluster: Materialize cluster (``@cluster``).
        retention: Materialize temporal filter (``@retention``), or None.
        freshness: the declared freshness objective (``@freshness``), or None (the setting's
            default applies).
        description: the free-text header lines.
    """

    name: str
    path: Path
    text: str
    keys: tuple[str, ...] = ()
    cluster: str = DEFAULT_CLUSTER
    retention: Retention | None = None
    description: str = ""
    freshness: Objective | None = None
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def definition_hash(self) -> str:
        """SHA-256 (hex, 16 chars) of the engine version and the file text."""
        digest = hashlib.sha256(f"{ENGINE_VERSION}\n{self.text.strip()}".encode())
        return digest.hexdigest()[:16]


def parse_view_text(name: str, text: str, path: Path | None = None) -> ViewFile:
    """Build a :class:`ViewFile` from a name and SQL text (header settings parsed).

    Raises:
        ViewFileError: bad name or bad setting.
    """
    where = str(path) if path else name
    if not NAME_RE.fullmatch(name):  # fullmatch: `$` alone lets "name\n" through
        raise ViewFileError(
            f"{where}: view name {name!r} must be lower case letters, digits and _ "
            f"(start with a letter, at most 40 characters); rename the file.")
    settings: dict[str, str] = {}
    description: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        match = SETTING_RE.match(line)
        if match is None:
            description.append(line[2:].strip())
            continue
        key, value = match.group(1), match.group(2)
        if key not in KNOWN_SETTINGS:
            raise ViewFileError(
                f"{where}:{lineno}: unknown setting @{key}; known settings: "
                f"{', '.join('@' + k for k in KNOWN_SETTINGS)}.")
        settings[key] = value
    keys = tuple(k.strip() for k in settings.get("keys", "").split(",") if k.strip())
    retention = None
    if "retention" in settings:
        match = RETENTION_RE.match(settings["retention"].lower())
        if match is None:
            raise ViewFileError(
                f"{where}: @retention {settings['retention']!r} must read '<column> <n> "
                f"<second|minute|hour|day>s', e.g. '@retention: placed_at 2 days'.")
        retention = Retention(match["column"], f"{match['amount']} {match['unit']}s")
    freshness = None
    if "freshness" in settings:
        freshness = parse_objective(settings["freshness"], f"{where}: @freshness")
    cluster = settings.get("cluster", DEFAULT_CLUSTER)
    if not NAME_RE.fullmatch(cluster):
        raise ViewFileError(f"{where}: @cluster {cluster!r} is not a plain lower-case name.")
    return ViewFile(name=name, path=path or Path(f"{name}.sql"), text=text, keys=keys,
                    cluster=cluster, retention=retention,
                    description=" ".join(d for d in description if d), settings=settings,
                    freshness=freshness)


def load_views(views_dir: Path | None = None) -> list[ViewFile]:
    """Read every ``*.sql`` file of ``views_dir`` (default: the shipped demo views), by name.

    Raises:
        ViewFileError: the directory is missing or a file is malformed.
    """
    directory = Path(views_dir) if views_dir is not None else DEFAULT_VIEWS_DIR
    if not directory.is_dir():
        raise ViewFileError(f"views directory {directory} does not exist; pass --views-dir.")
    return [parse_view_text(p.stem, _read(p), p) for p in sorted(directory.glob("*.sql"))]


def _read(path: Path) -> str:
    """The text of view file ``path``; a directory or text that is not UTF-8 is refused."""
    if not path.is_file():
        raise ViewFileError(f"{path}: not a file; a view is one <name>.sql file holding its "
                            "SELECT (rename or move this entry).")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start].decode("utf-8", errors="replace")
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        raise ViewFileError(f"{path}:{line}:{column}: the file is not UTF-8 (byte "
                            f"0x{raw[exc.start]:02x}); save it as UTF-8.") from None
