{#-
    Build into the schema a model names (staging, intermediate, marts) exactly, not
    <target>_<schema>: the landing layout is fixed (DESIGN.md) and shared by every target.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
