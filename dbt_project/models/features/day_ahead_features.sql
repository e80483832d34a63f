-- Day-ahead features: every flight of day D predicted before D starts (as_of = D 00:00 in New
-- York), from D's schedule and from events that happened before as_of (weather observed
-- up to then included). The history of an
-- event counts in the New York day of its instant, so a flight of D-1 that arrives after
-- midnight is not known here. Reads the window and the 28 days before it.
{% set lookback = 28 %}
with plan as (
    select * from {{ ref('int_flight_plan') }}
),

flights as (
    select *, {{ ny_midnight('flight_date') }} as as_of, flight_date as history_day from plan
),

observations as (
    select * from {{ ref('stg_observations') }}
    where {{ events_for_window('event_hour', 2) }}
),

weather_before_day as ({{ weather_before('flights') }}),

{{ history_ctes(lookback) }}

{{ labels_cte() }}

select
    {{- plan_columns('f') }}
    {{- history_columns(lookback) }}
    w.precip_3h,
    w.precip_12h,
    w.wind_speed_3h,
    w.visib_last,
    w.temp_last,
    w.humid_last,
    w.pressure_last,
    w.pressure_change_12h,
    w.visib_min_12h,
    l.arrived_late
from flights as f
{{ history_joins(lookback) }}
left join weather_before_day as w on w.origin = f.origin and w.as_of = f.as_of
left join labels as l on l.flight_id = f.flight_id
