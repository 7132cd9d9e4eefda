-- Source PostgreSQL ("shop"): roles, grants and publications for Tidemark.
--
-- docker-entrypoint-initdb.d runs this once, as the superuser, in database $POSTGRES_DB (shop),
-- when the container's data directory is created. It is idempotent, so it can also be run by
-- hand against your own server (README, "Operations"):
--
--   SHOP_APP_PASSWORD=... TIDEMARK_INGEST_PASSWORD=... TIDEMARK_MZ_SOURCE_PASSWORD=... \
--     psql -v ON_ERROR_STOP=1 -d shop -f docker/source/10-tidemark-source.sql
--
-- Passwords come from the environment through psql's \getenv (psql 15+); none is written here.
--
-- Roles (least privilege):
--   shop_app              the OLTP application: owns the demo tables (demo schema, seed, load)
--   tidemark_ingest       LOGIN REPLICATION, SELECT on the published tables: the CDC stream
--   tidemark_materialize  LOGIN REPLICATION, SELECT on the published tables: Materialize's source
-- Publications (FOR TABLES IN SCHEMA public: tables created later are published too):
--   tidemark_shop         ingestion (`tidemark ingest run`)
--   tidemark_mz_shop      Materialize (`tidemark views deploy --target materialize`)
\set ON_ERROR_STOP on

\getenv shop_app_password SHOP_APP_PASSWORD
\getenv ingest_password TIDEMARK_INGEST_PASSWORD
\getenv mz_password TIDEMARK_MZ_SOURCE_PASSWORD
\if :{?shop_app_password}
\else
  \warn 'SHOP_APP_PASSWORD is not set: export it (see docker/dev.env) and run again.'
  select 1 / 0 as shop_app_password_is_not_set;
\endif
\if :{?ingest_password}
\else
  \warn 'TIDEMARK_INGEST_PASSWORD is not set: export it (see docker/dev.env) and run again.'
  select 1 / 0 as tidemark_ingest_password_is_not_set;
\endif
\if :{?mz_password}
\else
  \warn 'TIDEMARK_MZ_SOURCE_PASSWORD is not set: export it (see docker/dev.env) and run again.'
  select 1 / 0 as tidemark_mz_source_password_is_not_set;
\endif

-- Roles: created when missing, options and password (re)set every time.
select format('create role %I', r) from unnest(array['shop_app', 'tidemark_ingest',
    'tidemark_materialize']) as r
where not exists (select from pg_roles where rolname = r) \gexec
select format('alter role shop_app login nosuperuser nocreatedb nocreaterole noreplication '
              'password %L', :'shop_app_password') \gexec
select format('alter role tidemark_ingest login replication nosuperuser nocreatedb nocreaterole '
              'password %L', :'ingest_password') \gexec
select format('alter role tidemark_materialize login replication nosuperuser nocreatedb '
              'nocreaterole password %L', :'mz_password') \gexec

-- The application owns schema public's tables; the replication roles only read them.
select format('grant connect on database %I to shop_app, tidemark_ingest, tidemark_materialize',
              current_database()) \gexec
grant usage, create on schema public to shop_app;
grant usage on schema public to tidemark_ingest, tidemark_materialize;
grant select on all tables in schema public to tidemark_ingest, tidemark_materialize;
alter default privileges for role shop_app in schema public
    grant select on tables to tidemark_ingest, tidemark_materialize;

-- Publications over the whole schema (creating one FOR TABLES IN SCHEMA needs a superuser, which
-- is why they are made here and not by the replication roles).
select 'create publication tidemark_shop for tables in schema public'
where not exists (select from pg_publication where pubname = 'tidemark_shop') \gexec
select 'create publication tidemark_mz_shop for tables in schema public'
where not exists (select from pg_publication where pubname = 'tidemark_mz_shop') \gexec
