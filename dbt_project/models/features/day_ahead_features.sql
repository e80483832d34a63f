-- Day-ahead features: every flight of day D predicted before D starts (as_of = D 00:00 in New
-- York), from D's schedule and from events that happened before as_of. The history of an
-- event counts in the New York day of its instant, so a flight of D-1 that arrives after
-- midnight is not known here. Reads the window and the 28 days before it.
{% set lookback = 28 %}
with plan as (
    select * from {{ ref('int_flight_plan') }}
),

flights as (
    select *, {{ ny_midnight('flight_date') }} as as_of, flight_date as history_day from plan
),

arrival_days as (
    select
        {{ ny_day('arr_at') }} as day, carrier, flight, origin, dest,
        count(*) as n, count_if(arr_delay > 15) as late, sum(arr_delay) as delay
    from {{ ref('stg_arrivals') }}
    where {{ events_for_window('event_hour', lookback + 1) }}
    group by all
),

departure_days as (
    select
        {{ ny_day('dep_at') }} as day, carrier, origin,
        count(*) as n, count_if(dep_delay > 15) as late, sum(dep_delay) as delay
    from {{ ref('stg_departures') }}
    where {{ events_for_window('event_hour', lookback + 1) }}
    group by all
),

origin_28 as ({{ trailing('arrival_days', 'flights', 'history_day', ['origin'], 'origin_28d', lookback) }}),
carrier_28 as ({{ trailing('arrival_days', 'flights', 'history_day', ['carrier'], 'carrier_28d', lookback) }}),
dest_28 as ({{ trailing('arrival_days', 'flights', 'history_day', ['dest'], 'dest_28d', lookback) }}),
route_28 as ({{ trailing('arrival_days', 'flights', 'history_day', ['origin', 'dest'], 'route_28d', lookback) }}),
flight_28 as ({{ trailing('arrival_days', 'flights', 'history_day', ['carrier', 'flight'], 'flight_28d', lookback) }}),
flight_7 as ({{ trailing('arrival_days', 'flights', 'history_day', ['carrier', 'flight'], 'flight_7d', 7) }}),
origin_1 as ({{ trailing('arrival_days', 'flights', 'history_day', ['origin'], 'origin_1d', 1) }}),
carrier_1 as ({{ trailing('arrival_days', 'flights', 'history_day', ['carrier'], 'carrier_1d', 1) }}),
dest_1 as ({{ trailing('arrival_days', 'flights', 'history_day', ['dest'], 'dest_1d', 1) }}),
dep_origin_1 as ({{ trailing('departure_days', 'flights', 'history_day', ['origin'], 'dep_origin_1d', 1) }}),
dep_carrier_28 as ({{ trailing('departure_days', 'flights', 'history_day', ['carrier'], 'dep_carrier_28d', lookback) }}),

labels as (
    select flight_id, case when arr_delay is null then null else arr_delay > 15 end as arrived_late
    from {{ ref('stg_flights') }}
    where {{ in_window('flight_date') }}
)

select
    f.flight_id,
    f.flight_date,
    f.as_of,
    f.carrier,
    f.origin,
    f.dest,
    f.distance,
    f.sched_dep_hour,
    f.sched_dep_minute,
    f.sched_block_minutes,
    f.day_of_week,
    f.month,
    f.day_of_year,
    f.days_to_holiday,
    f.prev_turn_minutes,
    f.tail_leg,
    f.tail_legs,
    f.origin_day_departures,
    f.origin_hour_departures,
    f.carrier_hour_departures,
    f.carrier_day_departures,
    f.dest_day_flights,
    o28.origin_28d_late_rate,
    o28.origin_28d_delay,
    c28.carrier_28d_late_rate,
    c28.carrier_28d_delay,
    d28.dest_28d_late_rate,
    d28.dest_28d_delay,
    r28.route_28d_n,
    r28.route_28d_late_rate,
    r28.route_28d_delay,
    n28.flight_28d_n,
    n28.flight_28d_late_rate,
    n28.flight_28d_delay,
    n7.flight_7d_late_rate,
    n7.flight_7d_delay,
    o1.origin_1d_late_rate,
    o1.origin_1d_delay,
    c1.carrier_1d_late_rate,
    c1.carrier_1d_delay,
    d1.dest_1d_late_rate,
    d1.dest_1d_delay,
    do1.dep_origin_1d_delay,
    dc28.dep_carrier_28d_delay,
    l.arrived_late
from flights as f
left join origin_28 as o28 on o28.history_day = f.history_day and o28.origin = f.origin
left join carrier_28 as c28 on c28.history_day = f.history_day and c28.carrier = f.carrier
left join dest_28 as d28 on d28.history_day = f.history_day and d28.dest = f.dest
left join route_28 as r28 on r28.history_day = f.history_day and r28.origin = f.origin and r28.dest = f.dest
left join flight_28 as n28 on n28.history_day = f.history_day and n28.carrier = f.carrier and n28.flight = f.flight
left join flight_7 as n7 on n7.history_day = f.history_day and n7.carrier = f.carrier and n7.flight = f.flight
left join origin_1 as o1 on o1.history_day = f.history_day and o1.origin = f.origin
left join carrier_1 as c1 on c1.history_day = f.history_day and c1.carrier = f.carrier
left join dest_1 as d1 on d1.history_day = f.history_day and d1.dest = f.dest
left join dep_origin_1 as do1 on do1.history_day = f.history_day and do1.origin = f.origin
left join dep_carrier_28 as dc28 on dc28.history_day = f.history_day and dc28.carrier = f.carrier
left join labels as l on l.flight_id = f.flight_id
