"""Push each committed change of a live view, like Materialize's SUBSCRIBE.

The changes come from the view's maintenance itself (:mod:`streaming_views.sublog`): while a
subscriber is registered, every commit that changes the view logs the rows it added and
removed, numbered by the view's commit sequence ``seq``. The subscriber never re-reads the
view after its snapshot: it polls the view's counter in ``tidemark.live_changes`` (one index
lookup every ``poll_s``) and, when it moved, reads the logged rows up to it.

Python API: :func:`subscribe_batches` yields a :class:`Batch` per commit (its ``seq`` and the
consolidated ``(row, diff)`` pairs, removals first) and a :class:`Progress` after each read
(everything up to ``seq`` was emitted, like Materialize's ``mz_progressed``);
:func:`subscribe` flattens the batches into :class:`Change` rows.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from streaming_views import sublog
from streaming_views.catalog import CatalogEntry, read_catalog
from streaming_views.compiler import LIVE_SCHEMA
from streaming_views.errors import DeployError, ViewNotFoundError
from streaming_views.session import PINNED

POLL_S = 0.1
PIN = "select " + ", ".join(  # the pinned settings in one round trip
    f"set_config({sql.Literal(k).as_string(None)}, {sql.Literal(v).as_string(None)}, true)"
    for k, v in PINNED.items())


FOLLOW = sql.SQL(  # the view's seq, suffix and health, and the subscription's end (if ended)
    "select c.seq, v.suffix, s.ended, v.status, v.problem from tidemark.live_changes c "
    "left join tidemark.views v "
    "on v.name = c.name and v.target = 'embedded' left join {} s on s.id = %s "
    "where c.name = %s").format(sql.SQL(sublog.SUBSCRIPTIONS))


class SubscriptionEnded(ViewNotFoundError):
    """The subscription cannot go on (subscribe again: a new snapshot follows): the view was
    dropped, or redeployed with other columns, or the connection to the server was lost (a
    crash or restart empties the unlogged subscription log)."""


@dataclass(frozen=True)
class Change:
    """One change of a view: at commit ``timestamp`` (the view's ``seq``), ``row`` was added
    (diff > 0) or removed."""

    timestamp: int
    diff: int
    row: tuple[Any, ...]


@dataclass(frozen=True)
class Batch:
    """The rows one commit (``seq``) added (diff > 0) and removed (diff < 0); ``seq`` of the
    snapshot for the first batch."""

    seq: int
    changes: list[tuple[tuple[Any, ...], int]]


@dataclass(frozen=True)
class Progress:
    """Every change up to ``seq`` has been emitted (``mz_progressed``)."""

    seq: int


def _entry(conn: psycopg.Connection, name: str) -> CatalogEntry | None:
    entries = read_catalog(conn, target="embedded", name=name)
    return entries[0] if entries else None


def columns(dsn: str, name: str) -> list[str]:
    """The columns of ``live.<name>``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        entry = _entry(conn, name)
        if entry is None:
            raise ViewNotFoundError(f"live view {name!r} is not deployed; see "
                                    f"'tidemark views list'.")
        return list(entry.columns)


def _changes(conn: psycopg.Connection, entry: CatalogEntry, after: int,
             upto: int) -> list[Batch]:
    """The logged changes of commits ``after < seq <= upto``, one batch per commit."""
    view = sql.Identifier(LIVE_SCHEMA, entry.name)
    with conn.transaction():
        conn.execute(PIN)  # rows were printed under the pinned settings: read back the same way
        rows = conn.execute(sql.SQL(  # offset 0: each row's text is parsed once
            "select l.seq, l.diff, (l.v).* from (select seq, sum(diff)::bigint as diff, "
            "row::{} as v from {} where name = %s and seq > %s and seq <= %s group by seq, row "
            "having sum(diff) <> 0 offset 0) as l order by l.seq, l.diff").format(
                view, sql.SQL(sublog.LOG)), (entry.name, after, upto)).fetchall()
    batches: dict[int, list[tuple[tuple[Any, ...], int]]] = {}
    for seq, diff, *row in rows:
        batches.setdefault(int(seq), []).append((tuple(row), int(diff)))
    return [Batch(seq, changes) for seq, changes in batches.items()]


def subscribe_batches(dsn: str, name: str, *, snapshot: bool = True,
                      timeout_s: float | None = None, stop: threading.Event | None = None,
                      poll_s: float = POLL_S) -> Iterator[Batch | Progress]:
    """Yield the committed changes of ``live.<name>``: batches in commit order, progress.

    Args:
        dsn: the landing database (a role that may create the subscription objects).
        name: the view.
        snapshot: first yield the current rows as one batch of +1 (at the snapshot's seq).
        timeout_s: stop after this many seconds without a commit (None: never).
        stop: set it to stop (checked every ``poll_s``).
        poll_s: how often the view's counter is read.

    Raises:
        ViewNotFoundError: the view is not deployed.
        SubscriptionEnded: the view was dropped or redeployed meanwhile.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        entry = _entry(conn, name)
        if entry is None:
            raise ViewNotFoundError(f"live view {name!r} is not deployed; see "
                                    f"'tidemark views list'.")
        try:
            with conn.transaction():
                sub, seq = sublog.register(conn, entry)
                rows = conn.execute(sql.SQL("select * from {}").format(
                    sql.Identifier(LIVE_SCHEMA, name))).fetchall() if snapshot else []
        except psycopg.errors.InsufficientPrivilege as exc:
            raise DeployError(f"cannot subscribe to live.{name}: {str(exc).strip()}; subscribing "
                              "creates triggers on the view's state: connect as the role that "
                              "deploys the views.") from None
        state = {"seq": seq}
        try:
            if snapshot:
                yield Batch(seq, [(tuple(r), 1) for r in rows])
            yield Progress(seq)
            yield from _follow(conn, entry, sub, state, timeout_s, stop, poll_s)
        except psycopg.OperationalError as exc:
            raise SubscriptionEnded(
                f"subscription to live.{name} lost its connection after seq {state['seq']} "
                f"({str(exc).strip() or type(exc).__name__}); the changes of a server that "
                "crashed or restarted are not kept (the subscription log is unlogged): "
                "subscribe again, which starts with a snapshot.") from None
        finally:
            if not conn.closed and not conn.broken:
                with contextlib.suppress(psycopg.OperationalError):  # the server went away
                    sublog.unregister(conn, entry, sub)


def _follow(conn: psycopg.Connection, entry: CatalogEntry, sub: int, state: dict[str, int],
            timeout_s: float | None, stop: threading.Event | None,
            poll_s: float) -> Iterator[Batch | Progress]:
    """Poll the view's ``seq``; emit the logged changes up to it. A redeploy that kept the
    columns logged its difference and moved the triggers (:func:`sublog.after_redeploy`): the
    subscription follows the new state; one that changed them ended it (``ended``)."""
    idle, seq = 0.0, state["seq"]
    while stop is None or not stop.is_set():
        row = conn.execute(FOLLOW, (sub, entry.name)).fetchone()
        if row is None or row[1] is None:
            raise SubscriptionEnded(f"live view {entry.name!r} was dropped after seq {seq}; "
                                    "subscribe again once it is deployed.")
        if row[2] is not None:
            raise SubscriptionEnded(f"{row[2]} (changes after seq {seq} were not sent).")
        if row[3] != "ok":  # the DDL guard broke it: it no longer changes, nor logs
            raise SubscriptionEnded(f"live view {entry.name!r} is broken ({row[4]}) after seq "
                                    f"{seq}: subscribe again once 'tidemark views deploy' has "
                                    "repaired it.")
        if row[1] != entry.suffix:  # redeployed, same columns: read its rows as the new view's
            entry = _entry(conn, entry.name) or entry
        now = int(row[0])
        if now == seq:
            time.sleep(poll_s)
            idle += poll_s
            if timeout_s is not None and idle >= timeout_s:
                return
            continue
        idle = 0.0
        yield from _changes(conn, entry, seq, now)
        seq = state["seq"] = now
        sublog.acknowledge(conn, entry, sub, seq)
        yield Progress(seq)


def subscribe(dsn: str, name: str, *, snapshot: bool = True, timeout_s: float | None = None,
              stop: threading.Event | None = None, poll_s: float = POLL_S) -> Iterator[Change]:
    """Yield the changes of ``live.<name>`` as they are committed, one row at a time
    (:func:`subscribe_batches` without progress); ``diff`` is +n / -n as in SUBSCRIBE."""
    for item in subscribe_batches(dsn, name, snapshot=snapshot, timeout_s=timeout_s,
                                  stop=stop, poll_s=poll_s):
        if isinstance(item, Batch):
            for row, diff in item.changes:
                yield Change(item.seq, diff, row)
