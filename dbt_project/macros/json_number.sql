{#-
    The number under `key` of a jsonb `payload` as `type`, or null when the key is missing or
    holds no JSON number (a malformed event must not break the build; contracts flag it).
-#}
{% macro json_number(payload, key, type) -%}
    case
        when jsonb_typeof({{ payload }} -> '{{ key }}') = 'number'
            then ({{ payload }} -> '{{ key }}')::numeric::{{ type }}
    end
{%- endmacro %}
