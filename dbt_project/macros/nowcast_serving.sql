{#
  Serving the nowcast from the model training reads: the var nowcast_as_of (a UTC hour,
  YYYY-MM-DD HH:00, unset by default) keeps only the flights predicted at that instant, so the
  hourly serving path compiles the very same SQL for one hour's flights. Checked before it
  reaches any SQL; without the var the filter is `true` and the model is unchanged.
#}
{% macro nowcast_as_of_filter(column) -%}
    {%- set value = var('nowcast_as_of', none) -%}
    {%- if value is none or value | string == '' -%}
        true
    {%- else -%}
        {%- set value = value | string -%}
        {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:00', value) -%}
            {{ exceptions.raise_compiler_error("var nowcast_as_of=" ~ value ~ " is not a UTC hour YYYY-MM-DD HH:00") }}
        {%- endif -%}
        {{ column }} = timestamptz '{{ value }}:00+00'
    {%- endif -%}
{%- endmacro %}
