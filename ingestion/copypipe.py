"""Stream ``COPY ... TO STDOUT`` from one connection into ``COPY ... FROM STDIN`` on others.

The rows are never parsed: libpq hands over one COPY data message per row and the relay copies
it into one buffer, sent in chunks of about a megabyte to the receiving connections (one or
several: the same stream can feed a mirror and a changelog at once). Everything runs on
psycopg's libpq wrapper in non-blocking mode; waiting for a socket goes through ``select``,
which releases the GIL, so several relays in threads of one process overlap.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq, sql

CHUNK_BYTES = 1 << 20
REPORT_ROWS = 50_000


@dataclass(frozen=True)
class Sink:
    """A receiving end: a connection and its ``COPY ... FROM STDIN`` statement."""

    conn: psycopg.Connection
    statement: sql.Composable


def _wait(read: list[int], write: list[int]) -> None:
    select.select(read, write, [], 1.0)


def _result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    """The next result of ``pgconn``, waiting on its socket without holding the GIL."""
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return pgconn.get_result()
        _wait([pgconn.socket], [])


def _raise(conn: psycopg.Connection, res: pq.abc.PGresult | None) -> None:
    if res is None:
        raise psycopg.OperationalError(conn.pgconn.get_error_message().decode(errors="replace")
                                       or "the server closed the connection")
    raise pg_errors.error_from_result(res, encoding=conn.info.encoding)


def _start(conn: psycopg.Connection, statement: sql.Composable, status: pq.ExecStatus) -> None:
    pgconn = conn.pgconn
    pgconn.send_query(statement.as_bytes(conn))
    res = _result(pgconn)
    if res is None or res.status != status:
        _raise(conn, res)


def _finish(conn: psycopg.Connection) -> int:
    """Read the command's final result (and the end marker); return the rows it reports."""
    res = _result(conn.pgconn)
    while _result(conn.pgconn) is not None:
        pass
    if res is None or res.status != pq.ExecStatus.COMMAND_OK:
        _raise(conn, res)
    return res.command_tuples or 0


def _drain(pgconns: list[pq.abc.PGconn]) -> None:
    """Send what libpq has queued on every connection."""
    pending = [p for p in pgconns if p.flush() == 1]
    while pending:
        _wait([], [p.socket for p in pending])
        pending = [p for p in pending if p.flush() == 1]


def _put(sinks: list[pq.abc.PGconn], data: bytes | bytearray) -> None:
    for pgconn in sinks:
        while (sent := pgconn.put_copy_data(data)) == 0:
            _drain([pgconn])
        if sent < 0:
            raise psycopg.OperationalError(pgconn.get_error_message().decode(errors="replace"))
    _drain(sinks)


def pipe_copy(source: psycopg.Connection, copy_out: sql.Composable, sinks: list[Sink],
              on_rows: Callable[[int], None] | None = None) -> int:
    """Copy the rows of ``copy_out`` into every sink; return the number of rows.

    Each connection must be idle (no statement running); the caller owns the transactions.

    Args:
        source: the connection that runs ``COPY (...) TO STDOUT``.
        copy_out: that statement.
        sinks: the receivers, each running its ``COPY ... FROM STDIN``.
        on_rows: called with the rows relayed since the previous call, about every
            :data:`REPORT_ROWS` rows and at the end.

    Returns:
        The rows the (first) receiver loaded.

    Raises:
        psycopg.Error: the source or a sink failed (the other sinks' COPY is aborted).
    """
    _start(source, copy_out, pq.ExecStatus.COPY_OUT)
    started: list[psycopg.Connection] = []
    try:
        for sink in sinks:
            _start(sink.conn, sink.statement, pq.ExecStatus.COPY_IN)
            started.append(sink.conn)
    except BaseException:
        _abort(started, "a receiving COPY did not start")
        _cancel(source)
        raise
    pgconns = [c.pgconn for c in started]
    spg = source.pgconn
    get = spg.get_copy_data
    # One buffer for the whole chunk: each row's bytes are copied into it and the row's libpq
    # buffer is freed at once, so no per-row object outlives its loop turn. (A list of rows
    # kept ~20,000 objects alive per chunk; the cyclic GC rescanning them, and the join, cost
    # 1.4-1.6 relay CPU-s for 1.8M pgbench rows against 0.35-0.38 now.)
    chunk = bytearray()
    extend = chunk.extend
    rows = reported = held = 0
    try:
        while True:  # the one loop per row: no parsing, a libpq call and a copy
            nbytes, data = get(1)
            if nbytes > 0:
                extend(data)
                held += 1
                if len(chunk) >= CHUNK_BYTES:
                    _put(pgconns, chunk)
                    del chunk[:]
                    rows += held
                    held = 0
                    if on_rows is not None and rows - reported >= REPORT_ROWS:
                        on_rows(rows - reported)
                        reported = rows
            elif nbytes == 0:
                _wait([spg.socket], [])
                spg.consume_input()
            elif nbytes == -1:
                break
            else:
                raise psycopg.OperationalError(spg.get_error_message().decode(errors="replace"))
        if chunk:
            _put(pgconns, chunk)
            rows += held
        _finish(source)
    except BaseException:
        _abort(started, "the copy was interrupted")
        _cancel(source)
        raise
    for pgconn in pgconns:
        while pgconn.put_copy_end() == 0:
            _drain([pgconn])
    _drain(pgconns)
    copied: list[int] = []
    failure: BaseException | None = None
    for conn in started:  # every receiver is finished, even after one failed
        try:
            copied.append(_finish(conn))
        except psycopg.Error as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    # The receiver's count is exact (binary COPY's trailer comes as a message of its own).
    total = copied[0] if copied else rows
    if on_rows is not None and total > reported:
        on_rows(total - reported)
    return total


def _abort(conns: list[psycopg.Connection], reason: str) -> None:
    """End the COPY IN of each connection with an error (the server rolls the COPY back)."""
    for conn in conns:
        try:
            conn.pgconn.put_copy_end(reason.encode())
            _drain([conn.pgconn])
            while _result(conn.pgconn) is not None:
                pass
        except psycopg.Error:
            pass


def _cancel(conn: psycopg.Connection) -> None:
    """Stop a running COPY OUT: cancel it and read what is left."""
    try:
        conn.cancel_safe(timeout=5)
        while True:
            nbytes, _ = conn.pgconn.get_copy_data(1)
            if nbytes == 0:
                _wait([conn.pgconn.socket], [])
                conn.pgconn.consume_input()
            elif nbytes < 0:
                break
        while _result(conn.pgconn) is not None:
            pass
    except psycopg.Error:
        pass
