-- The window's flights with what their schedules say, known before their day: the aircraft's
-- planned legs, congestion (scheduled departures by origin, hour and carrier), calendar and
-- holidays. Shared by the point-in-time models; the schedule of the day before is read only
-- for an aircraft's previous leg (one within 24 hours: the same in any window).
with schedule as (
    select * from {{ ref('stg_schedule') }}
    where flight_date >= {{ window_date('min_date') }} - 1 and flight_date < {{ window_date('max_date') }}
),

legs as (
    select
        *,
        case when tailnum is not null then lag(sched_dep_at) over tail end as prev_sched_dep_at,
        case when tailnum is not null then lag(sched_arr_at) over tail end as prev_sched_arr_at,
        case when tailnum is not null then lag(flight_id) over tail end as prev_flight_id
    from schedule
    window tail as (partition by tailnum order by sched_dep_at, flight_id)
),

flights as (
    select
        flight_id,
        flight_date,
        carrier,
        flight,
        tailnum,
        origin,
        dest,
        distance,
        sched_dep_hour,
        sched_dep_at,
        sched_arr_at,
        case when prev_sched_dep_at >= sched_dep_at - interval 24 hour then prev_flight_id end as prev_flight_id,
        case when prev_sched_dep_at >= sched_dep_at - interval 24 hour then prev_sched_dep_at end
            as prev_sched_dep_at,
        case when prev_sched_dep_at >= sched_dep_at - interval 24 hour
            then (epoch(sched_dep_at) - epoch(prev_sched_arr_at)) / 60 end as prev_turn_minutes,
        -- The way back to New York is not in the feed; the outbound leg's block time stands for it.
        case when prev_sched_dep_at >= sched_dep_at - interval 24 hour
            then (epoch(sched_dep_at) - epoch(prev_sched_arr_at) - epoch(prev_sched_arr_at)
                + epoch(prev_sched_dep_at)) / 60 end as prev_ground_buffer_minutes
    from legs
    where {{ in_window('flight_date') }}
)

select
    f.*,
    (epoch(f.sched_arr_at) - epoch(f.sched_dep_at)) / 60 as sched_block_minutes,
    extract(hour from timezone('America/New_York', f.sched_dep_at)) * 60
        + extract(minute from timezone('America/New_York', f.sched_dep_at)) as sched_dep_minute,
    isodow(f.flight_date) as day_of_week,
    month(f.flight_date) as month,
    dayofyear(f.flight_date) as day_of_year,
    (select min(abs(date_diff('day', f.flight_date, h.holiday))) from {{ ref('us_holidays') }} as h) as days_to_holiday,
    case when f.tailnum is not null then
        row_number() over (partition by f.tailnum, f.flight_date order by f.sched_dep_at, f.flight_id)
    end as tail_leg,
    case when f.tailnum is not null then count(*) over (partition by f.tailnum, f.flight_date) end as tail_legs,
    count(*) over (partition by f.origin, f.flight_date) as origin_day_departures,
    count(*) over (partition by f.origin, f.flight_date, f.sched_dep_hour) as origin_hour_departures,
    count(*) over (partition by f.origin, f.flight_date, f.sched_dep_hour, f.carrier) as carrier_hour_departures,
    count(*) over (partition by f.carrier, f.flight_date) as carrier_day_departures,
    count(*) over (partition by f.dest, f.flight_date) as dest_day_flights
from flights as f
