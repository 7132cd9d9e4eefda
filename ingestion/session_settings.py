"""The session settings every Tidemark connection starts with (libpq startup ``options``).

Values must print in forms any PostgreSQL reads back exactly, and Tidemark's own long
statements and idle snapshot transactions must not be cut short, whatever a server's
``ALTER DATABASE/ROLE ... SET`` or a user's environment says. :mod:`ingestion.snapshot` adds
them to every source URL (the walsender's too); :mod:`tidemark.session_env` puts them in
``PGOPTIONS`` for every connection of the ``tidemark`` command and the Dagster code location.
"""

from __future__ import annotations

SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "default_transaction_isolation": "read committed",
    "default_transaction_read_only": "off",
    "statement_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
}
"""Every setting exists on PostgreSQL 10 and later (an unknown one would refuse the connection)."""


def session_options() -> str:
    """:data:`SESSION_SETTINGS` as a libpq ``options`` value (spaces escaped)."""
    return " ".join(f"-c {name}={value.replace(' ', chr(92) + ' ')}"
                    for name, value in SESSION_SETTINGS.items())
