{#
  The partition window as SQL DATE literals. Dagster passes it in the environment
  (ML_PLATFORM_DBT_MIN_DATE, ML_PLATFORM_DBT_MAX_DATE): a changed variable re-parses only the
  files that use it, where a changed --vars re-parses the whole project. By hand, --vars works
  too. The values come from Dagster's partition definition, but are still checked to be
  calendar dates before they reach any SQL.
#}
{% macro window_date(name) -%}
    {%- set value = env_var('ML_PLATFORM_DBT_' ~ name | upper, var(name)) | string -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', value) -%}
        {{ exceptions.raise_compiler_error("var " ~ name ~ "=" ~ value ~ " is not a YYYY-MM-DD date") }}
    {%- endif -%}
    date '{{ value }}'
{%- endmacro %}

{% macro in_window(column) -%}
    {{ column }} >= {{ window_date('min_date') }} and {{ column }} < {{ window_date('max_date') }}
{%- endmacro %}
