# ruff: noqa: S608 -- generated SQL: the view's SELECT is the engine's own, identifiers quoted.
"""The subscription log: the changed rows of a live view, taken from its maintenance.

While someone subscribes to ``live.<name>`` (a row in ``tidemark.live_subscriptions``), the
view's state table carries three statement-level triggers (INSERT, UPDATE, DELETE) with
transition tables. Every statement of the view's commit-time ``apply`` (or of a rebuild) fires
them; they turn the old and new state rows into rows of ``live.<name>`` with the view's own
SELECT (over the transition tables instead of the state table) and append
``(name, seq, diff, row)`` to ``tidemark.live_sub_log``: ``seq`` is the view's counter in
``tidemark.live_changes``, which the first of those statements in a transaction advances
(once per transaction: the transaction-local ``tidemark.advanced`` lists the views it
advanced) — under the view's lock, which every writer of the state holds
(:mod:`streaming_views.lockorder`), and the row's own lock — so ``seq`` numbers the view's
subscribed commits in commit order, without gaps among the committed ones (a rollback takes its
advance back), and a reader that sees ``seq = N`` committed sees every row logged up to ``N``.
With nobody subscribed no commit moves ``seq`` (engine 26; before, every commit did): a
subscriber's snapshot is the view at its ``seq`` (:func:`register` waits for the applies in
flight), and every commit after it advances it.
``row`` is the row's text form (the view's composite type), read back with
``row::live.<name>`` under the pinned settings.

With no subscriber the triggers are dropped: maintenance does no extra work. Subscribers
acknowledge what they read; rows every subscriber has read are deleted.

**Redeploys.** A redeploy (a changed file, a repair, or the rebuild of a reader of a redeployed
view) builds a new state table. While someone subscribes, the deploy keeps the view's rows (text
form) before it drops the old objects (:func:`before_redeploy`) and, once the new
``live.<name>`` is in place, in the same transaction (:func:`after_redeploy`): when the columns
(names and types) are the same, it logs the difference old -> new at the redeploy's ``seq`` and
installs the triggers on the new state, so the subscription goes on with exactly the rows that
changed; otherwise it ends the subscriptions with a message (``ended``) telling the client to
subscribe again (a new snapshot), as Materialize ends a SUBSCRIBE whose view is replaced.

**UNLOGGED, on purpose.** The log is written by every maintained commit while someone
subscribes, and is only ever read by subscribers that are connected: a subscription lives in
its session (its ``pid``; there is no resume-from-``seq``), and a crash of the server ends every
session. So WAL for the log would keep rows nobody can resume from. After a crash the log is
empty and the subscriber's connection is gone: :mod:`streaming_views.subscribe` ends with
:class:`~streaming_views.subscribe.SubscriptionEnded` telling the client to subscribe again,
which starts with a snapshot — the gap is never silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from streaming_views.catalog import CatalogEntry
from streaming_views.compiler import LIVE_SCHEMA, STATE_SCHEMA, CompiledView, compile_view
from streaming_views.errors import DeployError
from streaming_views.guard import DEPLOYING
from streaming_views.session import pin, set_clauses
from streaming_views.viewfile import parse_view_text

LOG = "tidemark.live_sub_log"
SUBSCRIPTIONS = "tidemark.live_subscriptions"
LOCK_KEY = 7_411_301  # advisory lock serialising trigger set-up and tear-down
DDL = [
    f"""create table if not exists {SUBSCRIPTIONS} (
        id bigserial primary key, name text not null, pid int not null,
        seq bigint not null, since timestamptz not null default now())""",
    f"create unlogged table if not exists {LOG} (name text not null, seq bigint not null, "
    "diff bigint not null, row text not null)",
    f"create index if not exists live_sub_log_name_seq on {LOG} (name, seq)",
    f"alter table {SUBSCRIPTIONS} add column if not exists ended text",
]
EVENTS = {"ins": ("INSERT", "NEW TABLE AS __tm_new", [("__tm_new", "1")]),
          "upd": ("UPDATE", "OLD TABLE AS __tm_old NEW TABLE AS __tm_new",
                  [("__tm_new", "1"), ("__tm_old", "-1")]),
          "del": ("DELETE", "OLD TABLE AS __tm_old", [("__tm_old", "-1")])}


# The first statement of a transaction on the view's state (under the view's lock) advances the
# view's seq and notes the view in the transaction-local ADVANCED (undone with a rolled-back
# savepoint, as the advance is); the later ones find it there.
ADVANCED = "tidemark.advanced"
ADVANCE = (f"IF strpos(coalesce(current_setting('{ADVANCED}', true), ''), {{token}}) = 0 THEN\n"
           "  INSERT INTO tidemark.live_changes AS c (name, seq, changed_at) VALUES "
           "({name}, 1, now()) ON CONFLICT (name) DO UPDATE SET seq = c.seq + 1, "
           "changed_at = now();\n"
           f"  PERFORM set_config('{ADVANCED}', coalesce(current_setting('{ADVANCED}', true), "
           "'') || {token}, true);\nEND IF;")


def _names(suffix: str, event: str) -> tuple[str, str]:
    """(quoted function, unquoted trigger name) of ``event``'s subscription trigger."""
    function = sql.Identifier(STATE_SCHEMA, f"{suffix}__sub_{event}").as_string(None)
    return function, f"tm_{suffix}_sub_{event}"


