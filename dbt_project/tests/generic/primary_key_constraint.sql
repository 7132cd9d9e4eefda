{#-
    The landing's primary key guarantees a key, read from the catalog instead of the rows (O(1)
    at any history). One row per problem:
    - the table (a mirror, or with of=, the mirror a staging view projects) has no primary key
      on exactly `columns`: its unique / not_null tests are this check, so a dropped or changed
      key fails here;
    - with of=: the view reads a relation other than that mirror (a join or union may repeat a
      key), or lacks a key column.
    What the catalog cannot see: a view that computes its key column or multiplies rows from the
    one mirror (a set-returning function, a self-union). A staging model is a projection of its
    mirror (tests/dbt_project/test_key_constraints.py reads their SQL).
-#}
{% test primary_key_constraint(model, columns, of=none) %}

{%- set table = (of if of is not none else model).include(database=false) %}

with

expected as (
    select
        array[{% for column in columns %}'{{ column }}'{{ ", " if not loop.last }}{% endfor %}]::text []
        as key_columns
),

mirror_keys as (
    select
        array(
            select attribute.attname::text
            from pg_catalog.pg_attribute as attribute
            where
                attribute.attrelid = key_constraint.conrelid
                and attribute.attnum = any(key_constraint.conkey)
        ) as key_columns
    from pg_catalog.pg_constraint as key_constraint
    where
        key_constraint.conrelid = to_regclass('{{ table }}')
        and key_constraint.contype = 'p'
),

missing_key as (
    select
        '{{ table }} has no primary key on ('
        || array_to_string(expected.key_columns, ', ')
        || '): its unique and not_null tests are this catalog check; restore the key'
        || ' (ingestion creates it with the mirror)' as problem
    from expected
    where not exists (
        select 1
        from mirror_keys
        where
            mirror_keys.key_columns @> expected.key_columns
            and mirror_keys.key_columns <@ expected.key_columns
    )
)

{%- if of is not none %},

{%- set view = model.include(database=false) %}

view_reads as (
    select distinct dependency.refobjid
    from pg_catalog.pg_rewrite as rewrite
    inner join pg_catalog.pg_depend as dependency
        on
            dependency.classid = 'pg_catalog.pg_rewrite'::regclass
            and dependency.objid = rewrite.oid
            and dependency.refclassid = 'pg_catalog.pg_class'::regclass
    where
        rewrite.ev_class = to_regclass('{{ view }}')
        and dependency.refobjid != rewrite.ev_class
),

other_reads as (
    select
        '{{ view }} reads ' || view_reads.refobjid::regclass::text
        || ', not only {{ table }}: the mirror''s key no longer makes its key unique;'
        || ' test the key with unique / not_null instead' as problem
    from view_reads
    where view_reads.refobjid != to_regclass('{{ table }}')
),

missing_columns as (
    select
        '{{ view }} has no column ' || expected_column.name || ' of the key' as problem
    from expected
    cross join unnest(expected.key_columns) as expected_column (name)
    where not exists (
        select 1
        from pg_catalog.pg_attribute as attribute
        where
            attribute.attrelid = to_regclass('{{ view }}')
            and attribute.attname = expected_column.name
            and not attribute.attisdropped
    )
),

not_a_view as (
    select '{{ view }} does not exist or is not a view over {{ table }}' as problem
    where not exists (select 1 from view_reads)
)

{%- endif %}

select problem from missing_key
{%- if of is not none %}
union all
select problem from other_reads
union all
select problem from missing_columns
union all
select problem from not_a_view
{%- endif %}

{% endtest %}
