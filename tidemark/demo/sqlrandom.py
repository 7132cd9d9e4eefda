"""Deterministic pseudo-randomness inside PostgreSQL, for set-based generators.

Two session-local SQL functions (in ``pg_temp``, so they leave nothing behind in the database):

- ``pg_temp.rnd(seed, key, salt)``: a float in [0, 1) that depends only on its arguments — the
  same seed gives the same rows whatever plan order the server picks;
- ``pg_temp.uid(seed, kind, key)``: a UUID made the same way.

Both are simple immutable SQL functions, which the planner inlines.
"""

from __future__ import annotations

import psycopg

MAX_SEED = 10**12

_FUNCTIONS = """
create or replace function pg_temp.rnd(s bigint, k bigint, salt integer)
returns double precision language sql immutable parallel safe
as $$ select ((hashint8extended(k, s * 1000 + salt) >> 11) & 9007199254740991)::float8
             / 9007199254740992.0 $$;
create or replace function pg_temp.uid(s bigint, kind text, k bigint)
returns uuid language sql immutable parallel safe
as $$ select md5(s::text || ':' || kind || ':' || k::text)::uuid $$;
"""


def install_random_functions(conn: psycopg.Connection) -> None:
    """Create ``pg_temp.rnd`` and ``pg_temp.uid`` for this connection's session."""
    conn.execute(_FUNCTIONS)