def _state(entry: CatalogEntry) -> str:
    return sql.Identifier(STATE_SCHEMA, entry.suffix).as_string(None)


def trigger_ddl(conn: psycopg.Connection, entry: CatalogEntry) -> list[str]:
    """The functions and triggers logging the view's changed rows."""
    cv = compile_view(conn, parse_view_text(entry.name, entry.definition, Path(entry.path)))
    if cv.suffix != entry.suffix:
        raise DeployError(f"live view {entry.name!r} was deployed by another engine version; "
                          "run 'tidemark views deploy' before subscribing.")
    if any(r.raises() for r in cv.rules):
        raise DeployError(f"live.{entry.name} can fail when read (an interval sum of +infinity "
                          "and -infinity): its changes cannot be computed in writers' commits; "
                          "poll it with SELECT instead.")
    return _trigger_sql(cv)


def _trigger_sql(cv: CompiledView) -> list[str]:
    view, state, name = cv.state_select(), cv.state, sql.Literal(cv.name).as_string(None)
    stmts = []
    for event, (op, referencing, sides) in EVENTS.items():
        function, trigger = _names(cv.suffix, event)
        rows = " UNION ALL ".join(
            f"SELECT ROW(v.*)::text AS r, {sign} AS d FROM ({_over(view, state, rel)}) AS v"
            for rel, sign in sides)
        token = sql.Literal(f" {cv.name} ").as_string(None)
        body = (f"{ADVANCE.format(name=name, token=token)}\n"
                f"INSERT INTO {LOG} (name, seq, diff, row) SELECT {name}, (SELECT seq FROM "
                f"tidemark.live_changes WHERE name = {name}), sum(d), r FROM ({rows}) AS x "
                "GROUP BY r HAVING sum(d) <> 0;")
        stmts += [f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY "
                  f"DEFINER {set_clauses()} AS $tm$\nBEGIN\n{body}\nRETURN NULL;\nEND\n$tm$",
                  f"CREATE TRIGGER {sql.Identifier(trigger).as_string(None)} AFTER {op} ON "
                  f"{state} REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION "
                  f"{function}()"]
    return stmts


def _over(view: str, state: str, relation: str) -> str:
    """The view's SELECT reading ``relation`` instead of the state table."""
    return view.replace(state, relation)


