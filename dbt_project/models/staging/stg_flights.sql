-- Scheduled departures with a stable flight key and only what is known before departure,
-- plus the arrival delay from which the label is derived.
select
    strftime(flight_date, '%Y%m%d')
        || '-' || carrier
        || '-' || cast(flight as varchar)
        || '-' || origin
        || '-' || lpad(cast(sched_dep_time as varchar), 4, '0') as flight_id,
    flight_date,
    carrier,
    flight,
    tailnum,
    origin,
    dest,
    distance,
    sched_dep_time,
    hour as sched_dep_hour,
    arr_delay
from {{ source('raw', 'flights') }}
