{#-
    Values that do not match the regular expression `pattern` as a whole (like Python's
    re.fullmatch, which the contracts use). For an array column (`is_array: true`) every element
    is checked.
-#}
{% test matches_pattern(model, column_name, pattern, is_array=false) %}

with

checked as (
    {%- if is_array %}
        select element as value
        from {{ model }}
        cross join lateral unnest({{ column_name }}) as element
    {%- else %}
        select {{ column_name }} as value
        from {{ model }}
    {%- endif %}
),

final as (
    select value
    from checked
    where value !~ '^(?:{{ pattern | replace("'", "''") }})$'
)

select * from final

{% endtest %}
