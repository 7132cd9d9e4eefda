"""The SQL sent to Materialize means what the view file says: each demo view, as the Materialize
target renders it (sqlglot's ``materialize`` dialect), returns the same rows as the file's own
query on real PostgreSQL with the demo data — ``mz_now()`` taken as -infinity, so the
``@retention`` filter keeps every row. (Materialize itself cannot run here.)"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from streaming_views import load_views
from streaming_views.materialize import view_query
from tidemark.demo.seed import seed_history

CLOCK = "CAST('2026-03-01 00:00:00+00' AS TIMESTAMPTZ)"


def test_rendered_queries_return_the_view_files_rows(module_db: str) -> None:
    seed_history(module_db, days=2, orders_per_day=150, seed=7,
                 end=datetime(2026, 3, 1, tzinfo=UTC), schema="shop")
    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute("set timezone = 'UTC'")
        nonempty = 0
        for view in load_views():
            rendered = view_query(view)
            assert ("MZ_NOW() <=" in rendered) == (view.retention is not None)
            # @retention keeps every row (-infinity); a temporal filter in the text reads the
            # clock at the end of the seeded history
            clock = "CAST('-infinity' AS TIMESTAMPTZ)" if view.retention else CLOCK
            rendered = rendered.replace("MZ_NOW()", clock)
            original = view.text.replace("mz_now()", CLOCK)
            rows = conn.execute(f"select count(*) from ({original}) o").fetchone()[0]
            differ = conn.execute(
                f"select (select count(*) from (({original}) except all ({rendered})) a), "
                f"(select count(*) from (({rendered}) except all ({original})) b)").fetchone()
            assert differ == (0, 0), (view.name, differ, rendered)
            nonempty += rows > 0
        assert nonempty >= 5


def test_every_generated_view_is_accepted_and_rendered_faithfully(module_db: str) -> None:
    """The differential generator's views (the embedded engine's supported SQL): each passes
    the Materialize check, and its rendering returns the same rows as its text."""
    import random

    import pytest

    from streaming_views.errors import StreamingViewsError
    from streaming_views.viewfile import parse_view_text
    from tests.streaming_views.differential import CAST
    from tests.streaming_views.grammar import SCHEMA, draw_view, fact_values

    rng = random.Random(1313)
    with psycopg.connect(module_db, autocommit=True) as conn:
        conn.execute("set timezone = 'UTC'")
        conn.execute(SCHEMA)
        conn.execute("insert into gen.d (k, region, w, label) select k, 'r' || (k % 3), k - 1, "
                     "chr(65 + k) from generate_series(0, 5) k")
        conn.execute("insert into gen.e select k, 't' || (k % 2) from generate_series(0, 4) k")
        conn.execute("insert into gen.p select i, date '2026-01-01' + i * 7, "
                     "(array['a', 'b', 'c'])[1 + i % 3], i % 4, i * 1.5 "
                     "from generate_series(0, 12) i")
        version = conn.info.server_version
        for i in range(40):
            conn.execute(f"insert into gen.f values ({CAST})",  # type: ignore[arg-type]
                         fact_values(rng, i, version))
        compared = 0
        for i in range(150):
            drawn = draw_view(rng, f"g{i}")
            if drawn.expect_refusal:
                continue
            view = parse_view_text(drawn.name, drawn.sql)
            try:
                rendered = view_query(view)
            except StreamingViewsError as exc:
                pytest.fail(f"Materialize check refused what the embedded engine supports:\n"
                            f"{drawn.sql}\n{exc}")
            try:
                differ = conn.execute(
                    f"select (select count(*) from (({drawn.sql}) except all ({rendered})) a), "
                    f"(select count(*) from (({rendered}) except all ({drawn.sql})) b)"
                ).fetchone()
            except psycopg.DataError as exc:  # fails on these rows (interval overflow...)
                with pytest.raises(type(exc)):
                    conn.execute(drawn.sql).fetchall()
                with pytest.raises(type(exc)):
                    conn.execute(rendered).fetchall()
                continue
            assert differ == (0, 0), (drawn.sql, rendered, differ)
            compared += 1
        assert compared >= 100
