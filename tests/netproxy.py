"""A TCP proxy for tests of the network between Tidemark and its databases.

:class:`SilentProxy` forwards connections to a server; :meth:`SilentProxy.silence` makes the
connections open now (all, or only replication ones, or only others) stop forwarding in both
directions while their sockets stay open: what a NAT or firewall that forgot an idle
connection, or a pulled cable, looks like to both ends (no FIN, no RST). Connections opened
later are forwarded again (a new NAT mapping).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

_REPLICATION = b"replication\x00database\x00"

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
needs_pgbouncer = pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed "
                                     "(apt-get install pgbouncer; .ci/run installs it)")


class _Link:
    """One proxied connection: client socket, server socket, whether it is a walsender's."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.head = b""
        self.silent = False

    @property
    def replication(self) -> bool:
        return _REPLICATION in self.head

    def pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and len(self.head) < 4096:
                    self.head += data
                if not self.silent:  # silent: read and dropped, as a black hole does
                    dst.sendall(data)
        except OSError:
            pass
        if not self.silent:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class SilentProxy:
    """Forwards 127.0.0.1:<port> to ``host:port`` (see the module docstring)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links: list[_Link] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def before(cls, url: str) -> tuple[SilentProxy, str]:
        """A proxy to the server of ``url``, and ``url`` through it."""
        parts = urlsplit(url)
        proxy = cls(parts.hostname or "127.0.0.1", parts.port or 5432)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{proxy.port}"
        netloc[-1] = host
        return proxy, urlunsplit(parts._replace(netloc="@".join(netloc)))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            link = _Link(client, server)
            with self.lock:
                self.links.append(link)
            threading.Thread(target=link.pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=link.pump, args=(server, client, False), daemon=True).start()

    def silence(self, replication: bool | None = None) -> int:
        """Stop forwarding on the connections open now (only walsender ones if
        ``replication``, only the others if False); returns how many."""
        with self.lock:
            chosen = [link for link in self.links if not link.silent and (
                replication is None or link.replication == replication)]
            for link in chosen:
                link.silent = True
        return len(chosen)

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self.listener.close()
        with self.lock:
            for link in self.links:
                for sock in (link.client, link.server):
                    with contextlib.suppress(OSError):
                        sock.close()


class Pgbouncer:
    """A pgbouncer (``pool_mode`` as given) in front of the server of ``url``, run from its own
    configuration in a temporary directory (as ``nobody`` when the tests run as root)."""

    def __init__(self, url: str, pool_mode: str, workdir: str) -> None:
        import subprocess
        import time

        from psycopg.conninfo import conninfo_to_dict

        binary = PGBOUNCER or "pgbouncer"
        params = conninfo_to_dict(url)
        password = _pgpass_password(params)
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        listener.close()
        os.makedirs(workdir, exist_ok=True)
        os.chmod(workdir, 0o755)
        ini = os.path.join(workdir, "pgbouncer.ini")
        users = os.path.join(workdir, "users.txt")
        with open(users, "w") as out:
            out.write(f'"{params.get("user", "postgres")}" "{password}"\n')
        with open(ini, "w") as out:
            out.write(f"[databases]\n* = host={params.get('host', '127.0.0.1')} "
                      f"port={params.get('port', '5432')}\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
                      f"listen_port = {self.port}\nunix_socket_dir =\nauth_type = plain\n"
                      f"auth_file = {users}\npool_mode = {pool_mode}\n"
                      "ignore_startup_parameters = extra_float_digits,options\n")
        for path in (ini, users):
            os.chmod(path, 0o644)
        command = [binary, ini] + (["-u", "nobody"] if os.geteuid() == 0 else [])
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        self.password = password

    def url(self, url: str) -> str:
        """``url`` through this pgbouncer (its password in the URL, TLS off)."""
        from urllib.parse import quote

        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(url)
        return (f"postgresql://{quote(params.get('user', 'postgres'), safe='')}:"
                f"{quote(self.password, safe='')}@127.0.0.1:{self.port}/"
                f"{quote(params['dbname'], safe='')}?sslmode=disable")

    def stop(self) -> None:
        """Stop it (by its own pid)."""
        self.process.terminate()
        self.process.wait(10)


def _pgpass_password(params: dict) -> str:
    """The password of ``params`` (given, or from its ``passfile``: the embedded server's)."""
    if params.get("password"):
        return params["password"]
    with open(params["passfile"]) as passfile:
        for line in passfile:
            fields = line.rstrip("\n").split(":")
            if len(fields) == 5 and fields[3] in ("*", params.get("user", "postgres")):
                return fields[4]
    raise LookupError("no password for the pgbouncer test")
