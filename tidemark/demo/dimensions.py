"""Reference data of the demo source: stores, customers and products, written set-based.

Used by the history seed and, on an empty database, by the load generator. The rows depend only
on the seed, the sizes and ``anchor`` (the time the stores and sign-ups lie before).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from tidemark.demo.catalog import BRANDS, CATEGORIES, CITIES, FIRST_NAMES, LAST_NAMES, TAGS
from tidemark.demo.sqlrandom import install_random_functions

N_STORES = 40
N_PRODUCTS = 600
MIN_CUSTOMERS = 1000


@dataclass(frozen=True)
class DimensionSizes:
    """How many stores, customers and products the demo has (ids are 1..n for each)."""

    stores: int = N_STORES
    customers: int = MIN_CUSTOMERS
    products: int = N_PRODUCTS


_STORES = """
insert into stores (store_id, store_name, city, region, opened_at, is_active)
select i, c.city || ' ' || ((i - 1) / %(n_cities)s + 1)::text, c.city, c.region,
       %(anchor)s - (365 + floor(1460 * pg_temp.rnd(%(seed)s, i, 1))) * interval '1 day', true
from generate_series(1, %(n)s) as i
join unnest(%(cities)s::text[], %(regions)s::text[]) with ordinality as c (city, region, k)
  on c.k = (i - 1) %% %(n_cities)s + 1
order by i
"""

# A customer's home store is 1 + floor(n_stores * rnd(seed, customer_id, 2)); orders use the
# same expression (see seed.py), so customers mostly order from the store of their city.
_CUSTOMERS = """
insert into customers (customer_id, customer_name, email, city, signed_up_at, updated_at)
select c, f.name || ' ' || l.name,
       lower(replace(f.name, ' ', '')) || '.' || lower(replace(l.name, ' ', '')) || c::text
         || '@example.com',
       s.city, t.signed_up_at, t.signed_up_at
from generate_series(1, %(n)s) as c
cross join lateral (
  select %(anchor)s - (1 + 729 * pg_temp.rnd(%(seed)s, c, 3)) * interval '1 day'
           as signed_up_at,
         1 + floor(%(n_stores)s * pg_temp.rnd(%(seed)s, c, 2))::int as home_store,
         1 + floor(%(n_first)s * pg_temp.rnd(%(seed)s, c, 4))::int as first_k,
         1 + floor(%(n_last)s * pg_temp.rnd(%(seed)s, c, 5))::int as last_k
) as t
join stores as s on s.store_id = t.home_store
join unnest(%(first)s::text[]) with ordinality as f (name, k) on f.k = t.first_k
join unnest(%(last)s::text[]) with ordinality as l (name, k) on l.k = t.last_k
order by c
"""

_PRODUCTS = """
insert into products (product_id, product_name, category, unit_price, tags, is_active)
select p, b.name || ' ' || it.item, it.category,
       round((0.49 + 24.5 * pg_temp.rnd(%(seed)s, p, 6) ^ 2)::numeric, 2),
       array_remove(array[
         case when pg_temp.rnd(%(seed)s, p, 7) < 0.3 then tg1.tag end,
         case when pg_temp.rnd(%(seed)s, p, 8) < 0.15 then tg2.tag end], null),
       true
from generate_series(1, %(n)s) as p
join unnest(%(categories)s::text[], %(items)s::text[]) with ordinality as it (category, item, k)
  on it.k = (p - 1) %% %(n_items)s + 1
join unnest(%(brands)s::text[]) with ordinality as b (name, k)
  on b.k = ((p - 1) / %(n_items)s) %% %(n_brands)s + 1
join unnest(%(tags)s::text[]) with ordinality as tg1 (tag, k)
  on tg1.k = 1 + floor(%(n_tags)s * pg_temp.rnd(%(seed)s, p, 9))::int
join unnest(%(tags)s::text[]) with ordinality as tg2 (tag, k)
  on tg2.k = 1 + floor(%(n_tags)s * pg_temp.rnd(%(seed)s, p, 10))::int
order by p
"""


def insert_dimensions(conn: psycopg.Connection, sizes: DimensionSizes, seed: int,
                      anchor: datetime) -> dict[str, int]:
    """Insert stores, customers and products into the tables on the search path.

    Args:
        conn: open connection (inside the caller's transaction), search_path set to the schema.
        sizes: how many rows of each.
        seed: the generator seed.
        anchor: stores opened and customers signed up before this time.

    Returns:
        Rows inserted per table.
    """
    install_random_functions(conn)
    pairs = [(category, item) for category, items in CATEGORIES.items() for item in items]
    common = {"seed": seed, "anchor": anchor}
    counts = {}
    cur = conn.execute(_STORES, {**common, "n": sizes.stores, "n_cities": len(CITIES),
                                 "cities": [c for c, _ in CITIES],
                                 "regions": [r for _, r in CITIES]})
    counts["stores"] = cur.rowcount
    cur = conn.execute(_CUSTOMERS, {**common, "n": sizes.customers, "n_stores": sizes.stores,
                                    "first": list(FIRST_NAMES), "last": list(LAST_NAMES),
                                    "n_first": len(FIRST_NAMES), "n_last": len(LAST_NAMES)})
    counts["customers"] = cur.rowcount
    cur = conn.execute(_PRODUCTS, {**common, "n": sizes.products, "n_items": len(pairs),
                                   "categories": [c for c, _ in pairs],
                                   "items": [i for _, i in pairs], "brands": list(BRANDS),
                                   "n_brands": len(BRANDS), "tags": list(TAGS),
                                   "n_tags": len(TAGS)})
    counts["products"] = cur.rowcount
    return counts
