"""Blue/green deployment of live views on Materialize, the way dbt-materialize does it.

dbt-materialize's ``deploy_init`` / ``deploy_await`` / ``deploy_promote`` / ``deploy_cleanup``
macros, and Materialize's own ``mz-deploy`` change detection, as one plan:

1. **changes** — each view's definition hash is compared with ``tidemark.views`` (as the
   embedded catalog does). Nothing changed: nothing is created, swapped or dropped.
2. **init** — a deploy schema ``live_dbt_deploy`` and, for every *dirty* cluster (one that runs a
   created or changed view), a deploy cluster ``<cluster>_dbt_deploy`` with the production
   cluster's size and replication factor. A cluster that also runs objects outside ``live``
   (a source, a sink, someone else's view) is never swapped: views on it are rebuilt in place.
3. **build** — every view of ``live`` is created in the deploy schema (a schema swap moves a whole
   schema, so the views of a dirty schema are all rebuilt, as mz-deploy does); views of dirty
   clusters run on the deploy cluster, the others on their production cluster, which is left
   alone. Views reading ``live.<other>`` read the deploy schema's copy and come after it.
4. **await** — until every object of the deploy schema is hydrated on a replica and its wallclock
   lag is under the threshold (``mz_internal.mz_hydration_statuses``,
   ``mz_internal.mz_wallclock_global_lag``); a timeout raises with what is missing.
5. **promote** — ``ALTER SCHEMA ... SWAP WITH`` and ``ALTER CLUSTER ... SWAP WITH`` in one
   transaction: clients see the old views or the new ones, never a mix.
6. **cleanup** — the old schema and clusters (now under the deploy names) are dropped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streaming_views.compiler import q
from streaming_views.errors import MaterializeError
from streaming_views.viewfile import ViewFile

LIVE_SCHEMA = "live"
DEPLOY_SUFFIX = "_dbt_deploy"
DEPLOY_SCHEMA = LIVE_SCHEMA + DEPLOY_SUFFIX
DEFAULT_SIZE_ENV = "TIDEMARK_MZ_CLUSTER_SIZE"
DEFAULT_SIZE = "25cc"


@dataclass
class Statement:
    """One generated statement; ``secret_env`` names the variable its secret comes from."""

    text: str
    secret_env: str | None = None

    def render(self) -> str:
        """The statement for people and golden files (secret shown as its variable)."""
        return self.text


@dataclass(frozen=True)
class ClusterSpec:
    """A production cluster as Materialize reports it (``mz_catalog.mz_clusters``).

    Attributes:
        name: cluster name.
        size: managed size (``25cc`` ...), copied to its deploy cluster.
        replication_factor: replicas, copied to its deploy cluster.
        dedicated: True when it runs only live views: then it may be swapped and dropped.
    """

    name: str
    size: str | None
    replication_factor: int = 1
    dedicated: bool = True


@dataclass
class Environment:
    """What is deployed now: view hashes from ``tidemark.views`` and the clusters that exist.

    ``Environment()`` is a fresh Materialize: no view deployed, no cluster but the sources'.
    """

    deployed: dict[str, str] = field(default_factory=dict)
    clusters: dict[str, ClusterSpec] = field(default_factory=dict)


@dataclass
class BlueGreen:
    """The blue/green part of a Materialize plan (see the module docstring)."""

    actions: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    swapped_clusters: list[str] = field(default_factory=list)
    init: list[Statement] = field(default_factory=list)
    build: list[Statement] = field(default_factory=list)
    promote: list[Statement] = field(default_factory=list)
    cleanup: list[Statement] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when anything is to be deployed (a view created, replaced or dropped)."""
        return bool(self.dropped) or any(a != "unchanged" for a in self.actions.values())


def deploy_name(name: str) -> str:
    """The deploy twin of a schema or cluster: ``<name>_dbt_deploy`` (dbt-materialize's)."""
    return name + DEPLOY_SUFFIX


def default_size() -> str:
    """Size of a cluster created because none of that name exists yet."""
    return os.environ.get(DEFAULT_SIZE_ENV) or DEFAULT_SIZE


def ordered(views: list[ViewFile], reads: dict[str, tuple[str, ...]]) -> list[ViewFile]:
    """Views by name, each after the live views it reads.

    Raises:
        MaterializeError: views read each other in a cycle.
    """
    by_name = {v.name: v for v in views}
    out: list[ViewFile] = []
    state: dict[str, str] = {}

    def visit(view: ViewFile, path: tuple[str, ...]) -> None:
        if state.get(view.name) == "done":
            return
        if state.get(view.name) == "open":
            raise MaterializeError("live views read each other in a cycle: "
                                   + " -> ".join((*path, view.name)) + "; break the cycle.")
        state[view.name] = "open"
        for name in reads.get(view.name, ()):
            if name in by_name:
                visit(by_name[name], (*path, view.name))
        state[view.name] = "done"
        out.append(view)

    for view in sorted(views, key=lambda v: v.name):
        visit(view, ())
    return out


