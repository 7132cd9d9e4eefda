{#-
    The moment before which source changes are settled for this dbt invocation: the run's
    start minus `settle_minutes` (var, default 10: ingestion lands changes well within it).

    A test that compares a mart with the staged rows runs after the mart was built; while the
    source keeps changing (the demo load, production traffic), a day changed since the run
    started can differ between the two without anything being wrong. Such tests judge only
    the days with no change at or after this moment; the others are judged by the next run.
-#}
{% macro tidemark_settled_before() -%}
    {%- set minutes = var('settle_minutes', 10) | int(-1) -%}
    {%- if minutes < 0 -%}
        {{ exceptions.raise_compiler_error(
            "var settle_minutes=" ~ var('settle_minutes') ~ " must be a whole number of minutes >= 0 (default 10)."
        ) }}
    {%- endif -%}
    ('{{ run_started_at.isoformat() }}'::timestamptz - interval '{{ minutes }} minutes')
{%- endmacro %}
