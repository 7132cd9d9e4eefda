"""The differential generator: random views (see :mod:`tests.streaming_views.grammar`), random
writes by writers with their own session settings, and the oracle after every step.

A *case* (one seed) deploys a few views on fresh tables, then runs steps: multi-row INSERT,
upserts, UPDATE (keys, unused columns), DELETE, MERGE, COPY, TRUNCATE, dimension writes,
writable CTEs, savepoints rolled back, whole transactions rolled back, PREPARE TRANSACTION,
writes straight into partitions, and bursts of concurrent writers. Each writer has a random
TimeZone, DateStyle, IntervalStyle, extra_float_digits, search_path (one shadows lower() and
date_trunc()) and isolation level (REPEATABLE READ / SERIALIZABLE writers retry serialization
failures, as applications must).

The oracle, read under the engine's pinned settings (TimeZone UTC) after every step:
``(live EXCEPT ALL query)`` and ``(query EXCEPT ALL live)`` empty, the same with the text of
every sum/avg/count column (display scales), and every view healthy. A refusal must be an
:class:`UnsupportedViewError` with ``file:line:column``.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from streaming_views.deploy import deploy_embedded
from streaming_views.errors import DeployError, UnsupportedViewError
from streaming_views.expiry import clock, tick
from streaming_views.viewfile import parse_view_text
from tests.streaming_views.grammar import (
    FACT_TYPES,
    SCHEMA,
    VALUES,
    View,
    draw_sums_view,
    draw_temporal_view,
    draw_view,
    draw_view_over,
    fact_values,
)
from tests.streaming_views.oracle import mismatch

# On a server built with ICU, gen.f.s (values a, A, b, B, é, É, ß...) takes this linguistic
# collation, so its keys, min/max, DISTINCT and comparisons order unlike "C".
ICU_COLLATION = "und-x-icu"
ZONES = ["UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham", "Europe/Berlin",
         "America/Los_Angeles"]
DATESTYLES = ["ISO, MDY", "SQL, DMY", "German", "Postgres, YMD"]
INTERVALSTYLES = ["postgres", "iso_8601", "sql_standard", "postgres_verbose"]
PATHS = ["public", "gen, public", "evil, public"]
LEVELS = [psycopg.IsolationLevel.READ_COMMITTED] * 3 + [
    psycopg.IsolationLevel.REPEATABLE_READ, psycopg.IsolationLevel.SERIALIZABLE]
EXPECTED = (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected,
            psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation,
            psycopg.errors.CardinalityViolation)
CAST = ", ".join(f"%s::{t}" for t in FACT_TYPES)


class EngineFailure(AssertionError):
    """The engine gave a wrong view, or failed a write it should have maintained."""


@dataclass
class Stats:
    """What a run did."""

    cases: int = 0
    steps: int = 0
    views: int = 0
    refused: int = 0
    checks: int = 0
    rolled_back: int = 0
    retried: int = 0
    deadlocks: int = 0
    kinds: Counter = field(default_factory=Counter)

    def merge(self, other: Stats) -> None:
        """Add ``other`` to these counts."""
        for name in ("cases", "steps", "views", "refused", "checks", "rolled_back", "retried",
                     "deadlocks"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.kinds.update(other.kinds)


def open_writer(dsn: str, rng: random.Random) -> tuple[psycopg.Connection, str]:
    """A connection with random session settings and isolation level."""
    conn = psycopg.connect(dsn)
    conn.isolation_level = rng.choice(LEVELS)
    settings = {"TimeZone": rng.choice(ZONES), "DateStyle": rng.choice(DATESTYLES),
                "IntervalStyle": rng.choice(INTERVALSTYLES),
                "extra_float_digits": str(rng.choice([-5, 0, 1, 3])),
                "search_path": rng.choice(PATHS)}
    for name, value in settings.items():
        conn.execute("select set_config(%s, %s, false)", (name, value))
    conn.commit()
    return conn, f"{conn.isolation_level.name} {settings}"


class Case:
    """One seed: views, writers, steps, oracle."""

    def __init__(self, dsn: str, seed: int, *, views: int = 4, steps: int = 20) -> None:
        self.dsn, self.seed, self.n_views, self.n_steps = dsn, seed, views, steps
        self.rng = random.Random(seed)
        self.history: list[str] = []
        self.views: list[View] = []
        self.stats = Stats(cases=1)
        self.next_id = 1000
        # a third of the cases: ONE view, alone on its tables (no temporal view, no view over
        # it), and lone one-row writes drawn more often, so the apply's one-row branch runs
        # (streaming_views.onegroup: it needs no other view pending). Its own random stream:
        # the other cases' draws stay as they were.
        self.lone = random.Random(seed * 104729 + 7).random() < 1 / 3
        self.kinds = self.SIMPLE + ["insert1", "insert1", "delete1", "delete1",
                                    "update1", "update1", "update1"] * self.lone

    # ------------------------------------------------------------------ setup
    def setup(self, admin: psycopg.Connection) -> None:
        deploy_embedded(self.dsn, [], prune=True)  # drop the previous case's views
        admin.execute(SCHEMA)
        if admin.execute("select 1 from pg_collation where collname = %s",
                         (ICU_COLLATION,)).fetchone():  # a server built with ICU
            admin.execute(f'alter table gen.f alter column s type text '
                          f'collate "{ICU_COLLATION}"')
        admin.execute("insert into gen.d (k, region, w, label) select k, 'r' || (k % 3), k - 1, "
                      "chr(65 + k) from generate_series(0, 5) k")
        admin.execute("insert into gen.e select k, 't' || (k % 2) from generate_series(0, 4) k")
        version = admin.info.server_version
        for i in range(self.rng.randint(3, 12)):
            self._insert_facts(admin, [fact_values(self.rng, i, version)])
        sums = random.Random(self.seed * 7919 + 3).random() < 0.5  # own stream, as lone's
        for i in range(1 if self.lone else self.n_views):
            draw = draw_sums_view if self.lone and sums else draw_view  # lone: net pairs
            view = draw(self.rng, f"gen{self.seed % 1000}_{i}")
            self._deploy(view)
        self._deploy_temporal()
        if not self.lone:
            self._deploy_over()

    def _deploy_over(self) -> None:
        """Half the cases: a view over one of the case's live views (deployed or refused for
        the reason the engine gives: an inner aggregate that may raise when finalised)."""
        if not self.views or self.rng.random() < 0.5:
            return
        inner = self.rng.choice(self.views)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            columns = conn.execute("select columns from tidemark.views where name = %s",
                                   (inner.name,)).fetchone()[0]
        view = draw_view_over(self.rng, f"gen{self.seed % 1000}_over", inner.name, columns)
        try:
            self._install(view)
        except UnsupportedViewError as exc:
            if "may raise when finalised" not in str(exc):
                raise EngineFailure(f"seed {self.seed}: refused a view over a view: {exc}\n"
                                    f"{view.sql}") from None
            self.stats.refused += 1
            return
        self.views.append(view)
        self.stats.views += 1

    def _install(self, view: View) -> None:
        """Deploy ``view``: maintained, or refused (:class:`UnsupportedViewError`); a raw
        error of the deploy (a :class:`DeployError`) is the engine's failure."""
        try:
            deploy_embedded(self.dsn, [parse_view_text(view.name, view.sql)])
        except DeployError as exc:
            raise EngineFailure(f"seed {self.seed}: deploying {view.name} failed instead of "
                                f"being maintained or refused: {exc}\n{view.sql}") from None

    def _deploy(self, view: View) -> None:
        try:
            self._install(view)
        except UnsupportedViewError as exc:
            if not view.expect_refusal:
                raise EngineFailure(f"seed {self.seed}: refused a supported view: {exc}\n"
                                    f"{view.sql}") from None
            if exc.line is None or f"{view.name}.sql:{exc.line}:{exc.column}:" not in str(exc):
                raise EngineFailure(f"seed {self.seed}: refusal without position: {exc}") \
                    from None
            self.stats.refused += 1
            return
        if view.expect_refusal:
            raise EngineFailure(f"seed {self.seed}: accepted a view it must refuse:\n{view.sql}")
        self.views.append(view)
        self.stats.views += 1

    # ------------------------------------------------------------------ oracle
    def check(self, conn: psycopg.Connection) -> None:
        for view in self.views:
            self.stats.checks += 1
            what = mismatch(conn, view)
            if what is not None:
                self.fail(view, what)

    def fail(self, view: View, what: str) -> None:
        raise EngineFailure(f"seed {self.seed}, view {view.name}:\n{view.sql}\n{what}\n"
                            f"last steps:\n" + "\n".join(self.history[-8:]))

    # ------------------------------------------------------------------ writes
    def _insert_facts(self, conn: psycopg.Connection, rows: list[list[str | None]],
                      conflict: str = "on conflict (id) do nothing") -> None:
        values = ", ".join(f"({CAST})" for _ in rows)
        conn.execute(f"insert into gen.f values {values} {conflict}",  # type: ignore[arg-type]
                     [v for row in rows for v in row])

    def _ids(self, k: int = 3) -> list[int]:
        return [self.rng.randrange(self.next_id) for _ in range(self.rng.randint(1, k))]

    def _new_rows(self, conn: psycopg.Connection, n: int) -> list[list[str | None]]:
        rows = []
        for _ in range(n):
            ident = self.rng.randrange(30) if self.rng.random() < 0.5 else self.next_id
            self.next_id += 1
            rows.append(fact_values(self.rng, ident, conn.info.server_version))
        return rows

    def op(self, conn: psycopg.Connection, kind: str) -> str:
        """Run one write of ``kind`` on ``conn`` (inside the caller's transaction)."""
        rng = self.rng
        if kind == "insert":
            self._insert_facts(conn, self._new_rows(conn, rng.randint(1, 5)))
        elif kind == "insert1":  # one row: alone in its transaction, the apply's one-row branch
            self._insert_facts(conn, self._new_rows(conn, 1))
        elif kind == "delete1":
            conn.execute("delete from gen.f where id = (select min(id) from gen.f where id >= %s)",
                         (rng.randrange(self.next_id),))
        elif kind == "update1":  # one row, one or two columns: a net pair when only columns
            # read by aggregates changed (streaming_views.netpair), else the pair
            cols = rng.sample(["k", "g", "n", "c", "x", "s", "sc", "ts", "iv", "b", "m", "q"],
                              rng.choice([1, 1, 2]))
            sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in cols)
            conn.execute(sql.SQL("update gen.f set {} where id = (select min(id) from gen.f "
                                 "where id >= %s)").format(sets),
                         [*(rng.choice(VALUES[c]) for c in cols), rng.randrange(self.next_id)])
        elif kind == "upsert":
            cols = rng.sample(["k", "g", "n", "c", "s", "sc", "ts", "iv", "b", "note"], 3)
            sets = ", ".join(f"{c} = excluded.{c}" for c in cols)
            self._insert_facts(conn, self._new_rows(conn, rng.randint(1, 4)),
                               f"on conflict (id) do update set {sets}")
        elif kind == "update":
            col = rng.choice(["k", "g", "n", "c", "x", "s", "sc", "ts", "d", "iv", "j", "b",
                              "note", "m", "q", "q", "shift"])
            if col == "shift":
                conn.execute("update gen.f set k = k + 1, g = (g + 1) %% 4, ts = ts + interval "
                             "'45 minutes' where id = any(%s)", (self._ids(),))
            else:
                conn.execute(sql.SQL("update gen.f set {} = %s where id = any(%s)").format(
                    sql.Identifier(col)), (rng.choice(VALUES[col]), self._ids()))
        elif kind == "delete":
            if rng.random() < 0.3:
                conn.execute("delete from gen.f where g = %s", (rng.randrange(4),))
            else:
                conn.execute("delete from gen.f where id = any(%s)", (self._ids(5),))
        elif kind == "merge":
            rows = [(i, rng.choice(VALUES["g"]), rng.choice(VALUES["c"])) for i in self._ids(4)]
            values = ", ".join("(%s::int, %s::int, %s::numeric)" for _ in rows)
            conn.execute(f"merge into gen.f t using (values {values}) s(id, g, c) on t.id = s.id "  # type: ignore[arg-type]
                         "when matched and s.g is null then delete when matched then update set "
                         "g = s.g, c = s.c when not matched then insert (id, g, c) "
                         "values (s.id, s.g, s.c)", [v for r in rows for v in r])
        elif kind == "copy":
            with conn.cursor().copy("copy gen.f (id, g, c, s, ts) from stdin") as copy:
                for _ in range(rng.randint(1, 4)):
                    copy.write_row((self.next_id, rng.choice(VALUES["g"]),
                                    rng.choice(["1.5", "NaN", None]), rng.choice(VALUES["s"]),
                                    rng.choice(VALUES["ts"])))
                    self.next_id += 1
        elif kind == "truncate":
            conn.execute(rng.choice(["truncate gen.f", "truncate gen.d", "truncate gen.p"]))
        elif kind == "dim":
            k = rng.randrange(7)
            action = rng.choice(["upsert", "delete", "hits", "e"])
            if action == "upsert":
                conn.execute("insert into gen.d (k, region, w, label) values (%s, %s, %s, %s) "
                             "on conflict (k) do update set region = excluded.region, "
                             "w = excluded.w", (k, rng.choice(["r0", "r1", None]),
                                                rng.randrange(-1, 3), rng.choice(["A", "b"])))
            elif action == "delete":
                conn.execute("delete from gen.d where k = %s", (k,))
            elif action == "hits":
                conn.execute("update gen.d set hits = hits + 1 where k = %s", (k,))
            else:
                conn.execute("insert into gen.e values (%s, %s) on conflict (k) do update set "
                             "tag = excluded.tag", (k, rng.choice(["t0", "t1", "x", None])))
        elif kind == "cte":
            conn.execute("with a as (update gen.d set w = w + 1 where k = %s returning k) "
                         "update gen.f set g = (coalesce(g, 0) + 1) %% 4 where k in "
                         "(select k from a) or id = any(%s)", (rng.randrange(6), self._ids()))
        elif kind == "partition":
            target = rng.choice(["gen.p", "gen.p_jan", "gen.p_feb", "gen.p_feb_a",
                                 "gen.p_feb_rest", "gen.p_rest"])
            action = rng.choice(["insert", "insert", "move", "delete"])
            if action == "insert":
                day = {"gen.p_jan": "2026-01-0", "gen.p_rest": "2026-05-0"}.get(target,
                                                                                "2026-02-0")
                kind_v = "a" if target == "gen.p_feb_a" else rng.choice(["b", "c"]) \
                    if target == "gen.p_feb_rest" else rng.choice(["a", "b"])
                conn.execute(sql.SQL("insert into {} values (%s, %s, %s, %s, %s)").format(
                    sql.SQL(target)), (self.rng.randrange(50), f"{day}{rng.randint(1, 9)}",
                                       kind_v, rng.randrange(-1, 5), rng.choice(["1.5", "2",
                                                                                 None])))
            elif action == "move":
                conn.execute("update gen.p set day = day + 20 where v = %s", (rng.randrange(5),))
            else:
                conn.execute(sql.SQL("delete from {} where v = %s").format(sql.SQL(target)),
                             (rng.randrange(5),))
        return kind

    SIMPLE = ["insert", "insert", "upsert", "update", "update", "delete", "merge", "copy",
              "dim", "dim", "cte", "partition", "partition"]

    def step(self, writers: list[tuple[psycopg.Connection, str]]) -> None:
        """One step: a transaction of one writer, a savepoint dance, a rollback, a prepared
        transaction, or a burst of concurrent writers."""
        rng = self.rng
        shape = rng.choices(["one", "many", "savepoint", "rollback", "prepare", "burst",
                             "truncate"], [8, 3, 2, 1, 1, 2, 1])[0]
        self.stats.kinds[shape] += 1
        if shape == "burst":
            self._burst(writers)
            return
        conn, settings = rng.choice(writers)
        kinds = ["truncate"] if shape == "truncate" else \
            [rng.choice(self.kinds) for _ in range(1 if shape == "one" else rng.randint(2, 4))]
        self.history.append(f"{shape} {kinds} by {settings}")
        for attempt in range(6):
            try:
                self._transaction(conn, shape, kinds)
                return
            except psycopg.errors.SerializationFailure:
                self.stats.retried += 1
                conn.rollback()
                if attempt == 5:
                    raise
            except EXPECTED as exc:
                conn.rollback()
                self._expected(exc)
                return
            except psycopg.Error as exc:  # any other error: the engine's, with the seed
                conn.rollback()
                self._engine_failed(exc)
                raise

    def _transaction(self, conn: psycopg.Connection, shape: str, kinds: list[str]) -> None:
        rng = self.rng
        if shape == "prepare":
            conn.autocommit = True
            name = f"gen_{self.seed}_{self.stats.steps}"
            try:
                conn.execute("begin")
                for kind in kinds:
                    self.op(conn, kind)
                conn.execute(sql.SQL("prepare transaction {}").format(sql.Literal(name)))
                conn.execute(sql.SQL("commit prepared {}").format(sql.Literal(name)))
            except psycopg.Error:
                conn.execute("rollback")
                raise
            finally:
                conn.autocommit = False
            return
        with conn.transaction(force_rollback=shape == "rollback"):
            for n, kind in enumerate(kinds):
                if shape == "many" and n == 1 and rng.random() < 0.25:
                    # maintenance of the statements so far now, mid-transaction
                    conn.execute("set constraints all immediate")
                if shape == "savepoint" and n == 1:
                    try:
                        with conn.transaction(force_rollback=True):
                            self.op(conn, kind)
                            self.op(conn, rng.choice(self.kinds))
                    except EXPECTED:
                        pass
                    continue
                self.op(conn, kind)
        if shape == "rollback":
            self.stats.rolled_back += 1

    def _engine_failed(self, exc: psycopg.Error) -> None:
        """Raise :class:`EngineFailure` (with the seed) when ``exc`` was raised inside the
        engine (its context names a tidemark function): a write must never fail there."""
        context = str(getattr(exc.diag, "context", "") or "")
        if "tidemark" in context:
            raise EngineFailure(f"seed {self.seed}: a write failed inside the engine: {exc}\n"
                                f"{context}\nlast steps:\n" + "\n".join(self.history[-8:]))

    def _expected(self, exc: psycopg.Error) -> None:
        self._engine_failed(exc)
        if isinstance(exc, psycopg.errors.DeadlockDetected):
            self.stats.deadlocks += 1
        self.stats.rolled_back += 1

    def _burst(self, writers: list[tuple[psycopg.Connection, str]]) -> None:
        """Two or three writers at once, each on its own rows (no deadlock of their own)."""
        errors: list[BaseException] = []
        base = self.next_id
        self.next_id += 1000
        plans = [(random.Random(self.rng.random()), base + 100 * w)
                 for w in range(self.rng.randint(2, 3))]
        self.history.append(f"burst of {len(plans)} writers")

        def work(rng: random.Random, first: int) -> None:
            try:
                with psycopg.connect(self.dsn) as c:
                    c.isolation_level = rng.choice(LEVELS)
                    c.execute("select set_config(%s, %s, false)", ("TimeZone", rng.choice(ZONES)))
                    c.commit()
                    for i in range(4):
                        for attempt in range(20):
                            try:
                                self._burst_transaction(c, rng, first, i)
                                break
                            except psycopg.errors.SerializationFailure:
                                self.stats.retried += 1
                                if attempt == 19:
                                    raise
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=plan) for plan in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise EngineFailure(f"seed {self.seed}: a concurrent writer failed: {errors[0]!r}")

    def _burst_transaction(self, c: psycopg.Connection, rng: random.Random, first: int,
                           i: int) -> None:
        with c.transaction():
            ident = first + i
            c.execute(f"insert into gen.f values ({CAST})",  # type: ignore[arg-type]
                      fact_values(rng, ident, c.info.server_version))
            c.execute("update gen.f set g = %s, k = %s where id = %s",
                      (rng.randrange(4), rng.randrange(6), first + rng.randrange(i + 1)))
            if rng.random() < 0.3:
                c.execute("delete from gen.f where id = %s", (first,))
            if rng.random() < 0.3:
                c.execute("insert into gen.p values (%s, '2026-01-05', 'a', %s, 1)",
                          (ident, rng.randrange(5)))
            if rng.random() < 0.3:
                c.execute("update gen.d set w = w + 1, region = %s where k = %s",
                          (rng.choice(["r0", "r1"]), rng.randrange(6)))

    # ------------------------------------------------------------------ temporal filters
    def _clock_days(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            at = clock(conn)
        now = at or datetime.now(UTC)
        return (now - datetime(2026, 1, 1, tzinfo=UTC)).days

    def _deploy_temporal(self) -> None:
        """Half the cases also get a view with a temporal filter (its own random stream, so
        the other draws of a seed stay as they were)."""
        self.trng = random.Random(self.seed * 7919 + 13)
        if self.trng.random() < 0.5 and not self.lone:
            self._deploy(draw_temporal_view(self.trng, f"gen{self.seed % 1000}_t",
                                            self._clock_days()))

    def _tick(self) -> None:
        """Sometimes move the clock 0-15 days on: rows expire and get admitted."""
        if self.trng.random() < 0.4:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                at = clock(conn) or datetime.now(UTC)
                step = timedelta(days=self.trng.randint(0, 15), hours=self.trng.randint(0, 23))
                try:
                    tick(conn, at + step)
                except DeployError as exc:  # a tick must never fail: with the seed
                    raise EngineFailure(f"seed {self.seed}: a tick failed: {exc}\nlast steps:\n"
                                        + "\n".join(self.history[-8:])) from None
            self.history.append(f"tick +{step}")

    # ------------------------------------------------------------------ run
    def run(self) -> Stats:
        with psycopg.connect(self.dsn, autocommit=True) as admin:
            self.setup(admin)
            self.check(admin)
            writers = [open_writer(self.dsn, self.rng) for _ in range(self.rng.randint(2, 3))]
            try:
                for _ in range(self.n_steps):
                    self.step(writers)
                    self._tick()
                    self.stats.steps += 1
                    self.check(admin)
            finally:
                for conn, _ in writers:
                    conn.close()
        return self.stats


def run_seeds(dsn: str, seeds: Any, **kwargs: Any) -> Stats:
    """Run one case per seed; return the summed statistics (raises on the first failure)."""
    total = Stats()
    for seed in seeds:
        total.merge(Case(dsn, seed, **kwargs).run())
    return total