def installed(conn: psycopg.Connection, entry: CatalogEntry) -> bool:
    """True when the view's subscription triggers exist."""
    row = conn.execute("select count(*) from pg_trigger where tgrelid = to_regclass(%s) and "
                       "tgname like %s", (_state(entry), f"tm_{entry.suffix}_sub_%")).fetchone()
    return bool(row and row[0] == len(EVENTS))


def register(conn: psycopg.Connection, entry: CatalogEntry) -> tuple[int, int]:
    """Register a subscriber of ``entry`` (inside a transaction): install the triggers when
    missing, fence the view's maintenance, and return ``(subscription id, seq)``: every commit
    after ``seq`` will be logged for it, and a read of the view in this transaction shows the
    view at ``seq``."""
    pin(conn)
    conn.execute("select set_config(%s, 'on', true)", (DEPLOYING,))  # the engine's own DDL
    conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    for stmt in DDL:
        conn.execute(stmt)  # type: ignore[arg-type]
    conn.execute(f"delete from {SUBSCRIPTIONS} where pid not in "  # type: ignore[arg-type]
                 "(select pid from pg_stat_activity)")
    if installed(conn, entry):  # wait for the applies in flight; later ones wait for us
        conn.execute(f"lock table {_state(entry)} in share row exclusive mode")  # type: ignore[arg-type]
    else:
        for stmt in trigger_ddl(conn, entry):  # CREATE TRIGGER takes the same lock
            conn.execute(stmt)  # type: ignore[arg-type]
    seq = conn.execute("select coalesce((select seq from tidemark.live_changes where name = "
                       "%s), 0)", (entry.name,)).fetchone()[0]
    sub = conn.execute(f"insert into {SUBSCRIPTIONS} (name, pid, seq) values "  # type: ignore[arg-type]
                       "(%s, pg_backend_pid(), %s) returning id", (entry.name, seq)).fetchone()[0]
    return int(sub), int(seq)


def acknowledge(conn: psycopg.Connection, entry: CatalogEntry, sub: int, seq: int) -> None:
    """Note that subscriber ``sub`` read everything up to ``seq``; delete what all read."""
    conn.execute(f"with a as (update {SUBSCRIPTIONS} set seq = %s where id = %s) "  # type: ignore[arg-type]
                 f"delete from {LOG} where name = %s and seq <= (select least(min(seq), %s) "
                 f"from {SUBSCRIPTIONS} where name = %s and id <> %s)",
                 (seq, sub, entry.name, seq, entry.name, sub))


def unregister(conn: psycopg.Connection, entry: CatalogEntry, sub: int) -> None:
    """Remove subscriber ``sub``; the last one drops the triggers and the view's log rows
    (waiting at most a second for the view's maintenance; else a later subscriber cleans up)."""
    with conn.transaction():
        conn.execute("select set_config(%s, 'on', true)", (DEPLOYING,))  # not a table's DDL
        conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(f"delete from {SUBSCRIPTIONS} where id = %s or pid not in "  # type: ignore[arg-type]
                     "(select pid from pg_stat_activity)", (sub,))
        if conn.execute(f"select exists (select 1 from {SUBSCRIPTIONS} where name = %s)",  # type: ignore[arg-type]
                        (entry.name,)).fetchone()[0]:
            return
        conn.execute("select set_config('lock_timeout', '1s', true)")
        now = conn.execute("select suffix from tidemark.views where name = %s and target = "
                           "'embedded'", (entry.name,)).fetchone()  # after a redeploy: its own
        try:
            with conn.transaction():
                for suffix in sorted({entry.suffix, *(now or ())}):
                    for event in EVENTS:
                        function, _ = _names(suffix, event)
                        conn.execute(f"drop function if exists {function}() cascade")  # type: ignore[arg-type]
                conn.execute(f"delete from {LOG} where name = %s", (entry.name,))  # type: ignore[arg-type]
        except psycopg.errors.LockNotAvailable:
            return


