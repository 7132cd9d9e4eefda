{#-
    Incremental strategy `day_window`: delete+insert of whole UTC days.

    Deletes every row of the target whose day column (model meta `day_column`) lies in the day
    window (macros/day_window.sql), then inserts the freshly computed rows of that window. Unlike
    the built-in delete+insert on a unique key, a day whose rows all disappeared upstream is
    emptied too, so re-running a day is idempotent and always equals a full rebuild of that day.
-#}
{% macro get_incremental_day_window_sql(arg_dict) -%}
    {%- set day_column = (config.get('meta') or {}).get('day_column') -%}
    {%- if not day_column -%}
        {{ exceptions.raise_compiler_error(
            "model " ~ this ~ " uses incremental_strategy day_window but has no meta.day_column: "
            ~ "add `config: {meta: {day_column: <date column>}}` to its YAML."
        ) }}
    {%- endif -%}
    {%- set window = tidemark_day_window(true) -%}
    {%- set day = adapter.quote(day_column) -%}
    {%- set dest_cols_csv = get_quoted_csv(arg_dict["dest_columns"] | map(attribute="name")) -%}
    delete from {{ arg_dict["target_relation"] }}
    where {{ day }} between '{{ window.min }}'::date and '{{ window.max }}'::date;

    insert into {{ arg_dict["target_relation"] }} ({{ dest_cols_csv }})
    select {{ dest_cols_csv }}
    from {{ arg_dict["temp_relation"] }}
    where {{ day }} between '{{ window.min }}'::date and '{{ window.max }}'::date
{%- endmacro %}
