{#
  The partition window as SQL DATE literals, from the vars min_date and max_date: Dagster passes
  each run's window (from its partition definition), dbt_project.yml has the whole year for a
  build by hand. Still checked to be calendar dates before they reach any SQL.
#}
{% macro window_date(name) -%}
    {%- set value = var(name) | string -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value) -%}
        {{ exceptions.raise_compiler_error("var " ~ name ~ "=" ~ value ~ " is not a YYYY-MM-DD date") }}
    {%- endif -%}
    date '{{ value }}'
{%- endmacro %}

{% macro in_window(column) -%}
    {{ column }} >= {{ window_date('min_date') }} and {{ column }} < {{ window_date('max_date') }}
{%- endmacro %}
