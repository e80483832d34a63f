-- Nowcast features: each flight predicted h hours before its scheduled departure hour
-- (as_of = its scheduled UTC hour start - h, the var nowcast_hours, default 2), from what had
-- happened by then: everything the day-ahead model knows (history up to the New York day of
-- as_of), plus today's departures, pending departures and arrivals at the destination before
-- as_of, the aircraft's previous leg as far as it had flown, and the origin's latest weather.
-- Every event counts only if its instant is before as_of.
{% set lookback = 28 %}
{% set hours = int_var('nowcast_hours') %}
with plan as (
    select * from {{ ref('int_flight_plan') }}
),

flights as (
    select
        *,
        {{ hour_start('sched_dep_at') }} - interval ({{ hours }}) hour as as_of,
        {{ ny_day(hour_start('sched_dep_at') ~ ' - interval (' ~ hours ~ ') hour') }} as history_day
    from plan
),

flights_now as (
    select *, {{ ny_midnight('history_day') }} as day_start from flights
    where {{ nowcast_as_of_filter('as_of') }}
),

departures as (
    select * from {{ ref('stg_departures') }}
    where {{ events_for_window('event_hour', 2) }}
),

arrivals as (
    select * from {{ ref('stg_arrivals') }}
    where {{ events_for_window('event_hour', 2) }}
),

schedule as (
    select flight_id, origin, sched_dep_at from {{ ref('stg_schedule') }}
    where flight_date >= {{ window_date('min_date') }} - 2 and flight_date < {{ window_date('max_date') }}
),

observations as (
    select * from {{ ref('stg_observations') }}
    where {{ events_for_window('event_hour', 2) }}
),

{{ history_ctes(lookback) }}

origin_now as (
    select
        q.origin, q.as_of,
        count(d.dep_at) as origin_departed_today,
        avg(d.dep_delay) as origin_dep_delay_today,
        avg(case when d.dep_delay > 15 then 1.0 when d.dep_delay is not null then 0.0 end)
            as origin_dep_late_share_today,
        avg(case when d.dep_at >= q.as_of - interval 2 hour then d.dep_delay end) as origin_dep_delay_2h,
        avg(case when d.dep_at >= q.as_of - interval 1 hour then d.dep_delay end) as origin_dep_delay_1h
    from (select distinct origin, as_of, day_start from flights_now) as q
    left join departures as d
        on d.origin = q.origin and d.dep_at >= q.day_start and d.dep_at < q.as_of
    group by all
),

pending as (
    select
        q.origin, q.as_of,
        count(*) as origin_pending,
        avg((epoch(q.as_of) - epoch(s.sched_dep_at)) / 60) as origin_pending_minutes
    from (select distinct origin, as_of, day_start from flights_now) as q
    join schedule as s
        on s.origin = q.origin and s.sched_dep_at >= q.day_start and s.sched_dep_at < q.as_of
    left join departures as d on d.flight_id = s.flight_id and d.dep_at < q.as_of
    where d.flight_id is null
    group by all
),

dest_now as (
    select
        q.dest, q.as_of,
        count(a.arr_at) as dest_arrived_today,
        avg(a.arr_delay) as dest_arr_delay_today,
        avg(case when a.arr_delay > 15 then 1.0 when a.arr_delay is not null then 0.0 end)
            as dest_late_share_today,
        avg(case when a.arr_at >= q.as_of - interval 3 hour then a.arr_delay end) as dest_arr_delay_3h,
        avg(case when a.arr_at < q.as_of - interval 3 hour then null when a.arr_delay > 15 then 1.0
            when a.arr_delay is not null then 0.0 end) as dest_late_share_3h
    from (select distinct dest, as_of, day_start from flights_now) as q
    left join arrivals as a on a.dest = q.dest and a.arr_at >= q.day_start and a.arr_at < q.as_of
    group by all
),

