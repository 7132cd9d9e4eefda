{#-
    A column the table declares NOT NULL, read from the catalog instead of the rows (O(1) at any
    history): one row when `column_name` of `model` is missing or may hold nulls. For the change
    columns landing declares NOT NULL in every changelog (ingestion.tables.CHANGE_COLUMNS).
-#}
{% test not_null_constraint(model, column_name) %}

{%- set table = model.include(database=false) %}

select
    '{{ table }}.{{ column_name }} is not declared not null: its not_null test is this catalog'
    || ' check; restore the constraint (ingestion creates it with the table)' as problem
where not exists (
    select 1
    from pg_catalog.pg_attribute as attribute
    where
        attribute.attrelid = to_regclass('{{ table }}')
        and attribute.attname = '{{ column_name }}'
        and attribute.attnotnull
        and not attribute.attisdropped
)

{% endtest %}
