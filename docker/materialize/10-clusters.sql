-- Materialize: the cluster the live views are maintained in (named by `-- @cluster:` in
-- streaming_views/views/*.sql). Run by the one-shot `materialize-init` service with psql before
-- `tidemark views deploy --target materialize`; idempotent. 25cc is the emulator's smallest
-- size; on Materialize Cloud or self-managed pick a size from `SHOW allowed_cluster_replica_sizes`
-- (set TIDEMARK_MZ_CLUSTER_SIZE).
\set ON_ERROR_STOP on
\getenv cluster_size TIDEMARK_MZ_CLUSTER_SIZE
\if :{?cluster_size}
\else
  \set cluster_size 25cc
\endif
select format('CREATE CLUSTER live_views (SIZE = %L)', :'cluster_size')
where not exists (select 1 from mz_catalog.mz_clusters where name = 'live_views') \gexec
