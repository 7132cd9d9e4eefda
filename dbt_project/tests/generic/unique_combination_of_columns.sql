{#- Key combinations that occur more than once (a compound key that is not unique). -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

with

final as (
    select
        {{ combination_of_columns | join(', ') }},
        count(*) as occurrences
    from {{ model }}
    group by {{ combination_of_columns | join(', ') }}
    having count(*) > 1
)

select * from final

{% endtest %}