@dataclass(frozen=True)
class Before:
    """What :func:`before_redeploy` kept: the old ``live.<name>``'s columns (name, type) and
    the temporary table holding its rows' text (None: the view could not be read)."""

    columns: list[tuple[str, str]]
    rows: str | None


def _subscribed(conn: psycopg.Connection, name: str) -> bool:
    if conn.execute("select to_regclass(%s)", (SUBSCRIPTIONS,)).fetchone()[0] is None:
        return False
    conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))  # no (un)register meanwhile
    row = conn.execute(f"select exists (select 1 from {SUBSCRIPTIONS} where name = %s and "  # type: ignore[arg-type]
                       "ended is null and pid in (select pid from pg_stat_activity))",
                       (name,)).fetchone()
    return bool(row and row[0])


def _columns(conn: psycopg.Connection, name: str) -> list[tuple[str, str]]:
    return [(str(n), str(t)) for n, t in conn.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute where attrelid = "
        "to_regclass(%s) and attnum > 0 and not attisdropped order by attnum",
        (sql.Identifier(LIVE_SCHEMA, name).as_string(None),)).fetchall()]


def before_redeploy(conn: psycopg.Connection, name: str) -> Before | None:
    """Inside a deploy's transaction, before the old objects of ``live.<name>`` are dropped:
    when someone subscribes to it, keep its rows (their text form, as the log has them) in a
    temporary table dropped at commit. None when nobody subscribes."""
    if not _subscribed(conn, name):
        return None
    columns = _columns(conn, name)
    rows = "__tm_sub_before"  # dropped by after_redeploy (a chain redeploys several views)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("drop table if exists pg_temp.{}").format(sql.Identifier(rows)))
            conn.execute(sql.SQL("create temp table {} on commit drop as select "
                                 "ROW(v.*)::text as r from {} as v").format(
                sql.Identifier(rows), sql.Identifier(LIVE_SCHEMA, name)))
    except psycopg.Error:  # a broken view raises when read: its subscribers start again
        return Before(columns, None)
    return Before(columns, rows)


def after_redeploy(conn: psycopg.Connection, cv: CompiledView, before: Before | None) -> None:
    """In the same transaction, once the new ``live.<name>`` is in place (its ``seq``
    advanced): log the change of every row for the subscribers and follow the new state, or,
    when the columns changed, end the subscriptions with a message."""
    if before is None:
        return
    columns = _columns(conn, cv.name)
    if before.rows is None or columns != before.columns or any(r.raises() for r in cv.rules):
        what = ("its columns changed" if before.rows is not None else
                "it could not be read before")
        message = (f"live view {cv.name!r} was redeployed and {what}: subscribe again for a "
                   "snapshot of its new definition")
        conn.execute(f"update {SUBSCRIPTIONS} set ended = %s where name = %s "  # type: ignore[arg-type]
                     "and ended is null", (message, cv.name))
    else:
        _log_difference(conn, cv, before.rows)
    if before.rows is not None:
        conn.execute(sql.SQL("drop table pg_temp.{}").format(sql.Identifier(before.rows)))


def _log_difference(conn: psycopg.Connection, cv: CompiledView, rows: str) -> None:
    """Log old ``rows`` -1 and the new view's rows +1, consolidated, at the view's ``seq``;
    install the subscription triggers on the new state."""
    conn.execute(sql.SQL(
        "insert into {} (name, seq, diff, row) select %s, (select seq from "
        "tidemark.live_changes where name = %s), sum(d), r from (select r, -1 as d from {} "
        "union all select ROW(v.*)::text, 1 from {} as v) as x group by r "
        "having sum(d) <> 0").format(sql.SQL(LOG), sql.Identifier(rows),
                                     sql.Identifier(LIVE_SCHEMA, cv.name)),
        (cv.name, cv.name))
    for stmt in _trigger_sql(cv):
        conn.execute(stmt)  # type: ignore[arg-type]
