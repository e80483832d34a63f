{#
  The event history both point-in-time models share: per flight, arrival and departure delays of
  the New York days before its `history_day` (the day of its prediction instant), so only
  events before that instant count. A model defines a `flights` CTE with `history_day`, then
  puts history_ctes() among its CTEs, history_columns() in its select list and history_joins()
  after `from flights as f`.
#}

{# (CTE name, event table, keys, days) of each history feature group. #}
{% macro history_groups(lookback) -%}
    {{ return([
        ('origin_28d', 'arrival_days', ['origin'], lookback),
        ('carrier_28d', 'arrival_days', ['carrier'], lookback),
        ('dest_28d', 'arrival_days', ['dest'], lookback),
        ('route_28d', 'arrival_days', ['origin', 'dest'], lookback),
        ('flight_28d', 'arrival_days', ['carrier', 'flight'], lookback),
        ('flight_7d', 'arrival_days', ['carrier', 'flight'], 7),
        ('origin_1d', 'arrival_days', ['origin'], 1),
        ('carrier_1d', 'arrival_days', ['carrier'], 1),
        ('dest_1d', 'arrival_days', ['dest'], 1),
        ('dep_origin_1d', 'departure_days', ['origin'], 1),
        ('dep_carrier_28d', 'departure_days', ['carrier'], lookback),
    ]) }}
{%- endmacro %}

{% macro history_ctes(lookback) -%}
arrival_days as (
    select
        {{ ny_day('arr_at') }} as day, carrier, flight, origin, dest,
        count(*) as n, count_if(arr_delay > 15) as late, sum(arr_delay) as delay
    from {{ ref('stg_arrivals') }}
    where {{ events_for_window('event_hour', lookback + 2) }}
    group by all
),

departure_days as (
    select
        {{ ny_day('dep_at') }} as day, carrier, origin,
        count(*) as n, count_if(dep_delay > 15) as late, sum(dep_delay) as delay
    from {{ ref('stg_departures') }}
    where {{ events_for_window('event_hour', lookback + 2) }}
    group by all
),
{% for name, daily, keys, days in history_groups(lookback) %}
{{ name }} as ({{ trailing(daily, 'flights', 'history_day', keys, name, days) }}),
{% endfor %}
{%- endmacro %}

{% macro history_columns(lookback) -%}
{% for name, daily, keys, days in history_groups(lookback) %}
    {{ name }}.{{ name }}_n,
    {{ name }}.{{ name }}_late_rate,
    {{ name }}.{{ name }}_delay,
{%- endfor %}
{%- endmacro %}

{% macro history_joins(lookback) -%}
{% for name, daily, keys, days in history_groups(lookback) %}
left join {{ name }} on {{ name }}.history_day = f.history_day
    {%- for k in keys %} and {{ name }}.{{ k }} = f.{{ k }}{% endfor %}
{%- endfor %}
{%- endmacro %}

{#
  The origin's weather observed before each (origin, as_of) of `queries`: precipitation and
  wind of the last hours, the latest observation, and the pressure trend (a falling barometer
  announces weather the next hours bring), from the relation `observations`.
#}
{% macro weather_before(queries) -%}
    select
        q.origin, q.as_of,
        sum(case when o.time_hour >= q.as_of - interval 3 hour then o.precip end) as precip_3h,
        sum(o.precip) as precip_12h,
        max(case when o.time_hour >= q.as_of - interval 3 hour then o.wind_speed end) as wind_speed_3h,
        arg_max(o.visib, o.time_hour) as visib_last,
        arg_max(o.temp, o.time_hour) as temp_last,
        arg_max(o.humid, o.time_hour) as humid_last,
        arg_max(o.pressure, o.time_hour) as pressure_last,
        arg_max(o.pressure, o.time_hour) - arg_min(o.pressure, o.time_hour) as pressure_change_12h,
        min(o.visib) as visib_min_12h
    from (select distinct origin, as_of from {{ queries }}) as q
    left join observations as o
        on o.origin = q.origin and o.time_hour >= q.as_of - interval 12 hour and o.time_hour < q.as_of
    group by all
{%- endmacro %}
