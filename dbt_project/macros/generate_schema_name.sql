{#- Custom schemas are used as they are (staging, intermediate, marts, seeds), not prefixed with the
    target schema: the warehouse layout is fixed (ARCHITECTURE.md). -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
