-- Landing PostgreSQL ("tidemark"): roles, schemas and grants, plus Dagster's storage database.
--
-- docker-entrypoint-initdb.d runs this once, as the superuser, in database $POSTGRES_DB
-- (tidemark), when the container's data directory is created. It is idempotent, so it can also be
-- run by hand against your own server (README, "Operations"):
--
--   TIDEMARK_APP_PASSWORD=... TIDEMARK_DBT_PASSWORD=... TIDEMARK_READER_PASSWORD=... \
--   DAGSTER_POSTGRES_PASSWORD=... \
--     psql -v ON_ERROR_STOP=1 -d tidemark -f docker/landing/10-tidemark-landing.sql
--
-- Passwords come from the environment through psql's \getenv (psql 15+); none is written here.
--
-- Roles (least privilege):
--   tidemark_app     owns the landing schemas but dbt's: ingestion writes
--   tidemark_dbt     owns staging, intermediate, marts: dbt builds; reads as tidemark_reader
--   tidemark_reader  SELECT on the landing schemas: psql, BI tools
--   dagster          owns database "dagster" (dagster-postgres run, event and schedule storage)
\set ON_ERROR_STOP on

\getenv app_password TIDEMARK_APP_PASSWORD
\getenv dbt_password TIDEMARK_DBT_PASSWORD
\getenv reader_password TIDEMARK_READER_PASSWORD
\getenv dagster_password DAGSTER_POSTGRES_PASSWORD
\if :{?app_password}
\else
  \warn 'TIDEMARK_APP_PASSWORD is not set: export it (see docker/dev.env) and run again.'
  select 1 / 0 as tidemark_app_password_is_not_set;
\endif
\if :{?dbt_password}
\else
  \warn 'TIDEMARK_DBT_PASSWORD is not set: export it (see docker/dev.env) and run again.'
  select 1 / 0 as tidemark_dbt_password_is_not_set;
\endif
\if :{?reader_password}
\else
  \warn 'TIDEMARK_READER_PASSWORD is not set: export it (see docker/dev.env) and run again.'
  select 1 / 0 as tidemark_reader_password_is_not_set;
\endif
\if :{?dagster_password}
\else
  \warn 'DAGSTER_POSTGRES_PASSWORD is not set: export it (see docker/dev.env) and run again.'
  select 1 / 0 as dagster_postgres_password_is_not_set;
\endif

select format('create role %I', r) from unnest(array['tidemark_app', 'tidemark_dbt',
    'tidemark_reader', 'dagster']) as r
where not exists (select from pg_roles where rolname = r) \gexec
select format('alter role tidemark_app login nosuperuser nocreatedb nocreaterole noreplication '
              'password %L', :'app_password') \gexec
select format('alter role tidemark_dbt login nosuperuser nocreatedb nocreaterole noreplication '
              'password %L', :'dbt_password') \gexec
select format('alter role tidemark_reader login nosuperuser nocreatedb nocreaterole '
              'noreplication password %L', :'reader_password') \gexec
select format('alter role dagster login nosuperuser nocreatedb nocreaterole noreplication '
              'password %L', :'dagster_password') \gexec

-- Landing: tidemark_app may create schemas (the mirror schema of each new source) and owns the
-- platform's; the reader sees every table of them, now and later.
select format('grant connect, create, temporary on database %I to tidemark_app',
              current_database()) \gexec
select format('grant connect on database %I to tidemark_reader', current_database()) \gexec
select format('create schema if not exists %I authorization tidemark_app', s),
       format('grant usage on schema %I to tidemark_reader', s),
       format('grant select on all tables in schema %I to tidemark_reader', s)
from unnest(array['shop', 'cdc', 'live', 'serving']) as s \gexec
alter default privileges for role tidemark_app grant select on tables to tidemark_reader;

-- Tidemark's internal schema: readers read the live views' catalog and change counters only
-- (tidemark_app creates them; the embedded stack's event trigger tidemark_keep_private also
-- revokes what later tables get from the default privileges above: see the README, "Roles").
create schema if not exists tidemark authorization tidemark_app;
grant usage on schema tidemark to tidemark_reader;

-- dbt: tidemark_dbt owns its schemas, reads what readers read, may create temporary tables.
grant tidemark_reader to tidemark_dbt;
select format('grant connect, temporary on database %I to tidemark_dbt', current_database())
\gexec
select format('create schema if not exists %I authorization tidemark_dbt', s),
       format('alter schema %I owner to tidemark_dbt', s),
       format('grant usage on schema %I to tidemark_reader, tidemark_app', s),
       format('grant select on all tables in schema %I to tidemark_reader, tidemark_app', s)
from unnest(array['staging', 'intermediate', 'marts']) as s \gexec
alter default privileges for role tidemark_dbt grant select on tables
    to tidemark_reader, tidemark_app;

-- Dagster's storage lives in its own database, owned by its own role.
select 'create database dagster owner dagster'
where not exists (select from pg_database where datname = 'dagster') \gexec
revoke connect on database dagster from public;
grant connect on database dagster to dagster;
