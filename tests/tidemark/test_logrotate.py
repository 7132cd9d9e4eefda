"""Logs of a stack left running for weeks stay bounded (round-24 scale review: ~45 MB/day, no
rotation): every ``*.log`` of ``$TIDEMARK_HOME/logs`` is rotated by copy and truncate while its
writer keeps appending — PostgreSQL through ``pg_ctl -l``, and a supervised child."""

from __future__ import annotations

import sys
import time

import psycopg

from tests.support import create_database
from tidemark.stack.embedded import EmbeddedServer
from tidemark.stack.logrotate import rotate_logs
from tidemark.stack.supervisor import Supervisor, wait_for

WRITER = ("import sys, time\n"
          "for i in range(100000):\n"
          "    print(f'line {i:06d} ' + 'x' * 90, flush=True)\n"
          "    time.sleep(0.0005)\n")


def test_a_child_keeps_writing_into_a_rotated_log_and_the_logs_stay_bounded(tmp_path) -> None:
    supervisor = Supervisor(env={})
    log = tmp_path / "logs" / "child.log"
    child = supervisor.start("child", [sys.executable, "-c", WRITER], log)
    try:
        for _ in range(12):
            wait_for(lambda: log.stat().st_size > 20_000, 20, 0.01)
            assert rotate_logs(log.parent, max_bytes=20_000, keep=2) == [log]
        assert wait_for(lambda: log.stat().st_size > 200, 20, 0.01)
    finally:
        supervisor.stop_all(grace_s=5)
    assert child.process is not None
    assert sorted(p.name for p in log.parent.iterdir()) == ["child.log", "child.log.1",
                                                             "child.log.2"]
    for path in log.parent.iterdir():
        data = path.read_bytes()
        assert b"\0" not in data  # an O_APPEND writer: no hole where the old content was
        assert len(data) < 200_000
        first = data.split(b"\n", 1)[0]
        assert first.startswith(b"line ") or first == b"", (path, first[:40])
    # the newest file carries on where the rotated one stopped
    last_rotated = int((log.parent / "child.log.1").read_bytes().splitlines()[-1].split()[1])
    first_now = int(log.read_bytes().splitlines()[0].split()[1])
    assert 0 < first_now - last_rotated <= 50


def test_the_embedded_servers_log_is_rotated_while_it_runs(pg: EmbeddedServer) -> None:
    url = create_database(pg, "logrotate")
    log = pg.log_file
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("do $$ begin raise warning 'before rotation'; end $$")
        assert wait_for(lambda: b"before rotation" in log.read_bytes(), 10, 0.05)
        rotated = rotate_logs(log.parent, max_bytes=0, keep=1)
        assert log in rotated
        assert log.stat().st_size == 0
        conn.execute("do $$ begin raise warning 'after rotation'; end $$")
        assert wait_for(lambda: b"after rotation" in log.read_bytes(), 10, 0.05)
    time.sleep(0.2)
    data = log.read_bytes()
    assert b"\0" not in data and b"before rotation" not in data
    assert b"before rotation" in log.with_name(log.name + ".1").read_bytes()
