"""A source run by a careful DBA: row-level security, a least-privileged role, column
privileges, settings on the role or database, exhausted server limits. Landing equals the
source, or the table (or source) is refused with what to run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ingestion import catch_up, resync
from ingestion.errors import PermanentSourceError, SetupError, SourceError
from ingestion.names import slot_name
from ingestion.session_settings import replication_connection
from ingestion.source_admin import add_source, remove_source
from ingestion.sources import SourceSpec
from streaming_views.deploy import deploy_embedded
from streaming_views.viewfile import parse_view_text
from tests.ingestion.conftest import (
    Pair,
    assert_changelog_replays,
    assert_mirror_equals,
    drop_slot,
    table_rows,
)
from tests.ingestion.test_cli_roles import cli
from tests.pgversions import WHEEL_MAJOR, session_major
from tests.support import create_database, give_password, start_test_server

# The role's wal_sender_timeout in the two tests below, and how long their landing step is held
# up: three times over it. The stream answers keepalives every 0.5 s meanwhile
# (ingestion.session._KEEPALIVE_S); with '1s' and a 3-4 s step, a CI machine at load ~8 once
# stalled the process for over the second and the source ended the stream (round 40).
SMALL_TIMEOUT = "2s"
SLOW_STEP_S = 6


@pytest.fixture
def reader(pair: Pair) -> Iterator[str]:
    """A login role of this test with REPLICATION, CONNECT and USAGE on public (no SELECT yet);
    yields its name (its URL is :func:`url_of`)."""
    name = f"{pair.source}_dba_reader"
    role = sql.Identifier(name).as_string()
    with psycopg.connect(pair.src, autocommit=True) as conn:
        conn.execute(f"drop role if exists {role}")
        conn.execute(f"create role {role} login replication")
        conn.execute(sql.SQL("grant connect on database {} to {}").format(
            sql.Identifier(conn.info.dbname), sql.Identifier(name)))
        conn.execute(f"grant usage on schema public to {role}")
    give_password(pair.src, name)
    yield name
    drop_slot(pair.src, slot_name(pair.source))
    pair.src_exec(f"drop owned by {role}", f"drop role {role}")


def url_of(pair: Pair, role: str) -> str:
    """The source URL as ``role``."""
    return pair.src.replace("//postgres@", f"//{role}@", 1)


def _objects(url: str) -> tuple[list[str], list[str]]:
    """(publications, replication slots) of the database at ``url``."""
    with psycopg.connect(url) as conn:
        return ([r[0] for r in conn.execute("select pubname from pg_publication order by 1")],
                [r[0] for r in conn.execute("select slot_name from pg_replication_slots where"
                                            " database = current_database() order by 1")])


def test_a_slow_landing_commit_keeps_the_stream_under_a_small_wal_sender_timeout(
        pair: Pair, reader: str) -> None:
    # Before: while the stream waited for a landing commit held up longer than the role's
    # wal_sender_timeout, it answered no keepalive and the source ended the stream ("error with
    # status PGRES_COPY_BOTH and no message from the libpq").
    pair.src_exec("create table t (id int primary key, v int)", "insert into t values (1, 1)",
                  f"grant select on t to {reader}",
                  f"alter role {reader} set wal_sender_timeout = '{SMALL_TIMEOUT}'")
    url = url_of(pair, reader)
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    pair.src_exec(*[f"insert into t select g, g from generate_series({n * 100 + 2},"
                    f" {n * 100 + 101}) g" for n in range(10)])
    locked = threading.Event()

    def hold_mirror() -> None:
        with psycopg.connect(pair.land) as conn:
            conn.execute(sql.SQL("lock table {} in access exclusive mode").format(
                sql.Identifier(pair.source, "t")))
            locked.set()
            time.sleep(SLOW_STEP_S)

    holder = threading.Thread(target=hold_mirror)
    holder.start()
    locked.wait(10)
    try:
        stats = catch_up(url, pair.land, pair.source, setup_dsn=pair.src, timeout_s=60)
    finally:
        holder.join()
    assert stats.changes == 1000
    assert_mirror_equals(pair, "t")


def test_a_long_schema_change_keeps_the_stream_under_a_small_wal_sender_timeout(
        pair: Pair, reader: str) -> None:
    # Before: a landing step on the stream's thread longer than wal_sender_timeout (a column
    # added with a constant default writes one `u` changelog row per existing row: 82 s at
    # 10 M rows) sent no feedback, the source ended the stream, and the reconnect warned of a
    # source server crash. A statement trigger that sleeps SLOW_STEP_S makes the step long here.
    pair.src_exec("create table t (id int primary key, v int)",
                  "insert into t select g, g from generate_series(1, 100) g",
                  f"grant select on t to {reader}",
                  f"alter role {reader} set wal_sender_timeout = '{SMALL_TIMEOUT}'")
    url = url_of(pair, reader)
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute("create function pg_temp_slow() returns trigger language plpgsql as"
                     f" $$ begin perform pg_sleep({SLOW_STEP_S}); return null; end $$")
        conn.execute(sql.SQL("create trigger slow after insert on {} for each statement"
                             " execute function pg_temp_slow()").format(
            sql.Identifier("cdc", f"{pair.source}__t")))
    pair.src_exec("alter table t add column note text default 'n/a'",
                  "insert into t values (101, 101, 'x')")
    try:
        stats = catch_up(url, pair.land, pair.source, setup_dsn=pair.src, timeout_s=60)
    finally:
        with psycopg.connect(pair.land, autocommit=True) as conn:
            conn.execute(sql.SQL("drop trigger slow on {}").format(
                sql.Identifier("cdc", f"{pair.source}__t")))
            conn.execute("drop function pg_temp_slow()")
    assert stats.changes == 1
    assert_mirror_equals(pair, "t")


def test_landing_sessions_as_a_replica_are_refused(pair: Pair) -> None:
    # Before: with session_replication_role = replica on the landing database, changes landed
    # but no trigger fired: live.total said 1 where the mirror had 2 rows, without a word.
    pair.src_exec("create table t (id int primary key)", "insert into t values (1)")
    catch_up(pair.src, pair.land, pair.source)
    deploy_embedded(pair.land, [parse_view_text(
        "total", f"select count(*) as n from {pair.source}.t t")])
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(sql.SQL("alter database {} set session_replication_role = replica").format(
            sql.Identifier(conn.info.dbname)))
    pair.src_exec("insert into t values (2)")
    with pytest.raises(SetupError, match="session_replication_role = replica.*live views.*"
                                         "reset session_replication_role"):
        catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land, autocommit=True) as conn:
        conn.execute(sql.SQL("alter database {} reset session_replication_role").format(
            sql.Identifier(conn.info.dbname)))
    catch_up(pair.src, pair.land, pair.source)
    with psycopg.connect(pair.land) as conn:
        assert conn.execute("select n from live.total").fetchone() == (2,)


def _paused_reason(pair: Pair, table: str) -> str | None:
    with psycopg.connect(pair.land) as conn:
        return conn.execute("select paused_reason from tidemark.replicated_tables where"
                            " source = %s and table_name = %s", (pair.source, table)).fetchone()[0]


def test_row_level_security_pauses_the_table_until_the_role_bypasses_it(
        pair: Pair, reader: str) -> None:
    # Before: the snapshot's COPY ran under the policy and silently copied the 5 visible rows
    # of 10; updates of hidden rows then re-appeared as upserts and deletes were lost, so the
    # mirror never equalled the source.
    pair.src_exec("create table t (id int primary key, tenant text, v int)",
                  "insert into t select g, case when g % 2 = 0 then 'a' else 'b' end, g"
                  " from generate_series(1, 10) g",
                  "alter table t enable row level security",
                  "alter table t force row level security",
                  "create policy only_a on t using (tenant = 'a')",
                  "create table open (id int primary key)", "insert into open values (1)",
                  f"grant select on t, open to {reader}")
    url = url_of(pair, reader)
    with pytest.raises(SourceError, match=f"row-level security.*alter role \"{reader}\" bypassrls"):
        add_source(pair.land, SourceSpec(pair.source, url=url, admin_url=pair.src))
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    reason = _paused_reason(pair, "t")
    assert reason is not None and f'alter role "{reader}" bypassrls;' in reason, reason
    pair.src_exec("update t set v = v + 100 where id < 5", "delete from t where id = 9",
                  "insert into open values (2)")
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    assert_mirror_equals(pair, "open")
    pair.src_exec(f"alter role {reader} bypassrls", "insert into t values (11, 'b', 11)")
    resync(url, pair.land, pair.source, "t")
    pair.src_exec("update t set v = -v where id in (3, 11)")
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    assert _paused_reason(pair, "t") is None
    assert_mirror_equals(pair, "t")
    assert_changelog_replays(pair, "t", ["id"])


def test_a_policy_added_after_the_snapshot_stops_a_resync_instead_of_copying_a_part(
        pair: Pair, reader: str) -> None:
    # row_security = off (as PostgreSQL's docs advise subscribers): a policy that would filter
    # the copy is an error that names the table, never a silent partial copy.
    pair.src_exec("create table t (id int primary key, v int)",
                  "insert into t select g, g from generate_series(1, 6) g",
                  f"grant select on t to {reader}")
    url = url_of(pair, reader)
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    pair.src_exec("alter table t enable row level security",
                  "create policy big on t using (v > 3)", "update t set v = 0 where id = 1")
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    assert_mirror_equals(pair, "t")  # the stream applies no policy
    with pytest.raises(SetupError, match=f"Cannot resync {pair.source}.t: .*row-level security"
                       f".*alter role \"{reader}\" bypassrls;"):
        resync(url, pair.land, pair.source, "t")
    pair.src_exec(f"alter role {reader} bypassrls")
    resync(url, pair.land, pair.source, "t")
    assert_mirror_equals(pair, "t")


ROLE_SETTINGS = {"statement_timeout": "100ms", "lock_timeout": "100ms",
                 "idle_in_transaction_session_timeout": "200ms",
                 "default_transaction_read_only": "on", "search_path": "nowhere, public",
                 "row_security": "on"}


def test_settings_on_the_role_and_database_cut_nothing_short(pair: Pair, reader: str) -> None:
    pair.src_exec("create table big (id int primary key, v text)",
                  "insert into big select g, repeat('x', 50) from generate_series(1, 300000) g",
                  f"grant select on big to {reader}")
    role = sql.Identifier(reader).as_string()
    with psycopg.connect(pair.src, autocommit=True) as conn:
        for name, value in ROLE_SETTINGS.items():
            conn.execute(sql.SQL("alter role {} set {} = {}").format(
                sql.Identifier(reader), sql.Identifier(name), sql.Literal(value)))
        if conn.info.server_version >= 170000:
            conn.execute(f"alter role {role} set transaction_timeout = '300ms'")
    url = url_of(pair, reader)
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    pair.src_exec("update big set v = 'y' where id % 1000 = 0")
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    assert_mirror_equals(pair, "big")


def test_a_column_the_role_may_not_read_is_named_with_its_grant(pair: Pair, reader: str) -> None:
    pair.src_exec("create table people (id int primary key, name text, salary int)",
                  "insert into people values (1, 'a', 10)",
                  f"grant select (id, name) on people to {reader}")
    url = url_of(pair, reader)
    grant = f'grant select ("salary") on "public"."people" to "{reader}";'
    with pytest.raises(SourceError, match="may not read column salary of public.people") as caught:
        add_source(pair.land, SourceSpec(pair.source, url=url, admin_url=pair.src))
    assert grant in str(caught.value)
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src)
    assert grant in (_paused_reason(pair, "people") or "")
    pair.src_exec(grant.replace('("salary")', ""))
    resync(url, pair.land, pair.source, "people")
    assert_mirror_equals(pair, "people")


def test_a_role_that_may_not_publish_is_told_what_the_dba_runs(pair: Pair, reader: str) -> None:
    # Before: "permission denied for database ... grant create on database ... to <reader>",
    # a grant that only leads to "must be owner of table t".
    pair.src_exec("create table t (id int primary key, v int)", "insert into t values (1, 1)",
                  f"grant select on t to {reader}")
    url = url_of(pair, reader)
    with pytest.raises(SetupError) as caught:
        add_source(pair.land, SourceSpec(pair.source, url=url))
    message = str(caught.value)
    assert f"role '{reader}' is not the owner of the tables" in message, message
    assert f'create publication "tidemark_{pair.source}" for table "public"."t"' in message
    assert "grant create on database" not in message
    with pytest.raises(SetupError, match="not the owner of the tables"):
        catch_up(url, pair.land, pair.source, timeout_s=30)
    assert _objects(pair.src) == ([], []), "nothing half-made on the source"


def test_a_publication_the_dba_made_is_used_as_it_is(pair: Pair, reader: str) -> None:
    # Before (PostgreSQL 18): a publication made without publish_generated_columns (what a DBA
    # types) paused the table at its first change: "column 'g' was dropped on the source".
    pair.src_exec("create table t (id int primary key, v int,"
                  " g int generated always as (v * 2) stored)", "insert into t values (1, 1)",
                  f"grant select on t to {reader}",
                  f"create publication tidemark_{pair.source} for table t")
    url = url_of(pair, reader)
    out = cli(pair, "source", "add", pair.source, "--url", url)
    assert out.returncode == 0, out.stderr
    pair.src_exec("create table later (id int primary key)", f"grant select on later to {reader}")
    catch_up(url, pair.land, pair.source)
    pair.src_exec("update t set v = 5", "insert into t values (2, 7)")
    catch_up(url, pair.land, pair.source)
    assert _paused_reason(pair, "t") is None
    assert table_rows(pair.src, "public", "t", ["id", "v"]) == \
        table_rows(pair.land, pair.source, "t", ["id", "v"])
    out = cli(pair, "source", "remove", pair.source)
    out = cli(pair, "source", "add", pair.source, "--url", url)
    assert out.returncode == 0, out.stderr
    assert "to run on the source" in out.stdout, out.stdout
    assert f'alter publication "tidemark_{pair.source}" add table "public"."later";' in out.stdout


def test_no_replication_slot_or_wal_sender_left_is_refused_and_nothing_made(
        tmp_path: Path) -> None:
    # Before: `source add` took a server whose slots were all in use without a word (and made
    # the publication); with every WAL sender in use ingestion stopped with "Retrying will not
    # fix this; fix the cause".
    major = session_major()
    server = start_test_server(tmp_path / "home", major=None if major == WHEEL_MAJOR else major,
                               conf={"max_replication_slots": "2", "max_wal_senders": "2"})
    try:
        src, land = create_database(server, "src"), create_database(server, "land")
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("create table t (id int primary key)")
            for name in ("other1", "other2"):
                conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')",
                             (name,))
        spec = SourceSpec("lim", url=src)
        with pytest.raises(PermanentSourceError,
                           match=r"all 2 replication slots .* \(other1, other2\).*"
                                 r"max_replication_slots"):
            add_source(land, spec)
        with pytest.raises(PermanentSourceError, match="max_replication_slots"):
            catch_up(src, land, "lim", timeout_s=30)
        assert _objects(src) == ([], ["other1", "other2"]), "nothing half-made on the source"

        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("select pg_drop_replication_slot('other2')")
        report = add_source(land, spec)
        assert any("only one replication slot" in w for w in report.warnings), report.warnings
        held = [replication_connection(src) for _ in range(2)]
        try:
            with pytest.raises(PermanentSourceError, match="WAL senders.*max_wal_senders"):
                catch_up(src, land, "lim", timeout_s=30)
        finally:
            for conn in held:
                conn.close()
        catch_up(src, land, "lim", timeout_s=30)
        assert _objects(src) == (["tidemark_lim"], ["other1", "tidemark_lim"])
    finally:
        server.stop()



def test_a_schema_the_role_may_not_use_pauses_its_tables_alone(pair: Pair, reader: str) -> None:
    # Before: `source add` passed (SELECT was granted) and the snapshot then failed the whole
    # source for good: "permission denied for schema sales", with no statement to run.
    pair.src_exec("create schema sales", "create table sales.orders (id int primary key)",
                  "insert into sales.orders values (1)", "create table t (id int primary key)",
                  "insert into t values (1)", f"grant select on t, sales.orders to {reader}")
    url = url_of(pair, reader)
    spec = SourceSpec(pair.source, url=url, admin_url=pair.src, schemas=("public", "sales"))
    grant = f'grant usage on schema "sales" to "{reader}";'
    with pytest.raises(SourceError, match="may not use schema sales") as caught:
        add_source(pair.land, spec)
    assert grant in str(caught.value)
    catch_up(url, pair.land, pair.source, setup_dsn=pair.src, schemas=["public", "sales"])
    assert_mirror_equals(pair, "t")
    assert grant in (_paused_reason(pair, "sales__orders") or "")
    pair.src_exec("insert into sales.orders values (2)", grant)
    resync(url, pair.land, pair.source, "sales__orders")
    with psycopg.connect(pair.land) as conn:
        assert conn.execute(sql.SQL("select count(*) from {}").format(
            sql.Identifier(pair.source, "sales__orders"))).fetchone() == (2,)


def test_remove_drops_the_slot_with_the_stream_role_when_the_admin_role_may_not(
        pair: Pair, reader: str) -> None:
    # README's roles: the tables' owner (--admin-url) creates the publication, tidemark_ingest
    # (REPLICATION) streams. Before, `source remove` dropped the slot with the owner's URL only,
    # which has no REPLICATION: the slot was left behind ("run on the source: select
    # pg_drop_replication_slot(...)"), keeping WAL on the source for nobody.
    owner = f"{pair.source}_app_owner"
    with psycopg.connect(pair.src, autocommit=True) as conn:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("create role {} login").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("grant create on database {} to {}").format(
            sql.Identifier(conn.info.dbname), sql.Identifier(owner)))
        conn.execute(sql.SQL("grant create, usage on schema public to {}").format(
            sql.Identifier(owner)))
    give_password(pair.src, owner)
    owner_url = url_of(pair, owner)
    try:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            conn.execute("create table owned (id int primary key)")
            conn.execute(sql.SQL("grant select on owned to {}").format(sql.Identifier(reader)))
        url = url_of(pair, reader)
        add_source(pair.land, SourceSpec(pair.source, url=url, admin_url=owner_url))
        catch_up(url, pair.land, pair.source, setup_dsn=owner_url)
        slot = slot_name(pair.source)
        assert _objects(pair.src) == ([slot], [slot])
        report = remove_source(pair.land, pair.source)
        assert report.pending == []
        assert report.dropped == [f"replication slot {slot}", f"publication {slot}"]
        assert _objects(pair.src) == ([], [])
    finally:
        pair.src_exec("drop table if exists owned",
                      sql.SQL("drop owned by {}; drop role {}").format(
                          sql.Identifier(owner), sql.Identifier(owner)).as_string(None))
