"""CPU seconds of a PostgreSQL server's processes by what each was doing (its process title).

A bench's whole-server CPU figure says how much, not where: a snapshot's landing COPY, its
index builds (``ALTER TABLE`` adding a key, ``CREATE INDEX``), a contract check (``FETCH``),
``ANALYZE``, the io workers and the walwriter all count alike. :class:`TitleSampler` reads every
server process's user and system CPU and title (``/proc/<pid>/stat`` and ``cmdline``) every
``every_s`` seconds and adds each process's CPU since the last sample to the title it shows
now: ``<database> <activity>`` for a backend (``land_0 COPY``, ``src COPY``), the title as is
for the server's own processes (``io worker 0``, ``walwriter``). A statement that ends between
two samples lends its last moments to the next title, and a backend that exits between two
samples takes them with it: the bench reports that remainder as ``(between samples)``.
Linux only (``/proc``).
"""

from __future__ import annotations

import os
import re
import threading

import psutil

TICKS = os.sysconf("SC_CLK_TCK")
BACKEND = re.compile(r"postgres: (?:\S+) (\S+) \S+\(\d+\) ?(.*)")


def title_key(title: str) -> str:
    """``<database> <activity>`` of a backend's title, the title itself for other processes."""
    if not title:
        return "(forking or exiting)"  # a new backend before its title is set, a zombie
    match = BACKEND.match(title)
    if match is None:
        return title.replace("postgres: ", "", 1).strip()
    database, activity = match.groups()
    return f"{database} {activity.split(' waiting')[0].strip() or 'idle'}"


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (``state`` first)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2:].split()


def _read(pid: int) -> tuple[float, float, str]:
    """(user s, system s, title) of a process."""
    fields = _stat(pid)
    with open(f"/proc/{pid}/cmdline") as f:
        title = f.read().replace("\0", " ").strip()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS, title


class TitleSampler:
    """Samples the postmaster's children between :meth:`start` and :meth:`stop`."""

    def __init__(self, postmaster: psutil.Process, every_s: float = 0.1) -> None:
        self.postmaster = postmaster
        self.every_s = every_s
        self._seen: dict[int, tuple[float, float]] = {}
        self._other: set[int] = set()  # processes that are not the server's
        self._by_title: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _children(self) -> list[int]:
        """The postmaster's children: each new pid's parent is read once (psutil's
        ``children()`` reads every process's stat at every call, ~1 CPU-s of a bench run)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self._other:
                continue
            pid = int(entry)
            if pid not in self._seen:
                try:
                    if int(_stat(pid)[1]) != self.postmaster.pid:
                        self._other.add(pid)
                        continue
                except OSError:
                    continue
            found.append(pid)
        return found

    def _sample(self, count: bool = True) -> None:
        for pid in self._children():
            try:
                user, system, title = _read(pid)
            except OSError:  # exited since the listing
                continue
            was_user, was_system = self._seen.get(pid, (0.0, 0.0))
            self._seen[pid] = (user, system)
            if count:
                spent = self._by_title.setdefault(title_key(title), [0.0, 0.0])
                spent[0] += user - was_user
                spent[1] += system - was_system

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def start(self) -> None:
        """Start sampling: what every process spent before now is not counted."""
        self._seen, self._other, self._by_title = {}, set(), {}
        self._sample(count=False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, list[float]]:
        """Stop; return {title: [user s, system s]}, largest first, titles under 0.01 s left
        out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        spent = sorted(self._by_title.items(), key=lambda kv: -sum(kv[1]))
        return {title: [round(user, 2), round(system, 2)] for title, (user, system) in spent
                if user + system >= 0.01}
