"""The session settings every Tidemark connection starts with (libpq startup ``options``).

Values must print in forms any PostgreSQL reads back exactly, and Tidemark's own long
statements and idle snapshot transactions must not be cut short, whatever a server's
``ALTER DATABASE/ROLE ... SET`` or a user's environment says. :func:`pinned_dsn` adds them to
every source URL (the walsender's too) and to a landing URL that names its own ``options``;
:mod:`tidemark.session_env` puts them in ``PGOPTIONS`` for every other connection of the
``tidemark`` command and the Dagster code location. Settings newer than PostgreSQL 10 are SET
once connected instead (:func:`pin_later_settings`, :func:`replication_connection`), and a
setting only a superuser may change, ``session_replication_role``, is checked on landing
(:func:`check_landing_triggers`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg2
import psycopg2.extras
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingestion.errors import SetupError

SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
    "lc_monetary": "C",
    "default_transaction_isolation": "read committed",
    "default_transaction_read_only": "off",
    "statement_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "lock_timeout": "0",
    "row_security": "off",
}
"""Every setting exists on PostgreSQL 10 and later (an unknown one would refuse the connection)."""

LATER_SETTINGS: dict[str, tuple[int, str]] = {
    "idle_session_timeout": (140000, "0"),
    "transaction_timeout": (170000, "0"),
}
"""Settings newer than PostgreSQL 10, by the server version that has them: an unknown name in
the startup options would refuse the connection, so :func:`pin_later_settings` SETs them once
connected. A DBA's ``transaction_timeout`` (17+) on the role or database would end a snapshot's
copy transaction; an ``idle_session_timeout`` (14+) the catalog connection of a streaming
session."""


def _later_statements(version: int) -> list[str]:
    return [f"set {name} = {value}" for name, (since, value) in LATER_SETTINGS.items()
            if version >= since]


def pin_later_settings(conn: psycopg.Connection) -> psycopg.Connection:
    """SET :data:`LATER_SETTINGS` the server has on a fresh connection (outside a transaction).

    Args:
        conn: a psycopg 3 connection, just opened (autocommit or idle).

    Returns:
        ``conn``.
    """
    for statement in _later_statements(conn.info.server_version):
        conn.execute(statement)
    if not conn.autocommit:
        conn.commit()
    return conn


def replication_connection(dsn: str, **options: str) -> Any:
    """A psycopg2 ``LogicalReplicationConnection`` to ``dsn`` (plus connection ``options``, e.g.
    an ``application_name``) with :data:`LATER_SETTINGS` (a logical walsender takes SQL too):
    the one that exports a snapshot keeps a transaction open until the copy is done."""
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection,
                            **options)
    statements = _later_statements(conn.server_version)
    if statements:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    return conn


KEEPALIVES: dict[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}
"""libpq's TCP settings of a streaming session's long-lived connections, unless its URL names
its own: a peer that vanished without a FIN or RST (a cable pulled, a NAT or firewall that
dropped the connection, a failover's old address) ends the connection within about a minute —
keepalive probes after 30 s idle, sent data unacknowledged for 60 s — where the system's
defaults wait two hours, or 15 minutes of retransmissions, while the session hangs. A Unix
socket ignores them. What goes silent while TCP still answers (a proxy) is noticed on the
stream by :mod:`ingestion.silence`."""


def keepalive_options(dsn: str) -> dict[str, str]:
    """:data:`KEEPALIVES` that ``dsn`` does not set itself, as keyword arguments of a connect.

    Args:
        dsn: a libpq URL or ``key=value`` connection string.

    Returns:
        The settings to add.
    """
    own = conninfo_to_dict(dsn)
    return {name: value for name, value in KEEPALIVES.items() if name not in own}


def session_options() -> str:
    """:data:`SESSION_SETTINGS` as a libpq ``options`` value (spaces escaped)."""
    return " ".join(f"-c {name}={value.replace(' ', chr(92) + ' ')}"
                    for name, value in SESSION_SETTINGS.items())


def pinned_dsn(dsn: str) -> str:
    """``dsn`` with :data:`SESSION_SETTINGS` as its startup options, after its own.

    ``PGOPTIONS`` alone does not reach a connection whose URL names its own ``options`` (libpq
    then ignores the variable), nor one made through the Python API by a caller that did not pin
    its environment. The user's own options stay (a ``search_path``, an ``application_name``);
    the pinned settings come after them, so they win. A URL stays a URL (other code reads its
    parts), a ``key=value`` string stays one. Idempotent.

    Args:
        dsn: a libpq URL or ``key=value`` connection string.

    Returns:
        The connection string with the pinned settings.
    """
    own = conninfo_to_dict(dsn).get("options") or ""
    pinned = session_options()
    if pinned in own:
        return dsn
    options = f"{own} {pinned}".strip()
    if "://" not in dsn:
        return make_conninfo(dsn, options=options)
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "options"]
    query.append(("options", options))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def check_landing_triggers(conn: psycopg.Connection) -> None:
    """Refuse a landing session in which triggers do not fire.

    ``session_replication_role = replica`` (a superuser's ``ALTER ROLE/DATABASE ... SET`` on
    landing; only a superuser may change it, so it cannot be pinned at startup) silences the
    statement triggers that keep the embedded live views equal to their queries: the views would
    stop following the tables without a word.

    Raises:
        SetupError: the session runs as a replica.
    """
    if conn.execute("select current_setting('session_replication_role')").fetchone()[0] \
            != "replica":
        return
    role = sql.Identifier(conn.info.user).as_string(conn)
    database = sql.Identifier(conn.info.dbname).as_string(conn)
    raise SetupError(
        f"Landing sessions of role {conn.info.user!r} run with session_replication_role = "
        f"replica (set on the role or database), so no trigger fires and the live views would "
        f"silently stop following the tables. As a superuser on landing run `alter role {role} "
        f"reset session_replication_role;` or `alter database {database} reset "
        f"session_replication_role;` (whichever set it), then start ingestion again.")


def check_landing_pooling(conn: psycopg.Connection, dsn: str) -> None:
    """Refuse a landing URL served by a pooler in transaction (or statement) pooling mode.

    A streaming session holds landing's advisory lock of its source and its session settings
    for its whole life; a pooler that hands the server connection to another client after each
    transaction (pgbouncer's ``pool_mode = transaction``) keeps neither: two ingestions could
    apply the same source at once, and prepared statements fail later. Such a pooler serves a
    second connection with the server process the first one just released (pgbouncer reuses the
    last one used), where two sessions of a server, or of a pool in session mode, always have
    two processes.

    Args:
        conn: the session's landing connection (not autocommit, no transaction open).
        dsn: the landing URL, for a second connection.

    Raises:
        SetupError: both connections were served by the same server process.
    """
    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    conn.commit()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as other:
        if other.execute("select pg_backend_pid()").fetchone()[0] != pid:
            return
    raise SetupError(
        f"The landing URL goes through a connection pooler in transaction pooling mode (two "
        f"connections were served by one server process, {pid}): a streaming session holds "
        f"landing's lock of its source and its session settings for its whole life, which such "
        f"a pool does not keep. Point TIDEMARK_LANDING_URL at the PostgreSQL server itself, or "
        f"at a pool with pool_mode = session (README, \"The network between Tidemark and its "
        f"databases\").")
