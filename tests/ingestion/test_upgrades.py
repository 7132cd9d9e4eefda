"""The source server upgraded in place with ``pg_upgrade`` (same host and port): from 17 on the
logical slots are carried over and ingestion streams on; before 17 the slot is gone, and
ingestion says so and names the resync (never streams on with a hole)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from ingestion import catch_up, resync
from ingestion.errors import SlotMissingError
from ingestion.names import slot_name
from tests.ingestion.conftest import Pair, assert_mirror_equals, changelog
from tests.pgversions import WHEEL_MAJOR, require
from tests.support import TEST_CONF, create_database, start_test_server
from tidemark.settings import ADMIN_USER, Settings
from tidemark.stack.embedded import SYSTEM_USER, EmbeddedServer, server_binary, server_env

_TRUST = "local all all trust\n"


def _upgrade(old: EmbeddedServer, old_major: int, work: Path) -> EmbeddedServer:
    """``pg_upgrade`` the stopped ``old`` to the wheel's PostgreSQL in a new data directory
    that then takes the old one's place: the same home, port and admin password."""
    new_bin = server_binary("pg_upgrade").parent
    old_bin = old.bin_dir or new_bin
    user = SYSTEM_USER if os.geteuid() == 0 else None
    work.mkdir()
    new_data = work / "pgdata"
    if user is not None:
        shutil.chown(work, user)
    env = server_env()
    checksums = [] if old_major >= 18 else ["--no-data-checksums"]
    subprocess.run([str(new_bin / "initdb"), "-D", str(new_data), "-U", ADMIN_USER,
                    "--auth=trust", "--encoding=UTF8", "--locale=C", *checksums],
                   check=True, capture_output=True, user=user, env=env)
    (new_data / "postgresql.auto.conf").write_text("wal_level = logical\n"
                                                   "max_replication_slots = 32\n")
    (old.pgdata / "pg_hba.conf").write_text(_TRUST)
    done = subprocess.run([str(new_bin / "pg_upgrade"), "-b", str(old_bin), "-B", str(new_bin),
                           "-d", str(old.pgdata), "-D", str(new_data), "-U", ADMIN_USER,
                           "-p", "50432", "-P", "50433"],
                          capture_output=True, text=True, user=user, env=env, cwd=work)
    assert done.returncode == 0, done.stdout[-3000:]
    shutil.move(str(old.pgdata), str(work / "old-pgdata"))
    shutil.move(str(new_data), str(old.pgdata))
    new = EmbeddedServer(Settings(home=old.settings.home, port=old.port, source_url=None,
                                  landing_url=None), extra_conf=TEST_CONF)
    new.start()
    return new


@pytest.mark.parametrize("old_major", [15, WHEEL_MAJOR])
def test_source_upgraded_with_pg_upgrade(pg, tmp_path: Path, old_major: int) -> None:
    """16 -> 17 and 17 -> 17 in the brief; here 15 (Debian's, which has pg_controldata for
    pg_upgrade) -> 18 and 18 -> 18 (the wheel)."""
    require(old_major)
    server = start_test_server(tmp_path / "srchome",
                               major=None if old_major == WHEEL_MAJOR else old_major)
    try:
        pair = Pair(f"up{old_major}", create_database(server, "src"),
                    create_database(pg, f"land_upgrade{old_major}"))
        pair.src_exec("create table r (id int primary key, v text)",
                      "insert into r select g, 'v' || g from generate_series(1, 10) g")
        catch_up(pair.src, pair.land, pair.source)
        pair.src_exec("update r set v = 'before' where id < 4")
        catch_up(pair.src, pair.land, pair.source)
        with psycopg.connect(pair.src) as conn:
            before = conn.execute("select system_identifier from pg_control_system()").fetchone()
        server.stop()
        server = _upgrade(server, old_major, tmp_path / "upgrade")
        with psycopg.connect(pair.src) as conn:
            after = conn.execute("select system_identifier from pg_control_system()").fetchone()
        assert before != after  # a new cluster: pg_upgrade does not carry the identifier
        with psycopg.connect(pair.src) as conn:
            slots = [r[0] for r in conn.execute("select slot_name from pg_replication_slots")]
        pair.src_exec("insert into r values (11, 'after')", "delete from r where id = 5")
        if old_major >= 17:
            assert slots == [slot_name(pair.source)]
            catch_up(pair.src, pair.land, pair.source)
        else:
            assert slots == []
            with pytest.raises(SlotMissingError, match="system identifier changed.*pg_upgrade"
                               " before PostgreSQL 17.*resync --all"):
                catch_up(pair.src, pair.land, pair.source)
            resync(pair.src, pair.land, pair.source)
        pair.src_exec("update r set v = 'later' where id > 8")
        catch_up(pair.src, pair.land, pair.source)
        assert_mirror_equals(pair, "r")
        rows = changelog(pair.land, pair.source, "r", "_commit_lsn, _seq")
        assert len(rows) == len(set(rows)), "a change landed twice"
    finally:
        server.stop()
