"""Passwords of the embedded server's roles, kept in a pgpass file only its owner can read.

The embedded server authenticates every TCP connection with ``scram-sha-256`` (no ``trust``:
any local user could otherwise be its superuser). Each Tidemark home has one password per role
(the admin ``postgres``, ``tidemark_app``, ``tidemark_dbt``, ``tidemark_ingest``,
``tidemark_reader``), generated
on first use and kept in ``$TIDEMARK_HOME/pgpass`` (mode 0600, libpq's pgpass format). Every
embedded URL names that file (``passfile=...``), so psycopg 3, psycopg2, ``psql`` and, through
``PGPASSFILE``, dbt read the password themselves: it is never in a URL, an argument, a log or
any output. The server only ever receives SCRAM verifiers (:func:`scram_verifier`), never a
password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from psycopg import sql

from tidemark.settings import (
    ADMIN_USER,
    APP_ROLE,
    DBT_ROLE,
    INGEST_ROLE,
    PASSFILE,
    READER_ROLE,
)

ROLES = (ADMIN_USER, APP_ROLE, DBT_ROLE, INGEST_ROLE, READER_ROLE)
"""The roles of the embedded server that log in with a password of :func:`ensure_passfile`."""

HOST = "127.0.0.1"
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


def passfile_path(home: Path) -> Path:
    """The pgpass file of the Tidemark home ``home``."""
    return home / PASSFILE


def read_passwords(passfile: Path) -> dict[str, str]:
    """The passwords of :data:`ROLES` in ``passfile`` (a role without a line is left out).

    Args:
        passfile: a pgpass file written by :func:`ensure_passfile`.

    Returns:
        Role name to password; empty when the file does not exist.
    """
    try:
        text = passfile.read_text()
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 5 and fields[0] == HOST and fields[3] in ROLES:
            found.setdefault(fields[3], fields[4])
    return found


def ensure_passfile(home: Path) -> tuple[dict[str, str], set[str]]:
    """Read the home's passwords, generating those missing, and keep the file at mode 0600.

    A password is 32 random URL-safe characters (about 190 bits): nothing libpq's pgpass
    format or SASLprep would alter. The file is written whole and renamed into place, created
    0600 from the start (never readable by anyone else, not even for a moment).

    Args:
        home: the Tidemark home (created if missing).

    Returns:
        (role name to password for every role of :data:`ROLES`, the roles generated now).
    """
    path = passfile_path(home)
    passwords = read_passwords(path)
    new = {role for role in ROLES if role not in passwords}
    if path.exists() and (path.stat().st_mode & 0o077 or path.stat().st_uid != os.geteuid()):
        new = set(ROLES)  # others could read it: they may know these, so all are replaced
        passwords = {}
    if not new:
        return passwords, new
    passwords.update({role: secrets.token_urlsafe(24) for role in new})
    home.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{HOST}:*:*:{role}:{passwords[role]}\n" for role in ROLES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write("# Written by Tidemark: passwords of the embedded server's roles.\n"
                      + lines)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return passwords, new


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802, 7677).

    ``ALTER ROLE ... PASSWORD '<verifier>'`` stores it as it is, so the password itself never
    reaches the server, its statement log or ``pg_stat_statements``.

    Args:
        password: an ASCII password (no SASLprep needed).
        salt: 16 random bytes by default.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return (f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}"
            f"${b64(stored_key)}:{b64(server_key)}")


def password_statement(role: str, password: str) -> sql.Composed:
    """``ALTER ROLE`` giving ``role`` the SCRAM verifier of ``password`` (never the password)."""
    return sql.SQL("alter role {} password {}").format(sql.Identifier(role),
                                                      sql.Literal(scram_verifier(password)))


def role_passwords(passfile: str | None) -> Mapping[str, str]:
    """The passwords of the pgpass file an embedded URL names (``passfile=``), else none."""
    return read_passwords(Path(passfile)) if passfile else {}