def plan_blue_green(views: list[ViewFile], env: Environment, queries: dict[str, str],
                    reads: dict[str, tuple[str, ...]],
                    shared_clusters: set[str]) -> BlueGreen:
    """The blue/green statements for deploying ``views`` (the whole ``live`` schema) over ``env``.

    Args:
        views: every view ``live`` will hold after the deploy.
        env: what is deployed now.
        queries: view name -> its SELECT for Materialize, reading ``live_dbt_deploy.<other>``.
        reads: view name -> live views it reads.
        shared_clusters: clusters known to run other objects (the sources' clusters).
    """
    names = {v.name for v in views}
    plan = BlueGreen(dropped=sorted(set(env.deployed) - names))
    for view in views:
        old = env.deployed.get(view.name)
        plan.actions[view.name] = ("created" if old is None else "unchanged"
                                   if old == view.definition_hash else "replaced")
    if not plan.changed:
        return plan
    dirty = {v.cluster for v in views if plan.actions[v.name] != "unchanged"}
    for name in sorted(dirty):
        spec = env.clusters.get(name)
        if name in shared_clusters or (spec is not None and (not spec.dedicated
                                                             or spec.size is None)):
            continue  # runs other objects (or is unmanaged): views are rebuilt on it in place
        plan.swapped_clusters.append(name)
        if spec is None:  # first deploy: an empty production cluster, so the swap is uniform
            spec = ClusterSpec(name, default_size(), 1)
            plan.init.append(Statement(f"CREATE CLUSTER {q(name)} (SIZE = "
                                       f"{_literal(spec.size)}, REPLICATION FACTOR = 0)"))
        plan.init.append(Statement(f"DROP CLUSTER IF EXISTS {q(deploy_name(name))} CASCADE"))
        plan.init.append(Statement(
            f"CREATE CLUSTER {q(deploy_name(name))} (SIZE = {_literal(spec.size or '')}, "
            f"REPLICATION FACTOR = {int(spec.replication_factor)})"))
    plan.init[:0] = [Statement(f"CREATE SCHEMA IF NOT EXISTS {q(LIVE_SCHEMA)}"),
                     Statement(f"DROP SCHEMA IF EXISTS {q(DEPLOY_SCHEMA)} CASCADE"),
                     Statement(f"CREATE SCHEMA {q(DEPLOY_SCHEMA)}")]
    for view in ordered(views, reads):
        cluster = (deploy_name(view.cluster) if view.cluster in plan.swapped_clusters
                   else view.cluster)
        rel = f"{q(DEPLOY_SCHEMA)}.{q(view.name)}"
        plan.build.append(Statement(f"CREATE MATERIALIZED VIEW {rel} IN CLUSTER {q(cluster)} "
                                    f"AS {queries[view.name]}"))
        if view.keys:
            plan.build.append(Statement(
                f"CREATE INDEX {q(view.name + '_keys_idx')} IN CLUSTER {q(cluster)} ON {rel} "
                f"({', '.join(q(k) for k in view.keys)})"))
    plan.promote = [Statement("BEGIN"),
                    Statement(f"ALTER SCHEMA {q(LIVE_SCHEMA)} SWAP WITH {q(DEPLOY_SCHEMA)}")]
    plan.promote += [Statement(f"ALTER CLUSTER {q(c)} SWAP WITH {q(deploy_name(c))}")
                     for c in plan.swapped_clusters]
    plan.promote.append(Statement("COMMIT"))
    plan.cleanup = [Statement(f"DROP SCHEMA {q(DEPLOY_SCHEMA)} CASCADE")]
    plan.cleanup += [Statement(f"DROP CLUSTER {q(deploy_name(c))} CASCADE")
                     for c in plan.swapped_clusters]
    return plan


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# -- reading the environment and waiting (need a running Materialize) -------------------------

