{#- Lifecycle stage of a supplier on `as_of_date`: churned (cancelled), paused, onboarding (the first
    30 days after signup), otherwise active. One definition for dim_suppliers and the daily marts. -#}
{% macro lifecycle_stage(status, signed_up_at, as_of_date) -%}
    case
        when {{ status }} = 'cancelled' then 'churned'
        when {{ status }} = 'paused' then 'paused'
        when {{ as_of_date }} - ({{ signed_up_at }} at time zone 'UTC')::date < 30 then 'onboarding'
        else 'active'
    end
{%- endmacro %}
