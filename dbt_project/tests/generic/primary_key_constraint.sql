{#-
    The landing's primary key guarantees a key, read from the catalog instead of the rows (O(1)
    at any history). One row per problem:
    - the table (a mirror, or with of=, the mirror a staging view projects) has no primary key
      on exactly `columns`: its unique / not_null tests are this check, so a dropped or changed
      key fails here;
    - with of=: the view (or a view it reads, down to the mirror) reads more than one relation,
      or a table other than that mirror (a join or union may repeat a key), or lacks a key
      column.
    What the catalog cannot see: a view that computes its key column or multiplies rows from the
    one mirror (a set-returning function, a self-union). A staging model is a projection of its
    mirror (tests/dbt_project/test_key_constraints.py reads their SQL). A view of a view of the
    mirror (a projection or filter of a staging view) keeps the key too.
-#}
{% test primary_key_constraint(model, columns, of=none) %}

{%- set table = (of if of is not none else model).include(database=false) %}

with recursive

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

views as (
    -- The view and the views it reads, down to the tables: each must read one relation.
    select
        to_regclass('{{ view }}') as relation,
        0 as depth
    union
    select
        dependency.refobjid as relation,
        views.depth + 1 as depth
    from views
    inner join pg_catalog.pg_rewrite as rewrite on views.relation = rewrite.ev_class
    inner join pg_catalog.pg_depend as dependency
        on
            dependency.classid = 'pg_catalog.pg_rewrite'::regclass
            and rewrite.oid = dependency.objid
            and dependency.refclassid = 'pg_catalog.pg_class'::regclass
            and rewrite.ev_class != dependency.refobjid
    where views.depth < 8
),

view_reads as (
    select
        rewrite.ev_class as reader,
        dependency.refobjid
    from pg_catalog.pg_rewrite as rewrite
    inner join pg_catalog.pg_depend as dependency
        on
            dependency.classid = 'pg_catalog.pg_rewrite'::regclass
            and rewrite.oid = dependency.objid
            and dependency.refclassid = 'pg_catalog.pg_class'::regclass
            and rewrite.ev_class != dependency.refobjid
    where rewrite.ev_class in (select views.relation from views)
    group by rewrite.ev_class, dependency.refobjid
),

other_reads as (
    select
        view_reads.reader::regclass::text || ' reads ' || view_reads.refobjid::regclass::text
        || ', not only {{ table }} (through one view after another): the mirror''s key no'
        || ' longer makes the key of {{ view }} unique; test it with unique / not_null'
        || ' instead' as problem
    from view_reads
    inner join pg_catalog.pg_class as relation on view_reads.refobjid = relation.oid
    where
        (relation.relkind not in ('v', 'm') and view_reads.refobjid != to_regclass('{{ table }}'))
        or view_reads.reader in (
            select multiple.reader from view_reads as multiple
            group by multiple.reader having count(*) > 1
        )
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
    where not exists (select 1 from views where views.relation = to_regclass('{{ table }}'))
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