CLUSTERS_SQL = """\
with live_objects as (
  select o.id from mz_catalog.mz_objects o
  join mz_catalog.mz_schemas s on s.id = o.schema_id
  join mz_catalog.mz_databases d on d.id = s.database_id
  where s.name = 'live' and d.name = current_database()
), other_objects as (
  select cluster_id from mz_catalog.mz_sources where cluster_id is not null
  union all select cluster_id from mz_catalog.mz_sinks
  union all select cluster_id from mz_catalog.mz_materialized_views
    where id not in (select id from live_objects)
  union all select cluster_id from mz_catalog.mz_indexes
    where on_id not in (select id from live_objects)
)
select c.name, c.size, c.replication_factor, c.managed,
       (select count(*) from other_objects x where x.cluster_id = c.id) as other_objects
from mz_catalog.mz_clusters c"""

READINESS_SQL = """\
with views as (
  select mv.id from mz_catalog.mz_materialized_views mv
  join mz_catalog.mz_schemas s on s.id = mv.schema_id
  join mz_catalog.mz_databases d on d.id = s.database_id
  where s.name = %(schema)s and d.name = current_database()
), objects as (
  select id from views
  union all select i.id from mz_catalog.mz_indexes i where i.on_id in (select id from views)
), hydration as (
  select o.id, coalesce(bool_or(h.hydrated), false) as hydrated
  from objects o left join mz_internal.mz_hydration_statuses h on h.object_id = o.id
  group by o.id
)
select count(*) as total,
       count(*) filter (where h.hydrated) as hydrated,
       coalesce(max(extract(epoch from l.lag)), 0)::float8 as max_lag_s
from hydration h left join mz_internal.mz_wallclock_global_lag l on l.object_id = h.id"""

NO_REPLICA_SQL = """\
select c.name from mz_catalog.mz_clusters c
where c.name = any(%(clusters)s::text[])
  and not exists (select 1 from mz_catalog.mz_cluster_replicas r where r.cluster_id = c.id)"""


@dataclass(frozen=True)
class Readiness:
    """One poll of the deploy schema: objects hydrated of total, the largest lag, and deploy
    clusters without a replica (they never hydrate)."""

    total: int
    hydrated: int
    max_lag_s: float
    no_replica: tuple[str, ...] = ()

    def ready(self, lag_threshold_s: float) -> bool:
        """Every object hydrated and lag within the threshold."""
        return self.hydrated >= self.total and self.max_lag_s <= lag_threshold_s


def read_environment(conn) -> Environment:
    """Deployed view hashes and clusters of the Materialize behind ``conn``."""
    deployed = dict(conn.execute("select name, definition_hash from tidemark.views "
                                 "where target = 'materialize'").fetchall())
    clusters = {name: ClusterSpec(name, size if managed else None, int(rf or 0),
                                  dedicated=int(other) == 0)
                for name, size, rf, managed, other in conn.execute(CLUSTERS_SQL).fetchall()}
    return Environment(deployed=deployed, clusters=clusters)


def probe(conn, clusters: list[str]) -> Readiness:
    """Poll once: hydration and lag of the deploy schema's objects."""
    total, hydrated, lag = conn.execute(READINESS_SQL, {"schema": DEPLOY_SCHEMA}).fetchone()
    empty = tuple(r[0] for r in conn.execute(
        NO_REPLICA_SQL, {"clusters": [deploy_name(c) for c in clusters]}).fetchall()
    ) if clusters else ()
    return Readiness(int(total), int(hydrated), float(lag or 0.0), empty)


def wait_ready(poll: Callable[[], Readiness], lag_threshold_s: float = 1.0,
               timeout_s: float = 600.0, interval_s: float = 1.0,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> Readiness:
    """Poll until the deploy schema is hydrated with lag under the threshold.

    Raises:
        MaterializeError: a deploy cluster has no replica, or the timeout passed; the message
            says how far hydration got and that the live views were left as they were.
    """
    deadline = clock() + timeout_s
    while True:
        state = poll()
        if state.no_replica:
            raise MaterializeError(
                f"deploy cluster(s) {', '.join(state.no_replica)} have no replica, so the views "
                f"in {DEPLOY_SCHEMA} can never hydrate; live views were left as they were. Give "
                "the production cluster a replication factor of at least 1 and deploy again.")
        if state.ready(lag_threshold_s):
            return state
        if clock() >= deadline:
            what = (f"{state.total - state.hydrated} of {state.total} objects are not hydrated"
                    if state.hydrated < state.total else
                    f"lag is {state.max_lag_s:.1f}s, above the {lag_threshold_s:g}s threshold")
            raise MaterializeError(
                f"{DEPLOY_SCHEMA} was not ready after {timeout_s:.0f}s: {what}; live views "
                f"were left as they were. {DEPLOY_SCHEMA} and its clusters are kept for "
                "inspection (mz_internal.mz_hydration_statuses); the next deploy drops and "
                "rebuilds them. Give the deploy more time or larger clusters.")
        sleep(interval_s)
