{#
  Point-in-time helpers. Instants are TIMESTAMPTZ; these expressions give the same instants
  whatever the session's TimeZone (New York's offsets are whole hours, so its midnights are UTC
  hour boundaries).
#}

{# An integer var, checked before it reaches any SQL (like window_date checks dates). #}
{% macro int_var(name) -%}
    {%- set value = var(name) | string -%}
    {%- if not modules.re.fullmatch('[0-9]{1,3}', value) -%}
        {{ exceptions.raise_compiler_error("var " ~ name ~ "=" ~ value ~ " is not a non-negative integer") }}
    {%- endif -%}
    {{ value | int }}
{%- endmacro %}

{# The instant a New York calendar day starts. #}
{% macro ny_midnight(day) -%}
    timezone('America/New_York', cast({{ day }} as timestamp))
{%- endmacro %}

{# The New York calendar day an instant falls on. #}
{% macro ny_day(instant) -%}
    cast(timezone('America/New_York', {{ instant }}) as date)
{%- endmacro %}

{# The start of the UTC hour an instant is in. #}
{% macro hour_start(instant) -%}
    to_timestamp(floor(epoch({{ instant }}) / 3600) * 3600)
{%- endmacro %}

{# The flight key of stg_flights, from the flights' key columns. #}
{% macro flight_id() -%}
    strftime(flight_date, '%Y%m%d')
        || '-' || carrier
        || '-' || cast(flight as varchar)
        || '-' || origin
        || '-' || lpad(cast(sched_dep_time as varchar), 4, '0')
{%- endmacro %}

{# Events a window's features may look at: those delivered from `days` days before the window
   to its end (no feature of the window looks further back, and none at a later event). #}
{% macro events_for_window(column, days) -%}
    {{ column }} >= {{ ny_midnight(window_date('min_date') ~ ' - ' ~ days) }}
    and {{ column }} < {{ ny_midnight(window_date('max_date')) }}
{%- endmacro %}

{#
  History of the `days` New York days before each query day (`query_day` of the relation
  `queries`), grouped by `keys`: events, late share and mean delay, from `daily` (one row per
  New York day and finest key, with n, late and delay sums).
#}
{% macro trailing(daily, queries, query_day, keys, prefix, days) -%}
    {%- for k in keys + [prefix, query_day] -%}
        {%- if not modules.re.fullmatch('[a-z_][a-z0-9_]*', k) -%}
            {{ exceptions.raise_compiler_error("not an identifier: " ~ k) }}
        {%- endif -%}
    {%- endfor -%}
    select
        q.{{ query_day }},
        {% for k in keys %}q.{{ k }},{% endfor %}
        cast(sum(d.n) as bigint) as {{ prefix }}_n,
        sum(d.late) / sum(d.n) as {{ prefix }}_late_rate,
        sum(d.delay) / sum(d.n) as {{ prefix }}_delay
    from (select distinct {{ query_day }}, {{ keys | join(', ') }} from {{ queries }}) as q
    join (
        select day, {{ keys | join(', ') }}, sum(n) as n, sum(late) as late, sum(delay) as delay
        from {{ daily }}
        group by all
    ) as d
        on {% for k in keys %}d.{{ k }} = q.{{ k }} and {% endfor %}
        d.day >= q.{{ query_day }} - {{ days | int }} and d.day < q.{{ query_day }}
    group by all
{%- endmacro %}

{# The columns both point-in-time models take from the flight plan (int_flight_plan as `alias`):
   the flight, its schedule and calendar, the aircraft's plan and the day's congestion. #}
{% macro plan_columns(alias) -%}
{%- for column in [
    'flight_id', 'flight_date', 'as_of', 'carrier', 'origin', 'dest', 'distance',
    'sched_dep_hour', 'sched_dep_minute', 'sched_block_minutes', 'day_of_week', 'month',
    'day_of_year', 'days_to_holiday', 'prev_turn_minutes', 'prev_ground_buffer_minutes',
    'tail_leg', 'tail_legs', 'origin_day_departures', 'origin_hour_departures',
    'carrier_hour_departures', 'carrier_day_departures', 'dest_day_flights',
] %}
    {{ alias }}.{{ column }},
{%- endfor %}
{%- endmacro %}

{# The label of the window's flights: arrived more than 15 minutes late; null when cancelled or
   diverted. #}
{% macro labels_cte() -%}
labels as (
    select flight_id, case when arr_delay is null then null else arr_delay > 15 end as arrived_late
    from {{ ref('stg_flights') }}
    where {{ in_window('flight_date') }}
)
{%- endmacro %}
