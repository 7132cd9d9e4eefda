"""A TCP proxy for tests of the network between Tidemark and its databases.

:class:`SilentProxy` forwards connections to a server; :meth:`SilentProxy.silence` makes the
connections open now (all, or only replication ones, or only others) stop forwarding in both
directions while their sockets stay open: what a NAT or firewall that forgot an idle
connection, or a pulled cable, looks like to both ends (no FIN, no RST). Connections opened
later are forwarded again (a new NAT mapping).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

_REPLICATION = b"replication\x00database\x00"


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
