{#- Rows whose value does not match the (POSIX) regular expression `pattern`. -#}
{% test matches_pattern(model, column_name, pattern) %}

with

final as (
    select {{ column_name }} as value
    from {{ model }}
    where {{ column_name }} !~ '{{ pattern | replace("'", "''") }}'
)

select * from final

{% endtest %}