carrier_now as (
    select
        q.carrier, q.as_of,
        avg(a.arr_delay) as carrier_arr_delay_today,
        avg(case when a.arr_delay > 15 then 1.0 when a.arr_delay is not null then 0.0 end)
            as carrier_late_share_today
    from (select distinct carrier, as_of, day_start from flights_now) as q
    left join arrivals as a
        on a.carrier = q.carrier and a.arr_at >= q.day_start and a.arr_at < q.as_of
    group by all
),

carrier_departures_now as (
    select
        q.carrier, q.origin, q.as_of,
        avg(d.dep_delay) as carrier_dep_delay_today,
        avg(case when d.origin = q.origin then d.dep_delay end) as carrier_origin_dep_delay_today
    from (select distinct carrier, origin, as_of, day_start from flights_now) as q
    left join departures as d
        on d.carrier = q.carrier and d.dep_at >= q.day_start and d.dep_at < q.as_of
    group by all
),

weather_now as ({{ weather_before('flights_now') }}),

previous_leg as (
    select
        f.flight_id,
        d.dep_delay as prev_dep_delay,
        a.arr_delay as prev_arr_delay,
        case when f.prev_flight_id is not null then (d.flight_id is not null)::int end as prev_departed,
        case when f.prev_flight_id is not null then (a.flight_id is not null)::int end as prev_arrived,
        case when f.prev_flight_id is not null then coalesce(
            a.arr_delay, d.dep_delay,
            greatest(0, (epoch(f.as_of) - epoch(f.prev_sched_dep_at)) / 60)
        ) end as prev_known_delay
    from flights_now as f
    left join departures as d on d.flight_id = f.prev_flight_id and d.dep_at < f.as_of
    left join arrivals as a on a.flight_id = f.prev_flight_id and a.arr_at < f.as_of
),

{{ labels_cte() }}

select
    {{- plan_columns('f') }}
    {{- history_columns(lookback) }}
    o.origin_departed_today,
    o.origin_dep_delay_today,
    o.origin_dep_late_share_today,
    o.origin_dep_delay_2h,
    o.origin_dep_delay_1h,
    coalesce(p.origin_pending, 0) as origin_pending,
    p.origin_pending_minutes,
    dn.dest_arrived_today,
    dn.dest_arr_delay_today,
    dn.dest_late_share_today,
    dn.dest_arr_delay_3h,
    dn.dest_late_share_3h,
    cn.carrier_arr_delay_today,
    cn.carrier_late_share_today,
    cd.carrier_dep_delay_today,
    cd.carrier_origin_dep_delay_today,
    w.precip_3h,
    w.precip_12h,
    w.wind_speed_3h,
    w.visib_last,
    w.temp_last,
    w.humid_last,
    w.pressure_last,
    w.pressure_change_12h,
    w.visib_min_12h,
    pl.prev_departed,
    pl.prev_arrived,
    pl.prev_dep_delay,
    pl.prev_arr_delay,
    pl.prev_known_delay,
    f.prev_turn_minutes - pl.prev_known_delay as prev_slack_minutes,
    pl.prev_known_delay - f.prev_ground_buffer_minutes as prev_projected_delay,
    l.arrived_late
from flights_now as f
{{ history_joins(lookback) }}
left join origin_now as o on o.origin = f.origin and o.as_of = f.as_of
left join pending as p on p.origin = f.origin and p.as_of = f.as_of
left join dest_now as dn on dn.dest = f.dest and dn.as_of = f.as_of
left join carrier_now as cn on cn.carrier = f.carrier and cn.as_of = f.as_of
left join carrier_departures_now as cd
    on cd.carrier = f.carrier and cd.origin = f.origin and cd.as_of = f.as_of
left join weather_now as w on w.origin = f.origin and w.as_of = f.as_of
left join previous_leg as pl on pl.flight_id = f.flight_id
left join labels as l on l.flight_id = f.flight_id
